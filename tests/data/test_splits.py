"""Patient-level splits: disjoint, seeded, grouped by patient, stratified, manifest reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brats_ad.data.splits import (
    load_or_create_split,
    load_split,
    patient_id,
    save_split,
    split_cases,
    strata_from_cases,
)
from brats_ad.data.scan import Case
from brats_ad.errors import ConfigError, DataError

IDS = [f"BraTS2021_{i:05d}" for i in range(20)]
STRATA = {cid: ("healthy" if i % 4 == 0 else "tumour") for i, cid in enumerate(IDS)}  # 5 healthy


def test_patient_id_groups_2023_timepoints() -> None:
    assert patient_id("BraTS-GLI-00042-001") == "BraTS-GLI-00042"
    assert patient_id("BraTS-MET-00110-000") == "BraTS-MET-00110"
    assert patient_id("BraTS2021_00042") == "BraTS2021_00042"
    assert patient_id("IXI002-Guys-0828") == "IXI002-Guys-0828"


def test_disjoint_complete_and_sized() -> None:
    split = split_cases(IDS, seed=0, val=0.1, test=0.2)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(IDS)
    assert (len(split.val), len(split.test)) == (2, 4)
    counts = split_cases(IDS, seed=0, val=3, test=5)
    assert (len(counts.val), len(counts.test), len(counts.train)) == (3, 5, 12)


def test_deterministic_per_seed() -> None:
    a, b = split_cases(IDS, seed=7), split_cases(list(reversed(IDS)), seed=7)
    assert a == b and a.hash == b.hash
    others = {split_cases(IDS, seed=s).test for s in range(5)}
    assert len(others) > 1


def test_timepoints_of_a_patient_stay_together() -> None:
    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(12) for t in range(3 if p % 2 else 1)]
    for seed in range(5):
        split = split_cases(ids, seed=seed, val=0.2, test=0.2)
        where = {}
        for part in ("train", "val", "test"):
            for cid in split.part(part):
                where.setdefault(patient_id(cid), set()).add(part)
        assert all(len(parts) == 1 for parts in where.values())


def test_val_and_test_get_both_strata() -> None:
    for seed in range(10):
        split = split_cases(IDS, seed=seed, val=2, test=3, strata=STRATA)
        for part in (split.val, split.test):
            assert {STRATA[c] for c in part} == {"healthy", "tumour"}
    # a stratum too small to share (2 patients) stays whole where it must
    tiny = {cid: ("healthy" if i < 2 else "tumour") for i, cid in enumerate(IDS)}
    split = split_cases(IDS, seed=0, val=2, test=2, strata=tiny)
    assert len(split.val) == 2 and len(split.test) == 2


def test_strata_from_cases() -> None:
    cases = [Case("a", {}, seg=Path("s.nii.gz")), Case("b", {}, dataset="healthy"), Case("c", {})]
    assert strata_from_cases(cases) == {"a": "tumour", "b": "healthy", "c": "unlabelled"}


def test_bad_sizes() -> None:
    with pytest.raises(ConfigError, match="leave none"):
        split_cases(IDS, val=10, test=10)
    with pytest.raises(ConfigError, match="fraction must be in"):
        split_cases(IDS, val=1.5)
    with pytest.raises(DataError, match="duplicate"):
        split_cases(IDS + IDS[:1])


def test_manifest_round_trip_and_reuse(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    split = load_or_create_split(path, IDS, seed=3, strata=STRATA)
    raw = json.loads(path.read_text())
    assert raw["hash"] == split.hash and raw["seed"] == 3 and raw["train"] == list(split.train)
    assert load_split(path) == split
    before = path.stat().st_mtime_ns
    again = load_or_create_split(path, reversed(IDS), seed=3, strata={})  # strata do not re-split
    assert again == split and path.stat().st_mtime_ns == before
    assert not list(tmp_path.glob(".tmp-*"))


def test_manifest_mismatch_is_an_error(tmp_path: Path) -> None:
    path = save_split(split_cases(IDS, seed=0), tmp_path / "split.json")
    with pytest.raises(DataError, match="other cases: 1 requested case.*BraTS2021_00099"):
        load_or_create_split(path, IDS + ["BraTS2021_00099"], seed=0)
    with pytest.raises(DataError, match="1 case.*not requested"):
        load_or_create_split(path, IDS[1:], seed=0)
    with pytest.raises(DataError, match="seed=0, requested 1"):
        load_or_create_split(path, IDS, seed=1)
    with pytest.raises(DataError, match="test=0.2, requested 0.3"):
        load_or_create_split(path, IDS, test=0.3)


def test_edited_manifest_is_detected(tmp_path: Path) -> None:
    path = save_split(split_cases(IDS, seed=0), tmp_path / "split.json")
    raw = json.loads(path.read_text())
    raw["train"], raw["test"] = raw["train"][1:], raw["test"] + raw["train"][:1]
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="was edited"):
        load_split(path)
    del raw["hash"]
    path.write_text(json.dumps(raw))
    assert len(load_split(path).test) == 5
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a valid manifest"):
        load_split(path)


def test_subset_patients_is_seeded_keeps_timepoints_and_order() -> None:
    from brats_ad.data.splits import subset_patients

    ids = [f"BraTS-GLI-{p:05d}-{t:03d}" for p in range(10) for t in range(2)] + ["BraTS2021_00007"]
    a = subset_patients(ids, 4, seed=3)
    assert a == subset_patients(ids, 4, seed=3) and a != subset_patients(ids, 4, seed=4)
    assert len({patient_id(c) for c in a}) == 4 and len(a) in (7, 8)  # two timepoints each (one 2021 case)
    assert all(f"{c[:-3]}000" in a and f"{c[:-3]}001" in a for c in a if c.startswith("BraTS-GLI"))
    assert a == [c for c in ids if c in a]  # input order kept
    assert subset_patients(ids, 50, seed=0) == ids
