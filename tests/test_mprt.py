"""The smooth and efficient MPRT (Hedström et al. 2023) on hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from masksal.mprt import discrete_entropy, efficient_mprt, efficient_mprt_summary, smooth_maps


def test_discrete_entropy_of_known_histograms():
    constant = np.full((1, 4, 4), 0.3)
    two_halves = np.concatenate([np.zeros(8), np.ones(8)]).reshape(1, 4, 4)
    four_values = np.repeat([0.0, 1.0, 2.0, 3.0], 4).reshape(1, 4, 4)
    assert discrete_entropy(constant)[0] == 0.0  # every value in one bin
    assert discrete_entropy(two_halves, n_bins=10)[0] == pytest.approx(math.log(2))
    assert discrete_entropy(four_values, n_bins=4)[0] == pytest.approx(math.log(4))
    # Three equal values and one other, 2 bins: p = (3/4, 1/4).
    skew = np.array([[[0.0, 0.0], [0.0, 1.0]]])
    assert discrete_entropy(skew, n_bins=2)[0] == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert discrete_entropy(torch.from_numpy(four_values), n_bins=4)[0] == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="H, W"):
        discrete_entropy(np.zeros((4, 4)))


def test_efficient_mprt_is_the_relative_rise_of_entropy():
    two = np.concatenate([np.zeros(8), np.ones(8)]).reshape(1, 4, 4)
    four = np.repeat([0.0, 1.0, 2.0, 3.0], 4).reshape(1, 4, 4)
    # log 4 / log 2 - 1 = 1: the random model's map is twice as complex.
    assert efficient_mprt(two, four, n_bins=4)[0] == pytest.approx(1.0)
    assert efficient_mprt(four, two, n_bins=4)[0] == pytest.approx(-0.5)
    assert np.isnan(efficient_mprt(np.zeros((1, 4, 4)), four)[0])  # no complexity to rise from
    summary = efficient_mprt_summary({"m": np.stack([two[0], four[0]])}, {"m": np.stack([four[0], four[0]]),
                                                                          "m_retrained": np.stack([two[0], two[0]])},
                                     bins=4)
    assert summary["m"]["score"] == pytest.approx(0.5) and summary["m"]["pass_rate"] == 0.5
    assert summary["m_retrained"]["score"] == pytest.approx(-0.25)  # compared with "m"'s trained maps
    assert summary["m"]["entropy_trained"] == pytest.approx((math.log(2) + math.log(4)) / 2)


def test_smooth_maps_average_noisy_copies_and_end_with_the_clean_image():
    images = torch.rand(3, 3, 8, 8)
    labels = torch.zeros(3, dtype=torch.long)
    seen = []

    def fn(x, _y):
        seen.append(x.clone())
        return x.mean(dim=1)

    one = smooth_maps(fn, images, labels, n_samples=1)
    assert torch.allclose(one, images.mean(dim=1)) and torch.equal(seen[-1], images)
    seen.clear()
    avg = smooth_maps(fn, images, labels, n_samples=4, noise=0.1, seed=5)
    assert len(seen) == 4 and torch.equal(seen[-1], images)
    assert torch.allclose(avg, torch.stack([s.mean(dim=1) for s in seen]).mean(dim=0), atol=1e-6)
    # Noise standard deviation: 0.1 of each image's value range (away from the clipped ends).
    flat = images.flatten(1)
    rng = (flat.max(1).values - flat.min(1).values).view(-1, 1, 1, 1)
    inside = (images > 0.4) & (images < 0.6)
    std = torch.stack([((s - images) / rng)[inside] for s in seen[:-1]]).std()
    assert 0.08 < float(std) < 0.12
    assert all(float(s.min()) >= 0.0 and float(s.max()) <= 1.0 for s in seen)  # clipped to pixel values
    again = smooth_maps(lambda x, _y: x.mean(dim=1), images, labels, n_samples=4, noise=0.1, seed=5)
    assert torch.equal(again, avg)  # seeded
    with pytest.raises(ValueError, match="n_samples"):
        smooth_maps(fn, images, labels, n_samples=0)
