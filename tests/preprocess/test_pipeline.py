import json
import sys
import types

import numpy as np
import pytest

from brats_ad.data.scan import Scan
from brats_ad.errors import ConfigError, UnknownComponent
from brats_ad.plugins import PluginManager, hookimpl, load_registries
from brats_ad.preprocess.pipeline import CACHE_FORMAT_VERSION, build_pipeline, map_to_input_grid
from brats_ad.registry import Source


def _scan():
    """LPS-stored 2 mm scan with a planted brain block; value of channel 0 = a ramp."""
    shape = (24, 20, 16)
    affine = np.array([[-2.0, 0, 0, 40], [0, -2.0, 0, 30], [0, 0, 2.0, -10], [0, 0, 0, 1]])
    image = np.zeros((2, *shape), np.float32)
    ramp = np.arange(24, dtype=np.float32)[:, None, None] + np.arange(20)[None, :, None] * 0.5 + np.zeros(shape) + 1
    image[:, 4:18, 3:15, 2:12] = ramp[4:18, 3:15, 2:12]
    return Scan("case-7", image, ("t1", "flair"), affine)


def test_named_pipelines_build_and_are_json_safe():
    for name in ("brats", "healthy"):
        config = build_pipeline(name).to_config()
        assert json.loads(json.dumps(config)) == config
        assert all("name" in step for step in config)
    brats = build_pipeline("brats").to_config()
    assert [s["name"] for s in brats] == ["orient", "resample", "median-scale", "crop-pad"]
    assert brats[3]["shape"] == [192, 192, 160] and brats[1]["spacing"] == [1.0, 1.0, 1.0]


def test_hash_is_stable_and_changes_with_params():
    a = build_pipeline([{"name": "orient"}, {"name": "resample", "spacing": [1, 1, 1]}])
    b = build_pipeline(["orient", {"name": "resample", "spacing": (1.0, 1.0, 1.0)}])
    c = build_pipeline(["orient", {"name": "resample", "spacing": (2.0, 2.0, 2.0)}])
    assert a.config_hash() == b.config_hash() and len(a.config_hash()) == 12
    assert a.config_hash() != c.config_hash()
    assert build_pipeline("brats").config_hash() == build_pipeline("brats").config_hash()
    assert isinstance(CACHE_FORMAT_VERSION, int)


def test_unknown_step_pipeline_and_param_errors_suggest_names():
    with pytest.raises(UnknownComponent, match="did you mean 'zscore'"):
        build_pipeline(["zscor"])
    with pytest.raises(UnknownComponent, match="did you mean 'brats'"):
        build_pipeline("brat")
    with pytest.raises(ConfigError, match="did you mean 'spacing'"):
        build_pipeline([{"name": "resample", "spacng": 2}])
    with pytest.raises(ConfigError, match="'name' key"):
        build_pipeline([{"spacing": 2}])


def test_pipeline_records_grids_and_maps_back_exactly():
    scan = _scan()
    pipe = build_pipeline(["orient", "percentile-scale", {"name": "crop-pad", "shape": (16, 14, 18)}])
    out = pipe(scan)
    assert out.spatial_shape == (16, 14, 18)
    assert out.meta["original_shape"] == [24, 20, 16] and out.meta["pipeline_hash"] == pipe.config_hash()
    assert [s["name"] for s in out.meta["steps"]] == ["orient", "percentile-scale", "crop-pad"]
    back = map_to_input_grid(out.image[0], out.meta, order=0, fill=-5.0)
    assert back.shape == scan.spatial_shape
    brain = scan.image[0] != 0
    expected = pipe.steps[1](scan).image[0]  # percentile-scale does not care about orientation
    # orient (a flip) + crop/pad + the inverse give back the brain values voxel for voxel
    assert np.array_equal(back[brain], expected[brain])
    assert set(np.unique(back[~brain])) == {-5.0, -1.0}  # background in the window, fill outside


def test_map_to_input_grid_after_resampling_is_close():
    scan = _scan()
    pipe = build_pipeline(["orient", {"name": "resample", "spacing": 1.0}])
    out = pipe(scan)
    back = map_to_input_grid(out.image[0], out.meta, order=1)
    brain = np.zeros(scan.spatial_shape, bool)
    brain[5:17, 4:14, 3:11] = True  # away from the block edges
    assert np.allclose(back[brain], scan.image[0][brain], atol=1e-4)


class _Doubler:
    name = "double"

    def __init__(self, factor: float = 2.0) -> None:
        self.factor = factor

    def __call__(self, scan):
        import dataclasses

        return dataclasses.replace(scan, image=scan.image * self.factor)


def test_third_party_step_through_a_fresh_plugin_manager(monkeypatch):
    module = types.ModuleType("brats_ad_test_thirdparty")
    module._Doubler = _Doubler

    @hookimpl
    def brats_ad_register_preprocessors(registry):
        registry.add("double", "brats_ad_test_thirdparty:_Doubler", help="x * factor", params={"factor": 2.0})

    module.brats_ad_register_preprocessors = brats_ad_register_preprocessors
    monkeypatch.setitem(sys.modules, module.__name__, module)
    pm = PluginManager()
    import brats_ad.preprocess.plugin as builtin

    pm.register_plugin(builtin, "brats_ad.preprocess.plugin", Source("brats_ad.preprocess.plugin", "brats-ad", None))
    pm.register_plugin(module, "thirdparty", Source("thirdparty", "my-dist", "0.1"))
    registries = load_registries(pm)
    assert registries.preprocessors.get("double").source.distribution == "my-dist"
    pipe = build_pipeline(["orient", {"name": "double", "factor": 3}], registries=registries)
    assert pipe.to_config()[1] == {"name": "double", "factor": 3.0}
    scan = _scan()
    assert np.allclose(pipe(scan).image.max(), 3 * scan.image.max())
