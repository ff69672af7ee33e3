"""Every docstring example in brats_ad.metrics runs (the 2x2x2 toys of the numpydoc docstrings)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["streaming", "voxel", "dice", "sample", "bootstrap", "curves"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(f"brats_ad.metrics.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
