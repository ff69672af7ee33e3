"""One exception hierarchy, so the CLI can turn every user-facing problem into one clear line."""

from __future__ import annotations


class BratsAdError(Exception):
    """Base class: the message says what was expected, what arrived and what to do."""


class ConfigError(BratsAdError):
    """A configuration value or key is not valid."""


class UnknownComponent(BratsAdError, KeyError):
    """A dataset, model, scorer, ... name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateComponent(BratsAdError):
    """Two plugins registered the same name for the same kind."""


class PluginError(BratsAdError):
    """A plugin failed to load or registered something malformed."""


class DataError(BratsAdError):
    """Input data (a case, a file, a folder) is missing, corrupt or inconsistent."""


class UndefinedMetricError(BratsAdError):
    """A metric is undefined for its input (e.g. no positive voxel)."""
