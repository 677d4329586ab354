"""ROAD (metrics/road.py): the imputation on hand-computed cases, the metric on a toy model whose
evidence is one known block, the blurred-map control, sharding, and evaluate()."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.sparse.linalg import spsolve
from torch import nn
from torch.utils.data import DataLoader

from masksal.classifiers import Classifier, create_classifier
from masksal.evaluation import evaluate, format_table
from masksal.metrics import RemoveAndDebias, blur_maps, noisy_linear_imputation
from masksal.metrics.road import NEIGHBOURS
from masksal.types import Batch, collate

pytestmark = pytest.mark.usefixtures("one_thread")


# --- noisy linear imputation -------------------------------------------------------------------

def test_one_interior_pixel_is_the_weighted_mean_of_its_eight_neighbours() -> None:
    img = np.arange(9, dtype=np.float64).reshape(1, 3, 3)  # 0 1 2 / 3 4 5 / 6 7 8, centre 4 removed
    img[0, 0, 0] = 12.0  # break the symmetry so the weights matter
    removed = np.zeros((3, 3), dtype=bool)
    removed[1, 1] = True
    out = noisy_linear_imputation(img, removed, noise=0.0)
    direct = (1 + 3 + 5 + 7) / 6
    diagonal = (12 + 2 + 6 + 8) / 12
    assert out[0, 1, 1] == pytest.approx(direct + diagonal)
    keep = ~removed
    assert np.array_equal(out[0][keep], img[0][keep])


def test_a_corner_pixel_renormalizes_over_the_neighbours_inside_the_image() -> None:
    img = np.zeros((2, 3, 3))
    img[0, 0, 1], img[0, 1, 0], img[0, 1, 1] = 3.0, 6.0, 9.0
    img[1] = 1.0
    removed = np.zeros((3, 3), dtype=bool)
    removed[0, 0] = True
    out = noisy_linear_imputation(img, removed, noise=0.0)
    # Weights 1/6, 1/6, 1/12 over a total of 5/12: (2*3 + 2*6 + 9) / 5.
    assert out[0, 0, 0] == pytest.approx((2 * 3 + 2 * 6 + 9) / 5)
    assert out[1, 0, 0] == pytest.approx(1.0)  # channels are solved independently


def test_two_adjacent_removed_pixels_are_solved_jointly() -> None:
    # A 1 x 4 row a ? ? d: only the direct neighbours exist (weights 1/6 each), so
    # x1 = (a + x2) / 2 and x2 = (x1 + d) / 2  ->  x1 = (2a + d) / 3, x2 = (a + 2d) / 3.
    img = np.array([[[3.0, 0.0, 0.0, 9.0]]])
    removed = np.array([[False, True, True, False]])
    out = noisy_linear_imputation(img, removed, noise=0.0)
    assert out[0, 0].tolist() == pytest.approx([3.0, 5.0, 7.0, 9.0])


def test_a_linear_ramp_is_restored_exactly_inside_the_image() -> None:
    # The stencil is symmetric, so a linear function satisfies every equation: an interior hole in
    # a ramp is filled with the ramp itself.
    yy, xx = np.mgrid[0:12, 0:15].astype(np.float64)
    img = np.stack([0.1 * xx + 0.05 * yy, 0.02 * xx - 0.03 * yy + 0.5])
    removed = np.zeros((12, 15), dtype=bool)
    removed[3:9, 4:12] = True
    out = noisy_linear_imputation(img, removed, noise=0.0)
    np.testing.assert_allclose(out, img, atol=1e-12)


def test_the_banded_solver_matches_superlu_on_a_random_removal() -> None:
    rng = np.random.default_rng(3)
    img = rng.random((3, 17, 23))
    removed = rng.random((17, 23)) < 0.7
    out = noisy_linear_imputation(img, removed, noise=0.0)
    # The same system assembled independently, pixel by pixel, and solved by SuperLU.
    h, w = removed.shape
    unknown = [(y, x) for y in range(h) for x in range(w) if removed[y, x]]
    index = {p: i for i, p in enumerate(unknown)}
    a = scipy.sparse.lil_matrix((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), 3))
    for i, (y, x) in enumerate(unknown):
        for dy, dx, wt in NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w:
                a[i, i] += wt
                if removed[ny, nx]:
                    a[i, index[(ny, nx)]] -= wt
                else:
                    b[i] += wt * img[:, ny, nx]
    expected = spsolve(a.tocsc(), b)
    got = np.stack([out[:, y, x] for y, x in unknown])
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_noise_has_the_requested_spread_and_only_touches_removed_pixels() -> None:
    img = np.full((3, 40, 40), 0.5)
    removed = np.zeros((40, 40), dtype=bool)
    removed[5:35, 5:35] = True
    out = noisy_linear_imputation(img, removed, noise=0.05, rng=np.random.default_rng(0))
    assert np.array_equal(out[:, ~removed], img[:, ~removed])
    delta = out[:, removed] - 0.5  # the noise-free solution of a constant image is the constant
    assert abs(delta.mean()) < 0.005 and delta.std() == pytest.approx(0.05, rel=0.05)


def test_imputation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="every pixel"):
        noisy_linear_imputation(np.zeros((3, 4, 4)), np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="disagree"):
        noisy_linear_imputation(np.zeros((3, 4, 4)), np.ones((4, 5), dtype=bool))


# --- the metric on a toy classifier ----------------------------------------------------------------

K = 10.0
SK = 1 / (1 + math.exp(-K))  # probability of class 1 with the red block intact


class TopLeftRed(nn.Module):
    """Logits (0, K * mean red of the top-left 4x4 block): nothing else matters."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0, :4, :4].mean(dim=(1, 2))
        return self.head(torch.stack([torch.zeros_like(red), K * red], dim=1))


def toy() -> Classifier:
    return Classifier(TopLeftRed(), taps=["head"], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def red_block(n: int = 1, everywhere: bool = False) -> Batch:
    """8x8 images, red 1 in the top-left 4x4 block (or everywhere), 0 elsewhere; label 1."""
    images = torch.zeros(n, 3, 8, 8)
    if everywhere:
        images[:, 0] = 1.0
    else:
        images[:, 0, :4, :4] = 1.0
    images[:, 1] = torch.linspace(0, 1, 8)  # green varies: irrelevant to the model
    return Batch(images=images, labels=torch.ones(n, dtype=torch.long), boxes=[torch.zeros(0, 4)] * n)


def block_first(n: int = 1) -> torch.Tensor:
    """The block gets the 16 largest values, every other pixel a distinct smaller one."""
    m = torch.arange(64, dtype=torch.float32).flip(0).reshape(8, 8) / 64
    m[:4, :4] += 2.0
    return m.expand(n, 8, 8).clone()


FRACTIONS = (0.25, 0.5, 0.75)  # 16, 32, 48 of the 64 pixels


def test_a_map_that_puts_the_evidence_first_is_hand_computed() -> None:
    metric = RemoveAndDebias(toy(), fractions=FRACTIONS, noise=0.0, blur_control=None)
    probs, correct = metric.scores(block_first(), red_block())
    # MoRF removes the block first; its neighbours all have red 0, so it is imputed to exactly 0:
    # logits (0, 0), probability 1/2, and argmax picks class 0 (wrong).
    assert probs[0, 0, 0].tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert correct[0, 0, 0].tolist() == [0.0, 0.0, 0.0]
    # LeRF never reaches the block's 16 pixels at 48 removed: the evidence is intact.
    assert probs[0, 0, 1].tolist() == pytest.approx([SK] * 3)
    assert correct[0, 0, 1].tolist() == [1.0, 1.0, 1.0]
    metric.update(block_first(), red_block())
    out = metric.compute()
    assert out["road_morf"] == pytest.approx(0.5) and out["road_lerf"] == pytest.approx(SK)
    assert out["road_gap"] == pytest.approx(SK - 0.5)
    assert out["road_morf_acc"] == 0.0 and out["road_lerf_acc"] == 100.0 and out["road_gap_acc"] == 100.0
    assert out["road_morf@0.25"] == pytest.approx(0.5) and out["road_lerf_acc@0.75"] == 100.0
    assert not any(k.endswith("_blurred") for k in out)


def test_a_map_that_puts_the_evidence_last_has_a_negative_gap() -> None:
    metric = RemoveAndDebias(toy(), fractions=FRACTIONS, noise=0.0, blur_control=None)
    backwards = -block_first()
    probs, _ = metric.scores(backwards, red_block())
    assert probs[0, 0, 0].tolist() == pytest.approx([SK] * 3)  # MoRF removes everything but the block
    assert probs[0, 0, 1].tolist() == pytest.approx([0.5] * 3)  # LeRF removes the block first
    metric.update(backwards, red_block())
    assert metric.compute()["road_gap"] == pytest.approx(0.5 - SK)


def test_imputation_fills_from_the_neighbours_so_uniform_evidence_survives() -> None:
    # Red everywhere: the removed block is imputed from red neighbours, so the class survives
    # removal, unlike a zero or mean fill (the point of imputation: removal must not be visible).
    metric = RemoveAndDebias(toy(), fractions=FRACTIONS, noise=0.0, blur_control=None)
    probs, _ = metric.scores(block_first(), red_block(everywhere=True))
    assert probs[0, 0].flatten().tolist() == pytest.approx([SK] * 6)


def test_noise_changes_the_toy_probabilities_only_slightly() -> None:
    metric = RemoveAndDebias(toy(), fractions=FRACTIONS, blur_control=None)  # ROAD's noise 0.01
    probs, _ = metric.scores(block_first(), red_block())
    # Mean red of 16 noisy pixels: std 0.01 / 4, so the logit moves by about 0.025.
    assert probs[0, 0, 0].tolist() == pytest.approx([0.5] * 3, abs=0.03)
    assert probs[0, 0, 1].tolist() == pytest.approx([SK] * 3, abs=1e-6)


def test_ties_are_broken_at_random_not_in_raster_order() -> None:
    # A constant map: raster order would remove the top four rows, the whole block, at q = 0.5
    # under MoRF (probability 1/2). A random order removes about half the block's pixels, which
    # are then imputed from red neighbours: the evidence mostly survives, differently per image.
    metric = RemoveAndDebias(toy(), fractions=(0.5,), noise=0.0, blur_control=None)
    images = torch.zeros(20, 3, 8, 8)
    images[:, 0, :4, :4] = 1.0
    images[:, 2] = torch.arange(20).float()[:, None, None] / 100  # distinct images, distinct seeds
    batch = Batch(images=images, labels=torch.ones(20, dtype=torch.long), boxes=[torch.zeros(0, 4)] * 20)
    probs, _ = metric.scores(torch.zeros(20, 8, 8), batch)
    morf = probs[:, 0, 0, 0]
    assert morf.min() > 0.9 and len(set(morf.tolist())) > 10
    # Same image, same seed: the same draw (reproducible), whatever the batch.
    again, _ = metric.scores(torch.zeros(1, 8, 8), Batch(images=images[3:4], labels=torch.ones(1, dtype=torch.long),
                                                         boxes=[torch.zeros(0, 4)]))
    assert again[0, 0, 0, 0] == morf[3]


def test_removal_masks_count_floor_q_n_pixels() -> None:
    metric = RemoveAndDebias(toy(), fractions=(0.1, 0.3, 0.7), blur_control=None)
    assert metric.removal_counts(100) == [10, 30, 70]
    assert metric.removal_counts(64) == [6, 19, 44]
    masks = metric.removal_masks(block_first()[0].numpy().astype(np.float64), np.random.default_rng(0))
    assert masks.shape == (2, 3, 8, 8)
    assert masks.sum(axis=(2, 3)).tolist() == [[6, 19, 44], [6, 19, 44]]
    assert masks[0, 0, :4, :4].sum() == 6 and masks[1, 2, :4, :4].sum() == 0  # block first / last


# --- the blurred-map control ------------------------------------------------------------------------

def test_blur_maps_scales_sigma_with_the_image_and_keeps_constants() -> None:
    const = torch.full((1, 16, 24), 0.3)
    assert torch.allclose(blur_maps(const, 0.1), const.double())
    impulse = torch.zeros(1, 64, 64)
    impulse[0, 32, 32] = 1.0
    # sigma = 1/16 of 64 px = 4 px: the 2-D Gaussian's peak is 1 / (2 pi sigma^2).
    assert float(blur_maps(impulse, 1 / 16)[0, 32, 32]) == pytest.approx(1 / (2 * math.pi * 16), rel=0.02)


def test_the_control_scores_the_blurred_map_beside_the_map() -> None:
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = red_block(2)
    batch.images[1, 2] = 0.5  # two distinct images
    both = RemoveAndDebias(toy(), fractions=FRACTIONS, noise=0.0, blur_control=0.25)
    both.update(maps, batch)
    plain = RemoveAndDebias(toy(), fractions=FRACTIONS, noise=0.0, blur_control=None)
    plain.update(maps, batch)
    blurred = RemoveAndDebias(toy(), fractions=FRACTIONS, noise=0.0, blur_control=None)
    blurred.update(blur_maps(maps, 0.25).float(), batch)
    out, ref, ref_blur = both.compute(), plain.compute(), blurred.compute()
    for key in ("road_gap", "road_morf", "road_lerf", "road_gap_acc", "road_morf_acc", "road_lerf_acc"):
        assert out[key] == pytest.approx(ref[key]), key
        assert out[f"{key}_blurred"] == pytest.approx(ref_blur[key]), key
    assert set(both.curves()) >= {"blurred_morf_prob", "blurred_lerf_acc", "map_morf_prob"}


# --- accumulator contract ---------------------------------------------------------------------------

def small_classifier() -> Classifier:
    torch.manual_seed(0)
    return create_classifier("small_resnet18", 3, width=8).eval()


def random_batch(n: int = 5) -> tuple[torch.Tensor, Batch]:
    g = torch.Generator().manual_seed(1)
    maps = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=g), size=(16, 16), mode="bilinear")[:, 0]
    batch = Batch(images=torch.rand(n, 3, 16, 16, generator=g), labels=torch.randint(0, 3, (n,), generator=g),
                  boxes=[torch.zeros(0, 4)] * n)
    return maps, batch


def part(batch: Batch, idx: slice) -> Batch:
    return Batch(images=batch.images[idx], labels=batch.labels[idx], boxes=batch.boxes[idx])


def test_shards_merged_equal_one_pass_and_batch_size_does_not_matter() -> None:
    clf = small_classifier()
    maps, batch = random_batch()
    whole = RemoveAndDebias(clf, fractions=(0.2, 0.6), batch_size=3)
    whole.update(maps, batch)
    first, second = RemoveAndDebias(clf, fractions=(0.2, 0.6)), RemoveAndDebias(clf, fractions=(0.2, 0.6))
    first.update(maps[:2], part(batch, slice(0, 2)))
    second.update(maps[2:], part(batch, slice(2, None)))
    merged = first.merge(second)
    assert merged.num_images == 5
    a, b = merged.compute(), whole.compute()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k  # float32 forwards in other batch sizes
    whole.reset()
    assert whole.num_images == 0 and math.isnan(whole.compute()["road_gap"])


def test_merge_refuses_other_settings_and_bad_arguments_raise() -> None:
    clf = small_classifier()
    with pytest.raises(ValueError, match="different settings"):
        RemoveAndDebias(clf).merge(RemoveAndDebias(clf, noise=0.0))
    with pytest.raises(ValueError, match="fractions"):
        RemoveAndDebias(clf, fractions=(0.0, 0.5))
    with pytest.raises(ValueError, match="fractions"):
        RemoveAndDebias(clf, fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="noise"):
        RemoveAndDebias(clf, noise=-1.0)
    with pytest.raises(ValueError, match="blur_control"):
        RemoveAndDebias(clf, blur_control=0.0)
    maps, batch = random_batch(2)
    with pytest.raises(ValueError, match="targets"):
        RemoveAndDebias(clf).scores(maps, batch, targets=torch.tensor([0]))
    with pytest.raises(ValueError, match="do not match"):
        RemoveAndDebias(clf).update(maps[:, :8], batch)


def test_evaluate_runs_road_and_the_pointing_game() -> None:
    class Centre:
        name = "centre"

        def explain(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
            b, _, h, w = images.shape
            y = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
            x = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
            return torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / 20).expand(b, h, w).clone()

    g = torch.Generator().manual_seed(0)
    samples = [{"image": torch.rand(3, 16, 16, generator=g), "label": i % 3, "id": str(i),
                "boxes": torch.tensor([[4.0, 4.0, 11.0, 11.0]])} for i in range(6)]
    loader = DataLoader(samples, batch_size=4, collate_fn=collate)  # type: ignore[arg-type]
    result = evaluate(Centre(), small_classifier(), loader, metrics=("road", "pointing_game"), progress=False,
                      metric_options={"road": {"fractions": (0.25, 0.75)}})
    assert result["images"] == 6
    for key in ("road_gap", "road_morf", "road_lerf", "road_gap_blurred", "road_morf@0.25", "road_lerf_acc@0.75"):
        assert math.isfinite(result[key]), key
    assert result["pointing_game"] == 100.0  # the centre lies in every box
    table = format_table(result)
    assert "ROAD gap" in table and "Pointing game (%)" in table
