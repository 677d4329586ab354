"""The contour boxes of every threshold level of a map in one pass, for MaxBoxAcc.

wsolevaluation binarizes the uint8 map ``u`` at each level ``L`` (foreground ``u > L``) and reads
``cv2.findContours(RETR_TREE)``. Its contours are, exactly (checked against OpenCV in the tests):

* one outer contour per 8-connected foreground component, whose bounding box is the component's;
* one hole contour per 4-connected background component that does not reach the image border
  (a *hole*), whose bounding box is the hole's grown by one pixel on every side;
* the contour of largest ``cv2.contourArea`` (MaxBoxAcc v1) is the outer contour of a top-level
  component (one that lies in no hole), first in OpenCV's list on ties, i.e. the one whose first
  pixel in raster order comes last. Its polygon area is ``n4 + n3 / 2``, with ``n4`` (``n3``)
  the number of 2 x 2 pixel blocks with four (three) corners in the component filled with its
  holes.

The three families (components of ``{u > L}``, holes of ``{u <= L}``, filled top-level
components) are the upper level sets of three grey images: ``u``, ``255 - u`` (with the image's
surroundings as an extra node), and ``u`` with its holes filled (``o``); each comes from one
:func:`masksal.metrics._levelsets.hierarchy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from masksal.metrics._levelsets import Hierarchy, Runs, component_sums, hierarchy, index_bits, level_runs
from masksal.metrics.boxes import box_iou

VALUE_BITS = 8  # uint8 levels
NUM_LEVELS = 256


@dataclass
class LevelBoxes:
    """Predicted boxes of a batch of maps at every evaluated level, as wsolevaluation reads them.

    Boxes are ``(x, y, x + w, y + h)`` of the contour's bounding rectangle with the right and
    bottom ends clipped to the image (then read as inclusive), in the map's coordinates.

    Attributes:
        v2_map, v2_level: ``(n,)`` map and level index of each box of ``v2_box``, sorted by map,
            then level.
        v2_box: ``(n, 4)`` int64 boxes of every contour (outer and hole) of every level.
        v1_box: ``(B, len(levels), 4)`` int64 box of the contour of largest area at each level.
        has_fg: ``(B, len(levels))`` bool, whether the map has a foreground (a contour) at the
            level; where not, wsolevaluation scores the fallback box ``[0, 0, 0, 0]``.
    """

    v2_map: np.ndarray
    v2_level: np.ndarray
    v2_box: np.ndarray
    v1_box: np.ndarray
    has_fg: np.ndarray


def contour_boxes(maps: np.ndarray, levels: np.ndarray) -> LevelBoxes:
    """The contour boxes of ``cv2.findContours(uint8(m * 255) > L, RETR_TREE)`` for every level.

    The maps of a batch are stacked into one image, one row apart (a separator row that is
    background at every level and part of the image's surroundings), so that the per-call work
    is shared.

    Args:
        maps: ``(B, H, W)`` (or ``(H, W)``) float64 maps in [0, 1].
        levels: int64 levels in [0, 254].

    Returns:
        the boxes of all maps and levels (see :class:`LevelBoxes`).
    """
    if maps.ndim == 2:
        maps = maps[None]
    nm, hh, w = maps.shape
    stride = hh + 1
    rows = nm * stride - 1
    n = rows * w
    levels = np.asarray(levels, dtype=np.int64)
    ib = index_bits(n)
    fb = 62 - VALUE_BITS - ib  # fraction bits: (value, fraction, position) fit one int64
    if fb < VALUE_BITS:
        raise ValueError(f"maxboxacc: {nm} maps of {hh} x {w} pixels are too large for one pass")
    # q >> fb == uint8(m * 255) exactly: scaling by a power of two is exact and
    # floor(floor(x * 2^f) / 2^f) = floor(x). Ordering pixels by (q, position) orders them by the
    # map, ties broken. Separator rows: q = -1, below every pixel, so u = -1 (never foreground).
    q = np.full((nm, stride, w), -1, dtype=np.int64)
    q[:, :hh] = (maps * 255.0 * float(1 << fb)).astype(np.int64)
    q = q.reshape(nm * stride, w)[:rows]
    u = q >> fb
    separators = (np.arange(nm - 1)[:, None] * stride + hh) * w + np.arange(w)

    # Outer contours: 8-connected components of {u > L}. Along a row the order rises wherever q
    # does not fall.
    up = q[:, 1:] >= q[:, :-1] if w > 1 else None
    hu = hierarchy(q, up, u, conn8=True, stride=stride)
    runs_u = level_runs(hu, u, levels)

    # Hole contours: 4-connected components of {u <= L} = {255 - u > 254 - L} not joined to the
    # border node (the image's surroundings and the separators, background at every level), in
    # the exact reverse order, so rows rise where they fell.
    ub = 255 - u
    hb = hierarchy(q, None if up is None else ~up, ub, conn8=False, stride=stride, descending=True,
                   border=separators.ravel())
    runs_b = level_runs(hb, ub, 254 - levels)
    where = np.empty(len(hb.order), dtype=np.int64)
    where[hb.order] = np.arange(len(hb.order))
    tb = int(where[-1])  # position of the border node (basin K - 1) in the order
    hole = ~((runs_b.span[:, 0] <= tb) & (tb < runs_b.span[:, 1]))

    # Largest contour: among top-level components, i.e. components of the hole-filled image o,
    # where a pixel is above L until it joins the border's background: o = max(u, that level).
    join = np.full(len(hb.order), 256, dtype=np.int64)  # per position: weakest link to the border
    if tb > 0:
        join[:tb] = np.minimum.accumulate(hb.link[:tb][::-1])[::-1]
    join[tb + 1:] = np.minimum.accumulate(hb.link[tb:])
    gamma = np.clip(255 - join[where], 0, 255)  # a basin joins the border from level gamma on
    inner = hb.top[:-1] <= 255  # image basins (not the separators')
    if (gamma[:-1][inner] > 255 - hb.top[:-1][inner]).any():  # a basin's lowest pixel is in a hole
        o = np.maximum(u, gamma[hb.basin].reshape(rows, w))
        # Ties in o (a filled hole is flat) are broken by the map itself, which rises toward the
        # hole's rim: the climb leaves the flat part instead of stopping at spurious maxima.
        rank_o = (o << fb) | (q >> VALUE_BITS)
        ho = hierarchy(rank_o, rank_o[:, 1:] >= rank_o[:, :-1] if w > 1 else None, o, conn8=True, stride=stride)
        runs_o = level_runs(ho, o, levels)
    else:  # no hole at any level: the top-level components are all the components
        o, ho, runs_o = u, hu, runs_u
    o8 = np.maximum(o, 0).astype(np.uint8)
    rank = runs_o.home * len(levels) + runs_o.level  # (map, level) of each run
    area = np.zeros(len(rank), dtype=np.int64)
    if len(np.unique(rank)) < len(rank):  # some level has several components: compare areas
        area = component_sums(ho, runs_o, _block_area2(ho, o8, levels))
    v1 = _largest(runs_o, rank, area, ho, o8, levels)

    v1_box = np.zeros((nm, len(levels), 4), dtype=np.int64)
    has_fg = np.zeros((nm, len(levels)), dtype=bool)
    which = rank[v1]
    v1_box.reshape(-1, 4)[which] = _contour_box(runs_o.box[v1], 0, hh, w)
    has_fg.reshape(-1)[which] = True
    boxes = np.concatenate([_contour_box(runs_u.box, 0, hh, w), _contour_box(runs_b.box[hole], 1, hh, w)])
    v2_map = np.concatenate([runs_u.home, runs_b.home[hole]])
    v2_level = np.concatenate([runs_u.level, runs_b.level[hole]])
    order = np.lexsort((v2_level, v2_map))
    return LevelBoxes(v2_map=v2_map[order], v2_level=v2_level[order], v2_box=boxes[order], v1_box=v1_box,
                      has_fg=has_fg)


def _contour_box(box: np.ndarray, grow: int, h: int, w: int) -> np.ndarray:
    """wsolevaluation's box of a contour through the pixels ``box`` grown by ``grow``: ``(x, y,
    x + w, y + h)`` of its bounding rectangle, the far ends clipped to the image."""
    out = box + np.array([-grow, -grow, grow + 1, grow + 1])
    out[:, 2] = np.minimum(out[:, 2], w - 1)
    out[:, 3] = np.minimum(out[:, 3], h - 1)
    return out


def _block_area2(ho: Hierarchy, o: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``(K, len(levels))``: per basin of ``o`` (uint8), twice the polygon area its blocks add.

    At level L a 2 x 2 block adds 2 when its four corners are above L in o (inside the filled
    component) and 1 when three are; the block belongs to the component of its corners above L,
    found through a corner that is above L whenever the block counts: the top-left corner for
    the four-corner term, the higher of top-left and bottom-right for the three-corner term (of
    two diagonal corners at most one is the lowest).
    """
    hh, w = o.shape
    k = len(ho.order)
    if hh < 2 or w < 2:
        return np.zeros((k, len(levels)), dtype=np.int64)
    a, b, c, d = o[:-1, :-1], o[:-1, 1:], o[1:, :-1], o[1:, 1:]
    lo1, hi1, lo2, hi2 = np.minimum(a, b), np.maximum(a, b), np.minimum(c, d), np.maximum(c, d)
    low = np.minimum(lo1, lo2)
    second = np.minimum(np.maximum(lo1, lo2), np.minimum(hi1, hi2))
    basin = ho.basin.reshape(hh, w)
    tl = basin[:-1, :-1]
    owner = np.where(a >= d, tl, basin[1:, 1:])
    counts = np.bincount((tl * 256 + low).ravel(), minlength=k * 256)
    counts += np.bincount((owner * 256 + second).ravel(), minlength=k * 256)
    above = np.zeros((k, 257), dtype=np.int64)  # above[:, v] = #{value >= v}
    above[:, :256] = counts.reshape(k, 256)[:, ::-1].cumsum(axis=1)[:, ::-1]
    return above[:, levels + 1]


def _largest(runs: Runs, rank: np.ndarray, area: np.ndarray, ho: Hierarchy, o: np.ndarray,
             levels: np.ndarray) -> np.ndarray:
    """Index into ``runs`` of the component with the largest contour for each (map, level)
    ``rank`` present, in increasing ``rank``.

    Ties go to the component whose first pixel (raster order) comes last: OpenCV lists
    top-level contours in reverse order of discovery and ``max`` keeps the first maximum.
    """
    if len(rank) == 0:
        return np.zeros(0, dtype=np.int64)
    by = np.argsort(rank, kind="stable")
    r = rank[by]
    new = np.append(True, r[1:] != r[:-1])
    group = np.empty(len(rank), dtype=np.int64)
    group[by] = np.cumsum(new) - 1
    best = np.zeros(int(new.sum()), dtype=np.int64)
    np.maximum.at(best, group, area)
    top = area == best[group]
    n_top = np.bincount(group[top], minlength=len(best))
    tied = np.flatnonzero(top & (n_top[group] > 1))
    first = np.zeros(len(rank), dtype=np.int64)
    if len(tied):  # the first pixel of a component lies in its top row: scan those rows
        w = o.shape[1]
        where = np.empty(len(ho.order), dtype=np.int64)
        where[ho.order] = np.arange(len(ho.order))
        y0 = runs.home[tied] * ho.rowmax.shape[1] + runs.box[tied, 1]  # row in the stacked image
        at = where[ho.basin.reshape(o.shape)[y0]]  # (tied, W) position of each pixel's basin
        inside = (o[y0] > levels[runs.level[tied], None]) & (at >= runs.span[tied, :1]) & (at < runs.span[tied, 1:])
        first[tied] = y0 * w + inside.argmax(axis=1)
    # Per group: largest area, then largest first pixel (0 for untied runs), then first run.
    order = np.lexsort((-np.arange(len(area)), first, area, group))
    return order[np.flatnonzero(np.append(group[order][1:] != group[order][:-1], True))]


# The 8 neighbours of a pixel around the ring (bit j of a neighbourhood mask):
# 0 NW, 1 N, 2 NE, 3 E, 4 SE, 5 S, 6 SW, 7 W.
_RING = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def neighbour_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per neighbourhood mask: the neighbours to look up, for 8- and 4-connectivity, and the area
    a new pixel adds (8-connected foreground).

    Returns ``(rep8 (256, 4), nrep8 (256,), rep4 (256, 4), nrep4 (256,), area2 (256,))`` int64:
    ``rep8[m, :nrep8[m]]`` are ring positions, one per group of present neighbours that touch
    (8-adjacent) each other; ``rep4`` likewise for 4-adjacency, listing only the 4-neighbours
    (N, E, S, W), since a lone corner is not a 4-neighbour; ``area2[m]``: how many of the four
    2 x 2 blocks around the pixel already have two or three of their other corners present.
    Used by the compiled sweeps of :mod:`masksal.metrics._levelboxes_jit`.
    """
    rep8, nrep8 = np.zeros((256, 4), np.int64), np.zeros(256, np.int64)
    rep4, nrep4 = np.zeros((256, 4), np.int64), np.zeros(256, np.int64)
    area2 = np.zeros(256, np.int64)
    blocks = ((0, 1, 7), (1, 2, 3), (3, 4, 5), (5, 6, 7))
    for mask in range(256):
        present = [j for j in range(8) if mask >> j & 1]
        for conn, rep, nrep in ((8, rep8, nrep8), (4, rep4, nrep4)):
            group = {j: j for j in present}

            def root(j: int, group: dict[int, int] = group) -> int:
                while group[j] != j:
                    j = group[j]
                return j

            for a in present:
                for b in present:
                    dy, dx = abs(_RING[a][0] - _RING[b][0]), abs(_RING[a][1] - _RING[b][1])
                    if max(dy, dx) == 1 and (conn == 8 or dy + dx == 1):
                        group[root(a)] = root(b)
            seen: set[int] = set()
            for j in present:
                if (conn == 8 or j % 2 == 1) and root(j) not in seen:
                    seen.add(root(j))
                    rep[mask, nrep[mask]] = j
                    nrep[mask] += 1
        area2[mask] = sum(sum(mask >> j & 1 for j in b) >= 2 for b in blocks)
    return rep8, nrep8, rep4, nrep4, area2


def compiled_contour_boxes(maps: np.ndarray, levels: np.ndarray, opencv_refill_max: int = 16) -> LevelBoxes:
    """:func:`contour_boxes` computed by the numba sweeps of :mod:`masksal.metrics._levelboxes_jit`.

    The same boxes, map by map (a compiled union-find sweep needs no stacking to share per-call
    work). Needs numba (the ``fast`` extra); the first call in a process loads the compiled code
    from numba's cache, or compiles it (tens of seconds) if there is none.

    Args:
        maps: ``(B, H, W)`` (or ``(H, W)``) float64 maps in [0, 1].
        levels: sorted, distinct int64 levels in [0, 254].
        opencv_refill_max: see :func:`compiled_map_boxes`.
    """
    if maps.ndim == 2:
        maps = maps[None]
    levels = np.asarray(levels, dtype=np.int64)
    used = np.zeros(NUM_LEVELS, dtype=bool)
    used[levels] = True
    index = np.full(NUM_LEVELS, -1, dtype=np.int64)
    index[levels] = np.arange(len(levels))
    u8 = np.ascontiguousarray((maps * 255).astype(np.uint8))  # wsolevaluation's uint8 map
    nm = len(u8)
    v1_box = np.zeros((nm, len(levels), 4), dtype=np.int64)
    has_fg = levels[None, :] < u8.reshape(nm, -1).max(axis=1, initial=0)[:, None]
    v2_map, v2_level, v2_box = [], [], []
    for i in range(nm):
        lv, box, v1 = compiled_map_boxes(u8[i], used, opencv_refill_max)
        v1_box[i] = v1[levels]
        v2_map.append(np.full(len(lv), i, dtype=np.int64))
        v2_level.append(index[lv])
        v2_box.append(box.astype(np.int64))
    return LevelBoxes(v2_map=np.concatenate(v2_map), v2_level=np.concatenate(v2_level),
                      v2_box=np.concatenate(v2_box).reshape(-1, 4), v1_box=v1_box, has_fg=has_fg)


def compiled_map_boxes(u8: np.ndarray, used: np.ndarray, opencv_refill_max: int = 16) -> tuple[np.ndarray, ...]:
    """The contour boxes of one uint8 map at the used levels, by the compiled sweeps.

    Args:
        u8: ``(H, W)`` C-contiguous uint8 map. used: ``(256,)`` bool, the levels to report.
        opencv_refill_max: the largest contour of a level where holes could change which
            component is the largest needs the hole-filled components' areas: up to this many
            such levels, it is read from ``cv2.findContours`` at those levels (exactly the
            reference's procedure, about 30 us a level at 224 px); beyond, from a third compiled
            sweep (about as long as the first two).

    Returns:
        ``(level (n,) int32, box (n, 4) int32, v1_box (256, 4) int32)``, as
        :func:`masksal.metrics._levelboxes_jit.map_level_boxes` (v1 boxes final).
    """
    from masksal.metrics._levelboxes_jit import filled_v1_boxes, map_level_boxes

    h, w = u8.shape
    lv, box, v1, refill, gamma = map_level_boxes(u8, used)
    redo = np.flatnonzero(refill)
    if len(redo) > opencv_refill_max:
        return lv, box, filled_v1_boxes(gamma.reshape(h, w), refill, v1)
    for level in redo.tolist():
        found = cv2.findContours((u8 > level).view(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        x, y, bw, bh = cv2.boundingRect(max(found, key=cv2.contourArea))
        v1[level] = (x, y, min(x + bw, w - 1), min(y + bh, h - 1))
    return lv, box, v1


COMPILED_MAX_SIDE = 1 << 15
"""The compiled sweeps take maps under this many pixels a side (a pixel's column is packed in 15 bits)."""


def compiled_level_ious(maps: np.ndarray, gts: list[np.ndarray], used: np.ndarray,
                        opencv_refill_max: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU with the ground truth at every used level below each map's maximum, compiled.

    Args:
        maps: ``(B, H, W)`` float64 or float32 maps (float32 values are widened to float64
            exactly), raw or already min-max normalized (normalizing is then the identity); a
            constant map or one with NaN is scored as all zeros, as wsolevaluation does.
        gts: per map, ``(K_i, 4)`` float64 inclusive boxes (clipped); a map without box is skipped.
        used: ``(256,)`` bool, the levels. opencv_refill_max: see :func:`compiled_map_boxes`.

    Returns:
        ``(v1 (B, 256), v2 (B, 256))`` float64: the best IoU of the largest contour's box and
        of any contour's box; -1 at levels without contour (``>= max(uint8(m * 255))``), unused
        levels and maps without box.
    """
    from masksal.metrics._levelious_jit import batch_level_ious, normalized_uint8

    if maps.ndim == 3 and max(maps.shape[1:]) >= COMPILED_MAX_SIDE:  # the packed pixel words hold 15-bit columns
        raise ValueError(f"MaxBoxAcc: maps of {maps.shape[1]} x {maps.shape[2]} px are beyond the compiled path "
                         f"(under {COMPILED_MAX_SIDE} px a side): use MaxBoxAccuracy(backend='numpy')")

    maps = np.ascontiguousarray(maps, dtype=np.float32 if maps.dtype == np.float32 else np.float64)
    start = np.zeros(len(gts) + 1, dtype=np.int64)
    start[1:] = np.cumsum([len(g) for g in gts])
    flat = np.ascontiguousarray(np.concatenate([np.asarray(g, dtype=np.float64).reshape(-1, 4) for g in gts]))
    v1, v2, pending = batch_level_ious(maps, flat, start, np.ascontiguousarray(used, dtype=bool), opencv_refill_max)
    for i in np.flatnonzero(pending.any(axis=1)).tolist():  # largest contours from OpenCV
        u8 = normalized_uint8(maps[i])
        h, w = u8.shape
        for level in np.flatnonzero(pending[i]).tolist():
            found = cv2.findContours((u8 > level).view(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            x, y, bw, bh = cv2.boundingRect(max(found, key=cv2.contourArea))
            box = np.array([[x, y, min(x + bw, w - 1), min(y + bh, h - 1)]])
            v1[i, level] = box_iou(box, flat[start[i]:start[i + 1]]).max()
    return v1, v2
