"""CellEvaluator: thresholds from validation only, Dice over tumour volumes, curves over all."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from brats_ad.bench.evaluate import CellEvaluator

SHAPE = (12, 12, 8)


def _volume(rng, tumour_box, *, flagged=()):
    """Scores: healthy ~N(0, 0.3), tumour ~N(2, 0.3); ``flagged`` healthy voxels set to 3."""
    seg = np.zeros(SHAPE, np.uint8)
    if tumour_box is not None:
        seg[tumour_box] = 2
    amap = rng.normal(0.0, 0.3, SHAPE).astype(np.float32)
    amap[seg > 0] += 2.0
    for voxel in flagged:
        amap[voxel] = 3.0
    mask = np.ones(SHAPE, bool)
    mask[0] = False  # a slab outside the brain: never counted
    return amap, seg, mask


def _dice(amap, seg, mask, t):
    pred, true = (amap >= t) & mask, (seg > 0) & mask
    return 2 * (pred & true).sum() / (pred.sum() + true.sum())


def test_tumour_free_test_volumes_count_in_auroc_but_not_in_dice():
    rng = np.random.default_rng(0)
    ev = CellEvaluator(dims=3, bootstrap=20)
    for i in range(2):
        ev.add_val(*_volume(rng, np.s_[3:7, 3:7, 2:5]), case_id=f"BraTS2021_0000{i}")
    thresholds = ev.start_test()
    tumour = _volume(rng, np.s_[4:9, 2:6, 3:6])
    healthy = _volume(rng, None, flagged=[(5, 5, 5), (6, 6, 6)])  # two false positives
    for (amap, seg, mask), cid in ((tumour, "BraTS2021_00010"), (healthy, "BraTS2021_00011")):
        ev.add_test(amap, seg, mask, cid, sample_scores=[float(amap.max())], sample_labels=[int(seg.any())])
    out = ev.finish()

    t = thresholds["valbest"].value
    assert out["metrics"]["dice_valbest_score"] == np.float64(_dice(*tumour, t))  # healthy volume left out
    assert out["n_skipped_dice"] == 1
    scores = np.concatenate([a[m] for a, _, m in (tumour, healthy)])
    labels = np.concatenate([(s > 0)[m] for _, s, m in (tumour, healthy)])
    assert abs(out["metrics"]["voxel_auroc_score"] - roc_auc_score(labels, scores)) < 1e-6  # both volumes


def test_dice_is_undefined_not_zero_when_no_test_volume_has_tumour():
    rng = np.random.default_rng(1)
    ev = CellEvaluator(dims=3, bootstrap=20)
    ev.add_val(*_volume(rng, np.s_[3:7, 3:7, 2:5]), case_id="BraTS2021_00000")
    ev.start_test()
    amap, seg, mask = _volume(rng, None, flagged=[(5, 5, 5)])
    ev.add_test(amap, seg, mask, "BraTS2021_00001", sample_scores=[1.0], sample_labels=[0])
    out = ev.finish()
    assert np.isnan(out["metrics"]["dice_valbest_score"]) and out["n_skipped_dice"] == 1
