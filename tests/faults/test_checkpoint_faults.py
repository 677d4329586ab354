"""Checkpoints: a kill between any two writes leaves a loadable, resumable directory; corrupt or
edited files are one line naming the file; nothing loaded ever executes code."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import pytest
import torch

from masksal import checkpoint
from masksal.checkpoint import checkpoint_files, load_classifier, load_masker, read_meta
from masksal.config import load_config
from masksal.training import train_masker

from .conftest import TINY, cli

pytestmark = pytest.mark.usefixtures("one_thread")

# The points between the writes of one save (see masksal.checkpoint.save_checkpoint).
POINTS = ["classifier.safetensors", "masker.safetensors", "train_state.pt", "config.yaml", "meta.json",
          "step directory", "pointer"]


def _killed_save(ckpt: Path, point: str, cfg_items: list[str]) -> None:
    """Child process: resume the run for 2 more steps, killed (os._exit) at ``point`` of its save."""
    torch.set_num_threads(1)

    def fault(what: str) -> None:
        if what == point:
            os._exit(9)  # as abrupt as kill -9: no cleanup code runs

    checkpoint._fault_point = fault
    train_masker(load_config(None, cfg_items), ckpt, resume=True, progress=False)


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_between_any_two_writes_leaves_a_loadable_resumable_checkpoint(trained, tmp_path, point):
    items = [*TINY, f"classifier.weights={trained['classifier']}", "masker_train.steps=2"]
    run = tmp_path / "m"
    train_masker(load_config(None, items), run, progress=False)
    longer = [*TINY, f"classifier.weights={trained['classifier']}", "masker_train.steps=4",
              "masker_train.checkpoint_every=100"]
    # spawn: a forked child of a process whose thread pools are running (OpenMP, onnxruntime) can fail
    proc = mp.get_context("spawn").Process(target=_killed_save, args=(run, point, longer))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 9  # killed at the point, not finished
    step = read_meta(run).step
    assert step == (4 if point == "pointer" else 2)  # the old checkpoint until the pointer moved
    load_masker(run)  # loads: weights and metadata agree
    train_masker(load_config(None, longer), run, resume=True, progress=False)  # and resumes
    assert read_meta(run).step == 4
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4]  # no step logged twice after the resume
    assert not [p for p in run.iterdir() if p.name.startswith(".staging")]  # leftovers cleaned up


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return checkpoint_files(dst)


def test_truncated_weights_are_one_line(trained, tmp_path):
    files = _copy(trained["masker"], tmp_path / "m")
    w = files / "masker.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    r = cli("explain", tmp_path / "m", tmp_path, "--out", tmp_path / "o")
    r.assert_one_line_error("masker.safetensors")


def test_wrong_shapes_are_one_line(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    files = _copy(trained["masker"], tmp_path / "m")
    sd = load_file(str(files / "masker.safetensors"))
    key = next(k for k, v in sd.items() if v.dim() == 4)
    sd[key] = torch.zeros(3, 3, 1, 1)
    save_file(sd, str(files / "masker.safetensors"), metadata={"step": str(read_meta(trained["masker"]).step)})
    r = cli("evaluate", f"masker:{tmp_path / 'm'}", "--num-images", "4", "--metrics", "le_om_f1")
    r.assert_one_line_error("masker.safetensors", "do not fit")


@pytest.mark.parametrize("edit,names", [
    (lambda m: {**m, "classifier": {**m["classifier"], "num_classes": 3}}, ["classifier.safetensors"]),
    (lambda m: {**m, "classifier": {**m["classifier"], "arch": "resnet18", "kwargs": {}}},
     ["classifier.safetensors"]),
    (lambda m: {**m, "classifier": {**m["classifier"], "taps": ["layer2", "layer4"]}}, ["masker.safetensors"]),
    (lambda m: {k: v for k, v in m.items() if k != "kind"}, ["meta.json", "kind"]),
    (lambda m: [m], ["meta.json", "JSON object"]),
    (lambda m: {**m, "step": "many"}, ["meta.json"]),
])
def test_edited_metadata_is_one_line(trained, tmp_path, edit, names):
    files = _copy(trained["masker"], tmp_path / "m")
    meta = json.loads((files / "meta.json").read_text())
    (files / "meta.json").write_text(json.dumps(edit(meta)))
    r = cli("evaluate", f"masker:{tmp_path / 'm'}", "--num-images", "4", "--metrics", "le_om_f1")
    r.assert_one_line_error(*names)


def test_missing_config_is_one_line(trained, tmp_path):
    files = _copy(trained["masker"], tmp_path / "m")
    (files / "config.yaml").unlink()
    r = cli("evaluate", f"masker:{tmp_path / 'm'}", "--num-images", "4", "--metrics", "le_om_f1")
    r.assert_one_line_error("config.yaml")


def test_damaged_pointer_is_one_line(trained, tmp_path):
    _copy(trained["masker"], tmp_path / "m")
    (tmp_path / "m" / "checkpoint.json").write_text(json.dumps({"current": "../elsewhere"}))
    r = cli("evaluate", f"masker:{tmp_path / 'm'}", "--num-images", "4")
    r.assert_one_line_error("checkpoint.json")


class _Payload:
    def __reduce__(self):  # noqa: D105 - a pickle that would run code when loaded
        return (os.system, ("touch pwned",))


def test_code_carrying_train_state_is_refused_on_resume(trained, tmp_path):
    files = _copy(trained["masker"], tmp_path / "m")
    torch.save({"masker_optimizer": _Payload()}, files / "train_state.pt")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        r = cli("train", "--out", tmp_path / "m", "--resume", "--classifier", trained["classifier"],
                *[x for item in TINY for x in ("--set", item)], "--steps", "6", "--quiet")
    finally:
        os.chdir(cwd)
    r.assert_one_line_error("train_state.pt", "refused")
    assert not (tmp_path / "pwned").exists()


def test_diverged_weights_are_refused_when_explaining(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    files = _copy(trained["masker"], tmp_path / "m")
    sd = load_file(str(files / "masker.safetensors"))
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = torch.full_like(sd[key], float("nan"))
    save_file(sd, str(files / "masker.safetensors"), metadata={"step": str(read_meta(trained["masker"]).step)})
    r = cli("explain", tmp_path / "m", tmp_path, "--out", tmp_path / "o")
    r.assert_one_line_error("masker.safetensors", "NaN")


def test_format_1_checkpoints_still_load(trained, tmp_path):
    """Directories written before checkpoints became transactions (files at the top) load."""
    files = checkpoint_files(trained["classifier"])
    old = tmp_path / "old"
    shutil.copytree(files, old)
    assert load_classifier(old).fingerprint() == load_classifier(trained["classifier"]).fingerprint()
