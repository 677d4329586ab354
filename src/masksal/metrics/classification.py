"""Classifier top-1 accuracy as an accumulator (the class half of Top-1 localization)."""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

from masksal.metrics.base import Accumulator, zeros


class ClassificationAccuracy(Accumulator):
    """Top-1 accuracy in %.

    ``update(logits_or_predictions, labels)``: ``(B, C)`` logits or ``(B,)`` int64 predicted
    classes, and ``(B,)`` int64 labels. ``compute()`` keys: ``top1``.
    """

    name = "top1"

    def _empty_state(self) -> dict[str, np.ndarray]:
        return {"count": zeros(), "correct": zeros()}

    def update(self, outputs: Tensor, labels: Tensor) -> None:
        """Accumulate a batch of logits ``(B, C)`` or predictions ``(B,)`` against labels ``(B,)``."""
        pred = outputs.detach().argmax(dim=1) if outputs.dim() == 2 else outputs.detach()
        labels = labels.detach().to(pred.device).reshape(-1)
        if pred.reshape(-1).shape != labels.shape:
            raise ValueError(f"top1: {pred.numel()} predictions for {labels.numel()} labels")
        self._state["correct"] += float((pred.reshape(-1) == labels).sum())
        self._state["count"] += labels.numel()

    def compute(self) -> dict[str, float]:
        """``{"top1": accuracy in %}`` (NaN before any update)."""
        n = float(self._state["count"][0])
        return {"top1": 100.0 * float(self._state["correct"][0]) / n if n else math.nan}
