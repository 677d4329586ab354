"""Accumulator base classes and the input checks shared by every metric.

Every metric keeps its state as a few float64 arrays of sums and counts, so that the states of
several processes (or of several shards of one split) simply add up: ``merge`` adds another
accumulator's state into this one, ``all_reduce`` sums the state over a ``torch.distributed``
process group. Memory is independent of the number of images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from masksal.types import Batch

NanPolicy = Literal["raise", "zero"]


class Accumulator(ABC):
    """A streaming statistic: ``update`` per batch, ``compute`` at the end.

    Subclasses define ``_empty_state`` (name -> float64 array of sums/counts) and ``compute``;
    ``reset``, ``merge``, ``all_reduce`` and ``state_dict`` work on that state alone.
    """

    name: str = "accumulator"

    def __init__(self) -> None:
        self._state: dict[str, np.ndarray] = self._empty_state()

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
        """Forget everything accumulated."""
        self._state = self._empty_state()

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


def zeros(n: int = 1) -> np.ndarray:
    """A float64 state entry of ``n`` zeros."""
    return np.zeros(n, dtype=np.float64)


def check_maps(maps: Tensor, batch: Batch, *, nan: NanPolicy = "raise", metric: str = "metric") -> np.ndarray:
    """Validate maps against their batch and return them as a float64 numpy array.

    Args:
        maps: ``(B, H, W)`` float tensor; ``B`` and ``H, W`` must match ``batch.images``.
        batch: the batch the maps belong to.
        nan: ``"raise"``: NaN anywhere raises; ``"zero"``: NaN is allowed (the caller handles it,
            as wsolevaluation does for MaxBoxAcc and PxAP). Infinite values always raise.
        metric: the metric's name, for the error message.

    Returns:
        ``(B, H, W)`` float64 array (on the CPU).

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
    arr = maps.detach().to("cpu", torch.float64).numpy()
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
    bad = ~np.isin(masks, (0, 1, 255))
    if bad.any():
        raise ValueError(f"{metric}: masks must hold 0 (background), 1 (object) or 255 (ignore); found "
                         f"{sorted(set(np.unique(masks[bad]).tolist()))[:5]}")
    return masks.astype(np.uint8)
