"""Tests of image reading and the shared resize/crop (masksal.data.images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from masksal.data.images import ImageReadError, ResizeCrop, nearest_resize, read_image, read_mask


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- read_image


def test_read_image_converts_every_mode_to_rgb_uint8(tmp_path: Path) -> None:
    rgb = _rgb(6, 5)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)

    gray = rgb[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[:, :, c], gray) for c in range(3))

    rgba = np.dstack([rgb, np.full((6, 5), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (6, 5, 3) and np.abs(cmyk.astype(int) - rgb).mean() < 20

    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png").shape == (6, 5, 3)

    wide = (np.arange(30, dtype=np.uint16).reshape(6, 5) * 2000).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "gray16.png")
    out16 = read_image(tmp_path / "gray16.png")
    assert np.array_equal(out16[:, :, 1], np.rint(wide / 257.0).astype(np.uint8))  # rescaled, not clipped


def test_unreadable_images_raise_one_line_value_error_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not\nan image")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    for path in (garbage, truncated, tmp_path / "missing.png"):
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        assert isinstance(info.value, ValueError)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
    with pytest.raises(ImageReadError):
        read_mask(garbage)


def test_read_mask_of_a_one_bit_png_is_0_or_255(tmp_path: Path) -> None:
    bits = np.zeros((4, 6), bool)
    bits[1:3, 2:5] = True
    Image.fromarray(bits).save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "1"
    assert np.array_equal(read_mask(tmp_path / "m.png"), bits.astype(np.uint8) * 255)


# --------------------------------------------------------------------------- ResizeCrop


def test_shorter_crop_image_equals_torchvision_resize_center_crop() -> None:
    for h, w, s in ((20, 40, 10), (37, 23, 16), (50, 50, 32), (31, 64, 31)):
        image = _rgb(h, w, seed=h)
        ours = ResizeCrop(s, "shorter_crop").image(image)
        ref = transforms.Compose([transforms.Resize(s), transforms.CenterCrop(s), transforms.ToTensor()])
        assert ours.shape == (3, s, s) and ours.dtype == torch.float32
        assert torch.equal(ours, ref(Image.fromarray(image)))


def test_stretch_and_none_modes() -> None:
    image = _rgb(20, 40)
    stretched = ResizeCrop(10, "stretch").image(image)
    ref = transforms.Compose([transforms.Resize((10, 10)), transforms.ToTensor()])(Image.fromarray(image))
    assert torch.equal(stretched, ref)
    same = ResizeCrop(None, "none").image(image)
    assert same.shape == (3, 20, 40)
    assert torch.equal(same, torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    # An image already S x S is not resampled: the transform is the identity.
    square = _rgb(12, 12)
    assert torch.equal(ResizeCrop(12).image(square), torch.from_numpy(square).permute(2, 0, 1).float() / 255)


def test_geometry_of_shorter_crop() -> None:
    g = ResizeCrop(10).geometry(20, 40)
    assert (g.resized_h, g.resized_w, g.top, g.left, g.out_h, g.out_w) == (10, 20, 0, 5, 10, 10)
    g = ResizeCrop(224).geometry(375, 500)  # an ImageNet val size
    assert (g.resized_h, g.resized_w, g.top, g.left) == (224, 298, 0, 37)


def test_boxes_by_hand() -> None:
    # 40 x 20 image (W x H) -> shorter side 10: scale 1/2, resized 20 x 10, crop x from 5.
    t = ResizeCrop(10)
    boxes = torch.tensor(
        [
            [10, 4, 29, 13],  # continuous [10,30)x[4,14) -> [5,15)x[2,7) -> shift -> (0,2,9,6)
            [20, 0, 39, 19],  # [10,20) -> [5,15) -> clipped to [5,10) -> (5,0,9,9)
            [0, 0, 9, 19],  # [0,5) -> [-5,0): entirely left of the crop, dropped
            [16, 6, 16, 6],  # one pixel: x [8,8.5)-5 = [3,3.5), no pixel centre -> middle pixel 3;
            #                   y [3,3.5) likewise -> 3
        ]
    )
    out = t.boxes(boxes, 20, 40)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([[0.0, 2.0, 9.0, 6.0], [5.0, 0.0, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0]]))

    # Non-integer scale: 30 x 30 -> 20 x 20 (scale 2/3).
    out = ResizeCrop(20).boxes(torch.tensor([[3, 0, 5, 29], [16, 16, 16, 16]]), 30, 30)
    # [3,6)*2/3 = [2,4) -> 2..3; [0,30)*2/3 = [0,20) -> 0..19; [16,17)*2/3 = [10.67,11.33) holds
    # no pixel centre (10.5, 11.5) -> middle pixel floor(11.0) = 11.
    assert torch.equal(out, torch.tensor([[2.0, 0.0, 3.0, 19.0], [11.0, 11.0, 11.0, 11.0]]))

    # Stretch: sx = 10/40, sy = 10/20.
    out = ResizeCrop(10, "stretch").boxes(torch.tensor([[8, 2, 23, 11]]), 20, 40)
    assert torch.equal(out, torch.tensor([[2.0, 1.0, 5.0, 5.0]]))  # [2,6) x [1,6)


def test_identity_transforms_keep_integer_boxes_and_clip_to_the_image() -> None:
    boxes = torch.tensor([[0, 0, 39, 19], [3, 4, 5, 6], [30, 10, 45, 25]], dtype=torch.float32)
    out = ResizeCrop(None, "none").boxes(boxes, 20, 40)
    assert torch.equal(out, torch.tensor([[0, 0, 39, 19], [3, 4, 5, 6], [30, 10, 39, 19]], dtype=torch.float32))
    out = ResizeCrop(16).boxes(boxes[1:2], 16, 16)  # already 16 x 16: identity
    assert torch.equal(out, boxes[1:2])
    assert ResizeCrop(10).boxes(torch.zeros(0, 4), 20, 40).shape == (0, 4)


def test_mask_keeps_values_and_lines_up_with_the_transformed_box() -> None:
    rng = np.random.default_rng(0)
    for mode in ("shorter_crop", "stretch"):
        for _ in range(60):
            h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
            s = int(rng.integers(8, 40))
            x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(1, h - 8))
            x1, y1 = int(rng.integers(x0 + 6, w)), int(rng.integers(y0 + 6, h))
            mask = np.zeros((h, w), np.uint8)
            mask[y0 : y1 + 1, x0 : x1 + 1] = 1
            mask[0, :] = 255  # an ignore row (outside the object) must survive as 255
            t = ResizeCrop(s, mode)  # type: ignore[arg-type]
            out = t.mask(mask)
            assert out.shape == (s, s) and out.dtype == torch.uint8
            assert set(out.unique().tolist()) <= {0, 1, 255}
            box = t.boxes(torch.tensor([[x0, y0, x1, y1]]), h, w)
            ys, xs = torch.nonzero(out == 1, as_tuple=True)
            if len(xs) == 0:
                # No pixel centre inside: the box is gone, or kept as its one middle row/column.
                assert len(box) == 0 or box[0, 0] == box[0, 2] or box[0, 1] == box[0, 3]
                continue
            # The object's pixels after the transform span exactly the transformed box.
            tight = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)
            assert torch.equal(tight, box), (h, w, s, mode, (x0, y0, x1, y1))


def test_nearest_resize_samples_pixel_centres() -> None:
    row = np.arange(10, dtype=np.uint8)[None, :]
    assert nearest_resize(row, 1, 4).tolist() == [[1, 3, 6, 8]]  # floor((j + 0.5) * 10 / 4)
    assert nearest_resize(row, 1, 20)[0, ::2].tolist() == list(range(10))
    assert nearest_resize(row, 1, 10) is row
    ignore = np.zeros((30, 60), np.uint8)
    ignore[:, :30] = 255
    ignore[10:20, 40:50] = 1
    out = ResizeCrop(20, "stretch").mask(ignore)
    assert (out[:, :10] == 255).all() and (out[:, 10:] != 255).all()
    assert out.sum().item() == 255 * 200 + int((out == 1).sum())


def test_call_transforms_image_boxes_and_mask_together() -> None:
    image, mask = _rgb(20, 40), np.zeros((20, 40), np.uint8)
    img_t, box_t, mask_t = ResizeCrop(10)(image, torch.tensor([[10, 4, 29, 13]]), mask)
    assert img_t.shape == (3, 10, 10) and mask_t is not None and mask_t.shape == (10, 10)
    assert torch.equal(box_t, torch.tensor([[0.0, 2.0, 9.0, 6.0]]))
    _, no_boxes, no_mask = ResizeCrop(10)(image)
    assert no_boxes.shape == (0, 4) and no_mask is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="resize mode"):
        ResizeCrop(10, "squash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive size"):
        ResizeCrop(None, "shorter_crop")
