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
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from masksal.checkpoint import (
    load_classifier,
    load_train_state,
    read_meta,
    save_checkpoint,
)
from masksal.classifiers import Classifier, create_classifier
from masksal.config import ExperimentConfig
from masksal.masker import MaskerNet
from masksal.masking import compose, infill
from masksal.objectives import compute_objectives
from masksal.types import Batch, collate

StepCallback = Callable[[int, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_dataset(cfg: ExperimentConfig, split: str) -> Dataset:
    """The dataset of ``cfg.data`` for ``split`` (``"train"``, ``"val"`` or ``"test"``)."""
    d = cfg.data
    if d.dataset == "benchmark":
        from masksal.data.benchmark import BenchmarkDataset

        n = {"train": d.n_train, "val": d.n_val, "test": d.n_test}[split]
        return BenchmarkDataset(split=split, n=n, size=d.image_size, seed=d.seed, families=tuple(d.families),
                                examples_per_class=d.examples_per_class if split == "train" else None,
                                cache_dir=d.cache_dir)
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
    sampler = StepBatchSampler(len(ds), batch_size, seed, start, total)  # type: ignore[arg-type]
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers,
                      pin_memory=device.type == "cuda")


def _seed_step(seed: int, step: int) -> None:
    torch.manual_seed(seed * 1_000_003 + step)
    random.seed(seed * 1_000_003 + step)


class _Log:
    """Appends one JSON line per logged step to ``log.jsonl``."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not resume:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


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
             limit: int | None = None) -> float:
    """Top-1 accuracy (%) of ``classifier`` on ``ds``."""
    device = device or next(classifier.parameters()).device
    classifier.eval()
    correct = total = 0
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=collate)
    for batch in loader:
        b: Batch = batch.to(device)
        correct += int((classifier(b.images).argmax(1) == b.labels).sum())
        total += len(b)
        if limit is not None and total >= limit:
            break
    return 100.0 * correct / max(1, total)


def train_classifier(cfg: ExperimentConfig, out: str | Path, resume: bool = False, progress: bool = True,
                     on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train the classifier of ``cfg`` on ``cfg.data`` and write a classifier checkpoint to ``out``.

    Returns ``{"test_accuracy": %, "steps": n, "seconds": s}``; the same goes into ``metrics.json``.
    """
    out = Path(out)
    start = _check_out_dir(out, resume)
    device = resolve_device(cfg.train.device)
    tc = cfg.classifier_train
    train_ds = build_dataset(cfg, "train")
    num_classes = dataset_num_classes(train_ds)
    c = cfg.classifier
    torch.manual_seed(cfg.train.seed)
    clf = create_classifier(c.arch, num_classes, c.taps, c.weights, c.mean, c.std, **c.kwargs).to(device)
    steps = tc.epochs * max(1, len(train_ds) // tc.batch_size)  # type: ignore[arg-type]
    opt = torch.optim.SGD(clf.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=steps, pct_start=0.25)
    if start > 0:
        load_classifier(out, clf, device)
        state = load_train_state(out)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    log = _Log(out / "log.jsonl", resume)
    classes = dataset_classes(train_ds)

    def save(step: int, extra: dict[str, Any] | None = None) -> None:
        save_checkpoint(out, kind="classifier", step=step, cfg=cfg, classifier=clf, classes=classes,
                        train_state={"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                        extra=extra)

    clf.train()
    t0 = time.time()
    step = start
    bar = tqdm(total=steps, initial=start, desc="classifier", unit="step", disable=not progress,
               dynamic_ncols=True)
    try:
        for batch in _loader(train_ds, cfg, tc.batch_size, start, steps, cfg.train.seed, device):
            _seed_step(cfg.train.seed, step)
            b: Batch = batch.to(device)
            logits = clf(b.images)
            loss = F.cross_entropy(logits, b.labels, label_smoothing=tc.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == steps:
                rec: dict[str, float] = {"step": step, "loss": float(loss.detach()), "lr": float(sched.get_last_lr()[0]),
                       "train_accuracy": 100.0 * float((logits.argmax(1) == b.labels).float().mean()),
                       "time": time.time() - t0}
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
    acc = accuracy(clf, test_ds, device=device)
    result = {"test_accuracy": acc, "steps": steps, "seconds": time.time() - t0}
    save(step, extra={"test_accuracy": acc})
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
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
                 on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train a masker for the classifier named in ``cfg.classifier.weights``; checkpoint to ``out``.

    Returns ``{"steps": n, "seconds": s, "last": {term: value}}``.
    """
    out = Path(out)
    start = _check_out_dir(out, resume)
    device = resolve_device(cfg.train.device)
    tr = cfg.train
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
    opt_m = torch.optim.Adam(net.parameters(), lr=tr.masker_lr, weight_decay=tr.masker_weight_decay)
    train_clf = tr.mode in ("ca", "pool")
    opt_c = torch.optim.SGD(clf.parameters(), lr=tr.classifier_lr, momentum=tr.classifier_momentum,
                            weight_decay=tr.classifier_weight_decay) if train_clf else None
    scheds = []
    if tr.lr_decay_every:
        scheds = [torch.optim.lr_scheduler.StepLR(o, tr.lr_decay_every, tr.lr_decay)
                  for o in (opt_m, opt_c) if o is not None]
    pool: list[dict[str, Tensor]] = []
    if start > 0:
        from masksal.checkpoint import _load_weights

        _load_weights(out / "masker.safetensors", net, start)
        state = load_train_state(out)
        opt_m.load_state_dict(state["masker_optimizer"])
        if opt_c is not None:
            opt_c.load_state_dict(state["classifier_optimizer"])
        for s, sd in zip(scheds, state.get("schedulers", []), strict=False):
            s.load_state_dict(sd)
        pool = list(state.get("pool", []))
    snapshot = copy.deepcopy(clf).eval().requires_grad_(False) if tr.mode == "pool" else None
    clf.requires_grad_(train_clf)
    log = _Log(out / "log.jsonl", resume)
    classes = dataset_classes(train_ds)

    def save(step: int) -> None:
        st: dict[str, Any] = {"masker_optimizer": opt_m.state_dict(),
                              "schedulers": [s.state_dict() for s in scheds], "pool": pool}
        if opt_c is not None:
            st["classifier_optimizer"] = opt_c.state_dict()
        save_checkpoint(out, kind="masker", step=step, cfg=cfg, classifier=clf, masker=net, train_state=st,
                        classes=classes)

    t0 = time.time()
    step = start
    last: dict[str, float] = {}
    bar = tqdm(total=tr.steps, initial=start, desc=f"masker ({tr.mode})", unit="step",
               disable=not progress, dynamic_ncols=True)
    try:
        for batch in _loader(train_ds, cfg, tr.batch_size, start, tr.steps, tr.seed, device):
            _seed_step(tr.seed, step)
            b: Batch = batch.to(device)
            terms = _masker_step(cfg, clf, net, snapshot, pool, b, opt_m, opt_c, step)
            for s in scheds:
                s.step()
            step += 1
            bar.update(1)
            if train_clf and tr.mode == "pool" and step % tr.pool_every == 0:
                pool.append({k: v.detach().cpu().clone() for k, v in clf.model.state_dict().items()})
                del pool[:-tr.pool_size]
            if step % tr.log_every == 0 or step == tr.steps:
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
    return {"steps": step, "seconds": time.time() - t0, "last": last}


def _masker_step(cfg: ExperimentConfig, clf: Classifier, net: MaskerNet, snapshot: Classifier | None,
                 pool: list[dict[str, Tensor]], b: Batch, opt_m: torch.optim.Optimizer,
                 opt_c: torch.optim.Optimizer | None, step: int) -> dict[str, float]:
    tr, obj = cfg.train, cfg.objectives
    x, y = b.images, b.labels
    if opt_c is None:  # FIX: frozen classifier in eval mode
        clf.eval()
        with torch.no_grad():
            logits_clean, feats = clf.forward_with_taps(x)
    else:
        clf.train()
        logits_clean, feats = clf.forward_with_taps(x)
    net.train()
    mask_logits = net(feats, (x.shape[-2], x.shape[-1]))
    masks = net.mask(mask_logits)
    fill = infill(x, tr.infill, clf.mean, clf.std)
    x_in, x_out = compose(x, masks, fill)
    judge: nn.Module = clf
    if snapshot is not None and pool and random.random() < tr.pool_prob:
        snapshot.model.load_state_dict(random.choice(pool))
        judge = snapshot
    need_out = obj.masked_out != "none" or obj.area == "gated"
    need_in = obj.masked_in or obj.area == "gated"
    if need_in and need_out:  # one forward for both sides: BatchNorm sees the same batch statistics
        both = judge(torch.cat([x_in, x_out]))
        logits_in, logits_out = both.chunk(2)
    else:
        logits_in = judge(x_in) if need_in else None
        logits_out = judge(x_out) if need_out else None
    terms = compute_objectives(obj, masks, y, logits_clean.detach(), logits_in, logits_out)
    opt_m.zero_grad(set_to_none=True)
    if opt_c is not None:
        opt_c.zero_grad(set_to_none=True)
        # Both backward passes before either step (stepping the classifier first would modify
        # weights the masker's graph still needs).
        terms["total"].backward(inputs=list(net.parameters()), retain_graph=True)
        clf_loss = F.cross_entropy(logits_clean, y)
        if judge is clf:
            for lg in (logits_in, logits_out):
                if lg is not None:
                    clf_loss = clf_loss + F.cross_entropy(lg, y)
        clf_loss.backward(inputs=list(clf.parameters()))
        opt_c.step()
        terms["classifier_ce"] = clf_loss.detach()
    else:
        terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), tr.grad_clip)
    opt_m.step()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out["mask_mean"] = float(masks.detach().mean())
    out["clean_accuracy"] = 100.0 * float((logits_clean.argmax(1) == y).float().mean())
    if logits_in is not None:
        out["masked_in_accuracy"] = 100.0 * float((logits_in.argmax(1) == y).float().mean())
    if logits_out is not None:
        out["masked_out_accuracy"] = 100.0 * float((logits_out.argmax(1) == y).float().mean())
    return out
