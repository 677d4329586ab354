"""Per-image states and bootstrap intervals (metrics/base.py, metrics/resampling.py): a resample is
scored exactly as the accumulator would score those images, the identity resample is the
accumulator, and the intervals cover a known mean at the stated rate."""

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
    PointingGame,
    RemoveAndDebias,
    SaliencyMetric,
    bootstrap,
    bootstrap_runs,
    separated_best,
)
from masksal.metrics.base import zeros
from masksal.types import Batch

SIZE = 20


def dataset(n: int = 7, seed: int = 0) -> tuple[torch.Tensor, Batch]:
    """Smooth random maps, 1-2 random boxes per image, masks of the boxes."""
    return random_batch(n, SIZE, seed, id_prefix="img")


def pick(batch: Batch, index: list[int]) -> Batch:
    """The images ``index`` of a batch (repeats allowed): a resample spelled out image by image."""
    return Batch(images=batch.images[index], labels=batch.labels[index], boxes=[batch.boxes[i] for i in index],
                 masks=None if batch.masks is None else batch.masks[index], ids=[batch.ids[i] for i in index])


def factories() -> dict[str, Callable[[], Metric]]:
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", 3, width=8).eval()
    return {
        "le_om_f1": lambda: LocalizationError(),
        "maxboxacc": lambda: MaxBoxAccuracy(threshold_step=0.01),
        "pxap": lambda: PixelAveragePrecision(),
        "pointing_game": lambda: PointingGame(),
        "sm": lambda: SaliencyMetric(clf),
        "deletion_insertion": lambda: DeletionInsertion(clf, steps=4),
        "road": lambda: RemoveAndDebias(clf, fractions=(0.3, 0.6)),
    }


def feed(metric: Metric, maps: torch.Tensor, batch: Batch) -> None:
    if isinstance(metric, LocalizationError):
        metric.update(maps, batch, predictions=batch.labels.flip(0))
    else:
        metric.update(maps, batch)


def close(a: dict[str, float], b: dict[str, float], tol: float = 1e-9) -> bool:
    return a.keys() == b.keys() and all((math.isnan(a[k]) and math.isnan(b[k])) or abs(a[k] - b[k]) <= tol
                                        for k in a)


@pytest.mark.parametrize("name", list(factories()))
def test_per_image_states_change_nothing_and_resamples_score_as_the_accumulator(name: str) -> None:
    make = factories()[name]
    # Metrics that run the classifier see one image per forward pass with keep_per_image: float32
    # convolutions of another batch size differ in the last bits.
    tol = 1e-6 if name in ("sm", "deletion_insertion", "road") else 1e-9
    maps, batch = dataset()
    plain, kept = make(), make()
    kept.keep_per_image = True
    feed(plain, maps, batch)
    feed(kept, maps[:3], pick(batch, [0, 1, 2]))
    feed(kept, maps[3:], pick(batch, [3, 4, 5, 6]))
    assert close(kept.compute(), plain.compute(), tol)
    assert kept.num_kept_images == 7 and kept.per_image_ids() == batch.ids
    per = kept.per_image_states()
    for k, v in kept.state_dict().items():
        assert per[k].shape == (7, *v.shape)
        np.testing.assert_allclose(per[k].sum(axis=0), v, rtol=1e-12, atol=1e-12)
    # The identity resample is the accumulator itself.
    assert close(kept.reweighted(np.ones(7)).compute(), kept.compute())
    assert close(kept.reweighted(np.ones(7)).compute(), plain.compute(), tol)
    # A resample with repeats scores as an accumulator fed exactly those images (MaxBoxAcc's best
    # threshold chosen on the resample, PxAP's pooled histograms, ...).
    draw = [3, 3, 0, 6, 6, 6, 1]
    direct = make()
    feed(direct, maps[draw], pick(batch, draw))
    counts = np.bincount(draw, minlength=7)
    assert close(kept.reweighted(counts).compute(), direct.compute(), tol)


def test_maxboxacc_resample_picks_its_own_threshold() -> None:
    # Image 0 is hit at high thresholds only, images 1-2 at low thresholds only: the best threshold
    # of a resample depends on which images it drew.
    # Image 0 (small box): a core at 1 in a ring at 0.6, hit above 0.6. Images 1-2 (large box): a
    # ring at 0.3, hit below 0.3. No threshold hits all three.
    maps = torch.zeros(3, 16, 16)
    maps[0, 2:12, 2:12] = 0.6
    maps[0, 2:6, 2:6] = 1.0
    for i in (1, 2):
        maps[i, 2:12, 2:12] = 0.3
        maps[i, 2:6, 2:6] = 1.0
    boxes = [torch.tensor([[2.0, 2.0, 5.0, 5.0]]), torch.tensor([[2.0, 2.0, 11.0, 11.0]]),
             torch.tensor([[2.0, 2.0, 11.0, 11.0]])]
    batch = Batch(torch.rand(3, 3, 16, 16), torch.zeros(3, dtype=torch.long), boxes)
    acc = MaxBoxAccuracy(iou_thresholds=(0.5,))
    acc.keep_per_image = True
    acc.update(maps, batch)
    assert acc.compute()["maxboxacc"] == pytest.approx(200 / 3)
    only_first = acc.reweighted(np.array([3, 0, 0])).compute()
    assert only_first["maxboxacc"] == 100.0 and only_first["maxboxacc_threshold"] >= 0.6
    others = acc.reweighted(np.array([0, 2, 1])).compute()
    assert others["maxboxacc"] == 100.0 and others["maxboxacc_threshold"] < 0.3


def test_classification_accuracy_keeps_per_image_states_from_logits() -> None:
    acc = ClassificationAccuracy()
    acc.keep_per_image = True
    acc.update(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), torch.tensor([1, 1, 1]))
    assert acc.num_kept_images == 3
    assert acc.reweighted(np.array([0, 2, 0])).compute()["top1"] == 0.0
    assert acc.reweighted(np.array([1, 0, 1])).compute()["top1"] == 100.0


def test_records_merge_and_errors() -> None:
    maps, batch = dataset()
    a, b = MaxBoxAccuracy(threshold_step=0.01), MaxBoxAccuracy(threshold_step=0.01)
    a.keep_per_image = b.keep_per_image = True
    a.update(maps[:2], pick(batch, [0, 1]))
    b.update(maps[2:], pick(batch, [2, 3, 4, 5, 6]))
    assert a.merge(b).num_kept_images == 7
    a.reset()
    assert a.num_kept_images == 0
    off = MaxBoxAccuracy(threshold_step=0.01)
    off.update(maps, batch)
    with pytest.raises(ValueError, match="keep_per_image"):
        bootstrap(off)
    with pytest.raises(ValueError, match="different numbers of images"):
        bootstrap({"a": b, "b": _mean_of([1.0, 2.0])})
    with pytest.raises(ValueError, match="do not match"):  # the metric's own check, state untouched
        b.update(maps[:3], pick(batch, [0, 1]))
    assert b.num_images == 5 and b.num_kept_images == 5


class MeanValue(Accumulator):
    """A metric whose per-image value is given: its mean over the images."""

    name = "mean_value"

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"count": zeros(), "sum": zeros()}

    def update(self, values: torch.Tensor) -> None:
        self._state["sum"] += float(values.double().sum())
        self._state["count"] += values.numel()

    def compute(self) -> dict[str, float]:
        return {"mean": float(self._state["sum"][0] / self._state["count"][0])}


def _mean_of(values: list[float] | np.ndarray) -> MeanValue:
    m = MeanValue()
    m.keep_per_image = True
    m.update(torch.as_tensor(np.asarray(values, dtype=np.float64)))
    return m


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_interval_covers_the_true_mean_at_the_stated_rate(method: str) -> None:
    # 300 simulated splits of 80 images with skewed per-image values of known mean 1 (exponential):
    # the 95 % interval must contain 1 in about 95 % of them. The binomial spread of the rate over
    # 300 splits is 1.3 points; an interval of half the right width would cover ~70 %.
    rng = np.random.default_rng(1)
    hits = 0
    for rep in range(300):
        low, high = bootstrap(_mean_of(rng.exponential(1.0, 80)), n=400, seed=rep, method=method)["mean"]
        hits += low <= 1.0 <= high
    assert 0.90 <= hits / 300 <= 0.98


def test_pointing_game_interval_covers_the_hit_rate() -> None:
    # Per-image hits drawn with probability 0.7: the maps point inside or outside the box.
    rng = np.random.default_rng(2)
    box = [torch.tensor([[0.0, 0.0, 3.0, 3.0]])]
    hits = 0
    for rep in range(120):
        hit = rng.random(60) < 0.7
        maps = torch.zeros(60, 12, 12)
        maps[hit, 1, 1] = 1.0
        maps[~hit, 10, 10] = 1.0
        pg = PointingGame(tolerance_px=0.0)
        pg.keep_per_image = True
        pg.update(maps, Batch(torch.rand(60, 3, 12, 12), torch.zeros(60, dtype=torch.long), box * 60))
        low, high = bootstrap(pg, n=400, seed=rep)["pointing_game"]
        hits += low <= 70.0 <= high
    assert 0.88 <= hits / 120 <= 0.99


def test_same_seed_same_resamples_and_width_shrinks_with_images() -> None:
    rng = np.random.default_rng(3)
    small, large = _mean_of(rng.normal(0, 1, 50)), _mean_of(rng.normal(0, 1, 800))
    assert bootstrap(small, seed=4) == bootstrap(small, seed=4)
    w_small = np.diff(bootstrap(small, seed=4)["mean"])[0]
    w_large = np.diff(bootstrap(large, seed=4)["mean"])[0]
    # The interval of a mean narrows as 1 / sqrt(N): 4x for 16x the images.
    assert 2.5 < w_small / w_large < 6.0
    assert bootstrap(_mean_of([2.0] * 10)) == {"mean": (2.0, 2.0)}


def test_runs_add_the_spread_between_seeds() -> None:
    # Three runs whose images all score 0, 1 and 2: resampling images alone cannot move a run's
    # value, resampling the runs can. The mean of three runs drawn from {0, 1, 2} is 0 (or 2) with
    # probability 1/27 > 2.5 %, so the 95 % interval is [0, 2].
    runs = [_mean_of([float(s)] * 30) for s in range(3)]
    estimates, intervals = bootstrap_runs(runs, n=2000, seed=0)
    assert estimates == {"mean": 1.0}
    assert intervals["mean"] == (0.0, 2.0)
    assert bootstrap_runs(runs[:1], n=200)[1]["mean"] == (0.0, 0.0)
    with pytest.raises(ValueError, match="different numbers of images"):
        bootstrap_runs([runs[0], _mean_of([1.0] * 5)])


def test_separated_best() -> None:
    assert separated_best([80.0, 70.0, 60.0], [(78, 82), (65, 75), (55, 65)], higher_is_better=True) == 0
    assert separated_best([80.0, 79.0], [(78, 82), (75, 80)], higher_is_better=True) is None
    assert separated_best([10.0, 30.0, math.nan], [(8, 12), (25, 35), None], higher_is_better=False) == 0
    assert separated_best([10.0, 30.0], [(8, 31), (25, 35)], higher_is_better=False) is None
    assert separated_best([10.0], [(8, 12)], higher_is_better=False) is None
    assert separated_best([10.0, 11.0], [(9, 10.5), None], higher_is_better=False) == 0


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        maps, batch = dataset()
        index = [0, 1, 2] if rank == 0 else [3, 4, 5, 6]
        metric = MaxBoxAccuracy(threshold_step=0.01)
        metric.keep_per_image = True
        metric.update(maps[index], pick(batch, index))
        metric.all_reduce()
        result = {"ids": metric.per_image_ids(), "ci": bootstrap(metric, n=100)}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_all_reduce_gathers_the_per_image_states() -> None:
    maps, batch = dataset()
    single = MaxBoxAccuracy(threshold_step=0.01)
    single.keep_per_image = True
    single.update(maps, batch)
    expected = json.loads(json.dumps(bootstrap(single, n=100)))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        for rank in (0, 1):
            got = json.loads(Path(tmp, f"rank{rank}.json").read_text())
            assert got["ids"] == batch.ids
            assert got["ci"] == expected
