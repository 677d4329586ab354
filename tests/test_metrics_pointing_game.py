"""The pointing game (metrics/pointing_game.py): hits and misses by construction, the tolerance's
edge, ties, boxes vs masks, skipped images, sharding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from masksal.metrics import PointingGame
from masksal.types import Batch

BOX = torch.tensor([[10.0, 10.0, 20.0, 20.0]])  # inclusive: columns and rows 10..20


def batch_of(n: int, size: int = 64, boxes: list[torch.Tensor] | None = None,
             masks: torch.Tensor | None = None) -> Batch:
    return Batch(images=torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)),
                 labels=torch.zeros(n, dtype=torch.long), boxes=boxes if boxes is not None else [BOX] * n,
                 masks=masks)


def peak_at(points: list[tuple[int, int]], size: int = 64) -> torch.Tensor:
    """One map per (x, y): 1 at the point, a small gradient elsewhere (a single maximum)."""
    maps = torch.linspace(0, 0.5, size * size).reshape(size, size).repeat(len(points), 1, 1)
    for i, (x, y) in enumerate(points):
        maps[i, y, x] = 1.0
    return maps


def test_the_default_tolerance_is_torchrays_15_px_at_224_scaled_to_the_image() -> None:
    pg = PointingGame()
    assert pg.radius(224, 224) == pytest.approx(15.0)
    assert pg.radius(64, 80) == pytest.approx(15 / 224 * 64)  # 4.29 px, the shorter side


def test_hits_and_misses_at_64_px_by_construction() -> None:
    # r = 4.29 px. Points: inside; 4 px right of the box (hit); 5 px right (miss); diagonal
    # (3, 3) from the corner, distance 4.24 (hit); (4, 3), distance 5 (miss); far away (miss).
    points = [(15, 15), (24, 15), (25, 15), (23, 23), (24, 23), (50, 50)]
    pg = PointingGame()
    hits = pg.hits(peak_at(points), batch_of(len(points)))
    assert hits.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    pg.update(peak_at(points), batch_of(len(points)))
    assert pg.compute() == {"pointing_game": pytest.approx(100 * 3 / 6), "pointing_game_skipped": 0.0}


def test_the_tolerance_is_strict_and_can_be_given_in_pixels() -> None:
    points = [(24, 15)]  # exactly 4 px from the box
    assert PointingGame(tolerance_px=4.0).hits(peak_at(points), batch_of(1)).tolist() == [0.0]
    assert PointingGame(tolerance_px=4.01).hits(peak_at(points), batch_of(1)).tolist() == [1.0]
    # Tolerance 0: the maximum itself must be on the object.
    zero = PointingGame(tolerance_px=0.0)
    assert zero.hits(peak_at([(20, 20), (21, 20)]), batch_of(2)).tolist() == [1.0, 0.0]


def test_ties_fraction_scores_the_share_of_maxima_that_hit() -> None:
    maps = torch.zeros(1, 64, 64)
    # Four maxima (x, y): (15, 15) in the box, (50, 50) and (5, 40) far, (22, 12) 2 px away.
    maps[0, 15, 15] = maps[0, 50, 50] = maps[0, 40, 5] = maps[0, 12, 22] = 1.0
    assert PointingGame().hits(maps, batch_of(1)).tolist() == [pytest.approx(0.5)]
    # "first": raster order (row by row), so (22, 12) comes first.
    assert PointingGame(ties="first").hits(maps, batch_of(1)).tolist() == [1.0]
    maps[0, 12, 22] = 0.0
    assert PointingGame(ties="first").hits(maps, batch_of(1)).tolist() == [1.0]  # then (15, 15)
    maps[0, 15, 15] = 0.0
    assert PointingGame(ties="first").hits(maps, batch_of(1)).tolist() == [0.0]  # then (5, 40), far


def test_a_constant_map_scores_the_share_of_the_image_near_the_object() -> None:
    # 10 x 10, box over the left half (columns 0..4), tolerance 0.5 px: only object pixels are
    # near (the next column is 1 px away), so a constant map scores 50 / 100.
    maps = torch.full((1, 10, 10), 0.3)
    b = batch_of(1, size=10, boxes=[torch.tensor([[0.0, 0.0, 4.0, 9.0]])])
    assert PointingGame(tolerance_px=0.5).hits(maps, b).tolist() == [pytest.approx(0.5)]
    # With 1.5 px the next column (distance 1) is near too: 60 / 100.
    assert PointingGame(tolerance_px=1.5).hits(maps, b).tolist() == [pytest.approx(0.6)]
    # "first" picks pixel (0, 0), on the object: the free hit "fraction" avoids.
    assert PointingGame(tolerance_px=0.5, ties="first").hits(maps, b).tolist() == [1.0]


def test_several_boxes_count_as_one_object_region() -> None:
    boxes = [torch.tensor([[0.0, 0.0, 5.0, 5.0], [40.0, 40.0, 50.0, 50.0]])] * 2
    pg = PointingGame(tolerance_px=1.0)
    assert pg.hits(peak_at([(45, 45), (20, 20)]), batch_of(2, boxes=boxes)).tolist() == [1.0, 0.0]


def test_fractional_boxes_cover_the_pixels_inside_them() -> None:
    # x in [10.5, 20.2] covers columns 11..20: column 10 is 1 px away from the object.
    b = batch_of(1, boxes=[torch.tensor([[10.5, 10.0, 20.2, 20.0]])])
    assert PointingGame(tolerance_px=0.5).hits(peak_at([(10, 15)]), b).tolist() == [0.0]
    assert PointingGame(tolerance_px=0.5).hits(peak_at([(11, 15)]), b).tolist() == [1.0]


def test_masks_are_used_when_present_and_ignore_pixels_are_not_object() -> None:
    masks = torch.zeros(3, 64, 64, dtype=torch.uint8)
    masks[:, 40:50, 40:50] = 1
    masks[:, 0:5, 0:5] = 255
    points = [(45, 45), (15, 15), (2, 2)]  # mask hit; in the box only; on an ignore pixel
    b = batch_of(3, masks=masks)
    assert PointingGame().hits(peak_at(points), b).tolist() == [1.0, 0.0, 0.0]  # auto -> masks
    assert PointingGame(region="box").hits(peak_at(points), b).tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="no pixel masks"):
        PointingGame(region="mask").update(peak_at(points), batch_of(3))


def test_images_without_an_object_are_skipped() -> None:
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 10:20, 10:20] = 1  # image 1 has no object pixel
    pg = PointingGame()
    pg.update(peak_at([(15, 15), (15, 15)]), batch_of(2, masks=masks))
    pg.update(peak_at([(15, 15)]), batch_of(1, boxes=[torch.zeros(0, 4)]))  # no box, no mask
    assert pg.compute() == {"pointing_game": 100.0, "pointing_game_skipped": 2.0}
    assert pg.num_images == 3
    empty = PointingGame()
    empty.update(peak_at([(15, 15)]), batch_of(1, boxes=[torch.zeros(0, 4)]))
    assert math.isnan(empty.compute()["pointing_game"])


def test_shards_merge_to_the_whole_and_batches_equal_a_loop() -> None:
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(7, 32, 32, generator=g)
    maps[3] = 1.0  # a constant map: fractional score
    boxes = [torch.tensor([[float(x), float(y), float(x + 8), float(y + 8)]])
             for x, y in torch.randint(0, 24, (7, 2), generator=g).tolist()]
    b = batch_of(7, size=32, boxes=boxes)
    whole = PointingGame()
    whole.update(maps, b)
    first, second = PointingGame(), PointingGame()
    first.update(maps[:3], Batch(b.images[:3], b.labels[:3], boxes[:3]))
    second.update(maps[3:], Batch(b.images[3:], b.labels[3:], boxes[3:]))
    assert first.merge(second).compute() == pytest.approx(whole.compute())
    loop = PointingGame()
    for i in range(7):
        loop.update(maps[i:i + 1], Batch(b.images[i:i + 1], b.labels[i:i + 1], boxes[i:i + 1]))
    assert loop.compute() == pytest.approx(whole.compute())
    per_image = whole.hits(maps, b)
    assert whole.compute()["pointing_game"] == pytest.approx(100 * float(np.mean(per_image)))
    assert 0 < per_image[3] < 1


def test_bad_settings_and_inputs_raise() -> None:
    with pytest.raises(ValueError, match="different settings"):
        PointingGame().merge(PointingGame(ties="first"))
    with pytest.raises(ValueError, match="tolerance"):
        PointingGame(tolerance=-0.1)
    with pytest.raises(ValueError, match="region"):
        PointingGame(region="boxes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ties"):
        PointingGame(ties="any")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid box"):
        PointingGame().update(peak_at([(1, 1)]), batch_of(1, boxes=[torch.tensor([[5.0, 5.0, 4.0, 9.0]])]))
    with pytest.raises(ValueError, match="NaN"):
        PointingGame().update(torch.full((1, 64, 64), float("nan")), batch_of(1))
