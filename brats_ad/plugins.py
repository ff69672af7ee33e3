"""The plugin manager: built-in components and third-party distributions, through the same hooks.

Third-party distributions declare an entry point in the group ``brats_ad``::

    [project.entry-points.brats_ad]
    my_scorers = "my_package.brats_ad_plugin"

and implement hooks from :mod:`brats_ad.hookspecs` with the :data:`hookimpl` marker::

    from brats_ad.plugins import hookimpl

    @hookimpl
    def brats_ad_register_scorers(registry):
        registry.add("ssim", "my_package.ssim:SSIMScorer", requires={"reconstruction"},
                     help="1 - local SSIM between input and reconstruction")

Environment switches:

``BRATS_AD_DISABLE_PLUGIN_AUTOLOAD=1``
    do not load entry-point plugins (tests, debugging).
``BRATS_AD_DISABLE_PLUGINS=a,b``
    skip the named plugins (entry-point names or built-in module names).
``BRATS_AD_TRACE_PLUGINS=1``
    print every hook call to stderr.
"""

from __future__ import annotations

import functools
import os
import sys
from importlib import import_module
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from brats_ad import __version__, hookspecs
from brats_ad.errors import PluginError
from brats_ad.registry import KINDS, Registries, Source

#: The entry-point group third-party distributions use.
ENTRYPOINT_GROUP = "brats_ad"

hookimpl = pluggy.HookimplMarker("brats_ad")

#: Built-in hookimpl modules, registered first and in this order, exactly like third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "brats_ad.data.plugin",
    "brats_ad.preprocess.plugin",
    "brats_ad.models.plugin",
    "brats_ad.scorers.plugin",
    "brats_ad.metrics.plugin",
    "brats_ad.bench.executors.plugin",
)

_TRUE = {"1", "true", "yes", "on"}


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which distribution each plugin came from."""

    def __init__(self) -> None:
        super().__init__("brats_ad")
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, Source] = {}

    def register_plugin(self, plugin: ModuleType | object, name: str, source: Source) -> None:
        """Register ``plugin`` under ``name`` and record its provenance."""
        if self.is_blocked(name):
            return
        self.register(plugin, name=name)
        self.sources[name] = source


def _disabled_names() -> set[str]:
    raw = os.environ.get("BRATS_AD_DISABLE_PLUGINS", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def make_plugin_manager(entrypoints: bool = True) -> PluginManager:
    """Build a manager with the built-ins and (unless disabled) every installed plugin.

    ``entrypoints=False`` or ``BRATS_AD_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party plugins.
    """
    pm = PluginManager()
    for name in _disabled_names():
        pm.set_blocked(name)
    for module_name in BUILTIN_PLUGINS:
        if pm.is_blocked(module_name):
            continue
        pm.register_plugin(
            import_module(module_name),
            module_name,
            Source(plugin=module_name, distribution="brats-ad", version=__version__),
        )
    autoload = os.environ.get("BRATS_AD_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in _TRUE
    if entrypoints and autoload:
        _load_entrypoint_plugins(pm)
    if os.environ.get("BRATS_AD_TRACE_PLUGINS", "").strip().lower() in _TRUE:
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    pm.check_pending()
    return pm


def _load_entrypoint_plugins(pm: PluginManager) -> None:
    eps = sorted(
        entry_points(group=ENTRYPOINT_GROUP),
        key=lambda ep: ((ep.dist.name if ep.dist else ""), ep.name),
    )
    for ep in eps:
        dist_name = ep.dist.name if ep.dist else "<unknown distribution>"
        dist_version = ep.dist.version if ep.dist else None
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must say which distribution broke
            raise PluginError(
                f"plugin {ep.name!r} from {dist_name} {dist_version or ''} failed to load "
                f"({type(exc).__name__}: {exc}); fix or uninstall it, or set "
                f"BRATS_AD_DISABLE_PLUGINS={ep.name}"
            ) from exc
        pm.register_plugin(plugin, ep.name, Source(plugin=ep.name, distribution=dist_name, version=dist_version))


def load_registries(pm: PluginManager | None = None) -> Registries:
    """Call every ``brats_ad_register_*`` hook and return the filled registries.

    Each plugin's hooks are called on their own (pluggy's ``subset_hook_caller``) so that every
    entry records the distribution that registered it, and plugins run in registration order:
    built-ins first, so a duplicate name is reported against the built-in.
    """
    pm = pm if pm is not None else make_plugin_manager()
    registries = Registries.empty()
    plugins = [(name, plugin) for name, plugin in pm.list_name_plugin() if plugin is not None]
    for kind in KINDS:
        registry = registries.of(kind)
        hook_name = f"brats_ad_register_{kind}"
        for name, plugin in plugins:
            others = [other for _, other in plugins if other is not plugin]
            caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
            registry._bind(pm.sources.get(name, Source(plugin=name, distribution="<unregistered>", version=None)))
            try:
                caller(registry=registry)
            finally:
                registry._bind(None)
    return registries


@functools.lru_cache(maxsize=1)
def get_registries() -> Registries:
    """The registries of this process (built once; the CLI's and the library's default)."""
    return load_registries()
