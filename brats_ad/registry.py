"""Named, lazily imported components: what plugins add and what configs refer to by name.

An :class:`Entry` names its factory as a ``"module:attr"`` string, so listing every plugin
(``brats-ad plugins``) never imports torch; the factory is imported only when a cell uses it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping

from brats_ad.config import did_you_mean
from brats_ad.errors import ConfigError, DuplicateComponent, PluginError, UnknownComponent

#: The kinds of component, in the order ``brats-ad plugins`` lists them. Each has one hook,
#: ``brats_ad_register_<kind>``.
KINDS: tuple[str, ...] = ("datasets", "preprocessors", "models", "scorers", "metrics", "executors")

_SINGULAR = {
    "datasets": "dataset",
    "preprocessors": "preprocessor",
    "models": "model",
    "scorers": "scorer",
    "metrics": "metric",
    "executors": "executor",
}


@dataclass(frozen=True)
class Source:
    """Where an entry came from: the plugin and the distribution that ships it (provenance)."""

    plugin: str
    distribution: str
    version: str | None

    def __str__(self) -> str:
        version = f" {self.version}" if self.version else ""
        return f"{self.distribution}{version} (plugin {self.plugin!r})"


@dataclass(frozen=True)
class Entry:
    """One registered component.

    ``params`` maps each parameter to its default; a config may override only these keys.
    ``dims`` says which spatial dimensionalities (2: slices, 3: patches) the component supports.
    Models declare what they ``provides`` (e.g. ``reconstruction``, ``latent_pair``) and scorers
    what they ``requires``; the benchmark matrix keeps only compatible pairs.
    """

    kind: str
    name: str
    factory: str
    help: str
    source: Source
    dims: frozenset[int] = frozenset({2, 3})
    provides: frozenset[str] = frozenset()
    requires: frozenset[str] = frozenset()
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def load(self) -> Callable[..., Any]:
        """Import and return the factory (the class or function named by ``factory``)."""
        module_name, _, attr = self.factory.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(
                f"{_SINGULAR[self.kind]} {self.name!r} from {self.source}: cannot import "
                f"{module_name!r} ({exc}); reinstall that distribution or fix its factory path"
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise PluginError(
                    f"{_SINGULAR[self.kind]} {self.name!r} from {self.source}: module "
                    f"{module_name!r} has no attribute {attr!r}; fix its factory path"
                ) from exc
        return obj

    def resolve_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``; an unknown key is a :class:`ConfigError`."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            allowed = ", ".join(sorted(self.params)) or "(none)"
            key = unknown[0]
            hint = did_you_mean(key, self.params)
            raise ConfigError(
                f"{_SINGULAR[self.kind]} {self.name!r} has no parameter {key!r}{hint}; "
                f"allowed: {allowed}"
            )
        return {**self.params, **overrides}

    def create(self, *args: Any, **overrides: Any) -> Any:
        """Call the factory with ``args`` (e.g. a dataset's root folder) and the parameters:
        defaults updated by ``overrides``."""
        return self.load()(*args, **self.resolve_params(overrides))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (used by ``brats-ad plugins --json`` and results rows)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "factory": self.factory,
            "help": self.help,
            "dims": sorted(self.dims),
            "provides": sorted(self.provides),
            "requires": sorted(self.requires),
            "params": dict(self.params),
            "plugin": self.source.plugin,
            "distribution": self.source.distribution,
            "version": self.source.version,
        }


class Registry:
    """All entries of one kind. Hooks receive a registry and call :meth:`add`."""

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._source: Source | None = None

    # -- used by the plugin manager while a plugin's hook runs ---------------------------------
    def _bind(self, source: Source | None) -> None:
        self._source = source

    # -- the plugin-facing API ---------------------------------------------------------------------
    def add(
        self,
        name: str,
        factory: str,
        *,
        help: str,
        dims: Iterable[int] = (2, 3),
        provides: Iterable[str] = (),
        requires: Iterable[str] = (),
        params: Mapping[str, Any] | None = None,
    ) -> Entry:
        """Register ``name``; a name already taken is a :class:`DuplicateComponent` error."""
        source = self._source or Source(plugin="<direct>", distribution="<unknown>", version=None)
        if not isinstance(name, str) or not name or name != name.strip():
            raise PluginError(f"{source}: a {_SINGULAR[self.kind]} name must be a non-empty string, got {name!r}")
        if not isinstance(factory, str) or factory.count(":") != 1:
            raise PluginError(
                f"{source}: {_SINGULAR[self.kind]} {name!r} factory must be 'module:attr', got {factory!r}"
            )
        dims_set = frozenset(int(d) for d in dims)
        if not dims_set or not dims_set <= {2, 3}:
            raise PluginError(f"{source}: {_SINGULAR[self.kind]} {name!r} dims must be a non-empty subset of {{2, 3}}, got {sorted(dims_set)}")
        if name in self._entries:
            first = self._entries[name].source
            raise DuplicateComponent(
                f"{_SINGULAR[self.kind]} {name!r} is registered twice: by {first} and by {source}; "
                "uninstall one of them or disable one with BRATS_AD_DISABLE_PLUGINS"
            )
        entry = Entry(
            kind=self.kind,
            name=name,
            factory=factory,
            help=" ".join(help.split()),
            source=source,
            dims=dims_set,
            provides=frozenset(provides),
            requires=frozenset(requires),
            params=MappingProxyType(dict(params or {})),
        )
        self._entries[name] = entry
        return entry

    # -- lookup -----------------------------------------------------------------------------------
    def get(self, name: str) -> Entry:
        """The entry called ``name``, or an :class:`UnknownComponent` error that teaches."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownComponent(
                f"no {_SINGULAR[self.kind]} {name!r}{did_you_mean(name, self._entries) or '.'} "
                f"Known: {known}. Missing plugin? Run 'brats-ad plugins'."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)


@dataclass(frozen=True)
class Registries:
    """One registry per kind, filled by every plugin's hooks."""

    datasets: Registry
    preprocessors: Registry
    models: Registry
    scorers: Registry
    metrics: Registry
    executors: Registry

    @classmethod
    def empty(cls) -> "Registries":
        return cls(**{kind: Registry(kind) for kind in KINDS})

    def of(self, kind: str) -> Registry:
        if kind not in KINDS:
            raise UnknownComponent(
                f"no component kind {kind!r}{did_you_mean(kind, KINDS) or '.'} Known: {', '.join(KINDS)}."
            )
        return getattr(self, kind)

    def entries(self) -> list[Entry]:
        return [entry for kind in KINDS for entry in self.of(kind)]
