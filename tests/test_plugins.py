from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pluggy
import pytest

from brats_ad import __version__
from brats_ad.errors import DuplicateComponent, PluginError
from brats_ad.hookdocs import hook_names
from brats_ad.plugins import BUILTIN_PLUGINS, PluginManager, hookimpl, load_registries, make_plugin_manager
from brats_ad.registry import KINDS, Source


def _plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, func in hooks.items():
        setattr(module, hook_name, hookimpl(func))
    return module


def _manager(*modules: types.ModuleType) -> PluginManager:
    pm = PluginManager()
    for module in modules:
        pm.register_plugin(module, module.__name__, Source(module.__name__, f"dist-{module.__name__}", "9.9"))
    pm.check_pending()
    return pm


def _run_cli(*args: str, env_extra: dict[str, str] | None = None, pythonpath: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRATS_AD_")}
    env.update(env_extra or {})
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "brats_ad", *args], capture_output=True, text=True, env=env, timeout=120
    )


# -- built-ins ------------------------------------------------------------------------------------
def test_builtins_register_through_the_same_hooks():
    pm = make_plugin_manager(entrypoints=False)
    names = [name for name, _ in pm.list_name_plugin()]
    assert names == list(BUILTIN_PLUGINS)
    registries = load_registries(pm)
    assert {"brats", "healthy", "synthetic"} <= set(registries.datasets.names())
    for entry in registries.entries():
        assert entry.source.distribution == "brats-ad"
        assert entry.source.version == __version__
        assert entry.source.plugin in BUILTIN_PLUGINS


def test_every_builtin_factory_imports():
    for entry in load_registries(make_plugin_manager(entrypoints=False)).entries():
        assert callable(entry.load()), entry.name


# -- ordering, duplicates, partial signatures ------------------------------------------------------------
def test_hooks_run_per_plugin_in_registration_order():
    calls: list[str] = []

    def first(registry):
        calls.append(f"first:{registry.kind}")
        registry.add("one", "collections:OrderedDict", help="h")

    def second(registry):
        calls.append(f"second:{registry.kind}")
        registry.add("two", "collections:OrderedDict", help="h")

    pm = _manager(
        _plugin_module("first", brats_ad_register_models=first, brats_ad_register_scorers=first),
        _plugin_module("second", brats_ad_register_models=second),
    )
    registries = load_registries(pm)
    assert calls == ["first:models", "second:models", "first:scorers"]
    assert registries.models.get("two").source.distribution == "dist-second"
    assert registries.scorers.names() == ["one"]


def test_duplicate_across_plugins_names_both_distributions():
    def add_ssim(registry):
        registry.add("ssim", "collections:OrderedDict", help="h")

    pm = _manager(
        _plugin_module("alpha", brats_ad_register_scorers=add_ssim),
        _plugin_module("beta", brats_ad_register_scorers=add_ssim),
    )
    with pytest.raises(DuplicateComponent, match=r"'ssim' is registered twice: by dist-alpha 9.9 .* and by dist-beta 9.9"):
        load_registries(pm)


def test_duplicate_of_a_builtin_is_reported_against_the_builtin():
    def shadow(registry):
        registry.add("brats", "collections:OrderedDict", help="h")

    pm = make_plugin_manager(entrypoints=False)
    module = _plugin_module("shadow", brats_ad_register_datasets=shadow)
    pm.register_plugin(module, "shadow", Source("shadow", "dist-shadow", "1"))
    with pytest.raises(DuplicateComponent, match=r"by brats-ad .* and by dist-shadow 1"):
        load_registries(pm)


def test_implementation_may_take_no_arguments():
    seen = []
    pm = _manager(_plugin_module("quiet", brats_ad_register_metrics=lambda: seen.append(True)))
    load_registries(pm)
    assert seen == [True]


def test_misspelled_hookimpl_fails_at_startup():
    module = types.ModuleType("typo")
    module.brats_ad_register_scorer = hookimpl(lambda registry: None)  # missing "s"
    pm = PluginManager()
    pm.register_plugin(module, "typo", Source("typo", "dist-typo", "1"))
    with pytest.raises(pluggy.PluginValidationError, match="brats_ad_register_scorer"):
        pm.check_pending()


def test_disable_plugins_env_blocks_a_builtin(monkeypatch):
    monkeypatch.setenv("BRATS_AD_DISABLE_PLUGINS", "brats_ad.data.plugin")
    registries = load_registries(make_plugin_manager(entrypoints=False))
    assert "brats" not in registries.datasets


def test_trace_env_writes_hook_calls_to_stderr(monkeypatch, capsys):
    monkeypatch.setenv("BRATS_AD_TRACE_PLUGINS", "1")
    load_registries(make_plugin_manager(entrypoints=False))
    assert "brats_ad_register_datasets" in capsys.readouterr().err


# -- one test per hook (the docs test checks that each exists) ------------------------------------------
def _check_hook(kind: str) -> None:
    def register(registry):
        registry.add(f"test-{kind}", "fractions:Fraction", help=f"a {kind} entry", dims=[3], params={"numerator": 3})

    pm = _manager(_plugin_module("kindtest", **{f"brats_ad_register_{kind}": register}))
    registry = load_registries(pm).of(kind)
    entry = registry.get(f"test-{kind}")
    assert entry.kind == kind and entry.dims == frozenset({3})
    assert entry.create() == 3
    for other in KINDS:
        if other != kind:
            assert f"test-{kind}" not in load_registries(pm).of(other)


def test_hook_brats_ad_register_datasets():
    _check_hook("datasets")


def test_hook_brats_ad_register_preprocessors():
    _check_hook("preprocessors")


def test_hook_brats_ad_register_models():
    _check_hook("models")


def test_hook_brats_ad_register_scorers():
    _check_hook("scorers")


def test_hook_brats_ad_register_metrics():
    _check_hook("metrics")


def test_hook_brats_ad_register_executors():
    _check_hook("executors")


def test_every_hook_has_a_test_and_a_kind():
    assert [name.removeprefix("brats_ad_register_") for name in hook_names()] == list(KINDS)
    for name in hook_names():
        assert f"test_hook_{name}" in globals(), f"add test_hook_{name}"


# -- third-party distributions through real entry points ----------------------------------------------
def test_installed_distribution_is_discovered(demo_plugin_path):
    result = _run_cli("plugins", "--json", pythonpath=demo_plugin_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    by_name = {c["name"]: c for c in payload["components"]}
    assert by_name["demo-ssim"]["kind"] == "scorers"
    assert by_name["demo-ssim"]["requires"] == ["reconstruction"]
    assert by_name["demo-ssim"]["distribution"] == "brats-ad-demo-plugin"
    assert by_name["demo-ssim"]["version"] == "0.0.7"
    assert by_name["demo-clip"]["params"] == {"high": 1.0, "low": -1.0}
    assert by_name["brats"]["distribution"] == "brats-ad"
    plugins = [p["name"] for p in payload["plugins"]]
    assert plugins[: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS)  # built-ins first
    assert "demo" in plugins[len(BUILTIN_PLUGINS):]


@pytest.mark.parametrize(
    "env", [{"BRATS_AD_DISABLE_PLUGIN_AUTOLOAD": "1"}, {"BRATS_AD_DISABLE_PLUGINS": "demo"}], ids=["autoload-off", "blocked"]
)
def test_switches_turn_the_distribution_off(demo_plugin_path, env):
    result = _run_cli("plugins", "--json", pythonpath=demo_plugin_path, env_extra=env)
    assert result.returncode == 0, result.stderr
    names = {c["name"] for c in json.loads(result.stdout)["components"]}
    assert "demo-ssim" not in names and "brats" in names


def test_broken_distribution_is_named_in_one_line(tmp_path):
    dist_info = tmp_path / "brats_ad_broken-1.2.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: brats-ad-broken\nVersion: 1.2\n")
    (dist_info / "entry_points.txt").write_text("[brats_ad]\nbroken = brats_ad_broken_module\n")
    (tmp_path / "brats_ad_broken_module.py").write_text("raise RuntimeError('boom')\n")
    result = _run_cli("plugins", pythonpath=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "plugin 'broken' from brats-ad-broken 1.2 failed to load (RuntimeError: boom)" in message
    assert "BRATS_AD_DISABLE_PLUGINS=broken" in message


def test_load_errors_raise_plugin_error(monkeypatch, tmp_path):
    dist_info = tmp_path / "brats_ad_broken2-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: brats-ad-broken2\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[brats_ad]\nbroken2 = brats_ad_missing_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("BRATS_AD_DISABLE_PLUGIN_AUTOLOAD")
    with pytest.raises(PluginError, match="brats-ad-broken2 1.0 failed to load"):
        make_plugin_manager()
