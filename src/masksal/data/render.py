"""Drawing the built-in benchmark's images: backgrounds, objects, distractors (see
:mod:`masksal.data.benchmark` for how a sample is made; this module holds the pixels' part).

A sample is a pure function of its ``numpy.random.Generator``: every helper draws from the one it
is given, in a fixed order, so a change here changes the images (bump ``GENERATOR_VERSION``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from masksal.data.sources import SPLITS, ObjectSource

OBJECT_SIDE = (0.35, 0.75)
# The two-object split: smaller objects, so two fit side by side; tries to keep their rectangles apart.
OBJECTS = (1, 2)
PAIR_OBJECT_SIDE = (0.3, 0.5)
PAIR_TRIES = 200
ASPECT_JITTER = 0.2
DISTRACTOR_SIDE = (0.12, 0.22)
DISTRACTOR_PIECE = (0.35, 0.6)
MAX_DISTRACTORS = 2
# Minimum luminance difference (0..255) between a pasted shape's colour and the background.
MIN_CONTRAST = 80.0
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def background(rng: np.random.Generator, size: int, pyramids: tuple[tuple[np.ndarray, ...], ...]
               ) -> np.ndarray:
    levels = pyramids[int(rng.integers(len(pyramids)))]
    finest = levels[0]
    side = rng.uniform(0.2, 1.0) * min(finest.shape[:2])
    # Crop from the coarsest level that still has at least `size` pixels across the crop.
    level = 0
    while level + 1 < len(levels) and side / 2 ** (level + 1) >= size:
        level += 1
    image = levels[level]
    crop = max(2, min(round(side / 2**level), min(image.shape[:2])))
    y = int(rng.integers(image.shape[0] - crop + 1))
    x = int(rng.integers(image.shape[1] - crop + 1))
    # Flipping after the resize touches only size x size pixels.
    out = _resize(image[y: y + crop, x: x + crop], size, size)
    flips = rng.random(2) < 0.5
    if flips[0]:
        out = out[:, ::-1]
    if flips[1]:
        out = out[::-1]
    result = np.ascontiguousarray(out, dtype=np.float32)
    result *= rng.uniform(0.7, 1.1, size=3).astype(np.float32)
    return result


def _alpha(glyph: np.ndarray, width: int, height: int) -> np.ndarray:
    alpha = _resize(glyph, width, height).astype(np.float32) * np.float32(1 / 255)
    peak = float(alpha.max())
    # Very small renderings of thin strokes lose contrast; rescale so the shape stays visible
    # and the mask (alpha > 0.5) is never empty.
    if 0 < peak < 0.75:
        alpha *= np.float32(1 / peak)
    return alpha


def _contrasting_colour(rng: np.random.Generator, background_luma: float) -> np.ndarray:
    candidates = rng.uniform(0, 255, size=(8, 3)).astype(np.float32)
    diff = np.abs(candidates @ _LUMA - background_luma)
    ok = np.flatnonzero(diff >= MIN_CONTRAST)
    return candidates[ok[0] if ok.size else int(np.argmax(diff))]


def _paste(image: np.ndarray, alpha: np.ndarray, x: int, y: int, rng: np.random.Generator) -> None:
    h, w = alpha.shape
    region = image[y: y + h, x: x + w]
    luma = float(region.reshape(-1, 3).mean(0) @ _LUMA)
    colour = _contrasting_colour(rng, luma)
    a = alpha[:, :, None]
    region *= 1 - a
    region += a * colour


def _distractor_piece(rng: np.random.Generator, glyph: np.ndarray) -> np.ndarray:
    gh, gw = glyph.shape
    inside = (glyph > 127).astype(np.uint8)
    # Centre the piece on the shape's outline so that it shows a contour, not a flat patch of a
    # filled silhouette.
    outline = inside > cv2.erode(inside, _CROSS, borderValue=0)
    ys, xs = np.nonzero(outline)
    if ys.size:
        k = int(rng.integers(ys.size))
        cy, cx = int(ys[k]), int(xs[k])
    else:
        cy, cx = gh // 2, gw // 2
    ph = max(2, round(gh * rng.uniform(*DISTRACTOR_PIECE)))
    pw = max(2, round(gw * rng.uniform(*DISTRACTOR_PIECE)))
    y0 = min(max(cy - ph // 2, 0), max(gh - ph, 0))
    x0 = min(max(cx - pw // 2, 0), max(gw - pw, 0))
    return glyph[y0: y0 + ph, x0: x0 + pw]


def _pick(rng: np.random.Generator, classes: tuple[tuple[ObjectSource, int], ...], label: int, split: str
          ) -> tuple[ObjectSource, int]:
    """A source object of class ``label`` from the split's pool: ``(source, position)``."""
    source, cls = classes[label]
    pool = source.pools[split][cls]
    return source, int(pool[rng.integers(pool.size)])


def _paste_distractors(rng: np.random.Generator, image: np.ndarray, size: int, split: str,
                       classes: tuple[tuple[ObjectSource, int], ...], max_distractors: int,
                       objects: list[tuple[ObjectSource, int]]) -> list[int]:
    """Paste 1 to ``max_distractors`` pieces of other source objects (never one of ``objects``)."""
    distractor_ids: list[int] = []
    for _ in range(int(rng.integers(min(1, max_distractors), max_distractors + 1))):
        other, other_cls = classes[int(rng.integers(len(classes)))]
        other_pool = other.pools[split][other_cls]
        other_pos = int(other_pool[rng.integers(other_pool.size)])
        for _ in objects:  # never one of the image's objects (pools hold thousands of sources)
            if not any(other is src and other_pos == pos for src, pos in objects):
                break
            other_pos = int(other_pool[(int(np.searchsorted(other_pool, other_pos)) + 1) % other_pool.size])
        distractor_ids.append(int(other.global_ids[other_pos]))
        piece = _distractor_piece(rng, other.glyphs[other_pos])
        scale = rng.uniform(*DISTRACTOR_SIDE) * size / max(piece.shape)
        ph = max(2, round(piece.shape[0] * scale))
        pw = max(2, round(piece.shape[1] * scale))
        alpha = _alpha(piece, pw, ph)
        _paste(image, alpha, int(rng.integers(size - pw + 1)), int(rng.integers(size - ph + 1)), rng)
    return distractor_ids


def _object_alpha(rng: np.random.Generator, glyph: np.ndarray, size: int, side: tuple[float, float]) -> np.ndarray:
    """The object's alpha, its longer side a random fraction ``side`` of the image side."""
    gh, gw = glyph.shape
    stretch = np.exp(rng.uniform(-ASPECT_JITTER, ASPECT_JITTER))
    sy, sx = np.sqrt(stretch), 1 / np.sqrt(stretch)
    base = rng.uniform(*side) * size / max(gh * sy, gw * sx)
    h = int(min(size, max(2, round(gh * sy * base))))
    w = int(min(size, max(2, round(gw * sx * base))))
    return _alpha(glyph, w, h)


def _object_mask(alpha: np.ndarray, x: int, y: int, mask_out: np.ndarray) -> np.ndarray:
    """Write the object's mask (alpha > 0.5) into ``mask_out``; return its inclusive tight box."""
    h, w = alpha.shape
    inside = alpha > 0.5
    mask_out[...] = 0
    mask_out[y: y + h, x: x + w] = inside
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    return np.array([x + cols[0], y + rows[0], x + cols[-1], y + rows[-1]], dtype=np.float32)


@dataclass(frozen=True)
class Scene:
    """What every sample of one split is drawn from: the generator seed, the split, the image side,
    the classes (object source and position in it), the background pyramids and the largest
    number of distractors."""

    seed: int
    split: str
    size: int
    classes: tuple[tuple[ObjectSource, int], ...]
    pyramids: tuple[tuple[np.ndarray, ...], ...]
    max_distractors: int


def render_single(scene: Scene, index: int, image_out: np.ndarray,
                  mask_out: np.ndarray) -> tuple[int, np.ndarray, int, list[int]]:
    """Render sample ``index`` into ``image_out`` / ``mask_out``; return label, box, sources."""
    seed, split, size, classes = scene.seed, scene.split, scene.size, scene.classes
    rng = np.random.default_rng((seed, SPLITS.index(split), index))
    label = index % len(classes)
    source, position = _pick(rng, classes, label, split)
    image = background(rng, size, scene.pyramids)
    distractor_ids = _paste_distractors(rng, image, size, split, classes, scene.max_distractors, [(source, position)])
    alpha = _object_alpha(rng, source.glyphs[position], size, OBJECT_SIDE)
    h, w = alpha.shape
    y = int(rng.integers(size - h + 1))
    x = int(rng.integers(size - w + 1))
    _paste(image, alpha, x, y, rng)
    np.clip(image, 0, 255, out=image)
    image_out[...] = (image + 0.5).astype(np.uint8)
    box = _object_mask(alpha, x, y, mask_out)
    return label, box, int(source.global_ids[position]), distractor_ids


def _apart(rng: np.random.Generator, size: int, shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Random positions ``(x, y)`` for two objects of shapes ``(h, w)`` whose rectangles do not
    meet; among ``PAIR_TRIES`` draws the pair overlapping least when none is apart."""
    (h0, w0), (h1, w1) = shapes
    best: list[tuple[int, int]] = []
    best_overlap = -1
    for _ in range(PAIR_TRIES):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, [size - w0 + 1, size - h0 + 1, size - w1 + 1, size - h1 + 1]))
        overlap = max(0, min(x0 + w0, x1 + w1) - max(x0, x1)) * max(0, min(y0 + h0, y1 + h1) - max(y0, y1))
        if best_overlap < 0 or overlap < best_overlap:
            best, best_overlap = [(x0, y0), (x1, y1)], overlap
        if overlap == 0:
            break
    return best


def render_pair(scene: Scene, index: int, image_out: np.ndarray,
                masks_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Render two-object sample ``index`` (objects of two different classes, rectangles apart)
    into ``image_out`` / ``masks_out`` ``(2, size, size)``; return labels, boxes ``(2, 4)``, sources."""
    seed, split, size, classes = scene.seed, scene.split, scene.size, scene.classes
    # A fourth seed word keeps these images independent of the single-object ones of the same index.
    rng = np.random.default_rng((seed, SPLITS.index(split), index, 2))
    first = index % len(classes)
    labels = np.array([first, (first + 1 + int(rng.integers(len(classes) - 1))) % len(classes)], dtype=np.int64)
    picked = [_pick(rng, classes, int(c), split) for c in labels]
    image = background(rng, size, scene.pyramids)
    distractor_ids = _paste_distractors(rng, image, size, split, classes, scene.max_distractors, picked)
    alphas = [_object_alpha(rng, source.glyphs[position], size, PAIR_OBJECT_SIDE) for source, position in picked]
    places = _apart(rng, size, [a.shape for a in alphas])
    boxes = np.empty((2, 4), dtype=np.float32)
    for k, (alpha, (x, y)) in enumerate(zip(alphas, places, strict=True)):
        _paste(image, alpha, x, y, rng)
        boxes[k] = _object_mask(alpha, x, y, masks_out[k])
    if (masks_out[0] & masks_out[1]).any():  # rarely: the second object covers part of the first
        masks_out[0][masks_out[1] > 0] = 0
        boxes[0] = _tight_box(masks_out[0])
    np.clip(image, 0, 255, out=image)
    image_out[...] = (image + 0.5).astype(np.uint8)
    return labels, boxes, [int(src.global_ids[pos]) for src, pos in picked], distractor_ids


def _tight_box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:  # fully covered: an empty box that no prediction can match
        return np.array([0, 0, -1, -1], dtype=np.float32)
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)
