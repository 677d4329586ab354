"""The accumulator contract (metrics/base.py): shards merge to the whole, batches equal a per-image
loop, reset, and the torch.distributed all-reduce (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from metric_data import random_batch

from masksal.classifiers import create_classifier
from masksal.metrics import (
    Accumulator,
    ClassificationAccuracy,
    DeletionInsertion,
    LocalizationError,
    MaxBoxAccuracy,
    Metric,
    PixelAveragePrecision,
    SaliencyMetric,
)
from masksal.types import Batch

SIZE = 24


def dataset(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, Batch]:
    """Smooth random maps, random boxes (1-2 per image) and masks with an ignore band."""
    return random_batch(n, SIZE, seed, ignore_band=True)


def part(batch: Batch, idx: slice) -> Batch:
    return Batch(images=batch.images[idx], labels=batch.labels[idx], boxes=batch.boxes[idx],
                 masks=None if batch.masks is None else batch.masks[idx], ids=batch.ids[idx])


def factories() -> dict[str, Callable[[], Metric]]:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", 3, width=8).eval()
    return {
        "le": lambda: LocalizationError(),
        "le_si_casm": lambda: LocalizationError(geometry="si", binarize="casm"),
        "maxboxacc": lambda: MaxBoxAccuracy(),
        "pxap": lambda: PixelAveragePrecision(),
        "sm": lambda: SaliencyMetric(clf),
        "deletion_insertion": lambda: DeletionInsertion(clf, steps=4),
    }


def update(metric: Metric, maps: torch.Tensor, batch: Batch) -> None:
    if isinstance(metric, LocalizationError):
        metric.update(maps, batch, predictions=batch.labels.flip(0))
    else:
        metric.update(maps, batch)


def assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-6), k


@pytest.mark.parametrize("name", list(factories()))
def test_shards_merged_equal_one_pass_and_batches_equal_per_image_loop(name: str) -> None:
    make = factories()[name]
    maps, batch = dataset()
    whole = make()
    update(whole, maps, batch)
    first, second = make(), make()
    update(first, maps[:4], part(batch, slice(0, 4)))
    update(second, maps[4:], part(batch, slice(4, None)))
    assert_same(first.merge(second).compute(), whole.compute())
    loop = make()
    for i in range(len(batch)):
        update(loop, maps[i:i + 1], part(batch, slice(i, i + 1)))
    assert_same(loop.compute(), whole.compute())
    assert loop.num_images == len(batch)


def test_reset_and_state_dict() -> None:
    maps, batch = dataset()
    metric = MaxBoxAccuracy()
    metric.update(maps, batch)
    state = metric.state_dict()
    assert state["count"][0] == len(batch)
    state["count"][0] = 0  # a copy: the metric is untouched
    assert metric.num_images == len(batch)
    metric.reset()
    assert metric.num_images == 0 and math.isnan(metric.compute()["maxboxacc"])


def test_merge_refuses_other_metrics_and_settings() -> None:
    with pytest.raises(ValueError, match="cannot merge"):
        MaxBoxAccuracy().merge(PixelAveragePrecision())
    with pytest.raises(ValueError, match="different settings"):
        MaxBoxAccuracy().merge(MaxBoxAccuracy(threshold_step=0.01))
    with pytest.raises(ValueError, match="different settings"):
        LocalizationError().merge(LocalizationError(geometry="si"))


def test_all_reduce_is_a_noop_without_a_process_group() -> None:
    maps, batch = dataset()
    metric = PixelAveragePrecision()
    metric.update(maps, batch)
    before = metric.compute()
    metric.all_reduce()
    assert metric.compute() == before


def test_classification_accuracy() -> None:
    acc = ClassificationAccuracy()
    acc.update(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), torch.tensor([1, 1, 1]))
    acc.update(torch.tensor([0]), torch.tensor([0]))
    assert acc.compute()["top1"] == 75.0
    other = ClassificationAccuracy()
    other.update(torch.tensor([1]), torch.tensor([0]))
    assert acc.merge(other).compute()["top1"] == 60.0


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        maps, batch = dataset()
        shard = slice(0, 4) if rank == 0 else slice(4, None)
        metrics: list[Accumulator] = [LocalizationError(), MaxBoxAccuracy(), PixelAveragePrecision()]
        for m in metrics:
            assert isinstance(m, Metric)
            update(m, maps[shard], part(batch, shard))
            m.all_reduce()
        result = {type(m).__name__: m.compute() for m in metrics}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_processes_equals_single_process() -> None:
    maps, batch = dataset()
    expected = {}
    for m in (LocalizationError(), MaxBoxAccuracy(), PixelAveragePrecision()):
        update(m, maps, batch)
        expected[type(m).__name__] = m.compute()
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(2, init_file, tmp), nprocs=2, join=True)
        for rank in (0, 1):
            got = json.loads(Path(tmp, f"rank{rank}.json").read_text())
            for name, values in expected.items():
                assert_same(got[name], values)
    assert np.isfinite(expected["PixelAveragePrecision"]["pxap"])
