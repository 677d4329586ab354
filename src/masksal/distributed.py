"""Scale-out: ``torchrun`` process groups, data sharding, synchronized BatchNorm, DDP.

Training under ``torchrun --nproc-per-node N -m masksal train ...`` is data parallel: every
process holds a replica of the masker (and, in CA / pool mode, of the classifier), both wrapped
in :class:`~torch.nn.parallel.DistributedDataParallel`; the global batch of step ``s`` (the batch
a single process would train on) is split into ``N`` equal, contiguous slices by
:class:`ShardedBatchSampler`, and gradients are averaged over processes. With BatchNorm
synchronized over processes (:func:`convert_sync_batchnorm`, the default) a distributed run
computes the same update as the single-process run, up to float rounding.

Evaluation is sharded: :func:`shard_dataset` gives each process a disjoint part of a split and
the metric accumulators are all-reduced (see :func:`masksal.evaluation.evaluate_sharded`).

Backends: ``gloo`` on CPU, ``nccl`` on CUDA. Everything here is a no-op, or the identity, when
no process group is initialized, so the single-process path runs the same code. How a run
computes on one device (mixed precision, ``torch.compile``) is :mod:`masksal.precision`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler, Subset

from masksal.devices import resolve_device

# --------------------------------------------------------------------------- process group


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0: the process that writes checkpoints, logs and results."""
    return get_rank() == 0


def backend() -> str | None:
    """The process group's backend (``"gloo"``, ``"nccl"``), or None without one."""
    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def local_rank() -> int:
    """The process's index on its node (``LOCAL_RANK``, set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def process_device(name: str | torch.device) -> torch.device:
    """The device this process computes on: :func:`masksal.devices.resolve_device`, which under
    torchrun gives ``cuda:LOCAL_RANK`` for ``"auto"`` / ``"cuda"`` (one GPU per process)."""
    return resolve_device(name)


def init_from_env(device: str = "auto") -> bool:
    """Join the process group that ``torchrun`` describes in the environment.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (``env://``); uses
    ``nccl`` when this process computes on CUDA (and binds it to ``cuda:LOCAL_RANK``), ``gloo``
    otherwise. Does nothing when ``WORLD_SIZE`` is unset or 1, or a group already exists.

    Args:
        device: the training device name (see :func:`process_device`).

    Returns:
        True when this call initialized a process group.
    """
    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dev = process_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return True


@contextmanager
def torchrun_session(device: str = "auto") -> Iterator[bool]:
    """``with torchrun_session(device):`` join torchrun's process group and leave it at the end.

    Yields whether a process group is running (False for a plain single-process run).
    """
    started = init_from_env(device)
    try:
        yield is_distributed()
    finally:
        if started:
            dist.destroy_process_group()


# --------------------------------------------------------------------------- data


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's slice of every global batch: ``batch[r*k:(r+1)*k]`` with ``k = len(batch)/N``.

    The union over processes of the slices of step ``s`` is the batch a single process trains on
    at step ``s``, so the global batch size equals the single-process batch size.

    Args:
        batches: the global batch sampler (e.g. :class:`masksal.training.StepBatchSampler`).
        rank, world_size: this process and the number of processes (default: the process group's).

    Raises:
        ValueError: a batch does not split evenly across the processes.
    """

    def __init__(self, batches: Sampler[list[int]], rank: int | None = None, world_size: int | None = None) -> None:
        self.batches = batches
        self.rank = get_rank() if rank is None else rank
        self.world = get_world_size() if world_size is None else world_size

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            k, extra = divmod(len(batch), self.world)
            if extra or k == 0:
                raise ValueError(f"a batch of {len(batch)} does not split evenly across {self.world} processes")
            yield batch[self.rank * k:(self.rank + 1) * k]


def check_batch_size(batch_size: int, what: str = "masker_train.batch_size") -> int:
    """The per-process batch size of a global ``batch_size``; an error when it does not divide."""
    n = get_world_size()
    if batch_size % n:
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        raise ValueError(f"{what} = {batch_size} (the global batch) does not split evenly across {n} processes: "
                         f"use a process count among {divisors} or change {what}")
    return batch_size // n


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """Contiguous, disjoint index ranges covering ``0 .. n-1``; sizes differ by at most one."""
    return range(rank * n // world_size, (rank + 1) * n // world_size)


def shard_dataset(ds: Dataset, rank: int | None = None, world_size: int | None = None) -> Dataset:
    """This process's part of ``ds``: no image twice, none left out (no padding duplicates).

    Args:
        ds: a map-style dataset with ``len``.
        rank, world_size: default: the process group's; ``ds`` itself when there is one process.

    Returns:
        ``Subset(ds, shard_indices(len(ds), rank, world_size))`` (keeps ``classes`` and
        ``num_classes`` reachable as ``shard.dataset``).

    Raises:
        ValueError: fewer images than processes (a process would have nothing to evaluate).
    """
    r = get_rank() if rank is None else rank
    w = get_world_size() if world_size is None else world_size
    if w == 1:
        return ds
    n = len(ds)  # type: ignore[arg-type]
    if n < w:
        raise ValueError(f"cannot shard {n} images across {w} processes: give each process at least one")
    return Subset(ds, shard_indices(n, r, w))


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """The mean of each value over processes (for logs: per-process means of equal shards)."""
    if not is_distributed():
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    n = get_world_size()
    out = {k: float(v) / n for k, v in zip(keys, t.cpu().tolist(), strict=True)}
    return {k: out[k] for k in values}


def all_reduce_sum(*values: float) -> tuple[float, ...]:
    """Each value summed over processes (the values themselves without a process group)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return tuple(float(v) for v in t.cpu().tolist())


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":  # nccl reduces CUDA tensors only
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --------------------------------------------------------------------------- models


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over processes: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch of all processes.

    Hand-written because :class:`torch.nn.SyncBatchNorm` refuses CPU tensors (gloo); on CUDA
    :func:`convert_sync_batchnorm` uses torch's. Same parameters, buffers and state-dict keys as
    ``nn.BatchNorm{1,2,3}d``; statistics over every dimension but the channels (dim 1) of all
    processes' inputs; running statistics updated with the global mean and unbiased variance,
    as one process seeing the whole batch would. In eval mode, or without a process group,
    it is plain BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)
        self._check_input_dim(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        count = input.new_full((1,), input.numel() / max(1, c))
        sums = _AllReduceSum.apply(torch.cat([input.sum(dims), count]))
        n = sums[c]
        mean = sums[:c] / n
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims)) / n  # two passes: as accurate as BatchNorm's
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n.detach() / (n.detach() - 1).clamp(min=1)),
                                                  alpha=f)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm of ``module`` synchronized across processes (in place where possible).

    Uses :class:`torch.nn.SyncBatchNorm` on CUDA and :class:`SyncBatchNorm` (this module's)
    elsewhere. Weights, buffers and state-dict keys are unchanged, so checkpoints load into the
    plain model.

    Args:
        module: any module (the classifier's model, the masker).
        device: the device the module computes on.

    Returns:
        The converted module (``module`` itself unless it is a BatchNorm layer).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    plain = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    if type(module) in plain:
        bn: nn.modules.batchnorm._BatchNorm = module  # type: ignore[assignment]
        new = SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        new.train(bn.training)
        new.requires_grad_(any(p.requires_grad for p in bn.parameters()) if bn.affine else False)
        return new.to(device)
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child, device)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


class TapsForward(nn.Module):
    """``forward(images) = classifier.forward_with_taps(images)``, so DDP can wrap that call.

    :class:`~torch.nn.parallel.DistributedDataParallel` intercepts ``forward`` only; the masker
    needs the logits and the taps of one pass.
    """

    def __init__(self, classifier: Any) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.classifier.forward_with_taps(images)


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(module)`` under a process group; ``module`` itself otherwise.

    Gradients are averaged over processes in ``backward``; parameters and buffers start from
    rank 0's.
    """
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, output_device=device.index if ids else None)
