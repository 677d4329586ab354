import numpy as np
import pytest
import torch
from PIL import Image

from masksal.classifiers import create_classifier
from masksal.explain_files import explain_files
from masksal.masker import Masker, MaskerNet


@pytest.fixture()
def masker():
    clf = create_classifier("small_resnet18", 3, width=8).eval()
    shapes = clf.tap_shapes(32)
    return Masker(clf, MaskerNet({t: shapes[t][0] for t in clf.taps}, )).eval()


def test_folder_with_a_corrupt_image(masker, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 255, (21, 17), dtype=np.uint8)).save(src / "sub" / "b.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    errors: list[str] = []
    res = explain_files(masker, [src], tmp_path / "out", image_size=32, batch_size=2, progress=False,
                        on_error=errors.append)
    assert len(res.failed) == 1 and "broken.png" in res.failed[0] and "\n" not in res.failed[0]
    assert errors == res.failed
    a = np.load(tmp_path / "out" / "a.npy")
    b = np.load(tmp_path / "out" / "sub" / "b.npy")
    assert a.shape == (40, 50) and b.shape == (21, 17)  # maps at each image's own resolution
    assert Image.open(tmp_path / "out" / "a_overlay.png").size == (50, 40)
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1


def test_map_matches_the_explainer_on_the_resized_image(masker, tmp_path):
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    explain_files(masker, [tmp_path / "x.png"], tmp_path / "o", image_size=32, progress=False)
    expected = masker.explain(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)[0].numpy()
    assert np.allclose(np.load(tmp_path / "o" / "x.npy"), expected, atol=1e-5)


def test_missing_input_is_reported(masker, tmp_path):
    res = explain_files(masker, [tmp_path / "nope"], tmp_path / "o", image_size=32, progress=False,
                        on_error=lambda m: None)
    assert res.failed == [f"{tmp_path / 'nope'}: no such file or folder"]
