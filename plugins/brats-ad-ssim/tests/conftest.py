"""Let ``pytest plugins/brats-ad-ssim/tests`` run from a checkout before ``pip install``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("brats_ad_ssim") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
