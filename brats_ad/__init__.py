"""brats-ad: benchmark unsupervised brain-tumour anomaly detection on BraTS MRI.

Importing the package is cheap on purpose: the CLI start-up path, ``brats-ad --help`` and
``brats-ad plugins`` must not import torch, so heavy modules are imported only where used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
