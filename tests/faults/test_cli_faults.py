"""The remaining command-line faults: each one line naming the option, checked before any work."""

from __future__ import annotations

import pytest
import torch

from .conftest import cli


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU accepts --device cuda")
def test_cuda_without_a_gpu_is_one_line(trained, tmp_path):
    r = cli("evaluate", f"masker:{trained['masker']}", "--device", "cuda", "--num-images", "4")
    r.assert_one_line_error("--device", "cuda", "no CUDA")


def test_unknown_device_is_one_line(trained):
    r = cli("evaluate", f"masker:{trained['masker']}", "--device", "tpu9", "--num-images", "4")
    r.assert_one_line_error("--device", "tpu9")


@pytest.mark.parametrize("args,name", [
    (["--batch-size", "0"], "--batch-size"),
    (["--num-images", "0"], "--num-images"),
    (["--limit", "0"], "--limit"),
    (["--threads", "-1"], "--threads"),
])
def test_out_of_range_numbers_are_one_line(trained, args, name):
    r = cli("evaluate", f"masker:{trained['masker']}", *args)
    r.assert_one_line_error(name)


def test_evaluate_out_under_a_regular_file_fails_before_the_work(trained, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("evaluate", f"masker:{trained['masker']}", "--out", blocker / "res.json", "--num-images", "4")
    r.assert_one_line_error("--out", str(blocker))
    assert "Images" not in r.out  # nothing was evaluated first


def test_evaluate_on_an_unlabelled_folder_explains_the_top1_class(trained, tmp_path):
    import numpy as np
    from PIL import Image

    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
    r = cli("evaluate", f"masker:{trained['masker']}", "--data", f"folder:{tmp_path}",
            "--metrics", "le_om_f1,sm", "--quiet")
    assert r.traceback is None and r.code == 0, r.err
    assert "no label" in r.out and "no boxes" in r.out  # n/a for label- and box-based numbers


def test_training_on_an_unlabelled_folder_names_imagefolder(tmp_path):
    r = cli("train", "--out", tmp_path / "m", "--classifier", tmp_path / "c", "--data", f"folder:{tmp_path}")
    r.assert_one_line_error("imagefolder:")


def test_unknown_method_is_one_line(trained):
    r = cli("evaluate", "nosuchmethod", "--classifier", trained["classifier"])
    r.assert_one_line_error("nosuchmethod")


def test_usage_errors_are_one_line():
    r = cli("evaluate")
    r.assert_one_line_error("method")
    r = cli("nosuchcommand")
    r.assert_one_line_error("nosuchcommand")


def test_version():
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("masksal ")
