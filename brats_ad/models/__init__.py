"""Anomaly-detection models: one N-d definition each (``spatial_dims`` 2 or 3).

Importing this package is cheap; model modules import torch.
"""
