"""`masksal explain` as a user runs it: options, output names, one-line errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from masksal.checkpoint import save_checkpoint
from masksal.classifiers import create_classifier
from masksal.cli import app
from masksal.config import load_config
from masksal.masker import MaskerNet

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_cli")
    torch.manual_seed(0)
    cfg = load_config(None, ["data.image_size=32", "masker.hidden=8"])
    clf = create_classifier("small_resnet18", 4, width=8)
    shapes = clf.tap_shapes(32)
    save_checkpoint(root / "m", kind="masker", step=1, cfg=cfg, classifier=clf,
                    masker=MaskerNet({t: shapes[t][0] for t in clf.taps}, cfg.masker))
    return root / "m"


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat.png", "cat.jpg", "sub/dog.png"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(tmp_path / "in" / name)
    return tmp_path / "in"


def test_formats_and_no_overlay(ckpt, images, tmp_path):
    r = runner.invoke(app, ["explain", str(ckpt), str(images), "--out", str(tmp_path / "o"), "--format", "png",
                            "--no-overlay", "--quiet", "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert "3 image(s) explained" in r.output and "0 failed" in r.output
    written = sorted(str(p.relative_to(tmp_path / "o")) for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert written == ["cat.jpg.map.png", "cat.png.map.png", "sub/dog.png.map.png"]
    assert Image.open(tmp_path / "o" / "cat.png.map.png").size == (40, 24)

    r = runner.invoke(app, ["explain", str(ckpt), str(images / "cat.png"), "--out", str(tmp_path / "z"),
                            "--format", "npz", "--overlay-format", "jpg", "--quiet"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "z" / "cat.png.npz")["map"].shape == (24, 40)
    assert Image.open(tmp_path / "z" / "cat.png.overlay.jpg").format == "JPEG"


@pytest.mark.parametrize("args, words", [
    (["--format", "tiff"], "--format must be one of npy, npz, png"),
    (["--overlay-format", "gif"], "--overlay-format must be one of png, jpg"),
    (["--batch-size", "0"], "--batch-size"),
    (["--workers", "-1"], "--workers"),
])
def test_bad_options_are_one_line(ckpt, images, tmp_path, args, words):
    from faults.conftest import cli

    r = cli("explain", str(ckpt), str(images), "--out", str(tmp_path / "o"), *args)
    r.assert_one_line_error(words)
    assert not (tmp_path / "o").exists()


def test_out_under_a_file_is_one_line(ckpt, images, tmp_path):
    (tmp_path / "f").write_text("x")
    r = runner.invoke(app, ["explain", str(ckpt), str(images), "--out", str(tmp_path / "f" / "o"), "--quiet"])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --out {tmp_path / 'f' / 'o'}: ")
    assert str(tmp_path / "f") in lines[0]
