"""Independent re-implementations of the box scorers of Phang et al. (SI) and CASM, for the tests.

Written from the conventions of zphang/saliency_investigation (``casme/model_basics.py``,
``casme/tasks/imagenet/score_bboxes.py``) and kondiz/casme (``model_basics.py``, ``score.py``),
not from masksal: float32 torch masks, ``scipy.ndimage.label`` components chosen by a weighted
``bincount``, boxes read off ``any`` / ``argmax`` / ``cumsum``, boxes and ground truth as
exclusive integer slices, the references' ``1e-6`` terms. The references hard-code 224 x 224; here
the size is read from the masks. Ground-truth boxes are ``(xmin, ymin, xmax, ymax)`` integers as
the references' annotation readers produce them (``int()`` of the resized coordinates).

Also the data they are compared on: masker-like maps and edge cases with ground truth that makes
hits, misses and the references' pitfalls occur.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from masksal.types import Batch


def largest_connected(binary: np.ndarray) -> np.ndarray:
    """Both references: label 4-connected components, keep the one with the most foreground pixels."""
    labels, _ = ndimage.label(binary)
    weights = np.bincount(labels.reshape(-1), weights=binary.reshape(-1).astype(np.float64))
    return labels == int(np.argmax(weights))


def si_binarize(masks: torch.Tensor) -> torch.Tensor:
    """SI: ``mask > mean(mask)`` per image, float32. ``masks``: ``(B, 1, H, W)``."""
    avg = masks.view(masks.shape[0], -1).mean(dim=1)
    return masks.gt(avg.view(-1, 1, 1, 1)).float()


def si_box(binary: np.ndarray) -> tuple[int, int, int, int]:
    """SI's box ``(xmin, xmax, ymin, ymax)``, read as exclusive slices although ``xmax`` is the last index."""
    m = largest_connected(binary)
    cols, rows = m.any(0), m.any(1)
    return int(np.argmax(cols)), int(np.argmax(np.cumsum(cols))), int(np.argmax(rows)), int(np.argmax(np.cumsum(rows)))


def _f1_and_hit(continuous: np.ndarray, rectangular: np.ndarray, gt: tuple[int, int, int, int],
                gt_size: float, clipped: tuple[int, int, int, int]) -> tuple[float, int]:
    h, w = continuous.shape
    x0, y0, x1, y1 = clipped
    region = np.zeros((h, w))
    region[y0:y1, x0:x1] = 1
    inside = (continuous * region).sum()
    precision = inside / (continuous.sum() + 1e-6)
    recall = inside / gt_size
    f1 = (2 * precision * recall) / (precision + recall + 1e-6)
    inter = (rectangular * region).sum()
    iou = inter / (rectangular.sum() + gt_size - inter)
    return float(f1), int(iou > 0.5)


def si_localization(masks: np.ndarray, gt_boxes: list[list[tuple[int, int, int, int]]],
                    is_correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image (LE, OM, F1) in [0, 1] as SI's ``score`` computes them, and the SI boxes.

    An empty binarization (SI reads an uninitialized buffer there) is an empty box.
    """
    b, h, w = masks.shape
    binary = si_binarize(torch.from_numpy(masks).view(b, 1, h, w)).numpy()[:, 0]
    le, om, f1 = np.zeros(b), np.zeros(b), np.zeros(b)
    for i in range(b):
        rect = np.zeros((h, w))
        if binary[i].sum() > 0:
            xmin, xmax, ymin, ymax = si_box(binary[i])
            rect[ymin:ymax, xmin:xmax] = 1
        f1s, hits = [], []
        for x0, y0, x1, y1 in gt_boxes[i]:
            size = (x1 - x0) * (y1 - y0)
            if size == 0:
                f1s.append(0.0)
                hits.append(0)
                continue
            clipped = (int(np.clip(x0, 0, w)), int(np.clip(y0, 0, h)), int(np.clip(x1, 0, w)), int(np.clip(y1, 0, h)))
            f, hit = _f1_and_hit(masks[i], rect, (x0, y0, x1, y1), size, clipped)
            f1s.append(f)
            hits.append(hit)
        f1[i] = max(f1s)
        le[i] = 1 - max(hits)
        om[i] = 1 - max(hits) * int(is_correct[i])
    return le, om, f1


def si_saliency_metric(masks: np.ndarray, normalized_images: torch.Tensor, targets: torch.Tensor,
                       classifier: nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image (SM, area term, log p) as SI's ``compute_saliency_metric``: crops of the
    normalized image in SI's box, bicubic resize (zeros for an area-0 box), ``softmax().log()``."""
    b, h, w = masks.shape
    binary = si_binarize(torch.from_numpy(masks).view(b, 1, h, w)).numpy()[:, 0]
    crops, areas = [], []
    for i in range(b):
        xmin = xmax = ymin = ymax = 0
        if binary[i].sum() > 0:
            xmin, xmax, ymin, ymax = si_box(binary[i])
        area = (xmax - xmin) * (ymax - ymin)
        if area > 0:
            piece = normalized_images[i, :, ymin:ymax, xmin:xmax].permute(1, 2, 0).numpy()
            crops.append(cv2.resize(piece, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, 3))
        else:
            crops.append(np.zeros((h, w, 3)))
        areas.append(area)
    batch = torch.tensor(np.moveaxis(np.array(crops), 3, 1)).float()
    with torch.no_grad():
        logits = classifier(batch)
    term_1 = (torch.tensor(areas).float() / (h * w)).clamp(0.05, 1).log().numpy()
    term_2 = torch.softmax(logits, dim=-1)[torch.arange(b), targets].log().numpy()
    return term_1 - term_2, term_1, term_2


def casm_binarize(masks: torch.Tensor) -> torch.Tensor:
    """CASM: keep about the ``N * mean`` largest pixels (k-th value threshold, clamped). ``(B, 1, H, W)``."""
    b, _, h, w = masks.shape
    avg = F.avg_pool2d(masks, (h, w), stride=1).view(b)
    flat = masks.view(b, -1)
    out = torch.zeros_like(flat)
    for i in range(b):
        kth = 1 + int((flat[i].size(0) - 1) * (1 - avg[i].item()) + 0.5)
        th, _ = torch.kthvalue(flat[i], kth)
        th.clamp_(1e-6, 1 - 1e-6)
        out[i] = flat[i].gt(th).float()
    return out.view(masks.shape)


def casm_localization(masks: np.ndarray, gt_boxes: list[list[tuple[int, int, int, int]]],
                      is_correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image (LE, OM, F1) in [0, 1] as CASM's ``score.py``: inclusive predicted box; a ground
    truth box whose clipped region is empty scores 0; unclipped size in IoU and recall."""
    b, h, w = masks.shape
    binary = casm_binarize(torch.from_numpy(masks).view(b, 1, h, w)).numpy()[:, 0]
    le, om, f1 = np.zeros(b), np.zeros(b), np.zeros(b)
    for i in range(b):
        rect = np.zeros((h, w))
        if binary[i].sum() > 0:
            m = largest_connected(binary[i])
            rows, cols = m.any(1), m.any(0)
            r0, r1 = int(np.argmax(rows)), int(np.argmax(np.cumsum(rows)))
            c0, c1 = int(np.argmax(cols)), int(np.argmax(np.cumsum(cols)))
            rect[r0:r1 + 1, c0:c1 + 1] = 1
        f1s, hits = [], []
        for x0, y0, x1, y1 in gt_boxes[i]:
            size = (x1 - x0) * (y1 - y0)
            clipped = (min(max(x0, 0), w), min(max(y0, 0), h), min(max(x1, 0), w), min(max(y1, 0), h))
            if clipped[0] == clipped[2] or clipped[1] == clipped[3]:
                f1s.append(0.0)
                hits.append(0)
                continue
            f, hit = _f1_and_hit(masks[i], rect, (x0, y0, x1, y1), size, clipped)
            f1s.append(f)
            hits.append(hit)
        f1[i] = max(f1s)
        le[i] = 1 - max(hits)
        om[i] = 1 - max(hits) * int(is_correct[i])
    return le, om, f1


# The data the scorers are compared on.

SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def edge_case_masks(g: torch.Generator) -> np.ndarray:
    """Masker-like maps in [0, 1] and the edge cases, ``(N, 224, 224)`` float32."""
    def smooth(cells: int) -> torch.Tensor:
        field = torch.rand(1, 1, cells, cells, generator=g)
        return nn.functional.interpolate(field, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]

    maps = [torch.sigmoid(12 * (smooth(5) - 0.5)), torch.sigmoid(12 * (smooth(9) - 0.5)), smooth(3)]
    maps += [torch.full((SIZE, SIZE), v) for v in (0.3, 0.5, 0.0, 1.0)]
    vbar, hbar, dot = torch.zeros(SIZE, SIZE), torch.zeros(SIZE, SIZE), torch.zeros(SIZE, SIZE)
    vbar[40:180, 100] = 1.0
    hbar[77, 10:200] = 1.0
    dot[50, 60] = 1.0
    two = torch.zeros(SIZE, SIZE)
    two[150:190, 20:60] = 1.0
    two[20:60, 150:190] = 1.0  # same size, first in raster order: the largest component on a tie
    edge = torch.zeros(SIZE, SIZE)
    edge[120:, 100:] = 1.0  # reaches the last row and column
    maps += [vbar, hbar, dot, two, edge, torch.rand(SIZE, SIZE, generator=g),
             torch.floor(4 * smooth(6)) / 4]
    return torch.stack(maps).float().numpy()


# Per map of edge_case_masks: a box on the map's object (None: none), so that hits, misses and the
# references' pitfalls all occur: the whole image for the constant maps, the 1-px bar exactly,
# the first of the two tied squares, the region reaching the border.
OBJECT_BOXES: list[list[float] | None] = [
    None, None, None, [0.0, 0.0, 224.0, 224.0], [0.0, 0.0, 224.0, 224.0], [0.0, 0.0, 224.0, 224.0], None,
    [100.0, 40.0, 100.0, 179.0], [10.0, 70.0, 199.0, 84.0], [60.0, 50.0, 61.0, 51.0], [150.0, 20.0, 189.9, 59.5],
    [100.0, 120.0, 224.0, 224.0], None, None]


def ground_truth(n: int, g: torch.Generator) -> list[list[list[float]]]:
    """1-3 boxes per image: the object's, random (fractional) ones, some outside the image or degenerate."""
    extra = [[99.2, 40.0, 101.8, 179.0], [-30.5, -12.0, 120.0, 90.7], [100.0, 120.0, 260.0, 240.0],
             [50.0, 50.0, 50.0, 90.0], [230.0, 10.0, 260.0, 30.0], [20.0, 150.0, 59.0, 189.0]]
    out = []
    for i in range(n):
        boxes = [] if OBJECT_BOXES[i] is None else [OBJECT_BOXES[i]]
        boxes += [extra[(i + j) % len(extra)] for j in range(int(torch.randint(0, 2, (1,), generator=g)))]
        x0, y0 = (torch.rand(2, generator=g) * 180 - 10).tolist()
        w, h = (torch.rand(2, generator=g) * 150 + 5).tolist()
        boxes.append([x0, y0, x0 + w, y0 + h])
        out.append(boxes)
    return out


class TinyNet(nn.Module):
    """A small classifier on normalized images (patchify conv, 2 x 2 pool, linear)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def edge_case_data(seed: int = 0) -> tuple[np.ndarray, Batch, list[list[tuple[int, int, int, int]]], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = edge_case_masks(g)
    n = len(masks)
    images = nn.functional.interpolate(torch.rand(n, 3, 16, 16, generator=g), size=(SIZE, SIZE), mode="bilinear",
                                       align_corners=False)
    boxes = ground_truth(n, g)
    batch = Batch(images=images, labels=torch.randint(0, 4, (n,), generator=g),
                  boxes=[torch.tensor(b, dtype=torch.float64) for b in boxes])
    gt_int = [[(int(x0), int(y0), int(x1), int(y1)) for x0, y0, x1, y1 in b] for b in boxes]
    predictions = torch.randint(0, 4, (n,), generator=g)
    return masks, batch, gt_int, predictions


def one(batch: Batch, i: int) -> Batch:
    """Image ``i`` of a batch, as a batch."""
    return Batch(batch.images[i:i + 1], batch.labels[i:i + 1], batch.boxes[i:i + 1])
