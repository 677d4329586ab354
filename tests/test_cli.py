"""The command line as a user runs it: exit codes, one-line errors, files written."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from masksal.cli import app

runner = CliRunner()
TINY = ["--set", "data.image_size=32", "--set", "data.n_train=80", "--set", "data.n_test=32",
        "--set", "data.families=[digits]", "--set", "data.cache_dir=null", "--set", "classifier.kwargs={width: 8}",
        "--set", "classifier_train.epochs=1", "--set", "classifier_train.batch_size=16", "--set", "train.steps=3",
        "--set", "train.batch_size=8", "--set", "masker.hidden=8"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    r = runner.invoke(app, ["train-classifier", "--out", str(root / "clf"), "--quiet", *TINY])
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output
    r = runner.invoke(app, ["train", "--out", str(root / "m"), "--classifier", str(root / "clf"), "--quiet", *TINY])
    assert r.exit_code == 0, r.output
    return root


def test_explain_reports_corrupt_image_and_fails(ckpts, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(src / "ok.png")
    (src / "bad.jpg").write_bytes(b"garbage")
    r = runner.invoke(app, ["explain", str(ckpts / "m"), str(src), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 1
    assert "skipped:" in r.output and "bad.jpg" in r.output
    assert (tmp_path / "o" / "ok.png.npy").is_file() and (tmp_path / "o" / "ok.png.overlay.png").is_file()


def test_evaluate_writes_json(ckpts, tmp_path):
    out = tmp_path / "res.json"
    r = runner.invoke(app, ["evaluate", f"masker:{ckpts / 'm'}", "--num-images", "16", "--quiet",
                            "--metrics", "le_om_f1,maxboxacc,pxap", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["images"] == 16 and 0 <= res["le"] <= 100 and "boxacc" in res  # val-chosen threshold too
    assert "LE" in r.output


def test_benchmark_compares_methods(ckpts, tmp_path):
    methods = f"masker:{ckpts / 'm'},centre,gradcam,rise:n_masks=20;batch_size=10"
    r = runner.invoke(app, ["benchmark", "--methods", methods, "--num-images", "16", "--metrics", "le_om_f1",
                            "--out", str(tmp_path / "b"), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "b" / "benchmark.json").read_text())["results"]
    assert [x["method"] for x in res][1:] == ["centre", "gradcam", "rise:n_masks=20;batch_size=10"]
    assert all(x["maps_per_second"] > 0 and x["images"] == 16 for x in res)
    html = (tmp_path / "b" / "side_by_side.html").read_text()
    assert html.count("<img") == 8 * 5  # 8 images x (image + 4 methods)


def test_rival_without_classifier_is_a_one_line_error():
    r = runner.invoke(app, ["evaluate", "gradcam"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith("error: ") and "--classifier" in r.output


def test_bad_config_key_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  bogus: 1\n")
    r = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert "unknown key 'bogus'" in r.output and "c.yaml" in r.output


def test_data_export_round_trips(tmp_path):
    r = runner.invoke(app, ["data", "export", "--out", str(tmp_path / "w"), "--num-images", "20", "--size", "32"])
    assert r.exit_code == 0, r.output
    from masksal.data import load_dataset

    ds = load_dataset(f"wsol:{tmp_path / 'w' / 'metadata' / 'masksal_benchmark'}:{tmp_path / 'w' / 'dataset'}",
                      split="test", size=32, resize="none")
    assert len(ds) == 20


def test_every_model_command_takes_the_shared_runtime_options():
    """--device, --threads and --quiet are declared once (cli.common.runtime_options) and reach
    every command that runs a model; the training commands also take --amp/--compile."""
    commands = [["demo"], ["train"], ["train-classifier"], ["evaluate"], ["benchmark"], ["explain"], ["tune"],
                ["sanity"], ["reproduce", "ablation"], ["reproduce", "fewshot"], ["reproduce", "roar"],
                ["reproduce", "photos"]]
    for cmd in commands:
        r = runner.invoke(app, [*cmd, "--help"], terminal_width=200)
        assert r.exit_code == 0, (cmd, r.output)
        for option in ("--device", "--threads", "--quiet"):
            assert option in r.output, (cmd, option)
        assert ("--amp" in r.output) == (cmd[0] in ("train", "train-classifier")), cmd


def test_runtime_options_set_threads_and_pass_one_object(monkeypatch):
    import torch
    import typer

    from masksal.cli.common import Runtime, runtime_options

    seen: list[Runtime] = []
    demo_app = typer.Typer()

    @demo_app.command()
    @runtime_options(training=True)
    def run(name: str = "x", *, runtime: Runtime) -> None:
        seen.append(runtime)

    before = torch.get_num_threads()
    try:
        r = runner.invoke(demo_app, ["--name", "y", "--threads", "1", "--device", "cpu", "-q", "--no-sync-batchnorm"])
        assert r.exit_code == 0, r.output
        assert seen == [Runtime(device="cpu", threads=1, quiet=True, amp="auto", compile=False, sync_batchnorm=False)]
        assert torch.get_num_threads() == 1
        assert not seen[0].progress
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    """A plain torchvision ResNet-18 state dict for the benchmark's 20 classes, as a user saves it."""
    import torch
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=20).state_dict(), path)
    return path


def test_evaluate_and_benchmark_take_a_weight_file_with_its_architecture(weight_file, tmp_path):
    r = runner.invoke(app, ["evaluate", "centre", "--classifier", str(weight_file), "--arch", "resnet18",
                            "--size", "64", "--num-images", "8", "--metrics", "le_om_f1", "--val-split", "none",
                            "--out", str(tmp_path / "e.json"), "-q", "--threads", "1"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["images"] == 8 and 0.0 <= res["top1"] <= 100.0
    r = runner.invoke(app, ["benchmark", "--methods", "gradcam,centre", "--classifier", str(weight_file),
                            "--arch", "resnet18", "--num-images", "4", "--metrics", "le_om_f1", "--no-ci",
                            "--image-size", "48", "--out", str(tmp_path / "b"), "-q", "--threads", "1"])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    res = saved["results"]
    assert [x["method"] for x in res] == ["gradcam", "centre"] and all(x["images"] == 4 for x in res)
    assert saved["context"]["image_size"] == 48
    md = (tmp_path / "b" / "benchmark.md").read_text()
    assert "nan" not in md and "masker is faster by" not in md  # no masker among the methods


def test_weight_file_errors_are_one_line(weight_file, ckpts):
    r = runner.invoke(app, ["evaluate", "centre", "--classifier", str(weight_file), "--num-images", "4"])
    assert r.exit_code == 2 and "--arch" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(app, ["evaluate", "centre", "--classifier", str(weight_file), "--arch", "resnet18",
                            "--num-classes", "7", "--size", "32", "--num-images", "4"])
    assert r.exit_code == 2 and str(weight_file) in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(app, ["evaluate", "centre", "--classifier", str(ckpts / "clf"), "--arch", "resnet18",
                            "--num-images", "4"])
    assert r.exit_code == 2 and "checkpoint folder" in r.output, r.output
