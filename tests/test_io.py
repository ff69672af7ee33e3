from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from brats_ad.io import atomic_output, atomic_path, write_json_atomic, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"epoch": 1})
    with pytest.raises(RuntimeError):
        with atomic_output(target, "w") as fh:
            fh.write('{"epoch": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.npy") as tmp:
            np.save(tmp, np.arange(3))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_atomic_path_keeps_suffixes_for_format_detection(tmp_path):
    target = tmp_path / "map.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz"]


def test_json_is_strict_nan_and_inf_become_null(tmp_path):
    """Results rows carry undefined metrics; strict JSON readers must still parse the file."""
    from pathlib import PurePosixPath

    write_json_atomic(tmp_path / "x.json", {"v": float("nan"), "w": (1, float("inf")), "p": PurePosixPath("a/b"),
                                            "a": np.arange(2), "s": np.float32(0.5)})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"v": None, "w": [1, None], "p": "a/b", "a": [0, 1], "s": 0.5}
