"""Accumulator base classes and the input checks shared by every metric.

Every metric keeps its state as a few float64 arrays of sums and counts, so that the states of
several processes (or of several shards of one split) simply add up: ``merge`` adds another
accumulator's state into this one, ``all_reduce`` sums the state over a ``torch.distributed``
process group. Memory is independent of the number of images.

With ``keep_per_image = True`` an accumulator also keeps each image's own share of that state
(the state one image alone would leave), so that any resample of the images can be scored exactly
as the accumulator would score it, without keeping the maps: the per-image states weighted by how
often each image was drawn add up to the resample's state (:meth:`Accumulator.reweighted`,
:func:`masksal.metrics.resampling.bootstrap`).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from masksal.types import Batch

NanPolicy = Literal["raise", "zero"]

#: Whether numba is importable (the ``fast`` extra): MaxBoxAcc and PxAP then use their compiled
#: passes (``backend="auto"``), else NumPy. Both give the same numbers; numba is imported (and
#: its cached code loaded) on a metric's first update.
NUMBA_AVAILABLE = importlib.util.find_spec("numba") is not None

Backend = Literal["auto", "numba", "numpy"]


def check_histogram_options(threshold_step: float, nan_maps: str, backend: str) -> Literal["numba", "numpy"]:
    """Validate the options MaxBoxAcc and PxAP share and return the backend to use: ``"numba"``
    for ``"auto"`` when numba is importable (:data:`NUMBA_AVAILABLE`), else ``"numpy"``.

    Raises:
        ValueError: a step outside (0, 1), an unknown NaN policy or backend, or ``"numba"``
            without numba.
    """
    if not 0.0 < threshold_step < 1.0:
        raise ValueError(f"threshold_step must lie in (0, 1), got {threshold_step}")
    if nan_maps not in ("raise", "zero"):
        raise ValueError(f"nan_maps must be 'raise' or 'zero', got {nan_maps!r}")
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
    if backend == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("backend 'numba' needs numba: pip install 'masksal[fast]'")
    return "numpy" if backend == "numpy" or not NUMBA_AVAILABLE else "numba"


class Accumulator(ABC):
    """A streaming statistic: ``update`` per batch, ``compute`` at the end.

    Subclasses define ``_empty_state`` (name -> float64 array of sums/counts) and ``compute``;
    ``reset``, ``merge``, ``all_reduce`` and ``state_dict`` work on that state alone.
    """

    name: str = "accumulator"

    keep_per_image: bool = False
    """Also keep every image's share of the state (set before the first ``update``): memory then
    grows with the images, by the size of the state per image (a few bytes for LE/OM/F1, SM or the
    pointing game; 1.5 kB for MaxBoxAcc's hit vectors; 8 kB for PxAP's histograms at step 0.001)."""

    def __init__(self) -> None:
        self._state: dict[str, np.ndarray] = self._empty_state()
        self._per_image: list[dict[str, np.ndarray]] = []
        self._per_image_ids: list[str | None] = []
        self._in_update = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every subclass's own ``update`` is wrapped once, so that ``keep_per_image`` works for any
        # metric without each one knowing about it (see _recording_update).
        super().__init_subclass__(**kwargs)
        raw = cls.__dict__.get("update")
        if callable(raw) and not getattr(raw, "_records_images", False) \
                and not getattr(raw, "__isabstractmethod__", False):
            cls.update = _recording_update(raw)  # type: ignore[attr-defined]

    @abstractmethod
    def _empty_state(self) -> dict[str, np.ndarray]:
        """A fresh state: every entry a float64 array of sums or counts (adds up across shards)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values of everything accumulated so far."""

    def _config(self) -> tuple[Any, ...]:
        """Settings that must agree for two accumulators to be merged."""
        return ()

    @property
    def num_images(self) -> int:
        """Number of images accumulated so far."""
        return int(self._state["count"][0])

    def reset(self) -> None:
        """Forget everything accumulated (the per-image states too)."""
        self._state = self._empty_state()
        self._per_image = []
        self._per_image_ids = []

    # -- per-image states (for resampling) ---------------------------------------------------

    @property
    def num_kept_images(self) -> int:
        """Images whose own state was kept (``keep_per_image``); 0 when it was off."""
        return len(getattr(self, "_per_image", []))

    def per_image_states(self) -> dict[str, np.ndarray]:
        """Each kept image's share of the state: name -> ``(N, *shape)`` float64, in update order.

        Summed over the images (axis 0) it is the accumulator's state, up to float summation order.

        Raises:
            ValueError: ``keep_per_image`` was off, or an image was accumulated without it.
        """
        self._check_kept()
        return {k: np.stack([rec[k] for rec in self._per_image]).astype(np.float64) for k in self._state}

    def per_image_ids(self) -> list[str | None]:
        """The ids of the kept images (``batch.ids``; None where the batch had none), in update order."""
        return list(getattr(self, "_per_image_ids", []))

    def reweighted(self, weights: np.ndarray) -> Accumulator:
        """A copy whose state is ``sum_i weights[i] * state_i`` over the kept images.

        With integer weights (how many times a resample drew each image) the copy's ``compute()``
        is exactly what this accumulator would compute after seeing that resample image by image;
        all ones give this accumulator's own state. The copy keeps no per-image states.

        Args:
            weights: ``(N,)`` non-negative weights, one per kept image (update order).

        Raises:
            ValueError: no per-image states, or a weight vector of another length.
        """
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        per = self.per_image_states()
        if w.shape[0] != self.num_kept_images:
            raise ValueError(f"{self.name}: {w.shape[0]} weights for {self.num_kept_images} kept images")
        return self.with_state({k: np.tensordot(w, v, axes=(0, 0)) for k, v in per.items()})

    def with_state(self, state: dict[str, np.ndarray]) -> Accumulator:
        """A shallow copy of this accumulator (same settings) holding ``state`` and no per-image states."""
        clone = copy.copy(self)
        clone._state = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
        clone._per_image, clone._per_image_ids = [], []
        return clone

    def _check_kept(self) -> None:
        kept, n = self.num_kept_images, self.num_images
        if kept == 0 and n == 0:
            raise ValueError(f"{self.name}: no image accumulated")
        if kept != n:
            raise ValueError(f"{self.name}: per-image states were kept for {kept} of {n} images; set "
                             "keep_per_image = True before the first update to resample the images")

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the state (float64 arrays of sums and counts)."""
        return {k: v.copy() for k, v in self._state.items()}

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s state into this one (in place) and return ``self``.

        Two accumulators over disjoint parts of a split, merged, equal one accumulator over the
        whole split.

        Raises:
            ValueError: ``other`` is another metric or was built with other settings.
        """
        if type(other) is not type(self):
            raise ValueError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        if other._config() != self._config():
            raise ValueError(f"cannot merge {type(self).__name__} accumulators built with different "
                             f"settings: {self._config()} vs {other._config()}")
        for k, v in other._state.items():
            self._state[k] = self._state[k] + v
        self._per_image = [*getattr(self, "_per_image", []), *getattr(other, "_per_image", [])]
        self._per_image_ids = [*getattr(self, "_per_image_ids", []), *getattr(other, "_per_image_ids", [])]
        return self

    def all_reduce(self) -> None:
        """Sum the state over all processes of the default ``torch.distributed`` group.

        A no-op when ``torch.distributed`` is unavailable or no process group is initialized.
        Call it once, after the last ``update`` and before ``compute``, on every process: each then
        holds the state of the whole split. Calling it twice counts every image twice.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":  # nccl reduces CUDA tensors only
            device = torch.device("cuda", torch.cuda.current_device())
        for k in sorted(self._state):
            t = torch.from_numpy(np.ascontiguousarray(self._state[k], dtype=np.float64)).to(device)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            self._state[k] = t.cpu().numpy().astype(np.float64)
        if self.keep_per_image:  # every process then holds every image's state, in rank order
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self._per_image, self._per_image_ids))
            self._per_image = [rec for recs, _ in gathered for rec in recs]
            self._per_image_ids = [i for _, ids in gathered for i in ids]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(images={self.num_images})"


class Metric(Accumulator):
    """A saliency-map metric: ``update(maps, batch)`` per batch, ``compute()`` at the end."""

    @abstractmethod
    def update(self, maps: Tensor, batch: Batch) -> None:
        """Accumulate one batch.

        Args:
            maps: ``(B, H, W)`` float saliency maps at the images' resolution, larger = more salient.
            batch: the :class:`~masksal.types.Batch` the maps were computed for.
        """


def _compact(a: np.ndarray) -> np.ndarray:
    """``a`` in the smallest dtype that holds it exactly (hit counts as uint8, histograms as float32)."""
    if a.size and np.all((a >= 0) & (a <= 255) & (a == np.round(a))):
        return a.astype(np.uint8)
    small = a.astype(np.float32)
    return small if np.array_equal(small, a) else a.copy()


def _split_images(args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> Iterator[tuple[str | None, tuple[Any, ...], dict[str, Any]]]:
    """One ``(id, args, kwargs)`` per image of an ``update`` call: every :class:`Batch` and every
    tensor with one row per image cut to that image's row, other arguments passed as they are."""
    batch = next((a for a in (*args, *kwargs.values()) if isinstance(a, Batch)), None)
    if batch is not None:
        n = len(batch)
    else:
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() > 0), None)
        n = 0 if first is None else int(first.shape[0])

    def cut(a: Any, i: int) -> Any:
        if isinstance(a, Batch):
            return Batch(images=a.images[i:i + 1], labels=a.labels[i:i + 1], boxes=a.boxes[i:i + 1],
                         masks=None if a.masks is None else a.masks[i:i + 1], ids=list(a.ids[i:i + 1]))
        if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n:
            return a[i:i + 1]
        return a

    for i in range(n):
        ident = batch.ids[i] if batch is not None and i < len(batch.ids) else None
        yield ident, tuple(cut(a, i) for a in args), {k: cut(v, i) for k, v in kwargs.items()}


def _recording_update(update: Callable[..., None]) -> Callable[..., None]:
    """Wrap a metric's ``update``: with ``keep_per_image`` it runs image by image, each on an empty
    state, and keeps that state before adding it to the total. The total is then the sum of the
    per-image states by construction (the same numbers as a batched update, up to float summation
    order), whatever the metric computes; a metric's batched work (the classifier forward passes of
    SM, deletion / insertion, ROAD) then runs one image at a time."""

    @functools.wraps(update)
    def wrapper(self: Accumulator, *args: Any, **kwargs: Any) -> None:
        if not self.keep_per_image or getattr(self, "_in_update", False):
            update(self, *args, **kwargs)
            return
        values = (*args, *kwargs.values())
        rows = {int(a.shape[0]) for a in values if isinstance(a, torch.Tensor) and a.dim() > 0}
        rows |= {len(a) for a in values if isinstance(a, Batch)}
        total, records = self._state, []
        self._in_update = True  # a subclass update calling its parent's records once
        try:
            if len(rows) > 1:  # not one row per image: let the metric's own check raise
                self._state = self._empty_state()
                update(self, *args, **kwargs)
                raise ValueError(f"{self.name}: keep_per_image needs one row per image in every tensor "
                                 f"argument, got leading sizes {sorted(rows)}")
            for ident, a, kw in _split_images(args, kwargs):
                self._state = self._empty_state()
                update(self, *a, **kw)
                records.append((ident, self._state))
            merged = dict(total)
            for _, st in records:
                for k, v in st.items():
                    if merged[k].shape != v.shape and merged[k].size == 0:  # sized by the first image
                        merged[k] = np.zeros_like(v)
                    if merged[k].shape != v.shape:
                        raise ValueError(f"{self.name}: an image's state {k!r} has shape {v.shape}, earlier "
                                         f"ones {merged[k].shape} (images of different sizes?)")
                    merged[k] = merged[k] + v
            total = merged
        finally:
            self._state = total
            self._in_update = False
        for ident, st in records:
            self._per_image.append({k: _compact(v) for k, v in st.items()})
            self._per_image_ids.append(ident)

    wrapper._records_images = True  # type: ignore[attr-defined]
    return wrapper


def zeros(n: int = 1) -> np.ndarray:
    """A float64 state entry of ``n`` zeros."""
    return np.zeros(n, dtype=np.float64)


def check_maps(maps: Tensor, batch: Batch, *, nan: NanPolicy = "raise", metric: str = "metric",
               keep_float32: bool = False) -> np.ndarray:
    """Validate maps against their batch and return them as a float64 numpy array.

    Args:
        maps: ``(B, H, W)`` float tensor; ``B`` and ``H, W`` must match ``batch.images``.
        batch: the batch the maps belong to.
        nan: ``"raise"``: NaN anywhere raises; ``"zero"``: NaN is allowed (the caller handles it,
            as wsolevaluation does for MaxBoxAcc and PxAP). Infinite values always raise.
        metric: the metric's name, for the error message.
        keep_float32: return float32 maps as they are (for callers that widen each value to
            float64 themselves, exactly, sparing the copy).

    Returns:
        ``(B, H, W)`` float64 array (on the CPU; float32 maps stay float32 with ``keep_float32``).

    Raises:
        ValueError: wrong type, dimensionality, shape, or non-finite values.
    """
    if not isinstance(maps, Tensor):
        raise ValueError(f"{metric}: maps must be a torch.Tensor of shape (B, H, W), got {type(maps).__name__}")
    if maps.dim() != 3:
        raise ValueError(f"{metric}: maps must have shape (B, H, W), got {tuple(maps.shape)}")
    b, h, w = (int(s) for s in maps.shape)
    ib, ih, iw = len(batch), int(batch.images.shape[-2]), int(batch.images.shape[-1])
    if (b, h, w) != (ib, ih, iw):
        raise ValueError(f"{metric}: maps of shape {(b, h, w)} do not match the batch's images "
                         f"{tuple(batch.images.shape)}: expected {(ib, ih, iw)} (one map per image, at the "
                         "image resolution; upsample low-resolution maps first, e.g. with "
                         "masksal.metrics.resize_maps)")
    if maps.is_complex():
        raise ValueError(f"{metric}: maps must be real-valued, got dtype {maps.dtype}")
    dtype = torch.float32 if keep_float32 and maps.dtype == torch.float32 else torch.float64
    arr = maps.detach().to("cpu", dtype).numpy()
    if np.isinf(arr).any():
        bad = sorted({int(i) for i in np.nonzero(np.isinf(arr).any(axis=(1, 2)))[0]})
        raise ValueError(f"{metric}: maps of images {bad[:10]} contain inf")
    if nan == "raise" and np.isnan(arr).any():
        bad = sorted({int(i) for i in np.nonzero(np.isnan(arr).any(axis=(1, 2)))[0]})
        raise ValueError(f"{metric}: maps of images {bad[:10]} contain NaN (a saliency method produced an "
                         "undefined map; fix the method, or pass nan_maps='zero' to MaxBoxAccuracy / "
                         "PixelAveragePrecision to score NaN maps as all-zero maps, as wsolevaluation does)")
    return arr


def minmax_normalize(maps: np.ndarray) -> np.ndarray:
    """Min-max normalize each map to [0, 1] exactly as wsolevaluation does.

    A constant map, or one containing NaN, becomes all zeros. Values are computed as
    ``(m - min) / (max - min)`` in float64, bit-identical to the reference's in-place
    ``m -= m.min(); m /= m.max()``.

    Args:
        maps: ``(B, H, W)`` float64.

    Returns:
        ``(B, H, W)`` float64 in [0, 1].
    """
    out = np.zeros_like(maps, dtype=np.float64)
    for i, m in enumerate(maps):
        if np.isnan(m).any():
            continue
        lo, hi = m.min(), m.max()
        if lo == hi:
            continue
        d = m - lo
        out[i] = d / d.max()
    return out


def check_boxes(batch: Batch, metric: str) -> list[np.ndarray]:
    """The batch's ground-truth boxes as float64 ``(K_i, 4)`` arrays; every image needs one.

    Raises:
        ValueError: an image has no box, or a box is not ``(x0, y0, x1, y1)`` with ``x0 <= x1``,
            ``y0 <= y1``.
    """
    if len(batch.boxes) != len(batch):
        raise ValueError(f"{metric}: the batch has {len(batch)} images but {len(batch.boxes)} box tensors")
    out = []
    for i, b in enumerate(batch.boxes):
        arr = b.detach().to("cpu", torch.float64).numpy().reshape(-1, 4)
        if arr.shape[0] == 0:
            raise ValueError(f"{metric}: image {i} ({batch.ids[i] if i < len(batch.ids) else i}) has no "
                             "ground-truth box; box metrics need at least one per image")
        if not np.isfinite(arr).all() or (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
            raise ValueError(f"{metric}: image {i} has an invalid box {arr.tolist()}: expected inclusive "
                             "(x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
        out.append(arr)
    return out


def check_masks(batch: Batch, metric: str) -> np.ndarray:
    """The batch's pixel masks as a uint8 ``(B, H, W)`` array with values in {0, 1, 255}.

    Raises:
        ValueError: no masks, wrong shape, or other values.
    """
    if batch.masks is None:
        raise ValueError(f"{metric}: the batch has no pixel masks (batch.masks is None)")
    masks = batch.masks.detach().cpu().numpy()
    expected = (len(batch), int(batch.images.shape[-2]), int(batch.images.shape[-1]))
    if masks.shape != expected:
        raise ValueError(f"{metric}: masks of shape {masks.shape} do not match the images: expected {expected}")
    bad = (masks != 0) & (masks != 1) & (masks != 255)  # elementwise, where np.isin sorts
    if bad.any():
        raise ValueError(f"{metric}: masks must hold 0 (background), 1 (object) or 255 (ignore); found "
                         f"{sorted(set(np.unique(masks[bad]).tolist()))[:5]}")
    return masks.astype(np.uint8, copy=False)
