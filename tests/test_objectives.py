import math

import pytest
import torch

from masksal.objectives import (
    ObjectiveConfig,
    compute_objectives,
    entropy,
    gated_area,
    mask_area,
    masked_in_ce,
    masked_out_ce,
    masked_out_entropy,
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
