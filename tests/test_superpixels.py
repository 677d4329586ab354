"""Superpixel pooling: constant within each segment, the segment mean, differentiable; SLIC on a
hand-made image finds its flat regions; the cache returns what a fresh computation returns."""

from __future__ import annotations

import pytest
import torch

from masksal.superpixels import Superpixels, slic_segments, superpixel_pool

pytestmark = pytest.mark.usefixtures("one_thread")


def quadrant_image(size: int = 32) -> torch.Tensor:
    """Four flat colours, one per quadrant: ``(1, 3, size, size)``."""
    x = torch.zeros(1, 3, size, size)
    h = size // 2
    x[0, :, :h, :h] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    x[0, :, :h, h:] = torch.tensor([0.1, 0.9, 0.1])[:, None, None]
    x[0, :, h:, :h] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    x[0, :, h:, h:] = torch.tensor([0.9, 0.9, 0.1])[:, None, None]
    return x


def test_pooling_is_the_segment_mean_and_constant_within_segments() -> None:
    segments = torch.tensor([[[0, 0, 1], [2, 2, 1]]])  # (1, 2, 3)
    values = torch.tensor([[[[1.0, 3.0, 5.0], [2.0, 4.0, 7.0]]]])  # (1, 1, 2, 3)
    out = superpixel_pool(values, segments)
    expected = torch.tensor([[[[2.0, 2.0, 6.0], [3.0, 3.0, 6.0]]]])
    torch.testing.assert_close(out, expected)


def test_labels_of_different_images_do_not_mix() -> None:
    segments = torch.zeros(2, 4, 4, dtype=torch.long)  # one segment per image, same label
    values = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 5.0)])
    values[0, 0, 0, 0] = 17.0  # image 0's mean becomes 2
    out = superpixel_pool(values, segments)
    torch.testing.assert_close(out[0], torch.full((1, 4, 4), 2.0))
    torch.testing.assert_close(out[1], torch.full((1, 4, 4), 5.0))


def test_pooling_is_differentiable_with_the_mean_gradient() -> None:
    segments = torch.tensor([[[0, 0, 0, 1]]])  # sizes 3 and 1
    values = torch.randn(1, 2, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: superpixel_pool(v, segments), (values,))
    superpixel_pool(values, segments)[0, 0, 0, 0].backward()
    grad = values.grad
    assert grad is not None
    torch.testing.assert_close(grad[0, 0, 0], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0], dtype=torch.float64))
    assert bool((grad[0, 1] == 0).all())  # channels pool separately


def test_slic_separates_flat_regions_and_pooled_masks_follow_them() -> None:
    x = quadrant_image()
    seg = slic_segments(x, n_segments=4, compactness=10.0)
    assert seg.shape == (1, 32, 32) and seg.dtype == torch.long
    assert sorted(seg.unique().tolist()) == list(range(int(seg.max()) + 1))  # dense labels
    # no segment straddles two quadrants
    quadrant = torch.zeros(32, 32, dtype=torch.long)
    quadrant[:16, 16:], quadrant[16:, :16], quadrant[16:, 16:] = 1, 2, 3
    for s in seg[0].unique():
        assert quadrant[seg[0] == s].unique().numel() == 1
    # a mask pooled on these segments is constant within each segment
    pooled = superpixel_pool(torch.randn(1, 1, 32, 32), seg)
    for s in seg[0].unique():
        assert pooled[0, 0][seg[0] == s].unique().numel() == 1


def test_cache_matches_fresh_computation_and_reuses_entries() -> None:
    x = torch.cat([quadrant_image(), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))])
    sp = Superpixels(n_segments=8, cache_size=4)
    first = sp(x)
    torch.testing.assert_close(first, slic_segments(x, n_segments=8))
    assert len(sp._cache) == 2
    again = sp(x.flip(0))  # same images, other order: served from the cache
    torch.testing.assert_close(again, first.flip(0))
    assert len(sp._cache) == 2


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        superpixel_pool(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
