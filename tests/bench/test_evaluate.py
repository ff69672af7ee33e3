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


def test_3d_sample_level_is_per_patch_with_labels_from_each_window():
    """Every BraTS volume holds tumour, so 3D samples are sliding-window patches: a patch is
    positive when the tumour reaches into it, and the FLAIR threshold ranks those first."""
    from brats_ad.bench.scoring import _sample_level
    from brats_ad.infer.volume import score_volume
    from brats_ad.metrics.sample import sample_auroc_score
    from brats_ad.models.threshold import IntensityThreshold
    from brats_ad.scorers.model_map import ModelMap

    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (1, 24, 24, 20)).astype(np.float32)
    seg = np.zeros((24, 24, 20), np.uint8)
    seg[3:8, 4:9, 2:6] = 2
    image[0][seg > 0] += 1.0
    mask = np.ones(seg.shape, bool)
    model = IntensityThreshold.from_params(spatial_dims=3, in_channels=1, modalities=("flair",))
    result = score_volume(model, image, mask, {"map": ModelMap()}, spatial_dims=3, size=8,
                          overlap=0.5, device="cpu")
    scores, labels = _sample_level(result, "map", seg, mask, 3, 8)
    windows = result.windows[result.scored]
    assert len(scores) == len(labels) == len(windows) > 1
    expected = [int((seg[x:x + 8, y:y + 8, z:z + 8] > 0).any()) for x, y, z in windows]
    assert labels == expected and 0 < sum(labels) < len(labels)
    assert sample_auroc_score(np.array(labels), np.array(scores)) == 1.0
