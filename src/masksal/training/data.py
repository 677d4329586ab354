"""Training data: datasets from a config or from the user's objects, and batches that are a
function of the step (so an interrupted run resumes on exactly the batches it would have seen)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from masksal.config import ExperimentConfig
from masksal.distributed import ShardedBatchSampler, is_distributed
from masksal.types import Batch, collate

BENCHMARK_SPECS = ("benchmark", "benchmark:pairs", "benchmark:mixed")


def build_dataset(cfg: ExperimentConfig, split: str, epoch: int = 0) -> Dataset:
    """The dataset of ``cfg.data`` for ``split`` (``"train"``, ``"val"`` or ``"test"``).

    ``benchmark:pairs`` is the two-object split (``n`` images, each yielded once per object);
    ``benchmark:mixed`` half single-object images, half requests on two-object images (``n``
    samples in all).
    ``epoch > 0`` (built-in benchmark): the next ``n`` images of the split, for
    ``data.fresh_each_epoch``; those are not cached (the cache would grow with every epoch).
    """
    d = cfg.data
    if d.dataset in BENCHMARK_SPECS:
        from masksal.data.benchmark import BenchmarkDataset, MixedBenchmark

        n = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]

        def part(images: int, objects: int) -> BenchmarkDataset:
            return BenchmarkDataset(split=split, n=images, size=d.image_size, seed=d.seed, families=tuple(d.families),
                                    examples_per_class=d.examples_per_class if split == "train" else None,
                                    cache_dir=d.cache_dir if epoch == 0 else None, max_distractors=d.max_distractors,
                                    start=epoch * images, objects=objects)

        if d.dataset == "benchmark:mixed":  # half the samples single-object, half requests on pair images
            return MixedBenchmark(part(n - n // 2, 1), part(max(1, n // 4), 2))
        return part(n, 2 if d.dataset == "benchmark:pairs" else 1)
    from masksal.data import load_dataset

    return load_dataset(d.dataset, split=split, size=d.image_size, require_labels=split == "train")


def dataset_classes(ds: Any) -> list[str]:
    """The class names a dataset declares (``classes``), or ``[]``."""
    return [str(c) for c in getattr(ds, "classes", None) or []]


def dataset_num_classes(ds: Any) -> int:
    """How many classes a dataset has (``num_classes``, else ``len(classes)``).

    Raises:
        ValueError: the dataset says neither (an unlabelled folder: use ``imagefolder:`` to train).
    """
    n = getattr(ds, "num_classes", None) or len(getattr(ds, "classes", None) or [])
    if not n:
        raise ValueError("the training dataset does not say how many classes it has (an unlabelled folder? train "
                         "on imagefolder:DIR, one subfolder per class)")
    return int(n)


class StepBatchSampler(Sampler[list[int]]):
    """Batches for steps ``start, ..., total - 1``; the batch of step ``s`` depends on ``(seed, s)``.

    Each epoch is a fresh permutation; a dataset smaller than a batch is cycled through. With
    ``epoch_offsets``, the indices of epoch ``e`` are shifted by ``e * n`` (for datasets that draw
    each epoch's augmentation, see ``_EpochIndexed``).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int,
                 epoch_offsets: bool = False) -> None:
        if n <= 0:
            raise ValueError("the training dataset is empty")
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.per_epoch = max(1, n // batch_size)
        self.epoch_offsets = epoch_offsets

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm: Tensor | None = None
        epoch = -1
        for step in range(self.start, self.total):
            e = step // self.per_epoch
            if e != epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
                perm, epoch = torch.randperm(self.n, generator=g), e
            assert perm is not None
            off = (step % self.per_epoch) * self.bs
            idx = perm[(off + torch.arange(self.bs)) % self.n]
            yield (idx + e * self.n if self.epoch_offsets else idx).tolist()


def step_loader(ds: Dataset, batch_size: int, start: int, total: int, seed: int, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A loader of the batches of steps ``start .. total - 1`` (this process's slice under torchrun)."""
    sampler: Sampler[list[int]] = StepBatchSampler(len(ds), batch_size, seed, start, total,  # type: ignore[arg-type]
                                                   epoch_offsets=hasattr(ds, "set_epoch"))
    if hasattr(ds, "set_epoch"):
        ds = _EpochIndexed(ds)
    if is_distributed():
        sampler = ShardedBatchSampler(sampler)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers, pin_memory=pin_memory)


def epoch_batches(cfg: ExperimentConfig, ds: Dataset, batch_size: int, start: int, total: int, seed: int,
                  pin_memory: bool = False) -> Iterator[Batch]:
    """Batches of steps ``start .. total - 1`` for classifier training; with
    ``data.fresh_each_epoch`` every epoch of the built-in benchmark draws new images (epoch ``e``
    uses generator indices ``e*n .. (e+1)*n-1``)."""
    if not (cfg.data.fresh_each_epoch and cfg.data.dataset in BENCHMARK_SPECS):
        yield from step_loader(ds, batch_size, start, total, seed, cfg.data.num_workers, pin_memory)
        return
    per_epoch = max(1, len(ds) // batch_size)  # type: ignore[arg-type]
    step = start
    while step < total:
        epoch = step // per_epoch
        end = min(total, (epoch + 1) * per_epoch)
        epoch_ds = ds if epoch == 0 else build_dataset(cfg, "train", epoch)
        yield from step_loader(epoch_ds, batch_size, step, end, seed, cfg.data.num_workers, pin_memory)
        step = end


# -- the user's own data -----------------------------------------------------------------------


class _EpochIndexed(Dataset[dict[str, Any]]):
    """Index ``e * n + i`` is sample ``i`` drawn for epoch ``e`` (``set_epoch`` first), so an
    augmenting dataset draws each epoch's crops whatever process or worker loads them."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.n = len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch, i = divmod(index, self.n)
        self.dataset.set_epoch(epoch)
        return self.dataset[i]


def as_training_dataset(data: Any, image_size: int | None) -> Dataset:
    """A map-style dataset of masksal samples from ``data``: a data spec string (``"benchmark"``,
    ``"imagefolder:DIR"``...), a masksal dataset, or any ``Dataset`` of ``(image, label)`` pairs
    (see :func:`masksal.data.from_pairs`; images resized to ``image_size``, or kept at their own
    size when it is ``None``).

    Raises:
        ValueError: ``data`` is none of these (a ``DataLoader`` is handled by the caller).
    """
    from masksal.data import BenchmarkDataset, LocalizationDataset, PairDataset, from_pairs, load_dataset

    if isinstance(data, str):
        if data == "benchmark":
            return BenchmarkDataset(split="train", n=40000, size=image_size or 64)
        return load_dataset(data, split="train", size=image_size or 224, require_labels=True)
    if isinstance(data, (BenchmarkDataset, LocalizationDataset, PairDataset)):
        return data
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return from_pairs(data, size=image_size, resize="shorter_crop" if image_size else "none")
    raise ValueError(f"data must be a Dataset of (image, label) pairs, a DataLoader or a data spec string, got "
                     f"{type(data).__name__}")


def load_batch(cfg: ExperimentConfig, split: str, n: int) -> Batch:
    """The first ``n`` images of ``split`` of the dataset of ``cfg`` as one in-memory :class:`Batch`."""
    from masksal.config import with_overrides

    key = "data.n_test" if split == "test" else "data.n_val" if split == "val" else "data.n_train"
    changes: dict[str, Any] = {key: n}
    if split == "train":
        changes["data.examples_per_class"] = None
    ds = build_dataset(with_overrides(cfg, changes, "load_batch"), split)
    return collate([ds[i] for i in range(min(n, len(ds)))])  # type: ignore[arg-type]
