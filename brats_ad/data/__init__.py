"""Data: dataset discovery, loading and validation, the synthetic default, cache, splits, samplers.

Importing this package is cheap (no torch, no nibabel); submodules import what they need.
"""
