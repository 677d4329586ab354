"""Compiled (numba) contour boxes of every level of a uint8 map: three union-find sweeps.

The same boxes as :func:`masksal.metrics._levelboxes.contour_boxes` (see there for what
``cv2.findContours(RETR_TREE)`` reports at each level ``L`` of ``u > L``), computed by sweeping the
pixels, sorted by value once (a counting sort), and keeping each component's box in a union-find:

1. *Holes*: ``L`` rises from 0; the pixels ``u == L`` join the background ``u <= L``
   (4-connected), whose component outside the image (a one-pixel frame) never is a hole. At
   every level the other components are the holes. When a component joins the outside, each of
   its pixels records the level, ``gamma``: from then on the pixel is outside every filled
   component.
2. *Components*: ``L`` falls from ``max(u) - 1``; the pixels ``u == L + 1`` join the foreground
   (8-connected); at every level each component gives a box.
3. *Largest contour* (v1): sweep 2 keeps twice the polygon area of each component (``2 n4 +
   n3``: 2 x 2 pixel blocks with four or three corners in it, counted as each pixel arrives) and
   its first pixel in raster order (OpenCV's tie-break). OpenCV compares the areas of the
   components with their holes filled, so at a level with holes where another component's box
   could hold the best area, the components of the hole-filled foreground ``gamma > L`` decide:
   swept the same way (:func:`filled_v1_boxes`), or read from OpenCV at those few levels.

Which neighbours of a pixel are present when it arrives depends only on the map (higher, or equal
and before in raster order, for the falling sweep; lower, or equal and before, for the rising
one): the counting sort (:mod:`masksal.metrics._levelsort_jit`) works both ring masks out for every
pixel in a vectorized raster pass and packs them with the pixel's position, so that a sweep reads
one word per pixel. Present
neighbours that touch each other are already in one component, so a new pixel looks up
(``find``) one neighbour per group of touching neighbours (a table over the 256 neighbourhoods),
usually one; the grid has a one-pixel frame so that no neighbour needs a bounds check.

Written by hand because neither OpenCV nor scikit-image offers a component tree with per-node
boxes, and a compiled sweep is what makes all 255 levels cost about one pass over the pixels. The
module imports numba at the top: it is loaded only when MaxBoxAcc first needs it.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.types import Array, Tuple, boolean, int32, int64, uint8, uint32, uint64, void  # type: ignore[attr-defined]

from masksal.metrics._levelboxes import neighbour_tables
from masksal.metrics._levelsort_jit import _BG, _FG, _P, _X, sorted_pixels

# numba caches a compiled function with the code of the compiled functions it calls from other
# modules, but keys that cache by this file alone: an edit of one of those modules would leave
# stale code running from the cache. Their SHA-256 is written here (a test compares it with the
# files), so that editing them means editing this file too, which invalidates the cache.
CALLEES_SHA256 = {
    "_levelsort_jit.py": "7cde4620c65dfe7c9c30396e25caed093a23424f0f635293db7e14d3ef8091b8",
}

NUM_LEVELS = 256
_GROW = 1024  # initial room for the boxes of one map (doubled when full)

# Explicit signatures: one compiled version of each function (numba would otherwise compile extra
# ones for literal arguments and for each mix of integer types), compiled or loaded from the
# cache when this module is imported.
_I32, _I32_2D, _I64, _U8, _BOOL = Array(int32, 1, "C"), Array(int32, 2, "C"), \
    Array(int64, 1, "C"), Array(uint8, 1, "C"), Array(boolean, 1, "C")
_U32, _U64 = Array(uint32, 1, "C"), Array(uint64, 1, "C")
_U = np.uint64
_BUFFERS = Tuple((_I32, _I32_2D))
_SWEPT = Tuple((_I32, _I32_2D, int64))

_REP8, _NREP8, _REP4, _NREP4, _AREA2 = neighbour_tables()
_NREP8, _NREP4, _AREA2 = _NREP8.astype(np.uint8), _NREP4.astype(np.uint8), _AREA2.astype(np.int32)


@njit(uint32(_U32, uint32), cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, i: int) -> int:
    """Root of ``i``, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(void(_I32_2D, uint32, int32, int32), cache=True, nogil=True, inline="always")
def _grow(rec: np.ndarray, c: int, pi: int, xi: int) -> None:
    """Extend component ``c``'s record (first and last pixel, leftmost and rightmost column) by
    the pixel at framed index ``pi``, column ``xi``."""
    rec[c, 0] = min(rec[c, 0], pi)
    rec[c, 1] = max(rec[c, 1], pi)
    rec[c, 2] = min(rec[c, 2], xi)
    rec[c, 3] = max(rec[c, 3], xi)


@njit(int64(_U32, _I32_2D, _U32, int64, uint32, int32, int32), cache=True, nogil=True, inline="always")
def _open(parent: np.ndarray, rec: np.ndarray, live: np.ndarray, nlive: int, c: int, pi: int, xi: int) -> int:
    """Start component ``c`` at the pixel of framed index ``pi``, column ``xi`` (its own root,
    its record that pixel, appended to ``live``); return the new count of ``live``."""
    parent[c] = c
    rec[c, 0] = rec[c, 1] = pi
    rec[c, 2] = rec[c, 3] = xi
    live[nlive] = c
    return nlive + 1


@njit(int64(_U32, _U32, _U64, uint64, uint64, uint64, _U32), cache=True, nogil=True, inline="always")
def _neighbour_roots(parent: np.ndarray, label: np.ndarray, offs: np.ndarray, p: int, mask: int, nrep: int,
                     roots: np.ndarray) -> int:
    """Write to ``roots`` the distinct roots of the components of pixel ``p``'s ``nrep`` neighbour
    groups (neighbour mask ``mask``; ``offs`` from :func:`_rep_offsets`), in order; return how
    many. Distinct roots stay distinct sets while they are merged one by one into the first."""
    k = 0
    for t in range(_U(0), nrep):
        d = _find(parent, label[p + offs[mask << _U(2) | t]])
        for j in range(k):
            if roots[j] == d:
                break
        else:
            roots[k] = d
            k += 1
    return k


@njit(void(_I32_2D, uint32, uint32), cache=True, nogil=True, inline="always")
def _absorb(rec: np.ndarray, c: int, d: int) -> None:
    """Extend component ``c``'s record by component ``d``'s (merged into it)."""
    rec[c, 0] = min(rec[c, 0], rec[d, 0])
    rec[c, 1] = max(rec[c, 1], rec[d, 1])
    rec[c, 2] = min(rec[c, 2], rec[d, 2])
    rec[c, 3] = max(rec[c, 3], rec[d, 3])


@njit(int64(_U32, int64, _U32), cache=True, nogil=True, inline="always")
def _drop_merged(live: np.ndarray, nlive: int, parent: np.ndarray) -> int:
    """Keep in ``live[:nlive]`` only the components not merged into another (their own root),
    in order; return how many are left."""
    kept = 0
    for j in range(nlive):
        c = live[j]
        if parent[c] == c:
            live[kept] = c
            kept += 1
    return kept


@njit(_BUFFERS(_I32, _I32_2D, int64, int64), cache=True, nogil=True)
def _room(out_level: np.ndarray, out_box: np.ndarray, n_out: int, more: int) -> tuple[np.ndarray, np.ndarray]:
    """Buffers with room for ``more`` boxes after the first ``n_out`` (doubled as needed)."""
    if n_out + more <= out_level.size:
        return out_level, out_box
    size = max(2 * out_level.size, n_out + more)
    grown_level = np.empty(size, np.int32)
    grown_level[:n_out] = out_level[:n_out]
    grown_box = np.empty((size, 4), np.int32)
    grown_box[:n_out] = out_box[:n_out]
    return grown_level, grown_box


@njit(_U64(Array(int64, 2, "C", readonly=True), int64), cache=True, nogil=True)
def _rep_offsets(rep: np.ndarray, fw: int) -> np.ndarray:
    """``(256 * 4,)``: the flat offsets (modulo 2**64) on a grid of row length ``fw`` of the ring
    positions ``rep`` (:func:`masksal.metrics._levelboxes.neighbour_tables`), 4 per mask."""
    ring = np.empty(8, np.int64)
    for j in range(8):
        ring[j] = (1 if j in (4, 5, 6) else -1 if j in (0, 1, 2) else 0) * fw + \
            (1 if j in (2, 3, 4) else -1 if j in (0, 6, 7) else 0)
    out = np.empty(NUM_LEVELS * 4, np.uint64)
    for m in range(NUM_LEVELS):
        for t in range(4):
            out[m * 4 + t] = _U(ring[rep[m, t]])
    return out


@njit(_SWEPT(_U64, _I64, _U8, int64, int64, int64, _BOOL, _U32, _I32, _I32_2D, int64, _U8, _I64), cache=True,
      nogil=True)
def _hole_sweep(order: np.ndarray, start: np.ndarray, u: np.ndarray, h: int, w: int, top: int, used: np.ndarray,
                label: np.ndarray, out_level: np.ndarray, out_box: np.ndarray, n_out: int, gamma: np.ndarray,
                slack: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sweep 1: hole contours of the levels ``L < top`` (boxes grown by one pixel, then clipped
    like wsolevaluation's), ``gamma`` (``(h * w,)``: the level each pixel joins the outside,
    ``top`` if not below it) and per used level the most that filling the holes can add to
    twice a component's polygon area (``slack``, 0 where there is no hole): a 2 x 2 block gains
    at most 2 and only if it meets a hole's box (a hole's box holds whatever the hole
    encloses), so twice the number of blocks that meet a hole's box.

    Pixels carry the label of a component (``label``, on the framed grid); components form a
    union-find of their own (``parent``), compact where pixels are many. Component 0 is the
    outside: the frame's, never a hole, never merged into another.
    """
    fw = w + 2
    label[:fw] = 0  # the frame is the outside; inside, a pixel's label is read only once set
    label[(h + 1) * fw:] = 0
    for y in range(1, h + 1):
        label[y * fw] = label[y * fw + fw - 1] = 0
    n = h * w + 1
    parent = np.empty(n, np.uint32)
    # Per component: first and last pixel in raster order (their rows are the box's top and
    # bottom), leftmost and rightmost column; one record per 16 bytes.
    rec = np.empty((n, 4), np.int32)
    into = np.empty(n, np.int32)  # the component each one was merged into (-1: none yet), never compressed
    when = np.empty(n, np.int32)  # the level it was
    live = np.empty(n, np.uint32)  # the components created, those merged since dropped at each used level
    roots = np.empty(4, np.uint32)  # of a pixel's neighbour groups (at most 4)
    parent[0] = 0
    into[0] = -1
    ncomp, nlive = 1, 0
    offs = _rep_offsets(_REP4, fw)
    # Indices are unsigned in the loops below: numba then skips its negative-index wrap-around.
    # Box rows come from the first and last pixel (raster order, framed grid) of a component.
    for level in range(top):
        for k in range(_U(start[level]), _U(start[level + 1])):
            e = order[k]
            p = e & _P
            mask = e >> _BG
            nrep = _NREP4[mask]
            if nrep == 1:  # most pixels: one group of neighbours, most often the outside's
                c = label[p + offs[mask << _U(2)]]
                if c != 0:
                    c = _find(parent, c)
                    if c != 0:
                        pi, xi = np.int32(p), np.int32(e >> _X & _U(0x7FFF))
                        _grow(rec, c, pi, xi)
            elif nrep == 0:  # a new component
                c = np.uint32(ncomp)
                ncomp += 1
                nlive = _open(parent, rec, live, nlive, c, np.int32(p), np.int32(e >> _X & _U(0x7FFF)))
                into[c] = -1
            else:
                k = _neighbour_roots(parent, label, offs, p, mask, _U(nrep), roots)
                c = roots[0]
                for j in range(1, k):
                    d = roots[j]
                    if d == 0 or (c != 0 and d < c):  # into the outside, else into the older
                        c, d = d, c
                    parent[d] = c
                    into[d] = c
                    when[d] = level
                    if c != 0:
                        _absorb(rec, c, d)
                if c != 0:
                    pi, xi = np.int32(p), np.int32(e >> _X & _U(0x7FFF))
                    _grow(rec, c, pi, xi)
            label[p] = c
        if used[level]:
            nlive = _drop_merged(live, nlive, parent)
            for j in range(nlive):
                c = live[j]
                slack[level] += 2 * (rec[c, 3] - rec[c, 2] + 2) * (rec[c, 1] // fw - rec[c, 0] // fw + 2)
            if n_out + nlive > out_level.size:
                out_level, out_box = _room(out_level, out_box, n_out, nlive)
            for j in range(nlive):
                c = live[j]
                out_level[n_out] = level
                out_box[n_out, 0] = rec[c, 2] - 1
                out_box[n_out, 1] = rec[c, 0] // fw - 2
                out_box[n_out, 2] = min(rec[c, 3] + 2, w - 1)
                out_box[n_out, 3] = min(rec[c, 1] // fw + 1, h - 1)
                n_out += 1
    # A component's pixels join the outside when the chain of merges from it reaches component 0:
    # at the level of the last merge on the chain (memoized in `joined`; top if it never does).
    joined = np.full(ncomp, -1, np.int64)
    for c in range(1, ncomp):
        d = c
        while joined[d] == -1 and into[d] > 0:
            d = into[d]
        value = joined[d] if joined[d] >= 0 else (when[d] if into[d] == 0 else top)
        d = c
        while joined[d] == -1:
            joined[d] = value
            if into[d] <= 0:
                break
            d = into[d]
    for y in range(h):  # pixels at the top level, never labelled, keep gamma = u = top
        lab = label[(y + 1) * fw + 1:(y + 1) * fw + 1 + w]
        for x in range(w):
            c = lab[x]
            if c != 0 and u[y * w + x] < top:
                gamma[y * w + x] = joined[c]
    return out_level, out_box, n_out


@njit(_SWEPT(_U64, _I64, int64, int64, int64, _BOOL, _U32, boolean, _I32, _I32_2D, int64, _I32_2D, _I64, _I64),
      cache=True, nogil=True)
def _component_sweep(order: np.ndarray, start: np.ndarray, h: int, w: int, top: int, used: np.ndarray,
                     label: np.ndarray, emit_all: bool, out_level: np.ndarray, out_box: np.ndarray, n_out: int,
                     v1_box: np.ndarray, slack: np.ndarray, unsure: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Sweeps 2 and 3: 8-connected components of ``vals > L`` for the levels ``L < top``, the
    pixels of value ``v`` being ``order[start[v]:start[v + 1]]``
    (:func:`~masksal.metrics._levelsort_jit.sorted_pixels`).

    At every used level: with ``emit_all``, append every component's contour box; write the
    box of the component of largest polygon area (ties: first pixel last in raster order) to
    ``v1_box[L]``, and mark ``unsure[L]`` unless it would stay the largest with holes filled,
    filling adding at most ``slack[L]`` to twice a component's area (see :func:`_hole_sweep`).
    Pixels carry component labels as in :func:`_hole_sweep`.
    """
    fw = w + 2  # a pixel's label is read only once set: label needs no initial values
    n = h * w
    parent = np.empty(n, np.uint32)
    # Per component: first and last pixel in raster order (the first is OpenCV's tie-break, their
    # rows the box's top and bottom), leftmost and rightmost column, twice the polygon area.
    rec = np.empty((n, 8), np.int32)
    live = np.empty(n, np.uint32)
    roots = np.empty(4, np.uint32)  # of a pixel's neighbour groups (at most 4)
    ncomp, nlive = 0, 0
    offs = _rep_offsets(_REP8, fw)
    for level in range(top - 1, -1, -1):
        for k in range(_U(start[level + 1]), _U(start[level + 2])):
            e = order[k]
            p = e & _P
            mask = e >> _FG & _U(0xFF)
            nrep = _NREP8[mask]
            pi, xi = np.int32(p), np.int32(e >> _X & _U(0x7FFF))
            if nrep == 1:  # most pixels: one group of neighbours
                c = _find(parent, label[p + offs[mask << _U(2)]])
            elif nrep == 0:  # a new component
                c = np.uint32(ncomp)
                ncomp += 1
                nlive = _open(parent, rec, live, nlive, c, pi, xi)
                rec[c, 4] = 0
            else:
                k = _neighbour_roots(parent, label, offs, p, mask, _U(nrep), roots)
                c = roots[0]
                for j in range(1, k):
                    d = roots[j]
                    if rec[d, 4] > rec[c, 4]:  # into the larger
                        c, d = d, c
                    parent[d] = c
                    _absorb(rec, c, d)
                    rec[c, 4] += rec[d, 4]
            _grow(rec, c, pi, xi)
            rec[c, 4] += _AREA2[mask]
            label[p] = c
        if used[level]:
            nlive = _drop_merged(live, nlive, parent)
            if emit_all:
                if n_out + nlive > out_level.size:
                    out_level, out_box = _room(out_level, out_box, n_out, nlive)
                for j in range(nlive):
                    c = live[j]
                    out_level[n_out] = level
                    out_box[n_out, 0] = rec[c, 2]
                    out_box[n_out, 1] = rec[c, 0] // fw - 1
                    out_box[n_out, 2] = min(rec[c, 3] + 1, w - 1)
                    out_box[n_out, 3] = min(rec[c, 1] // fw, h - 1)
                    n_out += 1
            best = live[0]
            for j in range(1, nlive):
                c = live[j]
                if rec[c, 4] > rec[best, 4] or (rec[c, 4] == rec[best, 4] and rec[c, 0] > rec[best, 0]):
                    best = c
            # Filling holes only adds area, at most slack[L] (twice the area) and at most up to the
            # box (x1 - x0) (y1 - y0) a contour encloses: unless another component could reach
            # the best area so, holes change nothing (a component in a hole of another is
            # outdone by it: that one reaches it).
            for j in range(nlive):
                c = live[j]
                if c != best and slack[level] > 0 and rec[c, 4] + slack[level] >= rec[best, 4] \
                        and 2 * (rec[c, 3] - rec[c, 2]) * (rec[c, 1] // fw - rec[c, 0] // fw) >= rec[best, 4]:
                    unsure[level] = 1
                    break
            v1_box[level, 0] = rec[best, 2]
            v1_box[level, 1] = rec[best, 0] // fw - 1
            v1_box[level, 2] = min(rec[best, 3] + 1, w - 1)
            v1_box[level, 3] = min(rec[best, 1] // fw, h - 1)
    return out_level, out_box, n_out


@njit(Tuple((_I32, _I32_2D, _I32_2D, _BOOL, _U8))(Array(uint8, 2, "C"), _BOOL), cache=True, nogil=True)
def map_level_boxes(u: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                               np.ndarray]:
    """Contour boxes of one uint8 map at every used level below its maximum (sweeps 1 and 2).

    Args:
        u: ``(H, W)`` uint8 map (C-contiguous, fewer than 2**15 pixels a side).
        used: ``(256,)`` bool, the levels to report.

    Returns:
        ``(level (n,) int32, box (n, 4) int32, v1_box (256, 4) int32, refill (256,) bool,
        gamma (H * W,) uint8)``: every contour's box (outer and hole) with its level, sorted by
        level; the largest contour's box per level (rows of levels ``>= max(u)`` or unused are
        0); the used levels where that box is not final, having holes that could make another
        component the largest (see :func:`filled_v1_boxes`); and the hole-filled image. Boxes are
        wsolevaluation's ``(x, y, x + w, y + h)``, right and bottom ends clipped to the image.
    """
    h, w = u.shape
    flat = u.ravel()
    v1_box = np.zeros((NUM_LEVELS, 4), np.int32)
    refill = np.zeros(NUM_LEVELS, np.bool_)
    out_level = np.empty(_GROW, np.int32)
    out_box = np.empty((_GROW, 4), np.int32)
    gamma = flat.copy()
    top = 0
    for i in range(flat.size):
        top = max(top, int(flat[i]))
    if top == 0:
        return out_level[:0], out_box[:0], v1_box, refill, gamma
    order, start = sorted_pixels(flat, h, w)
    slack = np.zeros(NUM_LEVELS, np.int64)
    unsure = np.zeros(NUM_LEVELS, np.int64)
    label = np.empty((h + 2) * (w + 2), np.uint32)  # one grid for both sweeps
    out_level, out_box, n_out = _hole_sweep(order, start, flat, h, w, top, used, label, out_level, out_box, 0, gamma,
                                            slack)
    out_level, out_box, n_out = _component_sweep(order, start, h, w, top, used, label, True, out_level, out_box,
                                                 n_out, v1_box, slack, unsure)
    # Where a level has no hole, the filled components are the components; elsewhere, unless
    # the largest one is sure to stay so, the areas of the hole-filled components decide.
    for lv in range(top):
        refill[lv] = used[lv] and unsure[lv] > 0
    # Group the boxes by level (counting sort; the sweeps emit holes rising, components falling).
    count = np.zeros(NUM_LEVELS + 1, np.int64)
    for i in range(n_out):
        count[out_level[i] + 1] += 1
    for v in range(NUM_LEVELS):
        count[v + 1] += count[v]
    level = np.empty(n_out, np.int32)
    box = np.empty((n_out, 4), np.int32)
    for i in range(n_out):
        j = count[out_level[i]]
        count[out_level[i]] += 1
        level[j] = out_level[i]
        box[j] = out_box[i]
    return level, box, v1_box, refill, gamma


@njit(_I32_2D(Array(uint8, 2, "C"), _BOOL, _I32_2D), cache=True, nogil=True)
def filled_v1_boxes(gamma: np.ndarray, levels: np.ndarray, v1_box: np.ndarray) -> np.ndarray:
    """Sweep 3: the largest contour's box at the marked levels, from the hole-filled image.

    Args:
        gamma: ``(H, W)`` uint8 hole-filled image of :func:`map_level_boxes`.
        levels: ``(256,)`` bool, the levels to redo (``refill`` of :func:`map_level_boxes`).
        v1_box: ``(256, 4)`` int32 boxes, overwritten at those levels.
    """
    h, w = gamma.shape
    flat = gamma.ravel()
    top = 0
    for i in range(flat.size):
        top = max(top, int(flat[i]))
    order, start = sorted_pixels(flat, h, w)
    out_level = np.empty(1, np.int32)
    out_box = np.empty((1, 4), np.int32)
    _component_sweep(order, start, h, w, top, levels, np.empty((h + 2) * (w + 2), np.uint32), False, out_level,
                     out_box, 0, v1_box, np.zeros(NUM_LEVELS, np.int64), np.zeros(NUM_LEVELS, np.int64))
    return v1_box
