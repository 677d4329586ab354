"""A user's own classifier and folder of photos, end to end, as the README's "your model" section
does it: from Python objects and from the command line, with no metadata written by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from faults.conftest import cli
from PIL import Image
from torch.utils.data import DataLoader

from masksal import create_explainer, evaluate, fit_masker, load_masker
from masksal.data import load_dataset
from masksal.types import collate

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ("circle", "square", "stripes")


def _photo(kind: str, seed: int) -> Image.Image:
    """A 40x48 'photo' of a bright shape on noise, at a random place."""
    rng = np.random.default_rng(seed)
    img = (rng.random((40, 48, 3)) * 90).astype(np.uint8)
    y, x = rng.integers(4, 18), rng.integers(4, 24)
    yy, xx = np.mgrid[:16, :16]
    shape = {"circle": (yy - 8) ** 2 + (xx - 8) ** 2 < 49, "square": np.ones((16, 16), bool),
             "stripes": (xx // 3) % 2 == 0}[kind]
    img[y:y + 16, x:x + 16][shape] = (230, 200, 40)
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for c, kind in enumerate(CLASSES):
        (root / kind).mkdir()
        for i in range(8):
            _photo(kind, 100 * c + i).save(root / kind / f"{i}.jpg", quality=92)
    return root


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3)


def test_fit_masker_on_a_torchvision_model_and_an_image_folder(model, photos, tmp_path):
    data = torchvision.datasets.ImageFolder(str(photos))  # (PIL image, label) pairs
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masker = fit_masker(model, data, steps=3, batch_size=8, image_size=32, progress=False, hidden=8)
    # FIX, the default: the masker explains exactly the given model, which is left unchanged.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert masker.info["mode"] == "fix" and not masker.info["explains_copy"]
    assert model.training  # the model's own mode is restored

    photo = Image.open(photos / "circle" / "0.jpg")
    m = masker.explain(photo)
    assert m.shape == (40, 48) and float(m.min()) >= 0 and float(m.max()) <= 1
    folder = load_dataset(f"folder:{photos}", size=32)
    batch = collate([folder[i] for i in range(len(folder))])
    maps = masker.explain(batch.images)
    assert maps.shape == (24, 32, 32)

    masker.save(tmp_path / "m")
    again = load_masker(tmp_path / "m", model=torchvision.models.resnet18(num_classes=3))
    assert torch.allclose(again.explain(batch.images), maps, atol=1e-5)  # memory layout may differ
    # A torchvision model is recognized (resnet18, 3 classes): the checkpoint also loads without
    # the module, as the command line loads it.
    alone = load_masker(tmp_path / "m")
    assert alone.classifier.spec.arch == "resnet18"
    assert torch.allclose(alone.explain(batch.images), maps, atol=1e-5)


def test_rivals_take_the_raw_module_and_evaluate_needs_no_wrapper(model, photos):
    gradcam = create_explainer("gradcam", model, layer=model.layer4)
    ds = load_dataset(f"imagefolder:{photos}", split="val", size=32)
    res = evaluate(gradcam, model, DataLoader(ds, batch_size=8, collate_fn=collate), metrics=("sm",),
                   progress=False)
    assert res["images"] == len(ds) == 3  # one held-out image per class of 8 (10 %, at least one)
    assert np.isfinite(res["sm"]) and 0 <= res["top1"] <= 100


def test_the_same_from_the_command_line(model, photos, tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    r = cli("train", "--classifier", weights, "--arch", "resnet18", "--data", f"imagefolder:{photos}",
            "--image-size", "32", "--steps", "3", "--set", "masker_train.batch_size=8", "--set", "masker.hidden=8",
            "--out", run, "--quiet")
    assert r.code == 0, r.err
    assert "explains exactly the given classifier (FIX)" in r.out
    r = cli("explain", run, photos, "--out", tmp_path / "maps", "--quiet")
    assert r.code == 0, r.err
    assert len(list((tmp_path / "maps").rglob("*.npy"))) == 24
    r = cli("evaluate", "gradcam", "--classifier", run, "--data", f"imagefolder:{photos}", "--split", "val",
            "--metrics", "sm", "--quiet")
    assert r.code == 0, r.err
    assert "Grad" in r.out or "gradcam" in r.out
