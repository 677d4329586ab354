"""Compiled (numba) PxAP histograms: one pass over each map's pixels.

The same counts as :meth:`masksal.metrics.pxap.PixelAveragePrecision.update`'s NumPy path, bit
for bit: the min-max normalization repeats NumPy's float64 operations in the same order (float32
maps are widened to float64 exactly first), and each score's bin is found the same way (the
scaled score, then one comparison with each edge around it). Written by hand because the NumPy
path builds six temporary arrays per map, which made it no faster than wsolevaluation's two
``np.histogram`` calls; one compiled pass is several times faster. Imported only when PxAP first
needs it.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.types import Array, float32, float64, int64, uint8  # type: ignore[attr-defined]

_COUNTS = Array(int64, 1, "C")
_SIGNATURES = [_COUNTS(Array(t, 3, "C"), Array(uint8, 3, "C"), Array(float64, 1, "C"), float64, int64)
               for t in (float64, float32)]


@njit(_SIGNATURES, cache=True, nogil=True)
def pxap_counts(maps: np.ndarray, masks: np.ndarray, edges: np.ndarray, inv_step: float, last: int) -> np.ndarray:
    """Pixel counts per (mask value & 3, bin) of a batch.

    Args:
        maps: ``(B, H, W)`` float64 or float32 raw maps (each min-max normalized here; a constant
            map, or one with NaN, counts as all zeros).
        masks: ``(B, H, W)`` uint8, 0 background, 1 object, 255 ignore.
        edges: the histogram's ``(n_bins + 1,)`` edges. inv_step: ``1.0 / threshold_step``.
        last: the bin ``[1, 2)`` (``n_bins - 2``).

    Returns:
        ``(4 n_bins,)`` int64: ``counts[(mask & 3) * n_bins + bin]`` (background first, then
        object; masks 255 land in the fourth block).
    """
    nb, h, w = maps.shape
    nbins = edges.size - 1
    counts = np.zeros(4 * nbins, np.int64)
    for i in range(nb):
        lo, top = np.inf, -np.inf
        nan = False
        for y in range(h):
            for x in range(w):
                v = np.float64(maps[i, y, x])
                nan |= np.isnan(v)
                lo = min(lo, v)
                top = max(top, v)
        hi = top - lo  # = max(m - lo): subtracting lo rounds monotonically
        for y in range(h):
            for x in range(w):
                block = np.int64(masks[i, y, x] & 3) * nbins
                if nan or hi == 0.0:
                    counts[block] += 1  # a score of 0: the first bin
                    continue
                s = (np.float64(maps[i, y, x]) - lo) / hi
                k: int = min(int(np.int64(s * inv_step)), last)
                if s < edges[k]:
                    k -= 1
                if s >= edges[k + 1]:
                    k += 1
                counts[block + k] += 1
    return counts
