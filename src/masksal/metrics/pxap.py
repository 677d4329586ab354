"""PxAP: pixel average precision of saliency maps against pixel masks (Choe et al. 2020)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from masksal.metrics.base import Backend, Metric, NanPolicy, check_histogram_options, check_maps, check_masks
from masksal.types import Batch


class PixelAveragePrecision(Metric):
    r"""Pixel average precision (PxAP, in %), pooled over the split as in clovaai/wsolevaluation.

    Each map is min-max normalized (constant -> zeros). Two histograms, of the map values at
    object pixels (mask 1) and at background pixels (mask 0), are accumulated over the whole
    split (ignore pixels, mask 255, are left out) on the bins ``[t_i, t_{i+1})`` with edges
    ``arange(0, 1, step)`` followed by 1, 2, 3 (so a value of exactly 1 has its own bin).
    Scanning thresholds from high to low, ``TP``, ``FP`` are the reversed cumulative sums,
    ``P = TP / (TP + FP)``, ``R = TP / #object pixels`` and

    .. math:: PxAP = 100 \sum_{i \ge 1,\ TP_i + FP_i > 0} P_i\,(R_i - R_{i-1})

    (no interpolation). Pooling the pixels of all images is not the mean of per-image APs.
    PxAP is NaN when the split has no object pixel (all masks empty), where it is undefined.

    Args:
        threshold_step: bin width of the histograms (wsolevaluation: 0.001).
        nan_maps: ``"raise"`` (default) or ``"zero"`` (a NaN map counts as all zeros, as the
            reference does).
        backend: ``"numba"`` (one compiled pass per map, the ``fast`` extra), ``"numpy"``, or
            ``"auto"`` (default: numba when importable); identical histograms either way.

    ``update(maps, batch)``: ``maps`` ``(B, H, W)`` float, ``batch.masks`` ``(B, H, W)`` uint8
    (1 object, 0 background, 255 ignore). ``compute()`` keys: ``pxap``.
    """

    name = "pxap"

    def __init__(self, threshold_step: float = 0.001, nan_maps: NanPolicy = "raise",
                 backend: Backend = "auto") -> None:
        self.backend: Literal["numba", "numpy"] = check_histogram_options(threshold_step, nan_maps, backend)
        self.threshold_step = float(threshold_step)
        self.nan_maps: NanPolicy = nan_maps
        self.edges = np.append(np.arange(0, 1, self.threshold_step), [1.0, 2.0, 3.0])
        super().__init__()

    def _config(self) -> tuple[object, ...]:
        return (self.threshold_step, self.nan_maps)

    def _empty_state(self) -> dict[str, np.ndarray]:
        nbins = len(np.arange(0, 1, self.threshold_step)) + 2
        return {"count": np.zeros(1), "hist_object": np.zeros(nbins), "hist_background": np.zeros(nbins)}

    def update(self, maps: Tensor, batch: Batch) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        compiled = self.backend == "numba"
        arr = check_maps(maps, batch, nan=self.nan_maps, metric=self.name, keep_float32=compiled)  # once per batch
        masks = check_masks(batch, self.name)
        nbins = len(self.edges) - 1
        # Counts of (pixel class, bin): mask & 3 is 0 for background, 1 for object, 3 for ignore
        # (255), so background bins come first, then object bins; the ignore bins are dropped.
        if compiled:
            from masksal.metrics._pxap_jit import pxap_counts

            counts = pxap_counts(np.ascontiguousarray(arr), np.ascontiguousarray(masks), self.edges,
                                 1.0 / self.threshold_step, len(self.edges) - 3)
        else:  # one histogram per map (its temporaries stay in cache)
            counts = np.zeros(4 * nbins, dtype=np.int64)
            for m, mask in zip(arr, masks, strict=True):
                key = self.bin_index(_normalize(m))
                key += (mask & 3).astype(np.intp) * nbins
                counts += np.bincount(key.ravel(), minlength=4 * nbins)
        self._state["hist_background"] += counts[:nbins]
        self._state["hist_object"] += counts[nbins:2 * nbins]
        self._state["count"] += arr.shape[0]

    def bin_index(self, scores: np.ndarray) -> np.ndarray:
        """The histogram bin of each score: ``i`` with ``edges[i] <= s < edges[i + 1]``.

        The same bins as ``np.histogram(scores, bins=edges)`` for scores in [0, 1] (they never
        reach the closed last edge), without its sort or a binary search: ``s * (1 / step)`` lands
        within one bin of the right one, and comparing with the two edges around it settles it.

        Args:
            scores: float64 array of normalized scores in [0, 1].

        Returns:
            int64 array of the same shape, values in ``[0, len(edges) - 2]``.
        """
        last = len(self.edges) - 3  # the bin [1, 2)
        idx = (scores * (1.0 / self.threshold_step)).astype(np.intp)
        np.minimum(idx, last, out=idx)
        idx -= scores < self.edges.take(idx)
        idx += scores >= self.edges.take(idx + 1)
        return idx

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """Precision and recall at every threshold, from the highest threshold down.

        Returns:
            ``(precision, recall)``, float64 arrays of length ``n_bins``; precision is NaN where
            no pixel is predicted.
        """
        tp = self._state["hist_object"][::-1].cumsum()
        fp = self._state["hist_background"][::-1].cumsum()
        n_obj = float(self._state["hist_object"].sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
            recall = tp / n_obj if n_obj > 0 else np.full_like(tp, np.nan)
        return precision, recall

    def compute(self) -> dict[str, float]:
        """``{"pxap": AP in %}`` (NaN without any object pixel)."""
        if float(self._state["hist_object"].sum()) == 0:
            return {"pxap": float("nan")}
        precision, recall = self.precision_recall()
        tp = self._state["hist_object"][::-1].cumsum()
        fp = self._state["hist_background"][::-1].cumsum()
        predicted = (tp + fp) != 0
        terms = precision[1:] * np.diff(recall)
        return {"pxap": 100.0 * float(terms[predicted[1:]].sum())}


def _normalize(m: np.ndarray) -> np.ndarray:
    """:func:`masksal.metrics.base.minmax_normalize` for one map, bit for bit, in two passes (a
    NaN map shows in its minimum, so it needs no pass of its own)."""
    lo = m.min()
    d = m - lo
    hi = d.max()
    if np.isnan(lo) or hi == 0:
        return np.zeros_like(m)
    d /= hi
    return d
