"""Classifier training: :func:`fit_classifier` (in memory) and :func:`train_classifier` (a config
in, a checkpoint directory out), one loop for both (SGD with Nesterov momentum, one-cycle
learning rate). The sanity checks and the reproduction experiments train with these too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from masksal.checkpoint import all_finite, load_classifier, load_train_state, save_checkpoint, write_json
from masksal.classifiers import Classifier, as_classifier, create_classifier
from masksal.config import ClassifierTrainConfig, ExperimentConfig
from masksal.distributed import (
    barrier,
    check_batch_size,
    convert_sync_batchnorm,
    is_distributed,
    is_main_process,
    shard_dataset,
    wrap_ddp,
)
from masksal.metrics.classification import ClassificationAccuracy
from masksal.objectives import multilabel_loss
from masksal.precision import MixedPrecision, RunOptions, compiled
from masksal.rundir import RunLock, RunLog, start_step
from masksal.training.data import (
    as_training_dataset,
    build_dataset,
    dataset_classes,
    dataset_num_classes,
    epoch_batches,
    step_loader,
)
from masksal.training.loop import DivergedError, describe_run, run_steps
from masksal.types import Batch, collate


class ClassifierTraining:
    """The state of a classifier training run (model, optimizer, schedule) and its step."""

    def __init__(self, classifier: Classifier, cfg: ClassifierTrainConfig, total_steps: int, device: torch.device,
                 run: RunOptions | None = None) -> None:
        run = run or RunOptions()
        self.clf, self.cfg, self.device = classifier, cfg, device
        if run.sync_batchnorm and is_distributed():
            convert_sync_batchnorm(classifier.model, device)
        self.opt: torch.optim.Optimizer
        if cfg.optimizer == "adamw":
            self.opt = torch.optim.AdamW(classifier.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.SGD(classifier.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay, nesterov=True)
        # Warm up a quarter of the run (at least 2 steps, or OneCycleLR divides by zero on tiny runs).
        steps = max(total_steps, 4)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=cfg.lr, total_steps=steps,
                                                         pct_start=min(0.5, max(0.25, 2 / steps)))
        self.amp = MixedPrecision(run.amp, device)
        self.model = compiled(wrap_ddp(classifier, device), run.compile)

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        b = batch.to(self.device)
        self.clf.train()
        with self.amp.autocast():
            logits = self.model(b.images)
        if self.cfg.multilabel:  # sigmoid outputs: every object of the image a positive label
            smooth = self.cfg.label_smoothing
            loss = multilabel_loss(logits.float(), b.positives(logits.shape[1]) * (1 - smooth) + smooth / 2)
            positives = b.positives(logits.shape[1])
            hit = positives.gather(1, logits.argmax(1, keepdim=True))[:, 0] > 0
        else:
            loss = F.cross_entropy(logits.float(), b.labels, label_smoothing=self.cfg.label_smoothing)
            hit = logits.argmax(1) == b.labels
        self.opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.amp.step(self.opt)
        self.amp.update()
        self.sched.step()
        return {"loss": float(loss.detach()), "train_accuracy": 100.0 * float(hit.float().mean()),
                "lr": float(self.sched.get_last_lr()[0])}

    def view(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.amp.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.amp.scaler.load_state_dict(state["scaler"])


@torch.no_grad()
def accuracy(classifier: Classifier, ds: Dataset, batch_size: int = 256, device: torch.device | None = None,
             limit: int | None = None, sharded: bool = False, multilabel: bool = False) -> float:
    """Top-1 accuracy (%) of ``classifier`` on ``ds`` (its first ``limit`` images when given);
    with ``multilabel``, the share of images whose top-1 class is one of their positive labels.

    With ``sharded=True`` under a process group, each process scores its shard of ``ds`` and the
    counts are summed: every process returns the accuracy on the whole of ``ds``.
    """
    device = device or next(classifier.parameters()).device
    classifier.eval()
    if limit is not None:
        ds = Subset(ds, range(min(limit, len(ds))))  # type: ignore[arg-type]
    if sharded:
        ds = shard_dataset(ds)
    top1 = ClassificationAccuracy()
    for batch in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        b: Batch = batch.to(device)
        logits = classifier(b.images)
        if multilabel:  # the top-1 class counts as right when it is any of the image's labels
            top = logits.argmax(1)
            labels = torch.where(b.positives(logits.shape[1]).gather(1, top[:, None])[:, 0] > 0, top, b.labels)
        else:
            labels = b.labels
        top1.update(logits, labels)
    if sharded:
        top1.all_reduce()
    return top1.compute()["top1"] if top1.num_images else 0.0


def _loop(training: ClassifierTraining, batches: Iterable[Batch], *, start: int, total: int,
          cfg: ClassifierTrainConfig, progress: bool, log: RunLog | None, callbacks: Sequence[Callable[..., Any]],
          save: Callable[[int], None] | None) -> dict[str, float]:
    return run_steps(training, batches, start=start, total=total, log_every=cfg.log_every,
                     checkpoint_every=cfg.checkpoint_every, desc="classifier", progress=progress, log=log,
                     callbacks=callbacks, save=save, postfix=("loss", "train_accuracy"))


def fit_classifier(
    model: nn.Module,
    data: Any,
    *,
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 0.2,
    image_size: int | None = None,
    device: str | torch.device | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
    progress: bool = True,
    run: RunOptions | None = None,
    **options: Any,
) -> Classifier:
    """Train ``model`` in place on ``data`` (in memory) and return it wrapped as a Classifier.

    Args:
        model: a :class:`~masksal.classifiers.Classifier` or an ``nn.Module`` (ImageNet
            normalization assumed).
        data: a ``Dataset`` of ``(image, label)`` pairs, a masksal dataset or a data spec.
        epochs, batch_size, lr: the schedule (SGD with Nesterov momentum, one-cycle).
        **options: other fields of :class:`~masksal.config.ClassifierTrainConfig` (``momentum``,
            ``weight_decay``, ``label_smoothing``, ``seed``, ``log_every``).
    """
    from masksal.config import build_section
    from masksal.devices import module_device, resolve_device

    values = {"epochs": epochs, "batch_size": batch_size, "lr": lr, **options}
    cfg: ClassifierTrainConfig = build_section(ClassifierTrainConfig, values, "fit_classifier")
    clf = as_classifier(model)
    dev = resolve_device(device) if device is not None else module_device(clf)
    clf.to(dev)
    ds = as_training_dataset(data, image_size)
    total = epochs * max(1, len(ds) // batch_size)  # type: ignore[arg-type]
    training = ClassifierTraining(clf, cfg, total, dev, run)
    batches = step_loader(ds, batch_size, 0, total, cfg.seed)
    _loop(training, batches, start=0, total=total, cfg=cfg, progress=progress, log=None, callbacks=callbacks,
          save=None)
    return clf.eval()


def train_classifier(cfg: ExperimentConfig, out: str | Path, resume: bool = False, progress: bool = True,
                     callbacks: Sequence[Callable[..., Any]] = (), run: RunOptions | None = None) -> dict[str, Any]:
    """Train the classifier of ``cfg`` on ``cfg.data`` and write a classifier checkpoint to ``out``.

    Under a process group (``torchrun``) the run is data parallel with a global batch of
    ``classifier_train.batch_size``.

    Returns:
        ``{"test_accuracy": %, "steps": n, "seconds": s}``; the same goes into ``metrics.json``.
    """
    from masksal.devices import resolve_device

    out = Path(out)
    run = run or RunOptions()
    device = resolve_device(run.device)
    tc = cfg.classifier_train
    check_batch_size(tc.batch_size, "classifier_train.batch_size")
    with RunLock(out, enabled=is_main_process()):
        start = start_step(out, cfg, "classifier", resume)
        train_ds = build_dataset(cfg, "train")
        num_classes = dataset_num_classes(train_ds)
        c = cfg.classifier
        weights = c.weights
        if weights is not None and Path(weights).is_dir():  # start from a classifier checkpoint directory
            from masksal.checkpoint import checkpoint_files

            weights = str(checkpoint_files(weights) / "classifier.safetensors")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed)
            clf = create_classifier(c.arch, num_classes, c.taps, weights, c.mean, c.std, **c.kwargs).to(device)
        steps = tc.epochs * max(1, len(train_ds) // tc.batch_size)  # type: ignore[arg-type]
        training = ClassifierTraining(clf, tc, steps, device, run)
        if start > 0:
            load_classifier(out, clf, device)
            training.load_state_dict(load_train_state(out))
        classes = dataset_classes(train_ds)
        info = describe_run("classifier", run, training.amp, tc.batch_size, {"lr": tc.lr}, progress)

        def save(step: int, extra: dict[str, Any] | None = None) -> None:
            if not is_main_process():
                return
            if not all_finite(clf.model):
                raise DivergedError(f"training diverged by step {step}: the weights hold NaN or inf; the last finite "
                                    f"checkpoint is kept in {out}")
            save_checkpoint(out, kind="classifier", step=step, cfg=cfg, classifier=clf, classes=classes,
                            train_state=training.state_dict(), run={**info, **(extra or {})})

        t0 = time.time()
        log = RunLog(out / "log.jsonl", start, enabled=is_main_process())
        batches = epoch_batches(cfg, train_ds, tc.batch_size, start, steps, tc.seed,
                                pin_memory=device.type == "cuda")
        _loop(training, batches, start=start, total=steps, cfg=tc, progress=progress, log=log, callbacks=callbacks,
              save=lambda s: save(s) if s < steps else None)  # the last one is saved with the test accuracy
        acc = accuracy(clf, build_dataset(cfg, "test"), device=device, sharded=True, multilabel=tc.multilabel)
        result = {"test_accuracy": acc, "steps": steps, "seconds": time.time() - t0}
        save(steps, extra={"test_accuracy": acc})
        if is_main_process():
            write_json(out / "metrics.json", result)
    barrier()
    return result
