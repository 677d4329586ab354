"""One step of masker training and the state it needs (optimizers, AMP, the CASM pool).

See :mod:`masksal.training.masker` for the modes; this module holds the step itself, split
along its parts: the clean forward (taps), the masks, the masked images judged by the
classifier (or a pool snapshot), the objectives, and the two backward passes.

Targets of a conditional masker (:func:`sample_targets`): each image's mask is made for its label
(the requested object's class on multi-object images), judged by the masked-in / masked-out
objectives; and for ``objectives.absent_targets`` classes drawn uniformly among those *absent*
from the image (not among its labels), whose masks are only pushed toward empty (they need no
classifier forward: a masked image of a class that is not there carries no evidence to keep).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksal.classifiers import Classifier
from masksal.config import ExperimentConfig, MaskerTrainConfig, with_overrides
from masksal.distributed import TapsForward, convert_sync_batchnorm, get_rank, is_distributed, wrap_ddp
from masksal.masker import MaskerNet
from masksal.masking import compose, infill, learned_fills
from masksal.objectives import ObjectiveConfig, compute_objectives, multilabel_loss, predicted
from masksal.precision import MixedPrecision, RunOptions, compiled
from masksal.types import Batch


@dataclass
class _Forwards:
    """How a step calls the networks: plain, or wrapped for DDP and/or compiled."""

    taps: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]
    judge: Callable[[Tensor], Tensor]
    masker: Callable[..., Tensor]


class MaskerTraining:
    """The state of a masker training run and its step.

    Args:
        classifier: the classifier (trained alongside in ``ca`` / ``pool`` mode).
        net: the masker network.
        train: optimizer and mode settings; objectives: the loss terms and infill.
        device: where the step runs; run: mixed precision, compile, synchronized BatchNorm.
    """

    def __init__(self, classifier: Classifier, net: MaskerNet, train: MaskerTrainConfig, objectives: ObjectiveConfig,
                 device: torch.device, run: RunOptions | None = None) -> None:
        run = run or RunOptions()
        self.clf, self.net, self.tr, self.obj, self.device = classifier, net, train, objectives, device
        self.trains_classifier = train.mode in ("ca", "pool")
        if run.sync_batchnorm and is_distributed():  # before the optimizers: it replaces BatchNorm parameters
            convert_sync_batchnorm(net, device)
            if self.trains_classifier:
                convert_sync_batchnorm(classifier.model, device)
        self.opt_m: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=train.masker_lr,
                                                             weight_decay=train.masker_weight_decay)
        self.opt_c = torch.optim.SGD(classifier.parameters(), lr=train.classifier_lr,
                                     momentum=train.classifier_momentum,
                                     weight_decay=train.classifier_weight_decay) if self.trains_classifier else None
        self.scheds = [torch.optim.lr_scheduler.StepLR(o, train.lr_decay_every, train.lr_decay)
                       for o in (self.opt_m, self.opt_c) if o is not None] if train.lr_decay_every else []
        self.amp = MixedPrecision(run.amp, device)
        self.pool: list[dict[str, Tensor]] = []
        self.snapshot = copy.deepcopy(classifier).eval().requires_grad_(False) if train.mode == "pool" else None
        classifier.requires_grad_(self.trains_classifier)
        taps: nn.Module = TapsForward(classifier)
        # In CA / pool the classifier stays eager: a compiled forward's in-place BatchNorm update would
        # invalidate tensors that the eager forward reading the taps saved for the same backward pass.
        self.fwd = _Forwards(taps=wrap_ddp(taps, device) if self.trains_classifier else taps,
                             judge=compiled(classifier, run.compile and not self.trains_classifier),
                             masker=compiled(wrap_ddp(net, device), run.compile))
        self.generator = torch.Generator(device=device)
        self.inpainter: nn.Module | None = None
        if objectives.infill == "learned":
            from masksal.inpainting import load_inpainter

            assert objectives.inpainter is not None
            self.inpainter = load_inpainter(objectives.inpainter, device).eval().requires_grad_(False)
        self._view: dict[str, Tensor] = {}

    # -- one step ----------------------------------------------------------------------------

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        """One training step on ``batch`` (its random draws a function of ``(seed, step)``)."""
        seed = self.tr.seed * 1_000_003 + step
        # Per-image noise (Gumbel, noise infill) differs per process; the pool snapshot must be
        # the same in every process, as the classifier replicas must agree.
        self.generator.manual_seed(seed + (get_rank() << 40))
        rng = random.Random(seed)
        b = batch.to(self.device)
        x, y = b.images, b.labels
        logits_clean, feats = self._clean_forward(x)
        self.net.train()
        absent = None
        if self.net.cfg.conditional:
            targets = sample_targets(b, self.net.num_classes, self.obj.absent_targets, self.generator)
            with self.amp.autocast():
                mask_logits = self.fwd.masker(feats, (x.shape[-2], x.shape[-1]), x, targets)
            all_masks = self.net.mask(mask_logits.float(), self.generator)
            masks, absent = all_masks[:, :1], all_masks[:, 1:]
        else:
            with self.amp.autocast():
                mask_logits = self.fwd.masker(feats, (x.shape[-2], x.shape[-1]), x)
            masks = self.net.mask(mask_logits.float(), self.generator)
        fill: Tensor | tuple[Tensor, Tensor]
        if self.inpainter is not None:  # a frozen inpainter fills each side's removed pixels
            fill = learned_fills(x, masks, self.inpainter)
        else:
            fill = infill(x, self.obj.infill, self.clf.mean, self.clf.std, generator=self.generator)
        x_in, x_out = compose(x, masks, fill)
        use_snapshot = self.snapshot is not None and bool(self.pool) and rng.random() < self.tr.pool_prob
        judge = self.fwd.judge
        if use_snapshot:
            assert self.snapshot is not None
            self.snapshot.model.load_state_dict(rng.choice(self.pool))
            judge = self.snapshot
        logits_in, logits_out = self._judge(judge, x_in, x_out)
        terms = compute_objectives(self.obj, masks, y, logits_clean.detach(), logits_in, logits_out,
                                   absent if absent is not None and absent.shape[1] else None,
                                   clean_gate=seen_clean(logits_clean.detach(), b, self.obj.multilabel))
        self._update(terms, logits_clean, logits_in, logits_out, b, use_snapshot)
        if self.tr.mode == "pool" and (step + 1) % self.tr.pool_every == 0:
            self.pool.append({k: v.detach().cpu().clone() for k, v in self.clf.model.state_dict().items()})
            del self.pool[:-self.tr.pool_size]
        self._view = {"images": x[:16].detach(), "masks": masks[:16, 0].detach()}
        out = self._record(terms, masks, logits_clean, logits_in, logits_out, y, self.obj.multilabel)
        if absent is not None and absent.shape[1]:
            out["absent_mask_mean"] = float(absent.detach().mean())
        return out

    def _clean_forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.opt_c is None:  # FIX: frozen classifier in eval mode
            self.clf.eval()
            with torch.no_grad(), self.amp.autocast():
                logits, feats = self.fwd.taps(x)
        else:
            self.clf.train()
            with self.amp.autocast():
                logits, feats = self.fwd.taps(x)
        return logits.float(), feats

    def _judge(self, judge: Callable[[Tensor], Tensor], x_in: Tensor, x_out: Tensor
               ) -> tuple[Tensor | None, Tensor | None]:
        need_out = self.obj.masked_out != "none" or self.obj.area == "gated"
        need_in = self.obj.masked_in or self.obj.area == "gated"
        with self.amp.autocast():
            if need_in and need_out:  # one forward for both sides: BatchNorm sees the same batch statistics
                logits_in, logits_out = judge(torch.cat([x_in, x_out])).float().chunk(2)
                return logits_in, logits_out
            return (judge(x_in).float() if need_in else None), (judge(x_out).float() if need_out else None)

    def _update(self, terms: dict[str, Tensor], logits_clean: Tensor, logits_in: Tensor | None,
                logits_out: Tensor | None, batch: Batch, use_snapshot: bool) -> None:
        self.opt_m.zero_grad(set_to_none=True)
        if self.opt_c is not None:
            self.opt_c.zero_grad(set_to_none=True)
            # Both backward passes before either step (stepping the classifier first would modify
            # weights the masker's graph still needs). Under DDP each pass all-reduces the gradients
            # of its `inputs` only: the masker's in the first, the classifier's in the second.
            self.amp.backward(terms["total"], inputs=list(self.net.parameters()), retain_graph=True)
            # Multi-label (sigmoid outputs): every object of the image is a positive label.
            positives = batch.positives(logits_clean.shape[1]) if self.obj.multilabel else None

            def loss(lg: Tensor) -> Tensor:
                if positives is not None:
                    return multilabel_loss(lg, positives)
                return F.cross_entropy(lg, batch.labels)

            clf_loss = loss(logits_clean)
            if not use_snapshot:
                for lg in (logits_in, logits_out):
                    if lg is not None:
                        clf_loss = clf_loss + loss(lg)
            self.amp.backward(clf_loss, inputs=list(self.clf.parameters()))
            self.amp.step(self.opt_c)
            terms["classifier_ce"] = clf_loss.detach()
        else:
            self.amp.backward(terms["total"])
        self.amp.step(self.opt_m, clip=(self.net.parameters(), self.tr.grad_clip))
        self.amp.update()
        for s in self.scheds:
            s.step()

    @staticmethod
    def _record(terms: dict[str, Tensor], masks: Tensor, logits_clean: Tensor, logits_in: Tensor | None,
                logits_out: Tensor | None, y: Tensor, multilabel: bool = False) -> dict[str, float]:
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["mask_mean"] = float(masks.detach().mean())
        for name, lg in (("clean", logits_clean), ("masked_in", logits_in), ("masked_out", logits_out)):
            if lg is not None:
                out[f"{name}_accuracy"] = 100.0 * float(predicted(lg.detach(), y, multilabel).float().mean())
        return out

    def view(self) -> dict[str, Any]:
        return dict(self._view)

    # -- state for checkpoints ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        st: dict[str, Any] = {"masker_optimizer": self.opt_m.state_dict(),
                              "schedulers": [s.state_dict() for s in self.scheds], "pool": self.pool,
                              "scaler": self.amp.scaler.state_dict()}
        if self.opt_c is not None:
            st["classifier_optimizer"] = self.opt_c.state_dict()
        return st

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_m.load_state_dict(state["masker_optimizer"])
        if self.opt_c is not None:
            self.opt_c.load_state_dict(state["classifier_optimizer"])
        for s, sd in zip(self.scheds, state.get("schedulers", []), strict=False):
            s.load_state_dict(sd)
        if state.get("scaler"):
            self.amp.scaler.load_state_dict(state["scaler"])
        self.pool = list(state.get("pool", []))


def seen_clean(logits: Tensor, batch: Batch, multilabel: bool = False) -> Tensor:
    """``(B,)`` bool: the classifier sees each image's label on the clean image: ``z_y > 0``
    (multi-label), else ``y`` is its top-1 class, or among its top M on an image that lists M
    objects (``batch.object_labels``: on two objects a softmax shares its mass, and the
    requested one may rank second while being seen)."""
    labels = batch.labels
    if multilabel or batch.object_labels is None:
        return predicted(logits, labels, multilabel)
    m = torch.tensor([len(o) for o in batch.object_labels], device=logits.device)
    above = (logits > logits.gather(1, labels[:, None])).sum(dim=1)  # classes ranked before y
    return above < m


def sample_targets(batch: Batch, num_classes: int, absent: int, generator: torch.Generator) -> Tensor:
    """``(B, 1 + absent)`` int64 classes: column 0 each image's label, then ``absent`` distinct
    classes drawn uniformly among those absent from the image (not its label, nor any of its
    objects' classes when ``batch.object_labels`` lists them), from ``generator``.

    Raises:
        ValueError: fewer absent classes exist than asked for.
    """
    labels = batch.labels
    if absent == 0:
        return labels[:, None]
    present = torch.zeros(len(batch), num_classes, dtype=torch.bool, device=labels.device)
    present[torch.arange(len(batch), device=labels.device), labels] = True
    for i, objects in enumerate(batch.object_labels or []):
        present[i, objects.to(labels.device)] = True
    if int(present.sum(1).max()) + absent > num_classes:
        raise ValueError(f"objectives.absent_targets={absent}: the images have fewer absent classes than that "
                         f"({num_classes} classes)")
    # Uniform random keys, the present classes sorted last: the first `absent` are a uniform draw
    # without replacement among the absent classes.
    keys = torch.rand(present.shape, generator=generator, device=generator.device).to(labels.device)
    keys = keys.masked_fill(present, 2.0)
    return torch.cat([labels[:, None], keys.argsort(dim=1)[:, :absent]], dim=1)


def masker_step(cfg: ExperimentConfig, classifier: Classifier, net: MaskerNet, batch: Batch,
                optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """One FIX-mode step with ``optimizer`` (the sanity checks drive their own loop with it)."""
    t = MaskerTraining(classifier, net, with_overrides(cfg, {"masker_train.mode": "fix"}).masker_train,
                       cfg.objectives, batch.images.device)
    t.opt_m = optimizer
    return t.step(batch, 0)
