"""The inpainter: after a short training it fills holes in smooth images better than the mean
colour does and continues a texture that interpolation blurs; its holes look like masks; its file
round-trips; the "learned" infill hands it the right holes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from masksal.inpainting import (
    InpaintingNet,
    load_inpainter,
    push_pull_fill,
    random_holes,
    save_inpainter,
    train_inpainter,
)
from masksal.masking import compose, infill, learned_fills

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 24
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)


def smooth_images(n: int, seed: int) -> Tensor:
    """Random colour ramps: each channel ``a + b * x + c * y`` with random coefficients, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.linspace(-0.5, 0.5, SIZE)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    a = 0.2 + 0.6 * torch.rand(n, 3, 1, 1, generator=g)
    b = 0.5 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)
    c = 0.5 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)
    return (a + b * xx + c * yy).clamp(0, 1)


def stripes(n: int, seed: int) -> Tensor:
    """Horizontal two-colour stripes of period 6 px at a random phase: ``(n, 3, SIZE, SIZE)``."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(SIZE).float().view(1, 1, SIZE, 1)
    phase = 2 * math.pi * torch.rand(n, 1, 1, 1, generator=g)
    on = (torch.sin(2 * math.pi * rows / 6 + phase) > 0).float().expand(n, 1, SIZE, SIZE)
    a = 0.2 + 0.3 * torch.rand(n, 3, 1, 1, generator=g)
    b = 0.2 + 0.3 * torch.rand(n, 3, 1, 1, generator=g)
    return a + b * on


@pytest.fixture(scope="module")
def trained() -> InpaintingNet:
    images = torch.cat([smooth_images(128, seed=0), stripes(128, seed=0)])
    return train_inpainter(images, steps=300, batch_size=8, widths=(8, 16, 32), seed=0)


def centre_hole(n: int) -> Tensor:
    holes = torch.zeros(n, 1, SIZE, SIZE)
    holes[..., 6:18, 6:18] = 1
    return holes


def hole_error(fill: Tensor, x: Tensor, holes: Tensor) -> float:
    return float(((fill - x).abs() * holes).sum() / (holes.sum() * 3))


def test_fills_smooth_images_better_than_the_mean_colour(trained: InpaintingNet) -> None:
    x = smooth_images(32, seed=1)  # held out
    holes = centre_hole(32)
    learned = hole_error(trained.inpaint(x, holes), x, holes)
    mean_colour = hole_error(IMAGENET_MEAN.expand_as(x), x, holes)
    image_mean = hole_error(x.mean(dim=(2, 3), keepdim=True).expand_as(x), x, holes)
    assert learned < 0.5 * mean_colour, (learned, mean_colour)
    assert learned < image_mean, (learned, image_mean)  # uses the surroundings, not only the average


def test_training_learns_to_continue_a_texture(trained: InpaintingNet) -> None:
    x = stripes(32, seed=1)  # held out
    holes = centre_hole(32)
    learned = hole_error(trained.inpaint(x, holes), x, holes)
    interpolated = hole_error(push_pull_fill(x, holes), x, holes)  # the network's own first guess
    assert learned < 0.6 * interpolated, (learned, interpolated)


def test_fills_a_constant_image_with_its_colour(trained: InpaintingNet) -> None:
    x = torch.tensor([0.7, 0.3, 0.5]).view(1, 3, 1, 1).expand(4, 3, SIZE, SIZE).clone()
    holes = centre_hole(4)
    out = trained.inpaint(x, holes)
    assert hole_error(out, x, holes) < 0.05
    torch.testing.assert_close(out * (1 - holes), x * (1 - holes))  # visible pixels untouched


def test_random_holes_cover_the_range_of_mask_shapes() -> None:
    holes = random_holes(90, (32, 32), torch.Generator().manual_seed(0))
    assert holes.shape == (90, 1, 32, 32)
    assert float(holes.min()) >= 0 and float(holes.max()) <= 1
    area = holes.mean(dim=(1, 2, 3))
    assert float(area.min()) < 0.15 and float(area.max()) > 0.85  # small holes and almost-everything
    soft = ((holes > 0.05) & (holes < 0.95)).flatten(1).any(dim=1)
    assert 0 < int(soft.sum()) < 90  # some soft-edged blobs, most binary
    again = random_holes(90, (32, 32), torch.Generator().manual_seed(0))
    torch.testing.assert_close(holes, again)  # a pure function of the generator


def test_any_input_size_gives_the_same_size_out() -> None:
    net = InpaintingNet((4, 8, 8))
    with torch.no_grad():
        out = net(torch.rand(2, 3, 21, 30), torch.zeros(2, 1, 21, 30))
    assert out.shape == (2, 3, 21, 30)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_save_and_load_round_trip(tmp_path: Path, trained: InpaintingNet) -> None:
    path = save_inpainter(trained, tmp_path / "inp.safetensors")
    loaded = load_inpainter(path)
    x, holes = smooth_images(2, seed=3), centre_hole(2)
    torch.testing.assert_close(loaded(x, holes), trained(x, holes))
    assert loaded.widths == [8, 16, 32] and loaded.recipe["steps"] == 300


def test_load_refuses_other_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a masksal inpainter"):
        load_inpainter(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not found"):
        load_inpainter(tmp_path / "missing.safetensors")


class HoleRecorder(nn.Module):
    """Returns a constant image and remembers the holes it was asked to fill."""

    def __init__(self) -> None:
        super().__init__()
        self.holes: list[Tensor] = []

    def forward(self, images: Tensor, holes: Tensor) -> Tensor:
        self.holes.append(holes)
        return torch.full_like(images, 0.25)


def test_learned_infill_fills_the_missing_side_of_each_image() -> None:
    x = torch.rand(2, 3, 8, 8)
    m = torch.zeros(2, 1, 8, 8)
    m[..., :4, :] = 1  # keep the top half
    rec = HoleRecorder()
    fills = learned_fills(x, m, rec)
    torch.testing.assert_close(rec.holes[0], 1 - m)  # masked-in image misses the rest
    torch.testing.assert_close(rec.holes[1], m)  # masked-out image misses the mask
    x_in, x_out = compose(x, m, fills)
    torch.testing.assert_close(x_in[..., :4, :], x[..., :4, :])
    assert bool((x_in[..., 4:, :] == 0.25).all()) and bool((x_out[..., :4, :] == 0.25).all())
    torch.testing.assert_close(x_out[..., 4:, :], x[..., 4:, :])


def test_learned_infill_passes_no_gradient_and_needs_its_inputs() -> None:
    x = torch.rand(1, 3, 8, 8)
    m = torch.rand(1, 1, 8, 8, requires_grad=True)
    g = infill(x, "learned", IMAGENET_MEAN, IMAGENET_MEAN, holes=m, inpainter=InpaintingNet((4, 8)))
    assert not g.requires_grad
    x_in, _ = compose(x, m, g)
    x_in.sum().backward()  # the mask still gets its gradient through the composition
    assert m.grad is not None
    with pytest.raises(ValueError, match="needs inpainter"):
        infill(x, "learned", IMAGENET_MEAN, IMAGENET_MEAN)
