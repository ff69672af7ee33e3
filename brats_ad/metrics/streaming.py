"""A bounded-memory, exactly mergeable histogram of anomaly scores with positive / negative counts.

Why not a linear histogram over ``[min, max]``: anomaly scores are arbitrary floats whose range is
unknown until the last volume (residuals with a few huge outliers, negative log-likelihoods,
z-scored combinations), and a linear grid fixed from the first volumes either clips later ones or
puts almost all voxels into one bin once an outlier widens the range. Instead each score is
mapped to its float32 *order key* -- the unsigned 32-bit integer whose order equals the order of
the float values (sign bit flipped for positives, all bits flipped for negatives). A bin is a
run of ``2**shift`` consecutive keys, ``bin = key >> shift``. Consequences:

- no range is needed in advance and there is no second pass: when a new volume widens the key
  range beyond the capacity (``2**bins_log2`` bins), ``shift`` grows by one and pairs of aligned
  bins are summed -- an exact merge, so streaming gives bit-for-bit the histogram of one shot;
- bins are relative-width (log-like) in value, so a few outliers cost little resolution:
  with ``2**20`` bins and scores spanning 0 to ``2**k``, each power-of-two range of values
  still gets thousands of bins;
- each bin records its smallest and largest score, so exactness is known (not guessed):
  uint8-quantised or float16 scores stay exact as long as distinct values land in distinct
  bins (wide bins do not matter then), and the error bounds count only the mixed bins;
- the price of range-free binning: resolution is shared by every power of two the scores
  span, so scores straddling zero (down to ~1e-7 in magnitude) get the fewest bins per value
  range -- still ~2000 per power of two at the default, AUROC error ~1e-7 and AUPRC error
  ~5e-5 on 10^7 standard-normal scores, with the certified bound reported;
- two histograms on different grids (other volumes, other cases, other workers) can always be
  brought to a common grid exactly, so per-case histograms sum into bootstrap replicates.

Memory is ``24 * 2**bins_log2`` bytes at most (int64 counts of negatives and positives, the
smallest and largest key per bin), 24 MiB at the default ``bins_log2=20``, whatever the number
of voxels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brats_ad.metrics._checks import binary_labels, check_same_shape, flat_mask, to_numpy

_SIGN = np.uint32(0x80000000)
#: Keys of -inf and +inf; finite float32 values lie strictly between them (NaNs outside).
_KEY_NEG_INF = 0x007FFFFF
_KEY_POS_INF = 0xFF800000


def float_keys(scores: np.ndarray) -> np.ndarray:
    """Order keys of float32 ``scores``: ``a < b`` exactly when ``key(a) < key(b)``.

    Parameters
    ----------
    scores : ndarray of float32, shape (n,)

    Returns
    -------
    ndarray of uint32, shape (n,)
        A new array; -0.0 and +0.0 get the same key (they are equal scores).
    """
    keys = np.add(scores, np.float32(0)).view(np.uint32)  # new array; -0.0 + 0.0 == +0.0
    flip = (keys.view(np.int32) >> 31).view(np.uint32)  # all ones for negatives, else zero
    flip |= _SIGN
    keys ^= flip
    return keys


def keys_to_floats(keys: Any) -> np.ndarray:
    """Inverse of :func:`float_keys`: the float32 values of ``keys`` (uint32, any shape)."""
    keys = np.asarray(keys, dtype=np.uint32)
    bits = np.where(keys & _SIGN, keys ^ _SIGN, ~keys).astype(np.uint32)
    return bits.view(np.float32)


_EMPTY_MIN = np.uint32(0xFFFFFFFF)
#: Voxels binned per block inside one update (temporaries ~ 16 bytes per voxel of a block).
_BLOCK = 1 << 21


class _Grid:
    """Per-bin arrays on one aligned grid: counts (n, 2) int64 and the smallest / largest key seen.

    ``kmin[i] < kmax[i]`` says bin ``i`` holds more than one distinct float32 score. This makes
    exactness *known*, not guessed (a bin holding one distinct value contributes no error), and
    ``kmin`` gives each bin's smallest score as its threshold. Empty bins hold
    ``kmin = 0xFFFFFFFF, kmax = 0``.
    """

    __slots__ = ("counts", "kmin", "kmax")

    def __init__(self, counts: np.ndarray, kmin: np.ndarray, kmax: np.ndarray) -> None:
        self.counts, self.kmin, self.kmax = counts, kmin, kmax

    @classmethod
    def zeros(cls, length: int) -> "_Grid":
        return cls(np.zeros((length, 2), np.int64), np.full(length, _EMPTY_MIN), np.zeros(length, np.uint32))

    def __len__(self) -> int:
        return len(self.counts)

    def add(self, other: "_Grid", offset: int) -> None:
        """Add ``other`` (same shift) whose first bin is row ``offset`` of this grid."""
        rows = slice(offset, offset + len(other))
        self.counts[rows] += other.counts
        np.minimum(self.kmin[rows], other.kmin, out=self.kmin[rows])
        np.maximum(self.kmax[rows], other.kmax, out=self.kmax[rows])


def _regrid(grid: _Grid, lo_bin: int, shift: int, new_lo: int, new_shift: int, new_len: int) -> _Grid:
    """``grid`` (rows: bins ``lo_bin..`` at ``shift``) summed onto a coarser and/or wider grid."""
    out = _Grid.zeros(new_len)
    if len(grid) == 0:
        return out
    if new_shift == shift:
        out.add(grid, lo_bin - new_lo)
        return out
    # Aligned bins: old bin g lands in new bin g >> (new_shift - shift); the targets are sorted,
    # so one reduceat sums each run of old bins exactly (int64, no float round trip).
    target = ((lo_bin + np.arange(len(grid), dtype=np.int64)) >> (new_shift - shift)) - new_lo
    starts = np.flatnonzero(np.r_[True, target[1:] != target[:-1]])
    rows = target[starts]
    out.counts[rows] = np.add.reduceat(grid.counts, starts, axis=0)
    out.kmin[rows] = np.minimum.reduceat(grid.kmin, starts)
    out.kmax[rows] = np.maximum.reduceat(grid.kmax, starts)
    return out


class ScoreHistogram:
    """Counts of negative and positive voxels per score bin, streamed volume by volume.

    Parameters
    ----------
    bins_log2 : int, default 20
        Capacity: at most ``2**bins_log2`` bins (24 bytes each). Between 4 and 26.

    Attributes
    ----------
    counts : ndarray of int64, shape (n_bins, 2)
        Column 0 negatives, column 1 positives; row ``i`` is bin ``lo_bin + i`` in ascending
        score order.
    mixed : ndarray of bool, shape (n_bins,)
        Bins holding more than one distinct float32 score (the only source of error).
    shift : int
        log2 of the bin width in float32 keys; 0 means one float32 value per bin.
    key_min, key_max : int or None
        Smallest and largest key seen.

    Examples
    --------
    >>> import numpy as np
    >>> h = ScoreHistogram()
    >>> h.update(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    >>> h.n_negative, h.n_positive, h.exact
    (2, 2, True)
    """

    def __init__(self, *, bins_log2: int = 20) -> None:
        if isinstance(bins_log2, bool) or not isinstance(bins_log2, (int, np.integer)) or not 4 <= bins_log2 <= 26:
            raise ValueError(f"bins_log2 must be an integer in [4, 26]; got {bins_log2!r}")
        self.bins_log2 = int(bins_log2)
        self.capacity = 1 << self.bins_log2
        self.shift = 0
        self.lo_bin = 0
        self._grid = _Grid.zeros(0)
        self.key_min: int | None = None
        self.key_max: int | None = None

    # -- reading -----------------------------------------------------------------------------
    @property
    def counts(self) -> np.ndarray:
        return self._grid.counts

    @property
    def mixed(self) -> np.ndarray:
        """Bins holding more than one distinct float32 score, bool shape (n_bins,)."""
        return self._grid.kmin < self._grid.kmax

    @property
    def n_negative(self) -> int:
        return int(self.counts[:, 0].sum())

    @property
    def n_positive(self) -> int:
        return int(self.counts[:, 1].sum())

    @property
    def exact(self) -> bool:
        """True when every bin holds a single distinct float32 score (curves are then exact)."""
        return not bool(self.mixed.any())

    @property
    def nbytes(self) -> int:
        g = self._grid
        return g.counts.nbytes + g.kmin.nbytes + g.kmax.nbytes

    def thresholds(self) -> np.ndarray:
        """Smallest score of each bin as float32, shape (n_bins,); empty bins get +inf.

        For an occupied bin ``i``, ``score >= thresholds()[i]`` holds exactly for the scores in
        bins ``i, i+1, ...``.
        """
        kmin = self._grid.kmin
        out = keys_to_floats(kmin)
        out[kmin == _EMPTY_MIN] = np.inf
        return out

    def copy(self) -> "ScoreHistogram":
        new = ScoreHistogram(bins_log2=self.bins_log2)
        g = self._grid
        new._grid = _Grid(g.counts.copy(), g.kmin.copy(), g.kmax.copy())
        new.shift, new.lo_bin, new.key_min, new.key_max = self.shift, self.lo_bin, self.key_min, self.key_max
        return new

    # -- writing -----------------------------------------------------------------------------
    def update(self, scores: Any, labels: Any = None, *, mask: Any = None) -> None:
        """Add one volume (or any batch) of scores.

        Parameters
        ----------
        scores : array-like of float, shape (*spatial)
            Anomaly scores; compared as float32. Torch tensors are accepted.
        labels : array-like of bool or {0, 1}, shape (*spatial), or None
            1 = anomalous (tumour) voxel. None: every voxel is healthy (label 0).
        mask : array-like of bool, shape (*spatial), optional
            Voxels to count (the brain mask); all voxels when None.
        """
        keys, positive = prepare_keys(scores, labels, mask)
        self.add_keys(keys, positive)

    def add_keys(self, keys: np.ndarray, positive: np.ndarray, *, also: "ScoreHistogram | None" = None) -> None:
        """Add checked keys (from :func:`prepare_keys`), and the same counts to ``also`` if given.

        ``also`` (e.g. a per-case histogram) receives the batch already binned on this grid, so
        nothing is binned twice.
        """
        if keys.size == 0:
            return
        if int(keys.min()) <= _KEY_NEG_INF or int(keys.max()) >= _KEY_POS_INF:
            bad = int(np.count_nonzero((keys <= _KEY_NEG_INF) | (keys >= _KEY_POS_INF)))
            raise ValueError(
                f"scores must be finite float32 values; got {bad} NaN/inf (or beyond +-3.4e38) "
                f"of {keys.size}; replace them (np.nan_to_num) or leave them out with mask"
            )
        for start in range(0, keys.size, _BLOCK):  # bounded temporaries, cache-friendly
            batch = self._add_block(keys[start : start + _BLOCK], positive[start : start + _BLOCK])
            if also is not None:
                also.merge(batch)

    def _add_block(self, keys: np.ndarray, positive: np.ndarray) -> "ScoreHistogram":
        cmin, cmax = int(keys.min()), int(keys.max())
        self._fit(cmin, cmax, self.shift)
        shift = self.shift
        first = cmin >> shift
        length = (cmax >> shift) - first + 1
        index = keys >> np.uint32(shift)
        index -= np.uint32(first)
        index = index.astype(np.intp)  # bincount and ufunc.at are fastest on native indices
        batch = _Grid.zeros(length)
        if shift == 0:  # one key per bin: never mixed
            batch.kmin[:] = batch.kmax[:] = np.arange(first, first + length, dtype=np.int64)
        else:
            np.minimum.at(batch.kmin, index, keys)
            np.maximum.at(batch.kmax, index, keys)
        index <<= 1
        index |= positive  # bin * 2 + label: one bincount for both classes
        batch.counts = np.bincount(index, minlength=2 * length).reshape(length, 2).astype(np.int64, copy=False)
        self._grid.add(batch, first - self.lo_bin)
        out = ScoreHistogram(bins_log2=self.bins_log2)
        out._grid, out.shift, out.lo_bin, out.key_min, out.key_max = batch, shift, first, cmin, cmax
        return out

    def merge(self, other: "ScoreHistogram") -> "ScoreHistogram":
        """Add ``other`` into this histogram (exact; the coarser grid wins); returns self."""
        if other.key_min is None:
            return self
        self._fit(other.key_min, other.key_max, max(self.shift, other.shift))
        first = other.key_min >> self.shift
        length = (other.key_max >> self.shift) - first + 1
        moved = _regrid(other._grid, other.lo_bin, other.shift, first, self.shift, length)
        self._grid.add(moved, first - self.lo_bin)
        return self

    def _fit(self, key_min: int, key_max: int, min_shift: int) -> None:
        """Grow the grid (coarser and/or wider) so that keys ``key_min..key_max`` fit."""
        lo_key = key_min if self.key_min is None else min(self.key_min, key_min)
        hi_key = key_max if self.key_max is None else max(self.key_max, key_max)
        shift = min_shift
        while (hi_key >> shift) - (lo_key >> shift) >= self.capacity:
            shift += 1
        lo_bin = lo_key >> shift
        length = (hi_key >> shift) - lo_bin + 1
        if (shift, lo_bin, length) != (self.shift, self.lo_bin, len(self._grid)):
            self._grid = _regrid(self._grid, self.lo_bin, self.shift, lo_bin, shift, length)
        self.shift, self.lo_bin, self.key_min, self.key_max = shift, lo_bin, lo_key, hi_key


def prepare_keys(scores: Any, labels: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check one volume and return (keys uint32 (n,), positive bool (n,)) of the voxels in ``mask``."""
    scores = to_numpy(scores, "scores")
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise ValueError(f"scores must be a float or integer array; got dtype {scores.dtype}; pass the anomaly map")
    positive = None
    if labels is not None:
        labels = to_numpy(labels, "labels")
        check_same_shape(scores, labels, "scores", "labels")
        positive = binary_labels(labels)
    keep = flat_mask(mask, scores.shape)
    flat = scores.reshape(-1)
    if flat.dtype != np.float32:
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, rejected with a clear message
            flat = flat.astype(np.float32)
    if keep is not None:
        flat = flat[keep]
        positive = positive[keep] if positive is not None else None
    if positive is None:
        positive = np.zeros(flat.size, dtype=bool)
    return float_keys(flat), positive
