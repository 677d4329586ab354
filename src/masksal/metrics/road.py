"""ROAD, remove and debias (Rong et al. 2022): does the map rank the pixels the model uses?

Pixels are removed most-relevant-first (MoRF) and least-relevant-first (LeRF) at several
fractions and filled by *noisy linear imputation*, which leaves no trace of the removal mask's
shape for the classifier to read (no retraining). With the blurred-map control of Song et al.
(a Gaussian-blurred copy of each map, which holds no more information, scored beside it).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse
import torch
from scipy.linalg import solveh_banded
from scipy.ndimage import gaussian_filter
from torch import Tensor

from masksal.classifiers import Classifier, eval_mode
from masksal.devices import module_device
from masksal.metrics.base import Metric, check_maps, zeros
from masksal.types import Batch

# (row offset, column offset, weight) of the 8 neighbours in the imputation (Rong et al.'s code,
# tleemann/road_evaluation): 1/6 for the 4 direct neighbours, 1/12 for the diagonals (sum 1).
NEIGHBOURS: tuple[tuple[int, int, float], ...] = (
    (-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
    (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12),
)
DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ORDERS = ("morf", "lerf")


def noisy_linear_imputation(image: np.ndarray, removed: np.ndarray, *, noise: float = 0.01,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    r"""Fill the removed pixels of an image by noisy linear imputation (ROAD).

    Every removed pixel becomes the weighted mean of its in-image 8 neighbours (weights 1/6
    direct, 1/12 diagonal, renormalized over the neighbours inside the image), removed neighbours
    being unknowns too: for removed pixel :math:`i` with neighbours :math:`N(i)`,

    .. math:: \Big(\sum_{j \in N(i)} w_{ij}\Big) x_i - \sum_{j \in N(i),\,\text{removed}} w_{ij} x_j
              = \sum_{j \in N(i),\,\text{kept}} w_{ij} v_j ,

    one sparse linear system over all removed pixels (``scipy.sparse``), solved exactly (banded
    Cholesky: the matrix is symmetric positive definite), all channels at once; then
    ``noise * N(0, 1)`` is added to each imputed value (each channel independently). Kept pixels
    are returned unchanged. The system is non-singular whenever at least one pixel is kept
    (every group of removed pixels then touches a kept one).

    Args:
        image: ``(C, H, W)`` float, in the images' space ([0, 1] in masksal; ROAD's noise 0.01
            is meant for that range).
        removed: ``(H, W)`` bool, True where a pixel is removed; not every pixel.
        noise: standard deviation of the added Gaussian noise (0: plain linear imputation).
        rng: the noise's generator (default: a fresh unseeded one).

    Returns:
        ``(C, H, W)`` float64.

    Raises:
        ValueError: shapes disagree or every pixel is removed.
    """
    img = np.asarray(image, dtype=np.float64)
    rem = np.asarray(removed, dtype=bool)
    if img.ndim != 3 or rem.shape != img.shape[1:]:
        raise ValueError(f"image (C, H, W) and removed (H, W) disagree: {img.shape} vs {rem.shape}")
    c, h, w = img.shape
    flat_rem = rem.reshape(-1)
    unknown = np.flatnonzero(flat_rem)
    n = unknown.size
    out = img.reshape(c, -1).copy()
    if n == 0:
        return out.reshape(c, h, w)
    if n == h * w:
        raise ValueError("noisy_linear_imputation: every pixel is removed; nothing to impute from")
    var = np.full(h * w, -1, dtype=np.int64)
    var[unknown] = np.arange(n)
    uy, ux = np.divmod(unknown, w)
    diag = np.zeros(n)
    rows, cols, vals = [], [], []
    rhs = np.zeros((n, c))
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = uy + dy, ux + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        diag[inside] += weight  # the weights of the neighbours outside the image are dropped
        eq = np.flatnonzero(inside)
        nb = ny[inside] * w + nx[inside]
        also_removed = flat_rem[nb]
        rows.append(eq[also_removed])
        cols.append(var[nb[also_removed]])
        vals.append(np.full(int(also_removed.sum()), -weight))
        kept = ~also_removed
        # Each (equation, offset) pair occurs once, so plain fancy-index addition is exact.
        rhs[eq[kept]] += weight * out[:, nb[kept]].T
    matrix = scipy.sparse.coo_matrix(
        (np.concatenate([diag, *vals]), (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols]))),
        shape=(n, n))
    solution = _solve_symmetric_banded(matrix, rhs)
    if noise > 0:
        solution = solution + noise * (rng if rng is not None else np.random.default_rng()).standard_normal((n, c))
    out[:, unknown] = solution.T
    return out.reshape(c, h, w)


def _solve_symmetric_banded(matrix: scipy.sparse.coo_matrix, rhs: np.ndarray) -> np.ndarray:
    """Solve the imputation system by banded Cholesky (LAPACK ``pbsv`` via ``solveh_banded``).

    The matrix is symmetric (neighbour weights are symmetric) and positive definite (diagonally
    dominant, strictly so where a kept pixel is adjacent, and connected), and with the unknowns in
    raster order its bandwidth is at most ``W + 1``. This gives the same solution as SuperLU
    (``scipy.sparse.linalg.spsolve``, to ~1e-14) in about half the time at 64-224 px, and
    imputation is the metric's whole cost; hence the hand-written band packing.
    """
    upper = matrix.col >= matrix.row
    r, c, v = matrix.row[upper], matrix.col[upper], matrix.data[upper]
    k = int((c - r).max())
    band = np.zeros((k + 1, matrix.shape[0]))
    band[k + r - c, c] = v  # LAPACK upper band storage: a[i, j] at band[k + i - j, j]
    return np.asarray(solveh_banded(band, rhs, check_finite=False)).reshape(rhs.shape)


def blur_maps(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian-blurred copies of saliency maps (the blurred-map control of Song et al.).

    Args:
        maps: ``(B, H, W)`` float.
        sigma: the Gaussian's standard deviation as a fraction of the shorter image side
            (``sigma * min(H, W)`` pixels); ``scipy.ndimage.gaussian_filter``, reflect padding,
            truncated at 4 standard deviations.

    Returns:
        ``(B, H, W)`` float64 on the CPU.
    """
    arr = maps.detach().to("cpu", torch.float64).numpy()
    px = float(sigma) * min(arr.shape[-2:])
    return torch.from_numpy(np.stack([gaussian_filter(m, px, mode="reflect") for m in arr]))


def image_seed(image: Tensor, seed: int) -> list[int]:
    """A per-image seed from the image's content, so an image gets the same noise and the same
    tie-breaks whatever batch or shard it comes in."""
    data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return [int(seed), zlib.crc32(data)]


class RemoveAndDebias(Metric):
    r"""ROAD: target-class probability and accuracy after MoRF / LeRF removal with noisy linear imputation.

    For each fraction :math:`q` of the ``fractions`` and each image of :math:`N` pixels,
    :math:`n_q = \lfloor q N \rfloor` pixels are removed: the :math:`n_q` most salient (MoRF) or
    the :math:`n_q` least salient (LeRF); ties in the map are broken by a random permutation
    fixed per image. The removed pixels are filled by :func:`noisy_linear_imputation` and the
    classifier (no retraining) gives :math:`p_q`, the softmax probability of the target class,
    and whether its top-1 class is the label. Per fraction the mean over images is kept:

    .. math::
        \text{MoRF}(q) = \tfrac{1}{B}\textstyle\sum_i p^{\text{MoRF}}_{i,q}, \quad
        \text{LeRF}(q) = \tfrac{1}{B}\textstyle\sum_i p^{\text{LeRF}}_{i,q}, \quad
        \text{gap} = \tfrac{1}{|Q|}\textstyle\sum_{q \in Q} \big(\text{LeRF}(q) - \text{MoRF}(q)\big)

    MoRF lower, LeRF higher and the gap higher are better. The gap is the area between the two
    curves per unit of fraction (the mean over the fractions; with equally spaced fractions the
    area under the piecewise-constant curves). A map that ranks pixels at random scores a gap
    near 0; one that ranks them backwards scores below 0.

    With ``blur_control`` the same is computed for a Gaussian-blurred copy of each map
    (:func:`blur_maps`): blurring adds no information about the model, yet can raise removal
    scores (Song et al.), so a method whose blurred copy scores higher than itself is rewarded by
    the benchmark's bias rather than by its information.

    All (image, variant, order, fraction) inputs of a batch go through the classifier together,
    ``batch_size`` per forward. Imputation runs on the CPU, one sparse solve per input (on average
    about 2 ms at 64 px and 70 ms at 224 px, one thread).

    Args:
        classifier: a :class:`~masksal.classifiers.Classifier` (images in [0, 1]); used in eval
            mode, gradients off.
        fractions: removal fractions, each in (0, 1) (default 0.1, 0.2, ..., 0.9).
        noise: standard deviation of the imputation noise in image units ([0, 1]); ROAD's 0.01.
        blur_control: the blurred copy's Gaussian standard deviation as a fraction of the shorter
            image side (default 1/32: 2 px at 64 px, 7 px at 224 px); ``None`` skips the control
            (half the cost).
        batch_size: perturbed images per classifier forward.
        seed: seed of the imputation noise and tie-breaks (combined with each image's content).

    ``update(maps, batch, targets=None)``: ``maps`` ``(B, H, W)`` float (finite), ``targets``
    ``(B,)`` int64 classes whose probability is tracked (default ``batch.labels``; ROAD tracks the
    class the map explains). Accuracy always compares the top-1 class with ``batch.labels``.

    ``compute()`` keys (probabilities in [0, 1], accuracies in %): ``road_gap``, ``road_morf``,
    ``road_lerf`` (means over the fractions), ``road_gap_acc``, ``road_morf_acc``,
    ``road_lerf_acc``; per fraction ``road_morf@q``, ``road_lerf@q``, ``road_morf_acc@q``,
    ``road_lerf_acc@q`` (``q`` as ``f"{q:g}"``); with the control, the six aggregates again with
    the suffix ``_blurred``. :meth:`curves` gives every per-fraction curve.
    """

    name = "road"

    def __init__(self, classifier: Classifier, *, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 noise: float = 0.01, blur_control: float | None = 1 / 32, batch_size: int = 256,
                 seed: int = 0) -> None:
        fr = tuple(float(q) for q in fractions)
        if not fr or any(not (0.0 < q < 1.0) for q in fr) or len(set(fr)) != len(fr):
            raise ValueError(f"road: fractions must be distinct numbers in (0, 1), got {list(fractions)}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"road: noise must be a finite number >= 0, got {noise}")
        if blur_control is not None and not (math.isfinite(blur_control) and blur_control > 0):
            raise ValueError(f"road: blur_control must be a positive fraction of the image side or None, "
                             f"got {blur_control}")
        if batch_size < 1:
            raise ValueError(f"road: batch_size must be >= 1, got {batch_size}")
        self.classifier = classifier
        self.fractions = tuple(sorted(fr))
        self.noise = float(noise)
        self.blur_control = None if blur_control is None else float(blur_control)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        super().__init__()

    @property
    def variants(self) -> tuple[str, ...]:
        """``("map",)`` or ``("map", "blurred")``."""
        return ("map",) if self.blur_control is None else ("map", "blurred")

    def _config(self) -> tuple[object, ...]:
        return (self.fractions, self.noise, self.blur_control, self.seed)

    def _empty_state(self) -> dict[str, np.ndarray]:
        state = {"count": zeros()}
        for v in self.variants:
            for o in ORDERS:
                state[f"{v}_{o}_prob"] = zeros(len(self.fractions))
                state[f"{v}_{o}_correct"] = zeros(len(self.fractions))
        return state

    def removal_counts(self, num_pixels: int) -> list[int]:
        """``floor(q * num_pixels)`` per fraction (at least 0, at most ``num_pixels - 1``)."""
        # The 1e-9 keeps e.g. 0.3 * 100 (= 30.000000000000004 or 29.999999999999996) at 30.
        return [min(max(math.floor(q * num_pixels + 1e-9), 0), num_pixels - 1) for q in self.fractions]

    def removal_masks(self, saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The removed pixels of one map: ``(2, F, H, W)`` bool, MoRF then LeRF, one per fraction.

        Pixels are ranked by decreasing saliency, ties in a random order drawn from ``rng``.
        """
        h, w = saliency.shape
        num = h * w
        tie = rng.permutation(num)
        rank_order = np.lexsort((tie, -saliency.reshape(-1)))  # most salient first
        out = np.zeros((2, len(self.fractions), num), dtype=bool)
        for k, count in enumerate(self.removal_counts(num)):
            out[0, k, rank_order[:count]] = True
            out[1, k, rank_order[num - count:]] = True
        return out.reshape(2, len(self.fractions), h, w)

    def _inputs(self, images: Tensor, variant_maps: list[np.ndarray]) -> Iterator[Tensor]:
        """The perturbed images of every (image, variant, order, fraction), image by image:
        ``(V * 2 * F, 3, H, W)`` float32 on the CPU per image."""
        for i in range(images.shape[0]):
            base = image_seed(images[i], self.seed)
            img = images[i].detach().to("cpu", torch.float64).numpy()
            stack = []
            for v, maps in enumerate(variant_maps):
                rng = np.random.default_rng([*base, v])  # the map's draws do not depend on the control
                masks = self.removal_masks(maps[i], rng)
                for o in range(2):
                    for k in range(len(self.fractions)):
                        stack.append(noisy_linear_imputation(img, masks[o, k], noise=self.noise, rng=rng))
            yield torch.from_numpy(np.stack(stack)).float()

    def scores(self, maps: Tensor, batch: Batch, targets: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Target probability and top-1 correctness of a batch after imputation.

        Returns:
            ``(probs, correct)``: two ``(B, V, 2, F)`` float64 tensors (CPU); ``V`` indexes
            :attr:`variants`, the next axis MoRF / LeRF, the last the fractions.
        """
        arr = check_maps(maps, batch, metric=self.name)
        b = arr.shape[0]
        tgt = (batch.labels if targets is None else targets).detach().to("cpu").reshape(-1)
        if tgt.numel() != b:
            raise ValueError(f"{self.name}: {tgt.numel()} targets for {b} images")
        labels = batch.labels.detach().to("cpu").reshape(-1)
        variant_maps = [arr]
        if self.blur_control is not None:
            variant_maps.append(blur_maps(torch.from_numpy(arr), self.blur_control).numpy())
        per_image = len(variant_maps) * 2 * len(self.fractions)
        device = module_device(self.classifier)
        probs = torch.empty(b * per_image, dtype=torch.float64)
        correct = torch.empty(b * per_image, dtype=torch.float64)
        rows = torch.arange(b).repeat_interleave(per_image)
        pending: list[Tensor] = []
        done = 0

        def forward(x: Tensor) -> None:
            nonlocal done
            idx = rows[done:done + x.shape[0]]
            out = self.classifier(x.to(device)).float()
            p = torch.softmax(out, dim=1).gather(1, tgt[idx, None].to(out.device))[:, 0]
            probs[done:done + x.shape[0]] = p.double().cpu()
            correct[done:done + x.shape[0]] = (out.argmax(dim=1).cpu() == labels[idx]).double()
            done += x.shape[0]

        with torch.no_grad(), eval_mode(self.classifier):
            queued = 0
            for x in self._inputs(batch.images, variant_maps):
                pending.append(x)
                queued += x.shape[0]
                while queued >= self.batch_size:
                    flat = torch.cat(pending)
                    forward(flat[:self.batch_size])
                    pending, queued = [flat[self.batch_size:]], queued - self.batch_size
            if queued:
                forward(torch.cat(pending))
        shape = (b, len(variant_maps), 2, len(self.fractions))
        return probs.view(shape), correct.view(shape)

    def update(self, maps: Tensor, batch: Batch, targets: Tensor | None = None) -> None:
        """Accumulate a batch (see the class docstring for shapes)."""
        probs, correct = self.scores(maps, batch, targets)
        st = self._state
        for v, variant in enumerate(self.variants):
            for o, order in enumerate(ORDERS):
                st[f"{variant}_{order}_prob"] += probs[:, v, o].sum(dim=0).numpy()
                st[f"{variant}_{order}_correct"] += correct[:, v, o].sum(dim=0).numpy()
        st["count"] += probs.shape[0]

    def curves(self) -> dict[str, np.ndarray]:
        """Mean curves over the images: ``fraction`` ``(F,)`` and, per variant (``map``,
        ``blurred``) and order, ``{variant}_{order}_prob`` in [0, 1] and
        ``{variant}_{order}_acc`` in %, each ``(F,)`` (NaN before any update)."""
        n = float(self._state["count"][0])
        out = {"fraction": np.asarray(self.fractions)}
        for v in self.variants:
            for o in ORDERS:
                out[f"{v}_{o}_prob"] = self._state[f"{v}_{o}_prob"] / n if n else np.full(len(self.fractions), np.nan)
                out[f"{v}_{o}_acc"] = 100 * self._state[f"{v}_{o}_correct"] / n if n else \
                    np.full(len(self.fractions), np.nan)
        return out

    def compute(self) -> dict[str, float]:
        """Aggregates and per-fraction values (see the class docstring); NaN before any update."""
        c = self.curves()
        out: dict[str, float] = {}
        for v in self.variants:
            suffix = "" if v == "map" else "_blurred"
            for stat, tag in (("prob", ""), ("acc", "_acc")):
                morf, lerf = c[f"{v}_morf_{stat}"], c[f"{v}_lerf_{stat}"]
                out[f"road_gap{tag}{suffix}"] = float(np.mean(lerf - morf))
                out[f"road_morf{tag}{suffix}"] = float(np.mean(morf))
                out[f"road_lerf{tag}{suffix}"] = float(np.mean(lerf))
        for k, q in enumerate(self.fractions):
            for stat, tag in (("prob", ""), ("acc", "_acc")):
                for o in ORDERS:
                    out[f"road_{o}{tag}@{q:g}"] = float(c[f"map_{o}_{stat}"][k])
        return out
