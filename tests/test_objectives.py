import math

import pytest
import torch

from masksal.objectives import (
    ObjectiveConfig,
    absent_area,
    binary_entropy,
    binary_masked_in,
    binary_masked_out,
    compute_objectives,
    entropy,
    gated_area,
    mask_area,
    masked_in_ce,
    masked_out_ce,
    masked_out_entropy,
    masked_out_target,
    masked_out_uniform_ce,
    total_variation,
)


def test_entropy_of_uniform_prediction_is_log_c():
    logits = torch.zeros(3, 7)
    assert torch.allclose(entropy(logits), torch.full((3,), math.log(7)))


def test_entropy_of_certain_prediction_is_zero():
    logits = torch.tensor([[100.0, 0.0, 0.0]])
    assert entropy(logits).item() == pytest.approx(0.0, abs=1e-6)


def test_masked_out_entropy_is_gated_and_averaged_over_batch():
    logits = torch.zeros(4, 5)  # every row uniform: entropy log 5
    gate = torch.tensor([True, False, True, False])
    assert masked_out_entropy(logits, gate).item() == pytest.approx(-math.log(5) * 2 / 4)
    assert masked_out_entropy(logits, torch.zeros(4, dtype=torch.bool)).item() == 0.0


def test_masked_in_ce_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert masked_in_ce(logits, labels).item() == pytest.approx(expected)


def test_masked_out_ce_is_negative_ce():
    logits = torch.tensor([[0.0, 0.0]])
    assert masked_out_ce(logits, torch.tensor([0])).item() == pytest.approx(-math.log(2))


def test_uniform_ce_minimal_at_uniform():
    assert masked_out_uniform_ce(torch.zeros(2, 4)).item() == pytest.approx(math.log(4))
    assert masked_out_uniform_ce(torch.tensor([[5.0, 0, 0, 0]])).item() > math.log(4)


def test_area_and_gated_area():
    m = torch.zeros(2, 1, 4, 4)
    m[0, :, :2, :] = 1  # half the image
    assert torch.allclose(mask_area(m), torch.tensor([0.5, 0.0]))
    assert gated_area(m, torch.tensor([True, True])).item() == pytest.approx(0.25)
    assert gated_area(m, torch.tensor([False, True])).item() == 0.0


def test_total_variation_of_constant_mask_is_border_only():
    assert total_variation(torch.zeros(2, 1, 8, 8)).item() == 0.0
    ones = torch.ones(1, 1, 8, 8)
    assert total_variation(ones, border=0.0).item() == 0.0
    assert total_variation(ones, border=0.3).item() == pytest.approx(0.3 * 28)  # 28 border pixels


def test_total_variation_of_a_step_edge():
    m = torch.zeros(1, 4, 4)
    m[:, :, 2:] = 1.0  # a vertical edge crossed by 4 rows
    assert total_variation(m, border=0.0).item() == pytest.approx(4.0)


def test_compute_objectives_terms_and_switches():
    cfg = ObjectiveConfig(area_out_weight=10.0, area_in_weight=1.0, tv_weight=0.0)
    masks = torch.full((2, 1, 4, 4), 0.5)
    labels = torch.tensor([0, 1])
    clean = torch.tensor([[5.0, 0.0], [5.0, 0.0]])  # first correct, second wrong
    logits_in = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # both correct
    logits_out = torch.tensor([[0.0, 5.0], [5.0, 0.0]])  # first: correct clean AND wrong out
    t = compute_objectives(cfg, masks, labels, clean, logits_in, logits_out)
    assert set(t) == {"masked_in_ce", "masked_out_entropy", "area", "total"}
    # area: out side gates only image 0 -> 10 * 0.5 / 2; in side gates both -> 1 * 0.5
    assert t["area"].item() == pytest.approx(10 * 0.5 / 2 + 0.5)
    assert t["total"].item() == pytest.approx(sum(v.item() for k, v in t.items() if k != "total"))
    off = compute_objectives(ObjectiveConfig(masked_out="none", area="l1", area_l1_weight=2.0), masks, labels,
                             clean, logits_in, None)
    assert set(off) == {"masked_in_ce", "area", "tv", "total"}
    assert off["area"].item() == pytest.approx(1.0)


def test_bad_objective_option_is_a_clear_error():
    with pytest.raises(ValueError, match="masked_out"):
        ObjectiveConfig(masked_out="kl")


def test_masked_out_target_is_minus_log_of_one_minus_p_by_hand():
    # p_0 = 1/2 -> log 2; p_1 = 1 / (e^2 + 2) -> -log(1 - p_1); averaged over the batch.
    logits = torch.tensor([[0.0, 0.0, -100.0], [2.0, 0.0, 0.0]])
    p1 = 1 / (math.exp(2) + 2)
    expected = (math.log(2) - math.log(1 - p1)) / 2
    assert masked_out_target(logits, torch.tensor([0, 1])).item() == pytest.approx(expected)
    # The requested class gone, another class confident: nothing left to remove.
    assert masked_out_target(torch.tensor([[-50.0, 10.0]]), torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)
    # No cancellation when p_y is close to 1: -log(1 - p) = -log(e^-30 / (1 + e^-30)) ~ 30.
    assert masked_out_target(torch.tensor([[30.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(30.0, rel=1e-4)


def test_binary_forms_by_hand():
    z = torch.tensor([[0.0, 3.0], [-2.0, 1.0]])
    y = torch.tensor([0, 0])  # z_y = 0 and -2
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731  (softplus)
    assert binary_masked_in(z, y).item() == pytest.approx((math.log(2) + sp(2.0)) / 2)  # -log sigmoid(z_y)
    assert binary_masked_out("target", z, y, torch.ones(2, dtype=torch.bool)).item() == pytest.approx(
        (math.log(2) + sp(-2.0)) / 2)  # -log(1 - sigmoid(z_y))
    assert binary_entropy(torch.tensor([0.0])).item() == pytest.approx(math.log(2))
    p = 1 / (1 + math.exp(2.0))
    h = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert binary_entropy(torch.tensor([-2.0])).item() == pytest.approx(h)
    gate = torch.tensor([True, False])
    assert binary_masked_out("entropy", z, y, gate).item() == pytest.approx(-math.log(2) / 2)
    assert binary_masked_out("uniform_ce", z, y, gate).item() == pytest.approx(
        (math.log(2) + 0.5 * (sp(-2.0) + sp(2.0))) / 2)
    assert binary_masked_out("ce", z, y, gate).item() == pytest.approx(-(math.log(2) + sp(2.0)) / 2)


def test_absent_term_and_its_default_weight():
    masks = torch.full((2, 1, 4, 4), 0.5)
    absent = torch.zeros(2, 3, 4, 4)
    absent[0, 0] = 1.0  # one of six absent masks full: mean area 1/6
    assert absent_area(absent).item() == pytest.approx(1 / 6)
    labels, logits = torch.tensor([0, 1]), torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    cfg = ObjectiveConfig(area_out_weight=30.0, tv_weight=0.0)
    t = compute_objectives(cfg, masks, labels, logits, logits, logits, absent_masks=absent)
    assert t["absent"].item() == pytest.approx(30.0 / 6)  # weight: area_out_weight unless set
    t = compute_objectives(ObjectiveConfig(absent_weight=2.0, tv_weight=0.0), masks, labels, logits, logits, logits,
                           absent_masks=absent)
    assert t["absent"].item() == pytest.approx(2.0 / 6)
    assert t["total"].item() == pytest.approx(sum(v.item() for k, v in t.items() if k != "total"))
    assert "absent" not in compute_objectives(cfg, masks, labels, logits, logits, logits)
    with pytest.raises(ValueError, match="absent"):
        ObjectiveConfig(absent_targets=-1)


def test_multilabel_gates_read_the_requested_logit():
    # Multi-label: "predicted" means z_y > 0, whatever the other labels' logits.
    cfg = ObjectiveConfig(multilabel=True, masked_out="target", area_out_weight=10.0, area_in_weight=1.0,
                          tv_weight=0.0)
    masks = torch.full((2, 1, 4, 4), 0.5)
    labels = torch.tensor([0, 0])
    clean = torch.tensor([[1.0, 9.0], [-1.0, 9.0]])  # label 0 detected on image 0 only (not the top-1 there)
    logits_in = torch.tensor([[2.0, 5.0], [2.0, 5.0]])  # detected on both
    logits_out = torch.tensor([[-1.0, 5.0], [-1.0, 5.0]])  # gone on both
    t = compute_objectives(cfg, masks, labels, clean, logits_in, logits_out)
    assert set(t) == {"masked_in_ce", "masked_out_target", "area", "total"}
    assert t["area"].item() == pytest.approx(10 * 0.5 / 2 + 1 * 0.5)  # out side: image 0 only
    assert t["masked_in_ce"].item() == pytest.approx(math.log1p(math.exp(-2.0)))
    assert t["masked_out_target"].item() == pytest.approx(math.log1p(math.exp(-1.0)))
