"""Training loops: the classifier (``train_classifier``) and the masker (``train_masker``).

Masker training follows the paper's recipe, each part a switch in the config:

* ``fix``: the classifier is frozen (eval mode); gradients flow through it into the mask only.
* ``ca``: the classifier is trained alongside on clean, masked-in and masked-out images (true
  labels), so it cannot rely on evidence the mask leaves behind. Both backward passes are
  computed before either optimizer steps.
* ``pool``: ``ca`` plus a pool of classifier snapshots (CASM): with probability ``pool_prob``
  the masked images of a step go through a random earlier snapshot instead of the current one.

Runs are resumable and deterministic: the batch order and every random draw of step ``s`` are a
function of ``(seed, s)``, so an interrupted run continued with ``resume=True`` ends with the same
weights as an uninterrupted one. Checkpoints are written atomically (see :mod:`masksal.checkpoint`).

Under ``torchrun`` (a ``torch.distributed`` process group) both loops are data parallel (see
:mod:`masksal.distributed`): the batch of step ``s`` is split across the processes, the trained
networks are wrapped in DistributedDataParallel, BatchNorm is synchronized by default, and only
rank 0 writes checkpoints and logs. How a run computes (mixed precision, ``torch.compile``,
synchronized BatchNorm) is a :class:`~masksal.distributed.RunOptions`, recorded in the
checkpoint's ``meta.json`` (``extra.run``) with the global batch size and learning rates.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm.auto import tqdm

from masksal.checkpoint import (
    load_classifier,
    load_train_state,
    read_meta,
    save_checkpoint,
)
from masksal.classifiers import Classifier, create_classifier
from masksal.config import ExperimentConfig
from masksal.distributed import (
    MixedPrecision,
    RunOptions,
    ShardedBatchSampler,
    TapsForward,
    all_reduce_mean,
    backend,
    barrier,
    check_batch_size,
    compiled,
    convert_sync_batchnorm,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    process_device,
    shard_dataset,
    wrap_ddp,
)
from masksal.masker import MaskerNet
from masksal.masking import compose, infill
from masksal.metrics.classification import ClassificationAccuracy
from masksal.objectives import compute_objectives
from masksal.types import Batch, collate

StepCallback = Callable[[int, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_dataset(cfg: ExperimentConfig, split: str, epoch: int = 0) -> Dataset:
    """The dataset of ``cfg.data`` for ``split`` (``"train"``, ``"val"`` or ``"test"``).

    ``epoch > 0`` (built-in benchmark): the next ``n`` images of the split, for
    ``data.fresh_each_epoch``; those are not cached (the cache would grow with every epoch).
    """
    d = cfg.data
    if d.dataset == "benchmark":
        from masksal.data.benchmark import BenchmarkDataset

        n = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]
        return BenchmarkDataset(split=split, n=n, size=d.image_size, seed=d.seed, families=tuple(d.families),
                                examples_per_class=d.examples_per_class if split == "train" else None,
                                cache_dir=d.cache_dir if epoch == 0 else None, max_distractors=d.max_distractors,
                                start=epoch * n)
    from masksal.data import load_dataset

    return load_dataset(d.dataset, split=split, size=d.image_size)


def dataset_classes(ds: Dataset) -> list[str]:
    return [str(c) for c in getattr(ds, "classes", None) or []]


def dataset_num_classes(ds: Dataset) -> int:
    n = getattr(ds, "num_classes", None)
    if not n:
        raise ValueError("the training dataset does not say how many classes it has")
    return int(n)


class StepBatchSampler(Sampler[list[int]]):
    """Batches for steps ``start, ..., total - 1``; the batch of step ``s`` depends on ``(seed, s)``.

    Each epoch is a fresh permutation; a dataset smaller than a batch is cycled through.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int) -> None:
        self.n, self.bs, self.seed, self.start, self.total = n, batch_size, seed, start, total
        self.per_epoch = max(1, n // batch_size)

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
            yield perm[(off + torch.arange(self.bs)) % self.n].tolist()


def _loader(ds: Dataset, cfg: ExperimentConfig, batch_size: int, start: int, total: int, seed: int,
            device: torch.device) -> DataLoader:
    sampler: Sampler[list[int]] = StepBatchSampler(len(ds), batch_size, seed, start, total)  # type: ignore[arg-type]
    if is_distributed():  # each process loads its slice of the global batch
        sampler = ShardedBatchSampler(sampler)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                      pin_memory=device.type == "cuda")


def _classifier_batches(cfg: ExperimentConfig, ds: Dataset, batch_size: int, start: int, total: int,
                        device: torch.device) -> Iterator[Batch]:
    """Batches of steps ``start .. total - 1``; with ``data.fresh_each_epoch`` every epoch of the
    built-in benchmark draws new images (epoch ``e`` uses generator indices ``e*n .. (e+1)*n-1``)."""
    if not (cfg.data.fresh_each_epoch and cfg.data.dataset == "benchmark"):
        yield from _loader(ds, cfg, batch_size, start, total, cfg.train.seed, device)
        return
    per_epoch = max(1, len(ds) // batch_size)  # type: ignore[arg-type]
    step = start
    while step < total:
        epoch = step // per_epoch
        end = min(total, (epoch + 1) * per_epoch)
        epoch_ds = ds if epoch == 0 else build_dataset(cfg, "train", epoch)
        yield from _loader(epoch_ds, cfg, batch_size, step, end, cfg.train.seed, device)
        step = end


def _seed_step(seed: int, step: int) -> None:
    # torch draws per-image noise (Gumbel, noise infill): distinct per process. Python's `random`
    # picks the pool snapshot: the same in every process, as the classifier replicas must agree.
    torch.manual_seed(seed * 1_000_003 + step + (get_rank() << 40))
    random.seed(seed * 1_000_003 + step)


class _Log:
    """Appends one JSON line per logged step to ``log.jsonl`` (rank 0 only)."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.enabled = is_main_process()
        if self.enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not resume:
                path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _run_info(desc: str, run: RunOptions, amp: MixedPrecision, global_batch: int, lrs: dict[str, float],
              progress: bool) -> dict[str, Any]:
    """What a run computes with, for ``meta.json``; rank 0 prints it as one line when ``progress``."""
    n = get_world_size()
    info: dict[str, Any] = {"world_size": n, "backend": backend(), "global_batch_size": global_batch,
                            "per_process_batch_size": global_batch // n, **lrs, "amp": amp.name,
                            "compile": run.compile, "sync_batchnorm": run.sync_batchnorm and n > 1}
    if progress and is_main_process():
        procs = f"{n} processes ({info['backend']})" if n > 1 else "1 process"
        lr = ", ".join(f"{v:g}" if k == "lr" else f"{k.removesuffix('_lr')} {v:g}" for k, v in lrs.items())
        tqdm.write(f"{desc}: {procs}, global batch {global_batch} ({n} x {global_batch // n}), learning rate {lr}, "
                   f"amp {amp.name}, sync BatchNorm {'on' if info['sync_batchnorm'] else 'off'}, "
                   f"compile {'on' if run.compile else 'off'}", file=sys.stderr)
    return info


def _check_out_dir(out: Path, resume: bool) -> int:
    """The step to start from; refuses to overwrite a finished or foreign run."""
    if (out / "meta.json").is_file():
        if not resume:
            raise FileExistsError(f"{out} already holds a checkpoint: pass --resume to continue it, or "
                                  "choose another --out")
        return read_meta(out).step
    if resume:
        raise FileNotFoundError(f"{out}: nothing to resume (no checkpoint there)")
    return 0


@torch.no_grad()
def accuracy(classifier: Classifier, ds: Dataset, batch_size: int = 256, device: torch.device | None = None,
             limit: int | None = None, sharded: bool = False) -> float:
    """Top-1 accuracy (%) of ``classifier`` on ``ds`` (its first ``limit`` images when given).

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
        top1.update(classifier(b.images), b.labels)
    if sharded:
        top1.all_reduce()
    return top1.compute()["top1"] if top1.num_images else 0.0


def train_classifier(cfg: ExperimentConfig, out: str | Path, resume: bool = False, progress: bool = True,
                     on_step: StepCallback | None = None, run: RunOptions | None = None) -> dict[str, Any]:
    """Train the classifier of ``cfg`` on ``cfg.data`` and write a classifier checkpoint to ``out``.

    Under a process group (``torchrun``) the run is data parallel with a global batch of
    ``classifier_train.batch_size``; ``on_step`` is called in every process with the log record
    averaged over processes. ``run``: mixed precision, compile, synchronized BatchNorm (default
    :class:`~masksal.distributed.RunOptions`).

    Returns ``{"test_accuracy": %, "steps": n, "seconds": s}``; the same goes into ``metrics.json``.
    """
    out = Path(out)
    run = run or RunOptions()
    start = _check_out_dir(out, resume)
    device = process_device(cfg.train.device)
    tc = cfg.classifier_train
    check_batch_size(tc.batch_size, "classifier_train.batch_size")
    train_ds = build_dataset(cfg, "train")
    num_classes = dataset_num_classes(train_ds)
    c = cfg.classifier
    torch.manual_seed(cfg.train.seed)
    clf = create_classifier(c.arch, num_classes, c.taps, c.weights, c.mean, c.std, **c.kwargs).to(device)
    if run.sync_batchnorm and is_distributed():
        convert_sync_batchnorm(clf.model, device)
    steps = tc.epochs * max(1, len(train_ds) // tc.batch_size)  # type: ignore[arg-type]
    opt = torch.optim.SGD(clf.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay,
                          nesterov=True)
    # Warm up a quarter of the run (at least 2 steps, or OneCycleLR divides by zero on tiny runs).
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=max(steps, 4),
                                                pct_start=min(0.5, max(0.25, 2 / max(steps, 4))))
    amp = MixedPrecision(run.amp, device)
    if start > 0:
        load_classifier(out, clf, device)
        state = load_train_state(out)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            amp.scaler.load_state_dict(state["scaler"])
    model = compiled(wrap_ddp(clf, device), run.compile)
    log = _Log(out / "log.jsonl", resume)
    classes = dataset_classes(train_ds)
    info = _run_info("classifier", run, amp, tc.batch_size, {"lr": tc.lr}, progress)

    def save(step: int, extra: dict[str, Any] | None = None) -> None:
        if not is_main_process():
            return
        save_checkpoint(out, kind="classifier", step=step, cfg=cfg, classifier=clf, classes=classes,
                        train_state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                     "scaler": amp.scaler.state_dict()},
                        extra={"run": info, **(extra or {})})

    clf.train()
    t0 = time.time()
    step = start
    bar = tqdm(total=steps, initial=start, desc="classifier", unit="step",
               disable=not (progress and is_main_process()), dynamic_ncols=True)
    try:
        for batch in _classifier_batches(cfg, train_ds, tc.batch_size, start, steps, device):
            _seed_step(cfg.train.seed, step)
            b: Batch = batch.to(device)
            with amp.autocast():
                logits = model(b.images)
            loss = F.cross_entropy(logits.float(), b.labels, label_smoothing=tc.label_smoothing)
            opt.zero_grad(set_to_none=True)
            amp.backward(loss)
            amp.step(opt)
            amp.update()
            sched.step()
            step += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == steps:
                rec: dict[str, float] = all_reduce_mean({
                    "loss": float(loss.detach()),
                    "train_accuracy": 100.0 * float((logits.argmax(1) == b.labels).float().mean())})
                rec = {"step": step, **rec, "lr": float(sched.get_last_lr()[0]), "time": time.time() - t0}
                log.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_accuracy']:.0f}")
                if on_step:
                    on_step(step, rec)
            if step % cfg.train.checkpoint_every == 0 and step < steps:
                save(step)
    except KeyboardInterrupt:
        save(step)
        bar.close()
        raise
    bar.close()
    test_ds = build_dataset(cfg, "test")
    acc = accuracy(clf, test_ds, device=device, sharded=True)
    result = {"test_accuracy": acc, "steps": steps, "seconds": time.time() - t0}
    save(step, extra={"test_accuracy": acc})
    if is_main_process():
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
    barrier()
    return result


def _load_masker_classifier(cfg: ExperimentConfig, num_classes: int, device: torch.device) -> Classifier:
    c = cfg.classifier
    if c.weights is None:
        raise ValueError("classifier.weights is not set: a masker needs a trained classifier (a checkpoint "
                         "directory from `masksal train-classifier` or a weight file)")
    w = Path(c.weights)
    if w.is_dir():
        clf = load_classifier(w, device=device)
        if c.taps and list(c.taps) != clf.taps:
            clf = Classifier(clf.model, c.taps, clf.spec.mean, clf.spec.std, spec=copy.deepcopy(clf.spec))
        return clf.to(device)
    return create_classifier(c.arch, num_classes, c.taps, w, c.mean, c.std, **c.kwargs).to(device)


def train_masker(cfg: ExperimentConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 on_step: StepCallback | None = None, run: RunOptions | None = None) -> dict[str, Any]:
    """Train a masker for the classifier named in ``cfg.classifier.weights``; checkpoint to ``out``.

    Under a process group (``torchrun``) the run is data parallel with a global batch of
    ``train.batch_size``; ``on_step`` is called in every process with the terms averaged over
    processes. ``run``: mixed precision, compile, synchronized BatchNorm (default
    :class:`~masksal.distributed.RunOptions`).

    Returns ``{"steps": n, "seconds": s, "last": {term: value}}``.
    """
    out = Path(out)
    run = run or RunOptions()
    start = _check_out_dir(out, resume)
    device = process_device(cfg.train.device)
    tr = cfg.train
    check_batch_size(tr.batch_size)
    train_ds = build_dataset(cfg, "train")
    num_classes = dataset_num_classes(train_ds)
    torch.manual_seed(tr.seed)
    if start > 0:
        clf = load_classifier(out, device=device)
    else:
        clf = _load_masker_classifier(cfg, num_classes, device)
    shapes = clf.tap_shapes(cfg.data.image_size)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}, cfg.masker).to(device)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    train_clf = tr.mode in ("ca", "pool")
    if run.sync_batchnorm and is_distributed():  # before the optimizers: it replaces BatchNorm parameters
        convert_sync_batchnorm(net, device)
        if train_clf:
            convert_sync_batchnorm(clf.model, device)
    opt_m = torch.optim.Adam(net.parameters(), lr=tr.masker_lr, weight_decay=tr.masker_weight_decay)
    opt_c = torch.optim.SGD(clf.parameters(), lr=tr.classifier_lr, momentum=tr.classifier_momentum,
                            weight_decay=tr.classifier_weight_decay) if train_clf else None
    scheds = []
    if tr.lr_decay_every:
        scheds = [torch.optim.lr_scheduler.StepLR(o, tr.lr_decay_every, tr.lr_decay)
                  for o in (opt_m, opt_c) if o is not None]
    amp = MixedPrecision(run.amp, device)
    pool: list[dict[str, Tensor]] = []
    if start > 0:
        from masksal.checkpoint import load_weights

        load_weights(out / "masker.safetensors", net, start)
        state = load_train_state(out)
        opt_m.load_state_dict(state["masker_optimizer"])
        if opt_c is not None:
            opt_c.load_state_dict(state["classifier_optimizer"])
        for s, sd in zip(scheds, state.get("schedulers", []), strict=False):
            s.load_state_dict(sd)
        if state.get("scaler"):
            amp.scaler.load_state_dict(state["scaler"])
        pool = list(state.get("pool", []))
    snapshot = copy.deepcopy(clf).eval().requires_grad_(False) if tr.mode == "pool" else None
    clf.requires_grad_(train_clf)
    taps: nn.Module = TapsForward(clf)
    # In CA / pool the classifier stays eager: a compiled forward's in-place BatchNorm update would
    # invalidate tensors that the eager forward reading the taps saved for the same backward pass.
    fwd = _Forwards(taps=wrap_ddp(taps, device) if train_clf else taps,
                    judge=compiled(clf, run.compile and not train_clf),
                    masker=compiled(wrap_ddp(net, device), run.compile))
    log = _Log(out / "log.jsonl", resume)
    classes = dataset_classes(train_ds)
    lrs = {"masker_lr": tr.masker_lr, **({"classifier_lr": tr.classifier_lr} if train_clf else {})}
    info = _run_info(f"masker ({tr.mode})", run, amp, tr.batch_size, lrs, progress)

    def save(step: int) -> None:
        if not is_main_process():
            return
        st: dict[str, Any] = {"masker_optimizer": opt_m.state_dict(),
                              "schedulers": [s.state_dict() for s in scheds], "pool": pool,
                              "scaler": amp.scaler.state_dict()}
        if opt_c is not None:
            st["classifier_optimizer"] = opt_c.state_dict()
        save_checkpoint(out, kind="masker", step=step, cfg=cfg, classifier=clf, masker=net, train_state=st,
                        classes=classes, extra={"run": info})

    t0 = time.time()
    step = start
    last: dict[str, float] = {}
    bar = tqdm(total=tr.steps, initial=start, desc=f"masker ({tr.mode})", unit="step",
               disable=not (progress and is_main_process()), dynamic_ncols=True)
    try:
        for batch in _loader(train_ds, cfg, tr.batch_size, start, tr.steps, tr.seed, device):
            _seed_step(tr.seed, step)
            b: Batch = batch.to(device)
            terms = _masker_step(cfg, clf, net, snapshot, pool, b, opt_m, opt_c, step, fwd=fwd, amp=amp)
            for s in scheds:
                s.step()
            step += 1
            bar.update(1)
            if train_clf and tr.mode == "pool" and step % tr.pool_every == 0:
                pool.append({k: v.detach().cpu().clone() for k, v in clf.model.state_dict().items()})
                del pool[:-tr.pool_size]
            if step % tr.log_every == 0 or step == tr.steps:
                terms = all_reduce_mean(terms)
                last = terms
                log.write({"step": step, **terms, "lr": opt_m.param_groups[0]["lr"], "time": time.time() - t0})
                bar.set_postfix({k.replace("masked_", ""): f"{v:.3f}" for k, v in terms.items()
                                 if k in ("total", "masked_in_ce", "area", "mask_mean", "tv")
                                 or k.startswith("masked_out")})
                if on_step:
                    on_step(step, terms)
            if step % tr.checkpoint_every == 0 and step < tr.steps:
                save(step)
    except KeyboardInterrupt:
        save(step)
        bar.close()
        raise
    bar.close()
    save(step)
    barrier()
    return {"steps": step, "seconds": time.time() - t0, "last": last}


@dataclass
class _Forwards:
    """How a masker step calls the networks: plain, or wrapped for DDP and/or compiled.

    ``taps``: images -> (logits, taps) of the current classifier; ``judge``: images -> logits of
    the current classifier; ``masker``: (taps, size) -> mask logits.
    """

    taps: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]
    judge: Callable[[Tensor], Tensor]
    masker: Callable[[dict[str, Tensor], tuple[int, int]], Tensor]


def fix_masker_step(cfg: ExperimentConfig, classifier: Classifier, net: MaskerNet, batch: Batch,
                    optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """One masker training step against a frozen ``classifier`` (FIX mode), with the objectives,
    infill and gradient clipping of ``cfg``: the step ``masksal train`` takes, for callers that
    drive their own loop (the sanity checks' retraining on a randomized classifier).

    ``cfg.train.mode`` is not consulted: without a classifier optimizer the step is a FIX step.
    Returns the step's log record (loss terms, mask mean, accuracies in %).
    """
    return _masker_step(cfg, classifier, net, None, [], batch, optimizer, None, 0)


def _masker_step(cfg: ExperimentConfig, clf: Classifier, net: MaskerNet, snapshot: Classifier | None,
                 pool: list[dict[str, Tensor]], b: Batch, opt_m: torch.optim.Optimizer,
                 opt_c: torch.optim.Optimizer | None, step: int, *, fwd: _Forwards | None = None,
                 amp: MixedPrecision | None = None) -> dict[str, float]:
    tr, obj = cfg.train, cfg.objectives
    x, y = b.images, b.labels
    fwd = fwd or _Forwards(taps=clf.forward_with_taps, judge=clf, masker=net)
    amp = amp or MixedPrecision("off", x.device)
    if opt_c is None:  # FIX: frozen classifier in eval mode
        clf.eval()
        with torch.no_grad(), amp.autocast():
            logits_clean, feats = fwd.taps(x)
    else:
        clf.train()
        with amp.autocast():
            logits_clean, feats = fwd.taps(x)
    logits_clean = logits_clean.float()
    net.train()
    with amp.autocast():
        mask_logits = fwd.masker(feats, (x.shape[-2], x.shape[-1]))
    masks = net.mask(mask_logits.float())
    fill = infill(x, tr.infill, clf.mean, clf.std)
    x_in, x_out = compose(x, masks, fill)
    judge = fwd.judge
    use_snapshot = snapshot is not None and bool(pool) and random.random() < tr.pool_prob
    if use_snapshot:
        assert snapshot is not None
        snapshot.model.load_state_dict(random.choice(pool))
        judge = snapshot
    need_out = obj.masked_out != "none" or obj.area == "gated"
    need_in = obj.masked_in or obj.area == "gated"
    logits_in: Tensor | None
    logits_out: Tensor | None
    with amp.autocast():
        if need_in and need_out:  # one forward for both sides: BatchNorm sees the same batch statistics
            both = judge(torch.cat([x_in, x_out])).float()
            logits_in, logits_out = both.chunk(2)
        else:
            logits_in = judge(x_in).float() if need_in else None
            logits_out = judge(x_out).float() if need_out else None
    terms = compute_objectives(obj, masks, y, logits_clean.detach(), logits_in, logits_out)
    opt_m.zero_grad(set_to_none=True)
    if opt_c is not None:
        opt_c.zero_grad(set_to_none=True)
        # Both backward passes before either step (stepping the classifier first would modify
        # weights the masker's graph still needs). Under DDP each pass all-reduces the gradients
        # of its `inputs` only: the masker's in the first, the classifier's in the second.
        amp.backward(terms["total"], inputs=list(net.parameters()), retain_graph=True)
        clf_loss = F.cross_entropy(logits_clean, y)
        if not use_snapshot:
            for lg in (logits_in, logits_out):
                if lg is not None:
                    clf_loss = clf_loss + F.cross_entropy(lg, y)
        amp.backward(clf_loss, inputs=list(clf.parameters()))
        amp.step(opt_c)
        terms["classifier_ce"] = clf_loss.detach()
    else:
        amp.backward(terms["total"])
    amp.step(opt_m, clip=(net.parameters(), tr.grad_clip))
    amp.update()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["mask_mean"] = float(masks.detach().mean())
    out["clean_accuracy"] = 100.0 * float((logits_clean.argmax(1) == y).float().mean())
    if logits_in is not None:
        out["masked_in_accuracy"] = 100.0 * float((logits_in.argmax(1) == y).float().mean())
    if logits_out is not None:
        out["masked_out_accuracy"] = 100.0 * float((logits_out.argmax(1) == y).float().mean())
    return out
