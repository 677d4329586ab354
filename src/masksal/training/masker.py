"""Masker training: :func:`fit_masker` (objects in, a :class:`~masksal.masker.Masker` out) and
:func:`train_masker` (a config in, a checkpoint directory out), one loop for both.

Each part of the paper's recipe is a switch:

* ``fix``: the classifier is frozen (eval mode); gradients flow through it into the mask only.
  The masker then explains exactly the given classifier.
* ``ca``: the classifier is trained alongside on clean, masked-in and masked-out images (true
  labels), so it cannot rely on evidence the mask leaves behind. Both backward passes are
  computed before either optimizer steps. The masker then explains the co-trained copy, which is
  what it saves (and says so in ``meta.json`` and its ``info``).
* ``pool``: ``ca`` plus a pool of classifier snapshots (CASM): with probability ``pool_prob``
  the masked images of a step go through a random earlier snapshot instead of the current one.

Runs are deterministic and resumable: the batch and every random draw of step ``s`` are functions
of ``(seed, s)`` through the run's own generators (the process-wide random state is never
reseeded), so a run continued with ``resume=True`` ends with the same weights as one that was
never interrupted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from masksal.checkpoint import (
    all_finite,
    checkpoint_files,
    load_checkpoint_file,
    load_classifier,
    load_train_state,
    masker_net_for,
    save_checkpoint,
)
from masksal.classifiers import Classifier, as_classifier, create_classifier, find_taps
from masksal.config import ExperimentConfig, MaskerTrainConfig, with_overrides
from masksal.distributed import barrier, check_batch_size, is_main_process
from masksal.masker import Masker, MaskerConfig, MaskerNet
from masksal.objectives import ObjectiveConfig
from masksal.precision import RunOptions
from masksal.rundir import RunLock, RunLog, start_step
from masksal.taps import family_taps
from masksal.training.data import as_training_dataset, build_dataset, dataset_classes, step_loader
from masksal.training.loop import DivergedError, describe_run, run_steps
from masksal.training.masker_step import MaskerTraining
from masksal.types import Batch

POSTFIX = ("total", "masked_in_ce", "masked_out_entropy", "masked_out_ce", "area", "mask_mean", "tv")


# -- building a run ----------------------------------------------------------------------------


def _new_net(classifier: Classifier, image_size: int, cfg: MaskerConfig, device: torch.device) -> MaskerNet:
    net = masker_net_for(classifier, image_size, cfg).to(device)
    return net.to(memory_format=torch.channels_last)


def _run(cfg: ExperimentConfig, classifier: Classifier, net: MaskerNet, dataset: Dataset | DataLoader, *,
         device: torch.device, run: RunOptions, out: Path | None, start: int, classes: list[str],
         origin_fingerprint: str, progress: bool, callbacks: Sequence[Callable[..., Any]]) -> dict[str, float]:
    tr = cfg.masker_train
    check_batch_size(tr.batch_size)
    training = MaskerTraining(classifier, net, tr, cfg.objectives, device, run)
    if start > 0 and out is not None:
        training.load_state_dict(load_train_state(out))
    lrs = {"masker_lr": tr.masker_lr, **({"classifier_lr": tr.classifier_lr} if tr.mode != "fix" else {})}
    info = {"mode": tr.mode, "origin_fingerprint": origin_fingerprint,
            **describe_run(f"masker ({tr.mode})", run, training.amp, tr.batch_size, lrs, progress and out is not None)}
    log = RunLog(out / "log.jsonl", start, enabled=is_main_process()) if out is not None else None

    def save(step: int) -> None:
        if out is None or not is_main_process():
            return
        if not (all_finite(net) and all_finite(classifier.model)):
            raise DivergedError(f"training diverged by step {step}: the weights hold NaN or inf; the last finite "
                                f"checkpoint is kept in {out}")
        save_checkpoint(out, kind="masker", step=step, cfg=cfg, classifier=classifier, masker=net,
                        train_state=training.state_dict(), classes=classes, run=info)

    if isinstance(dataset, DataLoader):
        batches: Iterable[Batch] = _limited(dataset, tr.steps - start)
    else:
        batches = step_loader(dataset, tr.batch_size, start, tr.steps, tr.seed, cfg.data.num_workers,
                              pin_memory=device.type == "cuda")
    return run_steps(training, batches, start=start, total=tr.steps, log_every=tr.log_every,
                     checkpoint_every=tr.checkpoint_every, desc=f"masker ({tr.mode})", progress=progress, log=log,
                     callbacks=callbacks, save=save, postfix=POSTFIX)


def _limited(loader: DataLoader, n: int) -> Iterable[Batch]:
    """``n`` batches from a user's loader, cycling through it as often as needed."""
    from masksal.types import collate

    done = 0
    while done < n:
        empty = True
        for batch in loader:
            empty = False
            if not isinstance(batch, Batch):
                batch = _to_batch(batch, collate)
            yield batch
            done += 1
            if done >= n:
                return
        if empty:
            raise ValueError("the training DataLoader yielded no batches")


def _to_batch(batch: Any, collate: Callable[..., Batch]) -> Batch:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor):
        images, labels = batch[0], torch.as_tensor(batch[1]).long()
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return Batch(images=images, labels=labels, boxes=[torch.zeros(0, 4)] * len(labels))
    raise ValueError("a training DataLoader must yield (images, labels) tensors or masksal Batches")


# -- the two entry points ----------------------------------------------------------------------


def default_objectives(mode: str, image_size: int) -> dict[str, float]:
    """Area and TV weights when the caller sets none: the built-in benchmark's calibration for
    small images (< 128 px: gated area weight 30 with a fixed classifier, TV 0.01), the paper's
    settings for photo-sized ones (10, TV 0.001); trained alongside (CA, pool), 1.5 times the
    area weight, the paper's ratio (15 vs 10). TV is a per-image sum, so its weight depends on
    the image size; the area term is a mean and does not."""
    small = image_size < 128
    area = 30.0 if small else 10.0
    return {"area_out_weight": area * (1.5 if mode in ("ca", "pool") else 1.0), "tv_weight": 0.01 if small else 0.001}


_SECTIONS = {"masker": MaskerConfig, "objectives": ObjectiveConfig, "masker_train": MaskerTrainConfig}


def _options_to_overrides(options: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    owner = {f.name: sec for sec, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(owner))
    if unknown:
        raise ValueError(f"fit_masker got unknown option(s) {unknown}; known: {', '.join(sorted(owner))}")
    return {f"{owner[k]}.{k}": v for k, v in options.items()}


def fit_masker(
    model: nn.Module,
    data: Any,
    *,
    taps: Sequence[str] | None = None,
    mode: str = "fix",
    steps: int = 1300,
    image_size: int | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
    progress: bool = True,
    seed: int = 0,
    run: RunOptions | None = None,
    net: MaskerNet | None = None,
    **options: Any,
) -> Masker:
    """Train a masker for ``model`` on ``data``, in memory; no file is written.

    Args:
        model: a :class:`~masksal.classifiers.Classifier` or any ``nn.Module`` returning logits
            for ImageNet-normalized images (wrap it in ``Classifier(model, mean=..., std=...)`` for
            another normalization).
        data: a ``Dataset`` of ``(image, label)`` pairs (PIL images or tensors; resized to
            ``image_size``), a masksal dataset, a ``DataLoader`` of ``(images, labels)``, or a
            data spec such as ``"imagefolder:photos/"``.
        taps: the layers the masker reads; default: the top two stages (``layer3``/``layer4``
            for ResNets, ``feature_info`` for timm models, else found by a dry run and printed).
        mode: ``"fix"`` (default: the masker explains exactly ``model``, which is not changed),
            ``"ca"`` (a copy of the classifier trained alongside: sharper maps on the built-in
            benchmark, but they explain the copy, returned as ``masker.classifier``) or ``"pool"``.
        steps, batch_size, seed: the training's length, batch and seed.
        image_size: the side images are resized to (default: the first image's).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...; default: the model's device.
        callbacks: ``callback(step, record)`` every ``log_every`` steps (see
            :class:`masksal.training.TensorBoardLogger`).
        net: a masker network to train further (e.g. a trained masker's ``net``); default: a
            new one (its architecture from ``masker.*`` options).
        **options: any setting of ``masker.*`` (``hidden``, ``upsample``...), ``objectives.*``
            (``area_out_weight``, ``tv_weight``, ``masked_out``, ``infill``...) or
            ``masker_train.*`` (``masker_lr``, ``log_every``...); area and TV weights left unset
            follow :func:`default_objectives`.

    Returns:
        The trained :class:`~masksal.masker.Masker` (eval mode); ``masker.save(dir)`` keeps it.

    Example:
        >>> import torchvision
        >>> from masksal.data import BenchmarkDataset
        >>> model = torchvision.models.resnet18(num_classes=20)
        >>> data = BenchmarkDataset(split="train", n=64, size=32, cache_dir=None)
        >>> masker = fit_masker(model, data, steps=2, batch_size=8, progress=False, hidden=8)
        >>> masker.explain(data[0]["image"]).shape
        torch.Size([32, 32])
    """
    from masksal.devices import module_device, resolve_device

    run = run or RunOptions()
    dev = resolve_device(device) if device is not None else (
        module_device(model) if run.device == "auto" else resolve_device(run.device))
    clf = as_classifier(model)
    ds = data if isinstance(data, DataLoader) else as_training_dataset(data, image_size)
    if image_size is None:  # the first image's size (shorter side), then every image resized to it
        first = next(iter(ds)) if isinstance(ds, DataLoader) else ds[0]
        img = first["image"] if isinstance(first, dict) else (first.images if isinstance(first, Batch) else first[0])
        image_size = int(min(img.shape[-2:]))
        if not isinstance(ds, DataLoader):
            ds = as_training_dataset(data, image_size)
    clf = clf.to(dev)
    if taps is not None or not clf.taps:
        chosen = list(taps) if taps is not None else default_taps(clf, image_size)
        clf = Classifier(clf.model, chosen, clf.spec.mean, clf.spec.std, spec=copy.deepcopy(clf.spec),
                         reshape=clf.reshape)
        if taps is None and progress:
            print(f"masker taps: {', '.join(chosen)} (the top two stages; pass taps=[...] to choose)")
    if mode != "fix":
        clf = copy.deepcopy(clf)  # the caller's model is never changed
    overrides = {"data.image_size": image_size, "masker_train.mode": mode, "masker_train.steps": steps,
                 "masker_train.batch_size": batch_size, "masker_train.seed": seed, "name": "fit_masker"}
    overrides.update({f"objectives.{k}": v for k, v in default_objectives(mode, image_size).items()})
    overrides.update(_options_to_overrides(options))
    cfg = with_overrides(ExperimentConfig(), overrides, "fit_masker")
    origin = clf.fingerprint()
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _new_net(clf, image_size, cfg.masker, dev)
    else:
        net = net.to(dev)
        cfg = with_overrides(cfg, {f"masker.{k}": v for k, v in vars(net.cfg).items()}, "fit_masker")
    # The caller's classifier (FIX) leaves as it came: training mode and requires_grad of every part.
    modes = [(m, m.training) for m in clf.modules()]
    grads = [(p, p.requires_grad) for p in clf.parameters()]
    try:
        _run(cfg, clf, net, ds, device=dev, run=run, out=None, start=0, classes=dataset_classes(ds),
             origin_fingerprint=origin, progress=progress, callbacks=callbacks)
    finally:
        for m, training in modes:
            m.training = training
        for p, g in grads:
            p.requires_grad_(g)
    info = {"mode": mode, "steps": steps, "image_size": image_size, "classes": dataset_classes(ds),
            "origin_fingerprint": origin, "explains_copy": mode != "fix", "config": cfg}
    # Not .eval(): in FIX mode the masker wraps the caller's own model, whose mode stays theirs;
    # explaining always runs in eval mode anyway.
    net.eval()
    return Masker(clf, net, info=info)


def default_taps(classifier: Classifier, image_size: int) -> list[str]:
    """The top two stages: ``layer3``/``layer4`` (ResNets), the last two blocks (ViTs), the last
    two ``feature_info`` stages (timm: Swin, ConvNeXt, EfficientNet...), else found by a dry run
    at ``image_size`` (see :func:`masksal.taps.family_taps`)."""
    taps = family_taps(classifier.model)
    return taps if taps is not None else find_taps(classifier, image_size)


def _classifier_for(cfg: ExperimentConfig, num_classes: int, device: torch.device) -> Classifier:
    c = cfg.classifier
    if c.weights is None:
        raise ValueError("classifier.weights is not set: a masker needs a trained classifier (--classifier: a "
                         "checkpoint directory from `masksal train-classifier` or a weight file)")
    w = Path(c.weights)
    if w.is_dir():
        clf = load_classifier(w, device=device)
        if c.taps and list(c.taps) != clf.taps:
            clf = Classifier(clf.model, c.taps, clf.spec.mean, clf.spec.std, spec=copy.deepcopy(clf.spec))
        return clf.to(device)
    return create_classifier(c.arch, num_classes, c.taps, w, c.mean, c.std, **c.kwargs).to(device)


def train_masker(cfg: ExperimentConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 callbacks: Sequence[Callable[..., Any]] = (), run: RunOptions | None = None) -> dict[str, Any]:
    """Train a masker for the classifier named in ``cfg.classifier.weights``; checkpoint to ``out``.

    The files-and-resume wrapper of :func:`fit_masker`'s loop: ``out`` is locked while the run
    writes it; ``resume`` continues the checkpoint in ``out`` (only with the recipe it started
    with; ``masker_train.steps`` may grow). Under ``torchrun`` the run is data parallel with a
    global batch of ``masker_train.batch_size``.

    Returns:
        ``{"steps": n, "seconds": s, "last": {term: value}, "mode": ..., "explains_copy": bool}``.
    """
    import time

    from masksal.devices import resolve_device

    out = Path(out)
    run = run or RunOptions()
    device = resolve_device(run.device)
    with RunLock(out, enabled=is_main_process()):
        start = start_step(out, cfg, "masker", resume)
        train_ds = build_dataset(cfg, "train")
        from masksal.training.data import dataset_num_classes

        num_classes = dataset_num_classes(train_ds)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.masker_train.seed)  # the classifier's build, then the masker's init
            clf = load_classifier(out, device=device) if start > 0 else _classifier_for(cfg, num_classes, device)
            net = _new_net(clf, cfg.data.image_size, cfg.masker, device)
        if start > 0:
            from masksal.checkpoint import read_meta

            load_checkpoint_file(checkpoint_files(out) / "masker.safetensors", net, start)
            origin = str(read_meta(out).run.get("origin_fingerprint", ""))
        else:
            origin = clf.fingerprint()
        t0 = time.time()
        last = _run(cfg, clf, net, train_ds, device=device, run=run, out=out, start=start,
                    classes=dataset_classes(train_ds), origin_fingerprint=origin, progress=progress,
                    callbacks=callbacks)
    barrier()
    return {"steps": cfg.masker_train.steps, "seconds": time.time() - t0, "last": last,
            "mode": cfg.masker_train.mode, "explains_copy": cfg.masker_train.mode != "fix"}
