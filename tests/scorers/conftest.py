"""Tiny hand-built ModelOutputs for the scorer tests (2D and 3D alike)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def spatial_dims(request: pytest.FixtureRequest) -> int:
    return request.param
