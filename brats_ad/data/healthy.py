"""Find healthy-control scans (IXI-like) by a file pattern such as ``{subject}-{modality}.nii.gz``.

These scans come raw: with skull, in scanner space, modalities on their own grids. Cases are
therefore ``naming="custom"`` without a segmentation, and loading leaves ``brain_mask`` to the
skull-stripping step instead of taking the non-zero voxels.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping

from brats_ad.data.brats import check_modalities
from brats_ad.data.scan import MODALITY_ALIASES, Case, canonical_modality
from brats_ad.errors import ConfigError, DataError

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ON_MISSING = ("error", "skip")


class HealthyDataset:
    """Healthy-control scans under ``root`` whose relative paths match ``pattern``.

    ``pattern`` holds ``{subject}`` (one or more times) and ``{modality}`` once, and may contain
    folders (``"{subject}/anat/{subject}_{modality}.nii.gz"``). ``{modality}`` matches the
    spellings of :data:`~brats_ad.data.scan.MODALITY_ALIASES` case-insensitively (IXI's ``T1``,
    ``T2``) plus any in ``modality_names`` (file spelling -> modality, e.g. ``{"MPRAGE": "t1"}``).

    A subject with some but not all requested modalities is an error by default, so a benchmark
    never silently trains on fewer subjects than the folder holds; ``on_missing="skip"`` drops
    such subjects with a warning instead.
    """

    name = "healthy"

    def __init__(
        self,
        root: str | os.PathLike[str],
        modalities: Iterable[str] = ("t1",),
        pattern: str = "{subject}-{modality}.nii.gz",
        modality_names: Mapping[str, str] | None = None,
        on_missing: str = "error",
    ) -> None:
        self.root = Path(root).expanduser()
        self.modalities = check_modalities(modalities)
        self.pattern = _check_pattern(pattern)
        spellings = {k.lower(): v for k, v in MODALITY_ALIASES.items()}
        for spelling, modality in (modality_names or {}).items():
            if not isinstance(spelling, str) or not spelling.strip():
                raise ConfigError(f"modality_names: file spelling must be a non-empty string, got {spelling!r}")
            spellings[spelling.strip().lower()] = canonical_modality(modality)
        self.spellings = spellings  # lower-case file spelling -> canonical modality
        if on_missing not in _ON_MISSING:
            raise ConfigError(f"on_missing must be one of {', '.join(_ON_MISSING)}, got {on_missing!r}")
        self.on_missing = on_missing
        self._regex = _pattern_regex(self.pattern, self.spellings)

    def cases(self) -> list[Case]:
        """One case per subject, sorted by subject id; raises :class:`DataError` when none match."""
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise DataError(f"healthy-scan folder {self.root} {what}; point the dataset root at it")
        found: dict[str, dict[str, list[Path]]] = {}
        seen_spelling: dict[str, str] = {}
        for path in sorted(self.root.glob(_pattern_glob(self.pattern))):
            m = self._regex.fullmatch(path.relative_to(self.root).as_posix())
            if m is None or not path.is_file():
                continue
            modality = self.spellings[m.group("modality").lower()]
            seen_spelling.setdefault(modality, m.group("modality"))
            found.setdefault(m.group("subject"), {}).setdefault(modality, []).append(path)
        if not found:
            raise DataError(self._nothing_found_message())

        cases, skipped = [], []
        for subject in sorted(found):
            files = found[subject]
            for modality, paths in files.items():
                if len(paths) > 1:
                    names = ", ".join(p.name for p in paths)
                    raise DataError(
                        f"subject {subject}: {len(paths)} files for {modality} ({names}) in "
                        f"{self.root}; keep one or make the pattern more specific"
                    )
            missing = [m for m in self.modalities if m not in files]
            if missing:
                if self.on_missing == "skip":
                    skipped.append(subject)
                    continue
                spelling = seen_spelling.get(missing[0], missing[0])
                expected = self.pattern.replace("{subject}", subject).replace("{modality}", spelling)
                raise DataError(
                    f"subject {subject}: no {missing[0]} image (expected {expected} in {self.root}); "
                    "add it, drop the modality, or set on_missing = \"skip\" to leave such subjects out"
                )
            images = {m: files[m][0] for m in self.modalities}
            cases.append(Case(case_id=subject, images=images, seg=None, dataset="healthy", naming="custom"))
        if skipped:
            warnings.warn(
                f"healthy dataset {self.root}: skipped {len(skipped)} subject(s) lacking one of "
                f"{', '.join(self.modalities)} (e.g. {skipped[0]})",
                stacklevel=2,
            )
        if not cases:
            raise DataError(
                f"healthy dataset {self.root}: no subject has all of {', '.join(self.modalities)}; "
                "check modalities and modality_names"
            )
        return cases

    def _nothing_found_message(self) -> str:
        example = self.pattern.replace("{subject}", "IXI002-Guys-0828").replace("{modality}", "T1")
        try:
            sample = sorted(e.name for e in os.scandir(self.root))[:3]
        except OSError:
            sample = []
        there = f"found e.g. {', '.join(sample)}" if sample else "the folder is empty"
        return (
            f"no file in {self.root} matches pattern {self.pattern!r} (e.g. {example}) with a known "
            f"modality spelling; {there} - set pattern (and modality_names for unusual spellings)"
        )

    def __repr__(self) -> str:
        return f"HealthyDataset(root={str(self.root)!r}, pattern={self.pattern!r}, modalities={self.modalities!r})"


def _check_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"pattern must be a non-empty string such as '{{subject}}-{{modality}}.nii.gz', got {pattern!r}")
    names = _PLACEHOLDER.findall(pattern)
    unknown = sorted(set(names) - {"subject", "modality"})
    if unknown:
        raise ConfigError(
            f"pattern {pattern!r} has unknown placeholder(s) {unknown}; use only {{subject}} and {{modality}}"
        )
    if names.count("modality") != 1 or "subject" not in names:
        raise ConfigError(
            f"pattern {pattern!r} needs {{subject}} and exactly one {{modality}}, "
            "e.g. '{subject}-{modality}.nii.gz'"
        )
    if pattern.startswith("/") or ".." in pattern.split("/"):
        raise ConfigError(f"pattern {pattern!r} must be relative to the dataset root, without '..'")
    return pattern


def _pattern_regex(pattern: str, spellings: Mapping[str, str]) -> re.Pattern[str]:
    """Regex over root-relative POSIX paths: ``subject`` lazy, ``modality`` a known spelling."""
    alternatives = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
    parts, subject_seen = [], False
    for piece in re.split(r"(\{subject\}|\{modality\})", pattern):
        if piece == "{subject}":
            parts.append("(?P=subject)" if subject_seen else "(?P<subject>[^/]+?)")
            subject_seen = True
        elif piece == "{modality}":
            parts.append(f"(?P<modality>(?i:{alternatives}))")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def _pattern_glob(pattern: str) -> str:
    """A glob that lists a superset of the matching paths (the regex then decides)."""
    return "".join(
        "*" if piece in ("{subject}", "{modality}") else glob.escape(piece)
        for piece in re.split(r"(\{subject\}|\{modality\})", pattern)
    )
