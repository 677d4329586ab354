"""Compiled (numba) first step of the contour sweeps (:mod:`masksal.metrics._levelboxes_jit`): a
uint8 map's pixels sorted by value (a counting sort), each packed with the ring masks of the
neighbours present when it arrives in either sweep, worked out in one vectorized raster pass.

Which neighbours of a pixel are present when it arrives depends only on the map (higher, or equal
and before in raster order, for the falling sweep; lower, or equal and before, for the rising
one), so the sweeps read one word per pixel instead of eight labels.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.types import Array, Tuple, int16, int64, uint8, uint16, uint64, void  # type: ignore[attr-defined]

NUM_LEVELS = 256
_I64, _U8, _U64 = Array(int64, 1, "C"), Array(uint8, 1, "C"), Array(uint64, 1, "C")
_U = np.uint64
_P, _X, _FG, _BG = _U(0xFFFFFFFF), _U(32), _U(47), _U(55)  # fields of a sorted pixel (sorted_pixels)


@njit(void(Array(int16, 1, "C"), Array(int16, 1, "C"), Array(int16, 1, "C"), Array(uint16, 1, "C"), int64),
      cache=True, nogil=True)
def _row_masks(up: np.ndarray, mid: np.ndarray, down: np.ndarray, out: np.ndarray, w: int) -> None:
    """The masks of :func:`sorted_pixels` (``fg | bg << 8``) of one row, from it and its
    neighbour rows framed by -1 (``(w + 2,)`` int16 each): a loop the compiler vectorizes."""
    for x in range(w):
        v = mid[x + 1]
        fg = (np.int16(up[x] >= v) | np.int16(up[x + 1] >= v) << 1 | np.int16(up[x + 2] >= v) << 2
              | np.int16(mid[x + 2] > v) << 3 | np.int16(down[x + 2] > v) << 4 | np.int16(down[x + 1] > v) << 5
              | np.int16(down[x] > v) << 6 | np.int16(mid[x] >= v) << 7)
        bg = (np.int16(up[x] <= v) | np.int16(up[x + 1] <= v) << 1 | np.int16(up[x + 2] <= v) << 2
              | np.int16(mid[x + 2] < v) << 3 | np.int16(down[x + 2] < v) << 4 | np.int16(down[x + 1] < v) << 5
              | np.int16(down[x] < v) << 6 | np.int16(mid[x] <= v) << 7)
        out[x] = np.uint16(fg | bg << 8)


@njit(Tuple((_U64, _I64))(_U8, int64, int64), cache=True, nogil=True)
def sorted_pixels(vals: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels grouped by value (a counting sort; raster order within a value), each with the
    neighbours present when it arrives in either sweep.

    Args:
        vals: ``(h * w,)`` uint8 image (raster order).

    Returns:
        ``(order, start)``: ``order[start[v]:start[v + 1]]`` are the pixels of value ``v``, each
        as ``p | x << 32 | fg << 47 | bg << 55``, ``p`` its index on the grid framed by one pixel
        (``(h + 2) x (w + 2)``) and ``x`` its column; ``fg`` (``bg``) is the ring mask of the
        neighbours already in the foreground of the falling sweep (the background of the rising
        sweep, the frame included) when the pixel joins it.
    """
    start = np.zeros(NUM_LEVELS + 1, np.int64)
    for i in range(h * w):
        start[vals[i] + 1] += 1
    for v in range(NUM_LEVELS):
        start[v + 1] += start[v]
    fill = start[:NUM_LEVELS].astype(np.uint64)
    order = np.empty(h * w, np.uint64)
    # A neighbour is in the falling sweep's foreground when it is higher, or equal and before
    # in raster order (NW, N, NE, W); in the rising sweep's background when lower, or equal and
    # before. The frame (-1) is always background, never foreground. Three framed rows roll.
    fw = w + 2
    rows = np.full(3 * fw, -1, np.int16)
    for x in range(w):
        rows[fw + x + 1] = vals[x]
    masks = np.empty(w, np.uint16)
    for y in range(h):
        up = rows[y % 3 * fw:y % 3 * fw + fw]
        mid = rows[(y + 1) % 3 * fw:(y + 1) % 3 * fw + fw]
        down = rows[(y + 2) % 3 * fw:(y + 2) % 3 * fw + fw]
        if y + 1 < h:
            for x in range(w):
                down[x + 1] = vals[(y + 1) * w + x]
        else:
            down[:] = -1
        _row_masks(up, mid, down, masks, w)
        row = vals[y * w:(y + 1) * w]
        p0 = (y + 1) * fw + 1
        for x in range(w):
            v = row[x]
            m = _U(masks[x])
            order[fill[v]] = _U(p0 + x) | _U(x) << _U(32) | (m & _U(0xFF)) << _FG | (m >> _U(8)) << _BG
            fill[v] += _U(1)
    return order, start
