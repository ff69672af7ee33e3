"""Preprocessing steps (one callable class per step) and pipelines built from a config list.

Importing this package is cheap (no torch, no SimpleITK); submodules import what they need.
"""
