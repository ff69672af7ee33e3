"""Find BraTS cases on disk, in 2021 or 2023+ naming, without decoding any image.

Two namings exist and both are detected per case folder:

* 2021 (also 2020 and Kaggle's copy): ``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``
* 2023+ (GLI, MET, MEN, PED, SSA, ... any ``BraTS-XXX-`` prefix):
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``

Discovery only lists directories (one ``scandir`` per folder), so 1,000+ cases take
milliseconds; file contents are validated by :func:`brats_ad.data.loading.load_case`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from brats_ad.data.scan import MODALITIES, Case, canonical_modality
from brats_ad.errors import ConfigError, DataError

#: Per naming: file-name token -> canonical role (a modality or "seg").
_TOKENS: dict[str, dict[str, str]] = {
    "brats2021": {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"},
    "brats2023": {"t1n": "t1", "t1c": "t1ce", "t2w": "t2", "t2f": "flair", "seg": "seg"},
}
#: The separator between case id and token: "_" in 2021 naming, "-" in 2023+ naming.
_SEPARATOR = {"brats2021": "_", "brats2023": "-"}

# One regex per naming on the file name; the case prefix is free (folders get renamed).
_FILE_RES = {
    naming: re.compile(
        rf"^(?P<prefix>.+){re.escape(_SEPARATOR[naming])}"
        rf"(?P<token>{'|'.join(sorted(tokens, key=len, reverse=True))})"
        r"\.(?P<ext>nii|nii\.gz)$",
        re.IGNORECASE,
    )
    for naming, tokens in _TOKENS.items()
}
_IGNORED_DIRS = {"__MACOSX"}

_LAYOUT_HINT = (
    "expected case folders such as BraTS2021_00000/BraTS2021_00000_flair.nii.gz (2021 naming) "
    "or BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz (2023+ naming), directly in the "
    "folder or one level below it"
)


@dataclass(frozen=True)
class _Found:
    """What one case folder holds: role -> files, and which naming its files use."""

    folder: Path
    files: dict[str, list[Path]]
    namings: frozenset[str]


def _match(name: str) -> tuple[str, str] | None:
    """(naming, role) for a BraTS file name, or None."""
    for naming in ("brats2023", "brats2021"):
        m = _FILE_RES[naming].match(name)
        if m:
            return naming, _TOKENS[naming][m.group("token").lower()]
    return None


def _scan_folder(folder: Path) -> _Found | None:
    """List one folder; None when it holds no BraTS image file (only a seg does not count)."""
    files: dict[str, list[Path]] = {}
    namings: set[str] = set()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return None
    for entry in entries:
        hit = _match(entry.name)
        if hit is None or entry.is_dir():
            continue
        naming, role = hit
        files.setdefault(role, []).append(Path(entry.path))
        if role != "seg":
            namings.add(naming)
    if not namings:
        return None
    return _Found(folder, files, frozenset(namings))


def _subdirs(folder: Path) -> list[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"cannot list data folder {folder}: {exc}; check the path and permissions") from None
    return sorted(
        Path(e.path)
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and e.name not in _IGNORED_DIRS
    )


def _find_case_folders(root: Path) -> list[_Found]:
    """Case folders directly in ``root``, else one level below it, else ``root`` itself."""
    subdirs = _subdirs(root)
    found = [f for f in map(_scan_folder, subdirs) if f is not None]
    if found:
        return found
    by_parent: dict[Path, list[_Found]] = {}
    for sub in subdirs:
        inner = [f for f in map(_scan_folder, _subdirs(sub)) if f is not None]
        if inner:
            by_parent[sub] = inner
    if len(by_parent) > 1:
        names = ", ".join(p.name for p in by_parent)
        raise DataError(
            f"{root} holds BraTS cases in {len(by_parent)} subfolders ({names}); "
            "point the dataset root at one of them"
        )
    if by_parent:
        return next(iter(by_parent.values()))
    itself = _scan_folder(root)
    if itself is not None:  # the root is a single case folder
        return [itself]
    raise DataError(f"no BraTS case found in {root}; {_LAYOUT_HINT}")


def expected_file_name(case_id: str, naming: str, role: str) -> str:
    """The file name BraTS uses for ``role`` (canonical modality or "seg") in ``naming``."""
    token = next(t for t, r in _TOKENS[naming].items() if r == role)
    return f"{case_id}{_SEPARATOR[naming]}{token}.nii.gz"


def _to_case(found: _Found, modalities: Sequence[str], require_seg: bool) -> Case:
    case_id = found.folder.name
    if len(found.namings) > 1:
        raise DataError(
            f"case {case_id}: mixes 2021 names (_t1, _flair, ...) and 2023 names (-t1n, -t2f, ...) "
            f"in {found.folder}; rename the files to one naming"
        )
    naming = next(iter(found.namings))
    for role, paths in found.files.items():
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            raise DataError(
                f"case {case_id}: {len(paths)} files for {role} ({names}) in {found.folder}; "
                "keep exactly one"
            )
    images = {}
    for modality in modalities:
        if modality not in found.files:
            raise DataError(_missing_message(found, naming, modality))
        images[modality] = found.files[modality][0]
    seg = found.files.get("seg", [None])[0]
    if seg is None and require_seg:
        raise DataError(_missing_message(found, naming, "seg"))
    return Case(case_id=case_id, images=images, seg=seg, dataset="brats", naming=naming)


def _missing_message(found: _Found, naming: str, role: str) -> str:
    case_id = found.folder.name
    expected = expected_file_name(case_id, naming, role)
    if role == "seg":
        fix = "add the segmentation, or set require_seg = false to use unlabelled cases"
        what = "segmentation"
    else:
        fix = f"add the file, remove the case folder, or drop {role!r} from the dataset modalities"
        what = f"{role} image"
    return f"case {case_id}: no {what} (expected {expected} in {found.folder}); {fix}"


class BratsDataset:
    """A folder of BraTS cases (2021 or 2023+ naming, detected per case).

    ``root`` may hold the case folders, or one folder that does (Kaggle's
    ``BraTS2021_Training_Data/``), or be a single case folder. ``modalities`` accepts any spelling
    (``flair``, ``t2f``, ...) and any subset, in the channel order wanted. Cases without a
    segmentation are kept (``seg=None``) unless ``require_seg`` is true. A case lacking a
    requested modality is an error rather than silently dropped, so benchmarks stay comparable.
    """

    name = "brats"

    def __init__(
        self,
        root: str | os.PathLike[str],
        modalities: Iterable[str] = MODALITIES,
        require_seg: bool = False,
    ) -> None:
        self.root = Path(root).expanduser()
        self.modalities = check_modalities(modalities)
        if not isinstance(require_seg, bool):
            raise ConfigError(f"require_seg must be true or false, got {require_seg!r}")
        self.require_seg = require_seg

    def cases(self) -> list[Case]:
        """All cases, sorted by case id; raises :class:`DataError` on a malformed folder."""
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise DataError(f"BraTS data folder {self.root} {what}; {_LAYOUT_HINT}")
        found = _find_case_folders(self.root)
        return sorted(
            (_to_case(f, self.modalities, self.require_seg) for f in found),
            key=lambda c: c.case_id,
        )

    def __repr__(self) -> str:
        return f"BratsDataset(root={str(self.root)!r}, modalities={self.modalities!r})"


def check_modalities(modalities: Iterable[str]) -> tuple[str, ...]:
    """Canonical, duplicate-free, non-empty modality tuple (shared with the healthy dataset)."""
    if isinstance(modalities, str):
        modalities = (modalities,)
    canon = tuple(canonical_modality(m) for m in modalities)
    if not canon:
        raise ConfigError(f"modalities is empty; choose one or more of {', '.join(MODALITIES)}")
    dupes = sorted({m for m in canon if canon.count(m) > 1})
    if dupes:
        raise ConfigError(
            f"modalities {tuple(modalities)!r} name {', '.join(dupes)} twice; list each once"
        )
    return canon
