"""explain_files: outputs never overwrite each other or an input; huge images; the overlay's colours."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from masksal.classifiers import create_classifier
from masksal.explain_files import explain_files, find_images, overlay_bgr, resize_map, resize_map_rows
from masksal.masker import Masker, MaskerNet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def masker():
    torch.manual_seed(0)
    clf = create_classifier("small_resnet18", 3, width=8).eval()
    shapes = clf.tap_shapes(32)
    return Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps}, )).eval()


def _save(path: Path, seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=100) if path.suffix == ".jpg" else Image.fromarray(arr).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


def _map_of(masker, img: np.ndarray) -> np.ndarray:
    return masker.explain(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255)[0].numpy()


def test_same_stem_different_suffix_gives_two_outputs(masker, tmp_path):
    png, jpg = _save(tmp_path / "in" / "cat.png", 1), _save(tmp_path / "in" / "cat.jpg", 2)
    res = explain_files(masker, [tmp_path / "in"], tmp_path / "o", image_size=32, progress=False)
    assert len(res.explained) == 2 and not res.failed
    assert np.allclose(np.load(tmp_path / "o" / "cat.png.npy"), _map_of(masker, png), atol=1e-6)
    assert np.allclose(np.load(tmp_path / "o" / "cat.jpg.npy"), _map_of(masker, jpg), atol=1e-6)
    assert len(set(res.written)) == len(res.written) == 4


def test_same_name_in_two_folders_mirrors_the_folders(masker, tmp_path):
    a, b = _save(tmp_path / "a" / "x.png", 3), _save(tmp_path / "b" / "x.png", 4)
    res = explain_files(masker, [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], tmp_path / "o",
                        image_size=32, progress=False)
    assert not res.failed
    assert np.allclose(np.load(tmp_path / "o" / "a" / "x.png.npy"), _map_of(masker, a), atol=1e-6)
    assert np.allclose(np.load(tmp_path / "o" / "b" / "x.png.npy"), _map_of(masker, b), atol=1e-6)
    # Two folders with the same layout: the same.
    res = explain_files(masker, [tmp_path / "a", tmp_path / "b"], tmp_path / "o2", image_size=32, progress=False,
                        overlay=False)
    assert sorted(str(p.relative_to(tmp_path / "o2")) for p in res.written) == ["a/x.png.npy", "b/x.png.npy"]


def test_one_folder_keeps_its_layout_and_a_file_given_twice_is_explained_once(tmp_path):
    _save(tmp_path / "in" / "sub" / "y.png", 5)
    found, missing = find_images([tmp_path / "in", tmp_path / "in" / "sub" / "y.png"])
    assert found == [(tmp_path / "in" / "sub" / "y.png", Path("sub/y.png"))] and missing == []
    assert find_images([tmp_path / "in" / "sub" / "y.png"])[0][0][1] == Path("y.png")


def test_an_input_file_is_never_overwritten(masker, tmp_path):
    _save(tmp_path / "d" / "x.png", 6)
    old = _save(tmp_path / "d" / "x.png.overlay.png", 7)  # an earlier overlay, now an input too
    before = (tmp_path / "d" / "x.png.overlay.png").read_bytes()
    res = explain_files(masker, [tmp_path / "d"], tmp_path / "d", image_size=32, progress=False,
                        on_error=lambda m: None)
    assert (tmp_path / "d" / "x.png.overlay.png").read_bytes() == before
    assert len(res.failed) == 1 and "is an input file" in res.failed[0] and "\n" not in res.failed[0]
    assert [p.name for p in res.explained] == ["x.png.overlay.png"]  # the other input is still explained
    assert np.allclose(np.load(tmp_path / "d" / "x.png.overlay.png.npy"), _map_of(masker, old), atol=1e-6)


@pytest.mark.parametrize("src, dst", [(7, 300), (32, 45), (64, 17), (32, 32)])
def test_resize_map_equals_torch_bilinear(src, dst):
    m = np.random.default_rng(src).random((src, src + 3), dtype=np.float32)
    ref = F.interpolate(torch.from_numpy(m)[None, None], size=(dst, dst + 1), mode="bilinear",
                        align_corners=False)[0, 0].numpy()
    assert np.allclose(resize_map(m, dst, dst + 1), ref, atol=1e-6)
    strips = list(resize_map_rows(m, dst, dst + 1, strip=7))
    assert all(len(s) <= 7 for s in strips) and np.allclose(np.concatenate(strips), ref, atol=1e-6)


def test_overlay_colours_are_the_jet_colormap_blended_half_and_half():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)
    sal = rng.random((9, 11)).astype(np.float32) * 0.3 + 0.2  # scaled per image to [0, 1]
    v = (sal - sal.min()) / (sal.max() - sal.min())
    colours = colormaps["jet"](v)[..., :3] * 255
    expected = img * 0.5 + np.rint(colours) * 0.5
    got = overlay_bgr(img, sal)[..., ::-1].astype(np.float64)  # BGR -> RGB
    assert np.abs(got - expected).max() <= 1.0  # uint8 rounding of the blend
    flat = overlay_bgr(img, np.full((9, 11), 0.7, np.float32))[..., ::-1].astype(np.float64)
    low = np.rint(np.array(colormaps["jet"](0.0)[:3]) * 255)  # a constant map: the colormap's low end
    assert np.abs(flat - (img * 0.5 + low * 0.5)).max() <= 1.0


def test_huge_image_outputs_have_the_right_shape(masker, tmp_path):
    h, w = 3000, 2000  # 6 Mpx: the map is streamed in strips of about 1 Mpx, the overlay capped
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), np.full((h, w), 90)], axis=-1).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "big.png", compress_level=1)
    small = np.array(Image.fromarray(img).resize((32, 32), Image.Resampling.BILINEAR))
    del img, yy, xx
    for fmt in ("npy", "npz"):
        res = explain_files(masker, [tmp_path / "big.png"], tmp_path / fmt, image_size=32, progress=False,
                            map_format=fmt, max_overlay_side=1000)
        assert not res.failed
    full = np.load(tmp_path / "npy" / "big.png.npy", mmap_mode="r")
    assert full.shape == (h, w) and full.dtype == np.float32
    ref = resize_map(_map_of(masker, small), h, w)
    for rows in (slice(0, 3), slice(1500, 1503), slice(h - 3, h)):
        assert np.allclose(full[rows], ref[rows], atol=1e-6)
    half = np.load(tmp_path / "npz" / "big.png.npz")["map"]
    assert half.shape == (h, w) and half.dtype == np.float16
    assert Image.open(tmp_path / "npy" / "big.png.overlay.png").size == (667, 1000)  # longest side capped


def test_a_failed_write_fails_that_image_only(masker, tmp_path):
    _save(tmp_path / "in" / "a.png", 8)
    _save(tmp_path / "in" / "b.png", 9)
    (tmp_path / "o" / "a.png.npy").mkdir(parents=True)  # a folder where a's map should go
    res = explain_files(masker, [tmp_path / "in"], tmp_path / "o", image_size=32, progress=False,
                        on_error=lambda m: None)
    assert [p.name for p in res.explained] == ["b.png"]
    assert len(res.failed) == 1 and str(tmp_path / "o" / "a.png.npy") in res.failed[0] and "\n" not in res.failed[0]
    assert (tmp_path / "o" / "b.png.npy").is_file() and not list((tmp_path / "o").rglob("*.partial"))


def test_out_that_cannot_be_a_folder_is_refused_before_any_work(masker, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^--out .*file/o: cannot create the folder"):
        explain_files(masker, [tmp_path], tmp_path / "file" / "o", image_size=32, progress=False)
