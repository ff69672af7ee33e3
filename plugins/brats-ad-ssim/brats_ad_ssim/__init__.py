"""brats-ad-ssim: an example third-party brats-ad plugin adding the ``ssim`` scorer.

Importing the package is cheap (no torch): ``brats-ad plugins`` imports :mod:`.plugin` only.
"""

__version__ = "0.1.0"
