"""Scorers: turn a :class:`~brats_ad.models.output.ModelOutput` into anomaly maps and scores.

Importing this package is cheap; scorer modules import torch.
"""
