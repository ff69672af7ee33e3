from __future__ import annotations

import pytest

from brats_ad.errors import ConfigError, DuplicateComponent, PluginError, UnknownComponent
from brats_ad.registry import KINDS, Registries, Registry, Source

SRC_A = Source(plugin="a_plugin", distribution="dist-a", version="1.0")
SRC_B = Source(plugin="b_plugin", distribution="dist-b", version="2.3")


def _registry_with(*names: str) -> Registry:
    registry = Registry("scorers")
    registry._bind(SRC_A)
    for name in names:
        registry.add(name, "collections:OrderedDict", help="x", requires={"reconstruction"})
    registry._bind(None)
    return registry


def test_add_records_metadata_and_source():
    registry = Registry("models")
    registry._bind(SRC_A)
    entry = registry.add(
        "tiny", "collections:OrderedDict", help="  a tiny\n   model ", dims=[2],
        provides={"reconstruction", "latent_pair"}, params={"latent": 8},
    )
    assert entry.help == "a tiny model"
    assert entry.dims == frozenset({2})
    assert entry.source == SRC_A
    assert registry.get("tiny") is entry
    data = entry.to_dict()
    assert data["provides"] == ["latent_pair", "reconstruction"]
    assert data["distribution"] == "dist-a" and data["version"] == "1.0"
    assert data["params"] == {"latent": 8}


def test_duplicate_name_names_both_sources():
    registry = _registry_with("ssim")
    registry._bind(SRC_B)
    with pytest.raises(DuplicateComponent, match=r"'ssim' is registered twice: by dist-a 1.0 .*and by dist-b 2.3"):
        registry.add("ssim", "collections:OrderedDict", help="again")


def test_unknown_name_suggests_and_lists_known():
    registry = _registry_with("latent", "residual", "combined")
    with pytest.raises(UnknownComponent, match=r"no scorer 'residul'; did you mean 'residual'\? Known: combined, latent, residual"):
        registry.get("residul")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factory": "no_colon"}, "factory must be 'module:attr'"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"dims": [4]}, r"dims must be a non-empty subset of \{2, 3\}"),
    ],
)
def test_malformed_entries_are_rejected(kwargs, message):
    registry = Registry("models")
    arguments = {"name": "m", "factory": "a:b", "help": "h", **kwargs}
    with pytest.raises(PluginError, match=message):
        registry.add(arguments.pop("name"), arguments.pop("factory"), **arguments)


def test_factory_is_imported_lazily_and_created_with_params():
    registry = Registry("metrics")
    entry = registry.add("frac", "fractions:Fraction", help="h", params={"numerator": 1, "denominator": 2})
    assert entry.create(denominator=4) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match=r"metric 'frac' has no parameter 'denominatr'; did you mean 'denominator'\?"):
        entry.create(denominatr=3)


def test_broken_factory_path_is_a_plugin_error():
    registry = Registry("models")
    registry._bind(SRC_B)
    missing_module = registry.add("a", "brats_ad_no_such_module:Thing", help="h")
    missing_attr = registry.add("b", "collections:NoSuchThing", help="h")
    with pytest.raises(PluginError, match=r"model 'a' from dist-b 2.3 .*cannot import 'brats_ad_no_such_module'"):
        missing_module.load()
    with pytest.raises(PluginError, match=r"has no attribute 'NoSuchThing'"):
        missing_attr.load()


def test_registries_cover_every_kind():
    registries = Registries.empty()
    assert [registries.of(kind).kind for kind in KINDS] == list(KINDS)
    with pytest.raises(UnknownComponent, match="did you mean 'models'"):
        registries.of("modles")


def test_create_passes_positional_arguments_before_params():
    registry = Registry("datasets")
    entry = registry.add("path", "pathlib:PurePosixPath", help="h")
    assert str(entry.create("a", "b")) == "a/b"
