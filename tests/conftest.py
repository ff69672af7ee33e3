"""Shared test settings: tests never load third-party plugins unless they install one themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the suite independent of whatever brats_ad plugins the developer has installed."""
    monkeypatch.setenv("BRATS_AD_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("BRATS_AD_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("BRATS_AD_TRACE_PLUGINS", raising=False)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests run torch single-threaded: tiny tensors gain nothing from threads, and on a busy
    2-core CI machine OpenMP spin-waiting makes small steps many times slower. torch is not
    imported here (tests of the light start-up path must not pay for it); every test module
    that uses torch has imported it by the time its tests run."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    """The read-only real samples in ../shared/data (skip when this checkout has none)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real samples not found at {SHARED_DATA}; clone next to the shared/ folder")
    return SHARED_DATA


DEMO_PLUGIN_SOURCE = '''
"""A third-party brats-ad plugin, as a separate distribution would ship it."""
from brats_ad.plugins import hookimpl


class ClipStep:
    def __init__(self, low=-1.0, high=1.0):
        self.low, self.high = low, high

    def __call__(self, scan):
        return scan


@hookimpl
def brats_ad_register_scorers(registry):
    registry.add("demo-ssim", "brats_ad_demo_plugin:ClipStep", requires={"reconstruction"},
                 help="demo scorer from a separately installed distribution")


@hookimpl
def brats_ad_register_preprocessors(registry):
    registry.add("demo-clip", "brats_ad_demo_plugin:ClipStep", params={"low": -1.0, "high": 1.0},
                 help="demo step from a separately installed distribution")
'''

DEMO_PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "brats-ad-demo-plugin"
version = "0.0.7"

[project.entry-points.brats_ad]
demo = "brats_ad_demo_plugin"

[tool.setuptools]
py-modules = ["brats_ad_demo_plugin"]
'''


@pytest.fixture(scope="session")
def demo_plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and pip-install a tiny third-party distribution into a private folder.

    Returns the folder to put on PYTHONPATH: importlib.metadata then finds its entry point,
    exactly as for a distribution installed into site-packages.
    """
    import subprocess
    import sys

    source = tmp_path_factory.mktemp("demo-src")
    (source / "pyproject.toml").write_text(DEMO_PYPROJECT)
    (source / "brats_ad_demo_plugin.py").write_text(DEMO_PLUGIN_SOURCE)
    target = tmp_path_factory.mktemp("demo-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True,
    )
    return target
