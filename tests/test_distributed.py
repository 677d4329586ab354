"""Distributed training and sharded evaluation on CPU: 2 processes, gloo, 127.0.0.1 only.

A data-parallel run must compute what a single process computes on the same global batch. With
BatchNorm synchronized over the processes (the default), the statistics of every BatchNorm
layer are those of the global batch, so the two runs differ by float rounding only (summation
order in the all-reduces). Without it, each process would normalize with its own half-batch's
statistics and the weights would differ beyond rounding.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from launch import launch_local
from torch import nn

from masksal.checkpoint import load_classifier, load_masker, read_meta
from masksal.config import load_config
from masksal.data.benchmark import BenchmarkDataset
from masksal.distributed import (
    ShardedBatchSampler,
    SyncBatchNorm,
    check_batch_size,
    convert_sync_batchnorm,
    get_world_size,
    shard_dataset,
)
from masksal.evaluation import evaluate_sharded
from masksal.precision import MixedPrecision, RunOptions
from masksal.training import StepBatchSampler, train_classifier, train_masker

TINY = [
    "data.image_size=32", "data.n_train=120", "data.n_test=21", "data.families=[digits]", "data.cache_dir=null",
    "classifier.kwargs={width: 8}", "classifier_train.epochs=1", "classifier_train.batch_size=16",
    # At the default one-cycle peak (0.2), 7 steps on 120 tiny images amplify float rounding: even 1 vs 2
    # threads in one process end 1e-3 apart. At 0.01 rounding stays rounding.
    "classifier_train.lr=0.01",
    "train.batch_size=8", "train.steps=4", "train.log_every=1", "train.checkpoint_every=100",
    "masker.hidden=8",
]
COUNTS = ("images", "top1", "le", "om", "gt_known_loc", "top1_loc", "maxboxacc", "maxboxacc_v2", "boxacc",
          "boxacc_v2", "pxap")
AVERAGES = ("f1", "sm", "deletion_auc", "insertion_auc")
FAST = {"deletion_insertion": {"steps": 4}}


class Brightness:
    """Map = mean colour: a per-pixel function of the image, independent of the batch it is in."""

    name = "brightness"

    def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return images.mean(dim=1)


def _evaluate(ckpt: Path, out: Path | None) -> dict[str, Any]:
    clf = load_classifier(ckpt)
    test = BenchmarkDataset("test", n=21, size=32, families=("digits",))
    val = BenchmarkDataset("val", n=6, size=32, families=("digits",))
    return evaluate_sharded(Brightness(), clf, test, batch_size=4, val_dataset=val, out=out, progress=False,
                            metric_options=FAST)


def _distributed_job(root: Path, classifier: Path) -> dict[str, Any]:
    """What every process of the 2-process group runs."""
    world = get_world_size()
    train_classifier(load_config(None, TINY), root / "classifier", progress=False)
    ca = [*TINY, "train.mode=ca", f"classifier.weights={classifier}"]
    # An interrupted distributed run: 2 steps, then resumed to 4.
    train_masker(load_config(None, [*ca, "train.steps=2"]), root / "masker", progress=False)
    train_masker(load_config(None, ca), root / "masker", resume=True, progress=False)
    return {"world": world, "eval": _evaluate(classifier, root / "eval.json")}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dist")
    single = root / "single"
    train_classifier(load_config(None, TINY), single / "classifier", progress=False)
    ca = [*TINY, "train.mode=ca", f"classifier.weights={single / 'classifier'}"]
    train_masker(load_config(None, ca), single / "masker", progress=False)
    single_eval = _evaluate(single / "classifier", None)
    results = launch_local(_distributed_job, 2, root / "ddp", single / "classifier", threads=1)
    return {"single": single, "ddp": root / "ddp", "single_eval": single_eval, "results": results}


def test_distributed_classifier_training_matches_one_process(runs: dict[str, Any]) -> None:
    assert [r["world"] for r in runs["results"]] == [2, 2]
    a = load_classifier(runs["single"] / "classifier").model.state_dict()
    b = load_classifier(runs["ddp"] / "classifier").model.state_dict()
    _assert_same_weights(a, b)
    single = json.loads((runs["single"] / "classifier" / "metrics.json").read_text())
    ddp = json.loads((runs["ddp"] / "classifier" / "metrics.json").read_text())
    assert ddp["test_accuracy"] == single["test_accuracy"]  # sharded test set, counts summed
    run = read_meta(runs["ddp"] / "classifier").run
    assert run["world_size"] == 2 and run["backend"] == "gloo"
    assert run["global_batch_size"] == 16 and run["per_process_batch_size"] == 8
    assert run["sync_batchnorm"] is True and run["amp"] == "off"


def test_distributed_ca_masker_resumed_matches_one_process(runs: dict[str, Any]) -> None:
    a, b = load_masker(runs["single"] / "masker"), load_masker(runs["ddp"] / "masker")
    _assert_same_weights(a.state_dict(), b.state_dict())  # masker and co-trained classifier
    assert read_meta(runs["ddp"] / "masker").step == 4
    single_log = [json.loads(x) for x in (runs["single"] / "masker" / "log.jsonl").read_text().splitlines()]
    ddp_log = [json.loads(x) for x in (runs["ddp"] / "masker" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ddp_log] == [1, 2, 3, 4]  # one writer (rank 0), continued on resume
    for s, d in zip(single_log, ddp_log, strict=True):  # logged terms: averages over the global batch
        assert d["total"] == pytest.approx(s["total"], rel=1e-4, abs=1e-5)
        assert d["clean_accuracy"] == pytest.approx(s["clean_accuracy"])


def test_sharded_evaluation_equals_one_process(runs: dict[str, Any]) -> None:
    one, two = runs["single_eval"], runs["results"]
    for res in (two[0]["eval"], two[1]["eval"]):  # every process gets the whole split's numbers
        for key in COUNTS:
            assert res[key] == one[key], key  # counting metrics: exactly
        for key in AVERAGES:
            assert res[key] == pytest.approx(one[key], rel=1e-6), key  # float sums, batch-size rounding
    assert one["images"] == 21 and one["skipped"] == {}
    written = json.loads((runs["ddp"] / "eval.json").read_text())
    assert written["le"] == one["le"] and written["images"] == 21


def test_torchrun_cli_trains_on_two_processes(runs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "m"
    sets = [x for item in [*TINY, "train.steps=2", "train.mode=fix"] for x in ("--set", item)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "masksal", "train", "--out", str(out), "--classifier",
           str(runs["single"] / "classifier"), "--device", "cpu", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 2 steps") == 1  # rank 0 reports, once
    assert "2 processes (gloo), global batch 8 (2 x 4)" in proc.stderr
    assert read_meta(out).run["world_size"] == 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sharded_batches_are_slices_of_the_global_batch() -> None:
    batches = StepBatchSampler(50, 8, seed=1, start=0, total=5)
    shards = [list(ShardedBatchSampler(batches, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*shards, strict=True)] == list(batches)
    with pytest.raises(ValueError, match="does not split evenly"):
        list(ShardedBatchSampler(batches, rank=0, world_size=3))
    assert check_batch_size(72) == 72  # one process: the whole batch


def test_shards_cover_the_dataset_once() -> None:
    parts = [list(shard_dataset(list(range(11)), rank=r, world_size=3)) for r in range(3)]  # type: ignore[arg-type]
    assert sorted(sum(parts, [])) == list(range(11))
    assert [len(p) for p in parts] == [3, 4, 4]
    with pytest.raises(ValueError, match="at least one"):
        shard_dataset(list(range(2)), rank=0, world_size=3)  # type: ignore[arg-type]


def test_sync_batchnorm_is_plain_batchnorm_in_one_process() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    synced = convert_sync_batchnorm(copy.deepcopy(plain), torch.device("cpu"))
    assert isinstance(synced[1], SyncBatchNorm) and isinstance(synced[3], SyncBatchNorm)
    assert list(synced.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(plain(x), synced(x))
    assert torch.equal(plain[1].running_var, synced[1].running_var)


def test_mixed_precision_is_off_on_cpu_by_default() -> None:
    amp = MixedPrecision(RunOptions().amp, torch.device("cpu"))
    assert amp.name == "off" and not amp.scaler.is_enabled()
    assert MixedPrecision("bf16", torch.device("cpu")).name == "bf16"
    with pytest.raises(ValueError, match="amp must be one of"):
        RunOptions(amp="fp8")


def test_imagenet_config_is_the_papers_final_model_and_runs(tmp_path: Path) -> None:
    config = "imagenet_resnet50_final"  # a packaged config, by name
    cfg = load_config(config)
    assert (cfg.classifier.arch, cfg.classifier.taps, cfg.data.image_size) == ("resnet50", ["layer3", "layer4"], 224)
    t, o = cfg.masker_train, cfg.objectives
    assert (t.mode, t.batch_size, t.masker_lr, t.classifier_lr, t.classifier_momentum) == ("ca", 72, 1e-3, 1e-3, 0.9)
    assert (t.masker_weight_decay, t.classifier_weight_decay, t.grad_clip, t.lr_decay) == (1e-4, 1e-4, 10.0, 0.1)
    assert t.steps == 3 * t.lr_decay_every == 60 * round(0.2 * 1_281_167 / 72)  # x0.1 every 20 of 60 epochs
    assert (o.masked_out, o.area, o.area_out_weight, o.tv_weight) == ("entropy", "gated", 15.0, 1e-3)
    # The same recipe on the same data path (wsolevaluation layout, train split), shrunk to 2 steps.
    from masksal.classifiers import create_classifier
    from masksal.data.export import export_wsol

    export = export_wsol(BenchmarkDataset("train", n=8, size=64, families=("digits",)), tmp_path / "wsol",
                         split="train")
    weights = tmp_path / "resnet50.pt"
    torch.save(create_classifier("resnet50", 10).model.state_dict(), weights)
    cfg = load_config(config, [f"data.dataset={export.spec}", "data.image_size=64", "data.num_workers=0",
                               "train.batch_size=4", "train.steps=2", f"classifier.weights={weights}"])
    assert train_masker(cfg, tmp_path / "masker", progress=False, run=RunOptions(amp="off"))["steps"] == 2
    assert load_masker(tmp_path / "masker").classifier.spec.arch == "resnet50"
