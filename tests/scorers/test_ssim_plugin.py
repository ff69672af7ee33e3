"""The example distribution plugins/brats-ad-ssim, installed as a third party would install it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SOURCE = Path(__file__).resolve().parents[2] / "plugins" / "brats-ad-ssim"

SCORE_THROUGH_REGISTRY = """
import json, torch
from brats_ad.models.output import ModelOutput
from brats_ad.plugins import get_registries
entry = get_registries().scorers.get("ssim")
scorer = entry.create(kernel_size=3)
x = torch.zeros(1, 1, 5, 5, 5)
score = scorer(ModelOutput(x=x, reconstruction=torch.ones_like(x)))
print(json.dumps({"module": type(scorer).__module__, "shape": list(score.anomaly_map.shape),
                  "score": score.sample_score.tolist(), "distribution": entry.source.distribution}))
"""


@pytest.fixture(scope="module")
def ssim_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install plugins/brats-ad-ssim into a private folder (a copy of the source, so the build
    leaves nothing in the checkout); that folder on PYTHONPATH is an installed distribution."""
    source = tmp_path_factory.mktemp("ssim-src") / "brats-ad-ssim"
    shutil.copytree(PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("ssim-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, timeout=300,
    )
    return target


def _run(args: list[str], site: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRATS_AD_")}  # autoload on
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=180)


@pytest.mark.slow
def test_installed_plugin_is_listed_and_scores_through_the_registry(ssim_site):
    listed = _run(["-m", "brats_ad", "plugins", "--json"], ssim_site)
    assert listed.returncode == 0, listed.stderr
    by_name = {c["name"]: c for c in json.loads(listed.stdout)["components"]}
    ssim = by_name["ssim"]
    assert (ssim["kind"], ssim["requires"], ssim["plugin"]) == ("scorers", ["reconstruction"], "ssim")
    assert (ssim["distribution"], ssim["version"]) == ("brats-ad-ssim", "0.1.0")
    assert ssim["factory"] == "brats_ad_ssim.scorer:SSIMScorer"

    scored = _run(["-c", SCORE_THROUGH_REGISTRY], ssim_site)
    assert scored.returncode == 0, scored.stderr
    result = json.loads(scored.stdout.strip().splitlines()[-1])
    assert result["module"] == "brats_ad_ssim.scorer" and result["distribution"] == "brats-ad-ssim"
    assert result["shape"] == [1, 1, 5, 5, 5]
    c1 = (0.01 * 2.0) ** 2  # x = 0, x' = 1: SSIM is the luminance term c1 / (1 + c1)
    assert result["score"] == pytest.approx([1.0 - c1 / (1.0 + c1)], abs=1e-6)
