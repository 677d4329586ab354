from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from masksal.classifiers import create_classifier
from masksal.explain_files import explain_files, output_paths
from masksal.masker import Masker, MaskerNet


@pytest.fixture()
def masker():
    clf = create_classifier("small_resnet18", 3, width=8).eval()
    shapes = clf.tap_shapes(32)
    return Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps}, )).eval()


def _image(path, h, w, seed=0, gray=False):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w) if gray else (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _expected_map(masker, img, size=32):
    """The map the command must write: PIL bilinear to the model size, explain, bilinear back."""
    small = np.array(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    m = masker.explain(torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255)
    return F.interpolate(m[None], size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()


def test_folder_with_a_corrupt_image(masker, tmp_path):
    src = tmp_path / "in"
    _image(src / "a.png", 40, 50)
    _image(src / "sub" / "b.jpg", 21, 17, gray=True)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    errors: list[str] = []
    res = explain_files(masker, [src], tmp_path / "out", image_size=32, batch_size=2, progress=False,
                        on_error=errors.append)
    assert len(res.failed) == 1 and "broken.png" in res.failed[0] and "\n" not in res.failed[0]
    assert errors == res.failed
    assert sorted(p.name for p in res.explained) == ["a.png", "b.jpg"]
    a = np.load(tmp_path / "out" / "a.png.npy")
    b = np.load(tmp_path / "out" / "sub" / "b.jpg.npy")
    assert a.dtype == np.float32 and a.shape == (40, 50) and b.shape == (21, 17)  # each image's own size
    assert Image.open(tmp_path / "out" / "a.png.overlay.png").size == (50, 40)
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_map_matches_the_explainer_on_the_resized_image(masker, tmp_path):
    img = _image(tmp_path / "x.png", 32, 32, seed=1)
    explain_files(masker, [tmp_path / "x.png"], tmp_path / "o", image_size=32, progress=False)
    expected = masker.explain(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0].numpy()
    assert np.allclose(np.load(tmp_path / "o" / "x.png.npy"), expected, atol=1e-6)


@pytest.mark.parametrize("hw", [(45, 70), (19, 23), (100, 32)])
def test_map_is_the_bilinear_upsampling_of_the_models_map(masker, tmp_path, hw):
    img = _image(tmp_path / "x.png", *hw, seed=2)
    explain_files(masker, [tmp_path / "x.png"], tmp_path / "o", image_size=32, progress=False, overlay=False)
    got = np.load(tmp_path / "o" / "x.png.npy")
    assert np.allclose(got, _expected_map(masker, img), atol=1e-5)
    assert not (tmp_path / "o" / "x.png.overlay.png").exists()  # overlay=False writes the map only


def test_map_formats_agree(masker, tmp_path):
    img = _image(tmp_path / "x.png", 30, 44, seed=3)
    full = _expected_map(masker, img)
    for fmt in ("npy", "npz", "png"):
        res = explain_files(masker, [tmp_path / "x.png"], tmp_path / fmt, image_size=32, progress=False,
                            map_format=fmt, overlay_format="jpg")
        assert res.written == output_paths(Path("x.png"), tmp_path / fmt, fmt, "jpg")
    half = np.load(tmp_path / "npz" / "x.png.npz")["map"]
    assert half.dtype == np.float16 and half.shape == (30, 44)
    assert np.abs(half.astype(np.float32) - full).max() <= 1e-3  # float16 spacing is 2^-11 below 1
    gray = np.asarray(Image.open(tmp_path / "png" / "x.png.map.png"))
    assert gray.dtype == np.uint8 and gray.shape == (30, 44)
    assert np.abs(gray.astype(np.float32) - full * 255).max() <= 0.5 + 1e-3
    jpg = Image.open(tmp_path / "png" / "x.png.overlay.jpg")
    assert jpg.format == "JPEG" and jpg.size == (44, 30)


def test_missing_input_is_reported(masker, tmp_path):
    res = explain_files(masker, [tmp_path / "nope"], tmp_path / "o", image_size=32, progress=False,
                        on_error=lambda m: None)
    assert res.failed == [f"{tmp_path / 'nope'}: no such file or folder"]


def test_bad_options_are_refused_with_one_line(masker, tmp_path):
    for kwargs in ({"map_format": "tiff"}, {"overlay_format": "gif"}, {"batch_size": 0}, {"max_overlay_side": 0}):
        with pytest.raises(ValueError, match=r"^[^\n]*$"):
            explain_files(masker, [tmp_path], tmp_path / "o", image_size=32, progress=False, **kwargs)
