"""Data types shared by datasets, explainers and metrics.

Conventions used everywhere in masksal:

* images: ``(B, 3, H, W)`` float tensors in ``[0, 1]`` (pixel space, not normalized);
  the classifier wrapper applies its own normalization.
* maps: ``(B, H, W)`` float tensors at the image resolution, larger = more salient.
* boxes: ``(K, 4)`` float tensors ``(x0, y0, x1, y1)`` in pixel indices with the last row and
  column *inclusive* (area = ``(x1 - x0 + 1) * (y1 - y0 + 1)``), as in the wsolevaluation
  reference and ImageNet/CUB box files.
* masks: ``(H, W)`` uint8 tensors, 1 = object, 0 = background, 255 = ignore (not scored).

Images with several objects of different classes (the benchmark's two-object split) keep the
single-object fields meaning "the requested object": ``label`` is the class asked about and
``boxes`` / ``mask`` are that class's object, so every metric keeps its meaning; the optional
``object_*`` fields list every object of the image, the requested one included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

IGNORE = 255


@dataclass
class Batch:
    """A batch of samples as every masksal dataset yields it (see :func:`collate`).

    Attributes:
        images: ``(B, 3, H, W)`` float in [0, 1].
        labels: ``(B,)`` int64 class indices.
        boxes: one ``(K_i, 4)`` float tensor per image, inclusive pixel coordinates;
            ``K_i = 0`` when the dataset has no boxes.
        masks: ``(B, H, W)`` uint8 (1 object, 0 background, 255 ignore) or ``None``.
        ids: one identifier per image (file name or index).
        skipped: one line per sample of this batch that could not be read and was left out
            (``"<path>: <reason>"``); count them with ``len(batch.skipped)``. A batch whose
            samples were all bad has ``len(batch) == 0``: skip it, but keep its messages.
        object_labels: for multi-object images, one ``(M_i,)`` int64 tensor per image: the class
            of every object (the positive labels of a multi-label image); ``None`` otherwise.
        object_boxes: one ``(M_i, 4)`` float tensor per image, the boxes of those objects
            (inclusive, same order); ``None`` otherwise.
        object_masks: one ``(M_i, H, W)`` uint8 tensor per image, their pixel masks (1 object,
            0 elsewhere); ``None`` otherwise.
    """

    images: Tensor
    labels: Tensor
    boxes: list[Tensor]
    masks: Tensor | None = None
    ids: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    object_labels: list[Tensor] | None = None
    object_boxes: list[Tensor] | None = None
    object_masks: list[Tensor] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            images=self.images.to(device),
            labels=self.labels.to(device),
            boxes=[b.to(device) for b in self.boxes],
            masks=None if self.masks is None else self.masks.to(device),
            ids=list(self.ids),
            skipped=list(self.skipped),
            object_labels=_move(self.object_labels, device),
            object_boxes=_move(self.object_boxes, device),
            object_masks=_move(self.object_masks, device),
        )

    def head(self, n: int) -> Batch:
        """The first ``n`` images (every per-image field cut alike; ``skipped`` kept whole)."""
        def cut(v: list[Tensor] | None) -> list[Tensor] | None:
            return None if v is None else v[:n]

        return Batch(images=self.images[:n], labels=self.labels[:n], boxes=self.boxes[:n],
                     masks=None if self.masks is None else self.masks[:n], ids=list(self.ids[:n]),
                     skipped=list(self.skipped), object_labels=cut(self.object_labels),
                     object_boxes=cut(self.object_boxes), object_masks=cut(self.object_masks))

    def positives(self, num_classes: int) -> Tensor:
        """Multi-hot ``(B, num_classes)`` float targets: every object's class when the batch lists
        its objects (``object_labels``), else the one label per image."""
        out = torch.zeros(len(self), num_classes, device=self.labels.device)
        if self.object_labels is None:
            out[torch.arange(len(self), device=self.labels.device), self.labels] = 1.0
            return out
        for i, present in enumerate(self.object_labels):
            out[i, present.to(self.labels.device)] = 1.0
        return out


def _move(tensors: list[Tensor] | None, device: torch.device | str) -> list[Tensor] | None:
    return None if tensors is None else [t.to(device) for t in tensors]


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Collate dataset samples into a :class:`Batch`, leaving out the samples that failed.

    Each sample is a dict with ``image`` (3, H, W) float, ``label`` int, ``boxes`` (K, 4)
    float, optional ``mask`` (H, W) uint8, optional ``id`` str and, for multi-object images,
    optional ``object_labels`` (M,) int, ``object_boxes`` (M, 4) float and ``object_masks``
    (M, H, W) uint8 (when some samples of a batch list their objects and others do not, the
    others' one object is their ``label``, ``boxes`` and ``mask``); or an *error sample*
    ``{"error": "<path>: <reason>", "id": str}`` for a file that could not be read, which is
    left out of the batch and whose message goes to ``Batch.skipped``. When every sample failed
    the batch is empty: ``images`` ``(0, 3, 0, 0)``, no labels, boxes or ids.
    """
    skipped = [" ".join(str(s["error"]).split()) for s in samples if "error" in s]
    good = [s for s in samples if "error" not in s]
    if not good:
        return Batch(images=torch.zeros(0, 3, 0, 0), labels=torch.zeros(0, dtype=torch.long), boxes=[],
                     skipped=skipped)
    images = torch.stack([s["image"] for s in good])
    labels = torch.as_tensor([int(s["label"]) for s in good], dtype=torch.long)
    boxes = [torch.as_tensor(s.get("boxes", torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
             for s in good]
    masks = None
    if all(s.get("mask") is not None for s in good):
        masks = torch.stack([torch.as_tensor(s["mask"], dtype=torch.uint8) for s in good])
    ids = [str(s.get("id", i)) for i, s in enumerate(good)]
    objects: dict[str, list[Tensor] | None] = {"object_labels": None, "object_boxes": None, "object_masks": None}
    if any(s.get("object_labels") is not None for s in good):
        # A batch mixing multi-object and single-object images: a sample without the lists has
        # one object, its label (with its box and mask when it has them).
        objects["object_labels"] = [torch.as_tensor(s["object_labels"], dtype=torch.long).reshape(-1)
                                    if s.get("object_labels") is not None else labels[i: i + 1].clone()
                                    for i, s in enumerate(good)]
        if all(s.get("object_boxes") is not None or s.get("boxes") is not None for s in good):
            objects["object_boxes"] = [torch.as_tensor(s["object_boxes"] if s.get("object_boxes") is not None
                                                       else s["boxes"], dtype=torch.float32).reshape(-1, 4)
                                       for s in good]
        if all(s.get("object_masks") is not None or s.get("mask") is not None for s in good):
            objects["object_masks"] = [torch.as_tensor(s["object_masks"], dtype=torch.uint8)
                                       if s.get("object_masks") is not None
                                       else torch.as_tensor(s["mask"], dtype=torch.uint8)[None] for s in good]
    return Batch(images=images, labels=labels, boxes=boxes, masks=masks, ids=ids, skipped=skipped, **objects)
