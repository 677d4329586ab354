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
components) are level sets of three grey images: ``u``, ``255 - u`` (with the border as an
extra node), and ``u`` with its holes filled (``o``). For each image one hierarchy gives the
components of every level at once:

1. Pixels are split into *basins*: every pixel climbs to a neighbour of larger key (the map's
   value, ties broken by position) until a local maximum. A pixel is joined to its basin's top
   through pixels at least as high, so at any level a present pixel is in its top's component.
   The climb runs on row segments (each rises then falls, so its pixels reach its peak along the
   row) and then from peak to peak, which keeps the pixel-sized work to a few array passes.
2. Two basins are joined at level ``L`` when some pair of adjacent pixels across their border
   are both above ``L``; single linkage on these joins, ordered as a dendrogram (each cluster a
   run of consecutive leaves), makes the components at level ``L`` the runs of leaves whose
   links exceed ``L``.
3. Per basin and level the bounding box of its pixels above the level comes from column and row
   maxima; per component it is the min / max over its run (``reduceat``).

Written by hand because no installed library does this at the speed needed: a per-level
``findContours`` pass costs about 30 us at 224 px (255 levels: 8 ms), and
``skimage.morphology.max_tree`` alone takes longer than the whole per-threshold reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

VALUE_BITS = 8  # uint8 levels


@dataclass
class Hierarchy:
    """Basins of a grey image and the single-linkage order of their joins.

    Attributes:
        basin: ``(N,)`` int64 basin of every pixel (raster order).
        order: ``(K,)`` basins in dendrogram order (the border node, if any, is basin ``K - 1``).
        link: ``(K - 1,)`` int64; ``order[t]`` and ``order[t + 1]`` are in one component at level
            ``L`` iff ``link[t] > L`` (-1: never).
        top: ``(K,)`` int64 the largest value in each basin (-1 for the border node).
        home: ``(K,)`` int64 the map (band of ``stride`` rows) each basin lies in.
        rowmax: ``(K, stride)`` int64 the largest value of each basin in each row of its map
            (-1: none).
    """

    basin: np.ndarray
    order: np.ndarray
    link: np.ndarray
    top: np.ndarray
    home: np.ndarray
    rowmax: np.ndarray


@dataclass
class Runs:
    """The components of every evaluated level: one entry per (level, component), level-major.

    Attributes:
        level: ``(R,)`` index into the evaluated levels.
        home: ``(R,)`` the map of the component.
        box: ``(R, 4)`` int64 inclusive ``(x0, y0, x1, y1)`` of the component's pixels, in the
            coordinates of its map.
        span: ``(R, 2)`` int64 ``[t0, t1)``: the component's basins are ``order[t0:t1]``.
    """

    level: np.ndarray
    home: np.ndarray
    box: np.ndarray
    span: np.ndarray


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


def index_bits(n: int) -> int:
    """Bits that hold a flat pixel index ``< n``."""
    return max(1, int(n - 1).bit_length())


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(column of every pixel (N,), flat index of the border pixels)`` for an image size."""
    n = h * w
    ring = np.unique(np.concatenate([np.arange(w), np.arange(n - w, n), np.arange(0, n, w), np.arange(w - 1, n, w)]))
    col = np.tile(np.arange(w, dtype=np.int64), h)
    col.flags.writeable = False
    ring.flags.writeable = False
    return col, ring


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
        area = _component_sums(ho, runs_o, _block_area2(ho, o8, levels))
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


def row_cells(up: np.ndarray | None, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into segments that rise to one peak and then fall.

    Args:
        up: ``(H, W - 1)`` bool, whether the (distinct) key rises from ``x`` to ``x + 1``;
            ``None`` when ``W == 1``.

    Returns:
        ``(starts (C,), peaks (C,))``: flat index of the first pixel and of the peak of each
        segment, in raster order.
    """
    start = np.zeros((h, w), dtype=bool)
    start[:, 0] = True
    peak = np.zeros((h, w), dtype=bool)
    if up is None:
        peak[:, 0] = True
    else:
        start[:, 1:-1] = up[:, 1:] > up[:, :-1]  # a local minimum starts a segment
        peak[:, 0] = ~up[:, 0]
        peak[:, -1] = up[:, -1]
        peak[:, 1:-1] = up[:, :-1] > up[:, 1:]
    return np.flatnonzero(start), np.flatnonzero(peak)


def climb(rank: np.ndarray, up: np.ndarray | None, conn8: bool, descending: bool) -> tuple[np.ndarray, ...]:
    """Basins of an image: every pixel climbs to a local maximum (see the module docstring).

    Args:
        rank: ``(H, W)`` int64; pixels are ordered by ``(rank, flat index)``, or by ``(-rank,
            -flat index)`` when ``descending`` (a strict order either way).
        up: whether that order rises from ``x`` to ``x + 1`` along rows (``None`` if ``W == 1``).

    Returns:
        ``(basin (N,), cell_basin (C,), starts (C,), peaks (C,))``: the basin of each pixel, and
        the basin, first pixel and peak pixel of each row segment.
    """
    h, w = rank.shape
    n = h * w
    flat = rank.ravel()
    ib = index_bits(n)
    starts, peaks = row_cells(up, h, w)
    # A peak is higher than its row neighbours: climb to the highest pixel of the rows above and
    # below (8-connectivity) or the pixels straight above and below (4-connectivity).
    dy, dx = (np.array([-1, -1, -1, 1, 1, 1]), np.array([-1, 0, 1, -1, 0, 1])) if conn8 else \
        (np.array([-1, 1]), np.array([0, 0]))
    py, px = np.divmod(peaks, w)
    ny, nx = py[:, None] + dy, px[:, None] + dx
    j = np.where((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w), ny * w + nx, peaks[:, None])
    j = np.concatenate([peaks[:, None], j], axis=1)  # the peak itself first: stays if highest
    key = (-flat[j] << ib) | (n - 1 - j) if descending else (flat[j] << ib) | j
    target = j[np.arange(len(peaks)), key.argmax(axis=1)]
    hop = np.searchsorted(starts, target, side="right") - 1  # the segment climbed to
    while True:  # pointer jumping: every segment to the segment of its local maximum
        nxt = hop[hop]
        if np.array_equal(nxt, hop):
            break
        hop = nxt
    roots = np.flatnonzero(hop == np.arange(len(hop)))
    label = np.empty(len(hop), dtype=np.int64)
    label[roots] = np.arange(len(roots))
    cell_basin = label[hop]
    basin = np.repeat(cell_basin, np.diff(np.append(starts, n)))
    return basin, cell_basin, starts, peaks


def hierarchy(rank: np.ndarray, up: np.ndarray | None, values: np.ndarray, conn8: bool, stride: int,
              descending: bool = False, border: np.ndarray | None = None) -> Hierarchy:
    """The basins of an image and their dendrogram, for the level sets ``{values > L}``.

    Args:
        rank, up, descending: the pixel order (see :func:`climb`); it must order ``values``
            (a higher pixel has a value at least as large).
        values: ``(H, W)`` int64 levels in [0, 255]; a pixel is present at level ``L`` iff
            ``values > L``.
        conn8: 8-connectivity (else 4).
        stride: rows per map (maps are stacked one under the other).
        border: if given, add a node present at every level and adjacent to every pixel on the
            image's border and to the pixels listed (flat indices).
    """
    h, w = rank.shape
    border_node = border is not None
    n = h * w
    basin, cell_basin, starts, peaks = climb(rank, up, conn8, descending)
    k = int(cell_basin.max()) + 1
    size = k + border_node
    vals = values.ravel()
    top = np.full(size, -1, dtype=np.int64)
    np.maximum.at(top, cell_basin, vals[peaks])
    row = starts // w
    home = np.full(size, -1, dtype=np.int64)
    home[cell_basin] = row // stride
    rowmax = np.full(size * stride, -1, dtype=np.int64)
    np.maximum.at(rowmax, cell_basin * stride + row % stride, vals[peaks])  # a segment's max is its peak
    # Joins: pairs of adjacent pixels in different basins, weight = the lower value (both are
    # present below it). Along a row, basins change only where a segment starts.
    cut = starts[(starts % w != 0) & (cell_basin != np.append(-1, cell_basin[:-1]))]
    pairs = [(cut - 1, cut)]
    for off, skip in ((w, -1), (w + 1, w - 1), (w - 1, 0)) if conn8 else ((w, -1),):
        if off >= n or (off != w and w == 1):
            continue
        p = np.flatnonzero(basin[:-off] != basin[off:])
        if skip >= 0:
            p = p[p % w != skip]
        pairs.append((p, p + off))
    if border is not None:
        ring = np.concatenate([_grid(h, w)[1], border])
        pairs.append((ring, ring))
    a = np.concatenate([basin[p] for p, _ in pairs])
    b = np.concatenate([basin[q] for _, q in pairs])
    wt = np.concatenate([np.minimum(vals[p], vals[q]) for p, q in pairs])
    if border is not None:  # the ring's pairs join each border pixel to the border node
        b[len(b) - len(ring):] = k
    lo, hi, wt = _strongest_edges(np.minimum(a, b), np.maximum(a, b), wt, size)
    order, link = _dendrogram_order(lo, hi, wt, size)
    return Hierarchy(basin=basin, order=order, link=link, top=top, home=home, rowmax=rowmax.reshape(size, stride))


def _strongest_edges(lo: np.ndarray, hi: np.ndarray, wt: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """One edge per basin pair (the strongest), reduced to a maximum spanning forest when large."""
    if len(wt) == 0:
        return lo, hi, wt
    pair = lo * size + hi
    if size * size <= 1 << 22:
        dense = np.full(size * size, -1, dtype=np.int64)
        np.maximum.at(dense, pair, wt)
        pair = np.flatnonzero(dense >= 0)
        wt = dense[pair]
    else:
        order = np.lexsort((wt, pair))
        pair, wt = pair[order], wt[order]
        last = np.append(pair[1:] != pair[:-1], True)
        pair, wt = pair[last], wt[last]
    lo, hi = np.divmod(pair, size)
    if len(wt) > 4 * size:  # the union-find below is a Python loop: keep only a spanning forest
        # Maximum spanning forest = minimum one on 257 - w (> 0: csgraph drops zero weights).
        mst = minimum_spanning_tree(csr_matrix((257 - wt, (lo, hi)), shape=(size, size))).tocoo()
        lo, hi, wt = mst.row.astype(np.int64), mst.col.astype(np.int64), 257 - mst.data.astype(np.int64)
    return lo, hi, wt


def _dendrogram_order(lo: np.ndarray, hi: np.ndarray, wt: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Leaves in an order where every single-linkage cluster is a run, and the links between them.

    Kruskal's union-find from the strongest edge down, each cluster a linked list of its leaves;
    joining two clusters chains their lists and records the join level between the two ends.
    """
    parent = list(range(size))
    head, tail = list(range(size)), list(range(size))
    count = [1] * size
    nxt = [-1] * size
    after = [-1] * size  # link between a leaf and its successor in the order
    rank = np.argsort(-wt, kind="stable")
    for a, b, weight in zip(lo[rank].tolist(), hi[rank].tolist(), wt[rank].tolist(), strict=True):
        while parent[a] != a:
            parent[a] = a = parent[parent[a]]
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a == b:
            continue
        if count[a] < count[b]:
            a, b = b, a
        nxt[tail[a]] = head[b]
        after[tail[a]] = weight
        tail[a] = tail[b]
        parent[b] = a
        count[a] += count[b]
    order: list[int] = []
    for r in range(size):
        if parent[r] == r:  # one root per connected part; parts never join (link -1)
            i = head[r]
            while i != -1:
                order.append(i)
                i = nxt[i]
    link = np.asarray([after[i] for i in order[:-1]], dtype=np.int64)
    return np.asarray(order, dtype=np.int64), link


def level_runs(h: Hierarchy, values: np.ndarray, levels: np.ndarray) -> Runs:
    """The non-empty components of every level and their bounding boxes.

    Per basin, the first column from the left (right) whose maximum exceeds ``L`` is the left
    (right) end of the basin's pixels above ``L``, and likewise for rows; a component's box is
    the min / max over its run of basins.
    """
    w = values.shape[1]
    stride = h.rowmax.shape[1]
    k, nl = len(h.order), len(levels)
    colmax = np.full(k * w, -1, dtype=np.int64)
    np.maximum.at(colmax, h.basin * w + _grid(values.shape[0], w)[0], values.ravel())
    colmax = colmax.reshape(k, w)[h.order]
    rowmax = h.rowmax[h.order]
    size = max(stride, w)
    prof = np.full((4, k, size), -1, dtype=np.int64)
    prof[0, :, :w], prof[1, :, :w] = colmax, colmax[:, ::-1]
    prof[2, :, :stride], prof[3, :, :stride] = rowmax, rowmax[:, ::-1]
    running = np.maximum.accumulate(prof, axis=2).reshape(4 * k, size)  # non-decreasing, in [-1, 256]
    hist = np.bincount((np.arange(4 * k)[:, None] * 258 + running + 1).ravel(), minlength=4 * k * 258)
    below = hist.reshape(4 * k, 258).cumsum(axis=1)  # below[:, L + 1] = #{position: running <= L}
    first = below[:, levels + 1].reshape(4, k, nl).transpose(0, 2, 1).reshape(4, nl * k)
    start = np.ones((nl, k), dtype=bool)
    start[:, 1:] = h.link[None, :] <= levels[:, None]
    st = np.flatnonzero(start)
    ends = np.minimum.reduceat(first, st, axis=1)  # per run: first position from each side
    keep = ends[0] < w
    level = st // k
    end = np.append(st[1:], nl * k)
    span = np.stack([st - level * k, np.where(end // k == level, end - level * k, k)], axis=1)
    box = np.stack([ends[0], ends[2], w - 1 - ends[1], stride - 1 - ends[3]], axis=1)
    return Runs(level=level[keep], home=h.home[h.order[span[keep, 0]]], box=box[keep], span=span[keep])


def _component_sums(h: Hierarchy, runs: Runs, per_basin: np.ndarray) -> np.ndarray:
    """Sum of a ``(K, len(levels))`` per-basin attribute over each run's basins."""
    k = len(h.order)
    cum = np.zeros((per_basin.shape[1], k + 1), dtype=np.int64)
    cum[:, 1:] = per_basin[h.order].T.cumsum(axis=1)
    return cum[runs.level, runs.span[:, 1]] - cum[runs.level, runs.span[:, 0]]


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
