"""Patient-level, seeded train / validation / test splits, saved as a JSON manifest.

Cases of one patient never straddle two parts: BraTS 2023+ ids ``BraTS-GLI-00000-000`` and
``BraTS-GLI-00000-001`` are two timepoints of patient ``BraTS-GLI-00000`` and go together
(:func:`patient_id`). Patients are stratified by a label (``"tumour"``, ``"healthy"``, ...) so
validation and test each get both kinds when there are enough patients of each.

The manifest records seed, requested sizes, the three case lists and a content hash (results
rows cite it). :func:`load_or_create_split` reuses a manifest and refuses one that does not
match the requested cases or settings, instead of silently mixing two splits.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from brats_ad.io import write_json_atomic
from brats_ad.errors import ConfigError, DataError

SPLIT_FORMAT_VERSION = 1
PARTS = ("train", "val", "test")

# BraTS 2023+: <prefix>-<patient number>-<timepoint>; the patient is everything but the timepoint.
_BRATS2023 = re.compile(r"^(BraTS-[A-Za-z]+-\d+)-\d{3}$")


def patient_id(case_id: str) -> str:
    """The patient a case belongs to (BraTS 2023 timepoints share one; others are their own)."""
    match = _BRATS2023.match(case_id)
    return match.group(1) if match else case_id


def subset_patients(case_ids: Sequence[str], n_patients: int, seed: int) -> list[str]:
    """The cases of ``n_patients`` patients drawn at random (seeded), in the input order.

    Timepoints of one patient stay together, as in the split. Every case when there are no more
    patients than ``n_patients``.
    """
    patients = sorted({patient_id(c) for c in case_ids})
    if len(patients) <= n_patients:
        return list(case_ids)
    chosen = set(np.random.default_rng(seed).permutation(patients)[:n_patients].tolist())
    return [c for c in case_ids if patient_id(c) in chosen]


@dataclass(frozen=True)
class Split:
    """Case ids per part; ``val`` / ``test`` are the requested sizes (fraction < 1 or count)."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    val_size: float | int
    test_size: float | int

    @property
    def hash(self) -> str:
        """Short sha256 of the content: equal splits, equal hash (independent of file layout)."""
        payload = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def part(self, name: str) -> tuple[str, ...]:
        if name not in PARTS:
            raise ConfigError(f"split part must be one of {', '.join(PARTS)}, got {name!r}")
        return getattr(self, name)

    def all_cases(self) -> set[str]:
        return set(self.train) | set(self.val) | set(self.test)

    def _content(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "val_size": self.val_size,
            "test_size": self.test_size,
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": SPLIT_FORMAT_VERSION, "grouping": "patient (BraTS 2023 timepoints together)",
                **self._content(), "hash": self.hash}


def _count(size: float | int, total: int, name: str) -> int:
    """Patients for a part: a float in [0, 1) is a fraction (rounded), an int a count."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a fraction in [0, 1) or a count, got {size!r}")
    if isinstance(size, (float, np.floating)) and not float(size).is_integer():
        if not 0.0 <= size < 1.0:
            raise ConfigError(f"{name} fraction must be in [0, 1), got {size}; or pass a count")
        return int(round(size * total))
    if isinstance(size, (float, np.floating)) and 0.0 <= size < 1.0:  # 0.0
        return 0
    count = int(size)
    if count < 0:
        raise ConfigError(f"{name} must be >= 0, got {size}")
    return count


def split_cases(
    case_ids: Iterable[str],
    *,
    seed: int = 0,
    val: float | int = 0.1,
    test: float | int = 0.2,
    strata: Mapping[str, str] | None = None,
) -> Split:
    """Split by patient with a seeded shuffle; sizes count patients, not cases.

    ``strata`` maps case id -> label (e.g. from :func:`strata_from_cache`); a patient takes the
    label of its first case in sorted order, except that ``"tumour"`` wins over others. Each part
    gets at least one patient of every label that has at least three patients ("where possible"),
    then the rest proportionally.
    """
    given = list(case_ids)
    ids = sorted(set(given))
    if len(ids) != len(given):
        raise DataError("duplicate case ids in the split request; case ids must be unique")
    if not ids:
        raise DataError("no cases to split; prepare or discover the dataset first")
    groups: dict[str, list[str]] = {}
    for cid in ids:
        groups.setdefault(patient_id(cid), []).append(cid)
    patients = sorted(groups)
    n = len(patients)
    n_val, n_test = _count(val, n, "val"), _count(test, n, "test")
    if n_val + n_test >= n:
        raise ConfigError(
            f"val ({n_val}) + test ({n_test}) patients leave none of {n} for training; "
            "lower the val / test sizes or add cases"
        )

    label_of = {p: _patient_label(groups[p], strata) for p in patients}
    by_label: dict[str, list[str]] = {}
    for p in patients:
        by_label.setdefault(label_of[p], []).append(p)
    rng = np.random.default_rng(seed)
    labels = sorted(by_label)
    for label in labels:  # shuffle within each stratum, reproducibly
        order = rng.permutation(len(by_label[label]))
        by_label[label] = [by_label[label][i] for i in order]

    sizes = [len(by_label[label]) for label in labels]
    take_test = _allocate(n_test, sizes)
    take_val = _allocate(n_val, [s - t for s, t in zip(sizes, take_test)])
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for label, t, v in zip(labels, take_test, take_val):
        members = by_label[label]
        for p in members[:t]:
            parts["test"].extend(groups[p])
        for p in members[t:t + v]:
            parts["val"].extend(groups[p])
        for p in members[t + v:]:
            parts["train"].extend(groups[p])
    return Split(
        train=tuple(sorted(parts["train"])), val=tuple(sorted(parts["val"])),
        test=tuple(sorted(parts["test"])), seed=int(seed), val_size=val, test_size=test,
    )


def _patient_label(cases: Sequence[str], strata: Mapping[str, str] | None) -> str:
    if not strata:
        return "all"
    labels = [strata.get(c, "unknown") for c in cases]
    return "tumour" if "tumour" in labels else labels[0]


def _allocate(total: int, sizes: Sequence[int]) -> list[int]:
    """Split ``total`` over strata: one each where the stratum has >= 3 left, then proportional."""
    alloc = [0] * len(sizes)
    remaining = total
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):  # largest strata first
        if remaining and sizes[i] >= 3:
            alloc[i] = 1
            remaining -= 1
    capacity = sum(sizes) - sum(alloc)
    if remaining and capacity:
        # largest-remainder apportionment of what is left, by stratum size
        spare = [s - a for s, a in zip(sizes, alloc)]
        quotas = [remaining * s / capacity for s in spare]
        extra = [min(int(q), sp) for q, sp in zip(quotas, spare)]
        left = remaining - sum(extra)
        for i in sorted(range(len(sizes)), key=lambda i: -(quotas[i] - int(quotas[i]))):
            if left <= 0:
                break
            if extra[i] < spare[i]:
                extra[i] += 1
                left -= 1
        alloc = [a + e for a, e in zip(alloc, extra)]
    return alloc


# -- manifest --------------------------------------------------------------------------------------
def save_split(split: Split, path: Path | str) -> Path:
    """Write the manifest atomically (temp file + rename)."""
    write_json_atomic(Path(path), split.to_dict())
    return Path(path)


def load_split(path: Path | str) -> Split:
    """Read a manifest; a hand-edited one whose hash no longer matches is a DataError."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
        split = Split(
            train=tuple(raw["train"]), val=tuple(raw["val"]), test=tuple(raw["test"]),
            seed=int(raw["seed"]), val_size=raw["val_size"], test_size=raw["test_size"],
        )
    except FileNotFoundError:
        raise DataError(f"split manifest {path} not found; create it with load_or_create_split") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"split manifest {path} is not a valid manifest ({exc}); delete it to recreate") from None
    stored = raw.get("hash")
    if stored is not None and stored != split.hash:
        raise DataError(
            f"split manifest {path}: hash {stored} does not match its content ({split.hash}); it "
            "was edited - delete the manifest to recreate it, or remove its 'hash' to accept the edit"
        )
    overlap = (set(split.train) & set(split.val)) | (set(split.train) & set(split.test)) | (set(split.val) & set(split.test))
    if overlap:
        raise DataError(f"split manifest {path}: case {sorted(overlap)[0]!r} is in two parts; delete it to recreate")
    return split


def load_or_create_split(
    path: Path | str,
    case_ids: Iterable[str],
    *,
    seed: int = 0,
    val: float | int = 0.1,
    test: float | int = 0.2,
    strata: Mapping[str, str] | None = None,
) -> Split:
    """Reuse the manifest at ``path`` if it matches these cases and settings, else create it.

    A manifest made for other cases, another seed or other sizes is an error rather than a
    silent re-split (results would otherwise mix splits); the message says what differs.
    """
    path = Path(path)
    ids = set(case_ids)
    if not path.exists():
        split = split_cases(ids, seed=seed, val=val, test=test, strata=strata)
        save_split(split, path)
        return split
    split = load_split(path)
    have = split.all_cases()
    if have != ids:
        missing, extra = sorted(ids - have), sorted(have - ids)
        detail = []
        if missing:
            detail.append(f"{len(missing)} requested case(s) not in it (e.g. {missing[0]})")
        if extra:
            detail.append(f"{len(extra)} case(s) in it not requested (e.g. {extra[0]})")
        raise DataError(
            f"split manifest {path} was made for other cases: {'; '.join(detail)}; delete it to "
            "re-split, or point to the dataset it was made for"
        )
    for name, want, got in (("seed", seed, split.seed), ("val", val, split.val_size), ("test", test, split.test_size)):
        if want != got:
            raise DataError(
                f"split manifest {path} has {name}={got!r}, requested {want!r}; delete it to "
                f"re-split or request {name}={got!r}"
            )
    return split


# -- strata ----------------------------------------------------------------------------------------
def strata_from_cache(cache_dir: Path | str, case_ids: Iterable[str] | None = None) -> dict[str, str]:
    """``"tumour"`` / ``"healthy"`` / ``"unlabelled"`` per cached case, from meta counts only."""
    from brats_ad.data.cache import cache_index, read_meta

    ids = cache_index(cache_dir) if case_ids is None else list(case_ids)
    out: dict[str, str] = {}
    for cid in ids:
        meta = read_meta(cache_dir, cid)
        if meta is None:
            raise DataError(f"case {cid} is not in the cache {cache_dir}; run 'brats-ad prepare' first")
        counts = meta.get("tumour_voxels_per_slice")
        out[cid] = "unlabelled" if counts is None else ("tumour" if sum(counts) > 0 else "healthy")
    return out


def strata_from_cases(cases: Iterable[Any]) -> dict[str, str]:
    """Without a cache: cases of a ``healthy`` dataset are healthy, labelled BraTS cases tumour."""
    out = {}
    for case in cases:
        if case.dataset == "healthy":
            out[case.case_id] = "healthy"
        else:
            out[case.case_id] = "tumour" if case.seg is not None else "unlabelled"
    return out
