"""Scale-out: ``torchrun`` process groups, data sharding, synchronized BatchNorm, mixed precision.

Training under ``torchrun --nproc-per-node N -m masksal train ...`` is data parallel: every
process holds a replica of the masker (and, in CA / pool mode, of the classifier), both wrapped
in :class:`~torch.nn.parallel.DistributedDataParallel`; the global batch of step ``s`` (the batch
a single process would train on) is split into ``N`` equal, contiguous slices by
:class:`ShardedBatchSampler`, and gradients are averaged over processes. With BatchNorm
synchronized over processes (:func:`convert_sync_batchnorm`, the default) a distributed run
computes the same update as the single-process run, up to float rounding.

Evaluation is sharded: :func:`shard_dataset` gives each process a disjoint part of a split,
the metric accumulators are all-reduced (sums of counts), and :func:`evaluate_sharded` returns
the whole split's numbers on every process, exactly those of a single-process run for the
counting metrics.

Backends: ``gloo`` on CPU, ``nccl`` on CUDA. Everything here is a no-op, or the identity, when
no process group is initialized, so the single-process path runs the same code.
"""

from __future__ import annotations

import math
import os
import pickle
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

AMP_MODES = ("auto", "off", "bf16", "fp16")


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


def process_device(name: str) -> torch.device:
    """The device this process computes on.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:K"``.

    Returns:
        ``cuda:LOCAL_RANK`` for ``"auto"``/``"cuda"`` under torchrun (one GPU per process),
        otherwise the named device.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() if "LOCAL_RANK" in os.environ else torch.cuda.current_device())
    return device


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(index: int, fn: Callable[..., Any], args: tuple[Any, ...], world: int, port: int,
                  threads: int, results: str) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=world)
    try:
        out = fn(*args)
    finally:
        dist.destroy_process_group()
    with open(Path(results) / f"{index}.pkl", "wb") as f:
        pickle.dump(out, f)


def launch_local(fn: Callable[..., Any], world: int, *args: Any, threads: int | None = None) -> list[Any]:
    """Run ``fn(*args)`` in ``world`` new CPU processes joined in a ``gloo`` group on 127.0.0.1.

    For tests and benchmarks on one machine (``torchrun`` does the same for real runs). ``fn``
    must be importable (a module-level function) and its arguments and result picklable.

    Args:
        fn: the function every process runs once the group is up.
        world: number of processes.
        *args: arguments of ``fn``.
        threads: torch threads per process; default: the machine's cores divided among them.

    Returns:
        ``fn``'s results, by rank.
    """
    import torch.multiprocessing as mp

    threads = threads or max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory(prefix="masksal-launch-") as tmp:
        mp.start_processes(_local_worker, args=(fn, args, world, _free_port(), threads, tmp), nprocs=world,
                           join=True, start_method="spawn")
        results = []
        for i in range(world):
            with open(Path(tmp) / f"{i}.pkl", "rb") as f:
                results.append(pickle.load(f))  # written just above by our own child processes
    return results


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


def check_batch_size(batch_size: int, what: str = "train.batch_size") -> int:
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


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":  # nccl reduces CUDA tensors only
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def evaluate_sharded(
    explainer: Any,
    classifier: Any,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    val_dataset: Dataset | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    **evaluate_kwargs: Any,
) -> dict[str, Any]:
    """:func:`masksal.evaluation.evaluate` with the dataset split across the processes.

    Each process explains its shard (:func:`shard_dataset`); the metric accumulators are summed
    over processes, so every process returns the result of the whole split: exactly the
    single-process result for the counting metrics (top-1, LE, OM, GT-known / Top-1 Loc,
    MaxBoxAcc, PxAP), up to float summation order for the averaged ones (F1, SM, deletion /
    insertion). Rank 0 writes the result to ``out`` (JSON) and shows the progress bar. Timings
    (``seconds``, ``explain_seconds``) are rank 0's. Without a process group this is plain
    :func:`~masksal.evaluation.evaluate` over the whole dataset.

    Args:
        explainer: an :class:`~masksal.explainers.base.Explainer`.
        classifier: the :class:`~masksal.classifiers.Classifier` the maps explain, on this
            process's device.
        dataset: a map-style dataset of sample dicts (images in [0, 1], see
            :func:`masksal.types.collate`).
        batch_size: images per forward pass and process.
        num_workers: DataLoader workers per process.
        val_dataset: the validation split for MaxBoxAcc's thresholds (sharded the same way).
        limit: evaluate the first ``limit`` images of each split (of the whole split, not per process).
        out: a JSON file for the result, written by rank 0 only.
        progress: progress bar on rank 0.
        **evaluate_kwargs: ``metrics``, ``metric_options`` of :func:`~masksal.evaluation.evaluate`.

    Returns:
        The :func:`~masksal.evaluation.evaluate` result of the whole split, on every process.
    """
    from masksal.checkpoint import write_json
    from masksal.evaluation import evaluate
    from masksal.types import collate

    def loader(ds: Dataset) -> DataLoader:
        if limit is not None:
            ds = Subset(ds, range(min(limit, len(ds))))  # type: ignore[arg-type]
        return DataLoader(shard_dataset(ds), batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                          pin_memory=torch.device(_module_device(classifier)).type == "cuda")

    result = evaluate(explainer, classifier, loader(dataset),
                      val_loader=None if val_dataset is None else loader(val_dataset),
                      progress=progress and is_main_process(), **evaluate_kwargs)
    if out is not None and is_main_process():
        write_json(Path(out), {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()})
    barrier()
    return result


def _module_device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
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
        return self.classifier.forward_with_taps(images)  # type: ignore[no-any-return]


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


# --------------------------------------------------------------------------- GPU path


@dataclass
class RunOptions:
    """How a training run computes, not what it trains (kept out of the experiment config).

    Attributes:
        amp: automatic mixed precision: ``"auto"`` (bf16 on a GPU that supports it, else fp16
            with loss scaling; off on CPU), ``"off"``, ``"bf16"`` or ``"fp16"``.
        compile: ``torch.compile`` the masker, and the classifier where it runs one plain
            forward per step (``train-classifier``; the masked images in FIX mode). The forward
            that reads the taps stays eager (a compiled graph would not run their hooks), and so
            does the classifier in CA / pool mode, whose BatchNorm updates would otherwise break
            the backward pass of that eager forward.
        sync_batchnorm: under a process group, BatchNorm statistics over the global batch
            (:func:`convert_sync_batchnorm`), so the run matches a single-process one.
    """

    amp: str = "auto"
    compile: bool = False
    sync_batchnorm: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")


class MixedPrecision:
    """Autocast and loss scaling for one device; every method is the identity when it is off.

    Args:
        mode: one of :data:`AMP_MODES` (see :class:`RunOptions`).
        device: the training device.
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
        self.device_type = device.type
        self.dtype: torch.dtype | None = None
        if mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
            self.dtype = torch.bfloat16
        elif mode == "fp16" or (mode == "auto" and device.type == "cuda"):
            self.dtype = torch.float16
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        """``"off"``, ``"bf16"`` or ``"fp16"``."""
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> torch.autocast:
        """Context manager for forward passes."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        """``loss.backward(**kwargs)``, scaled when fp16."""
        self.scaler.scale(loss).backward(**kwargs)

    def step(self, opt: torch.optim.Optimizer, clip: tuple[Iterable[Tensor], float] | None = None) -> None:
        """Unscale, optionally clip ``(parameters, max_norm)``, and step (skipped on inf/NaN in fp16)."""
        if clip is not None:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(list(clip[0]), clip[1])
        self.scaler.step(opt)

    def update(self) -> None:
        """Adjust the loss scale once per iteration, after every optimizer stepped."""
        self.scaler.update()


def compiled(module: nn.Module, enabled: bool) -> Callable[..., Any]:
    """``torch.compile(module)`` when ``enabled``, else ``module`` (shares its parameters)."""
    return torch.compile(module) if enabled else module
