"""Training runs: one writer per directory, no silent recipe change on resume, a stop when
training diverges, and the last finite checkpoint kept."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from masksal.checkpoint import load_masker, read_meta
from masksal.config import load_config
from masksal.rundir import RunLock
from masksal.training import DivergedError, train_masker

from .conftest import TINY, TINY_SET, cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _hold_lock(path, ready, release) -> None:
    with RunLock(path):
        ready.set()
        release.wait(60)


def test_a_second_writer_of_the_same_run_directory_is_refused(trained, tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path / "m", ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        r = cli("train", "--out", tmp_path / "m", "--classifier", trained["classifier"], *TINY_SET, "--quiet")
        r.assert_one_line_error(str(tmp_path / "m"), f"pid {holder.pid}")
    finally:
        release.set()
        holder.join(30)
    assert not (tmp_path / "m" / "checkpoint.json").exists()  # the refused run wrote nothing
    # The lock dies with its process: a killed run leaves none behind.
    r = cli("train", "--out", tmp_path / "m", "--classifier", trained["classifier"], *TINY_SET, "--quiet")
    assert r.code == 0, r.err


@pytest.mark.parametrize("change", ["objectives.area_out_weight=5", "masker.gumbel=true", "data.image_size=48",
                                    "masker_train.mode=ca"])
def test_resume_refuses_another_recipe(trained, tmp_path, change):
    run = tmp_path / "m"
    r = cli("train", "--out", run, "--classifier", trained["classifier"], *TINY_SET, "--quiet")
    assert r.code == 0, r.err
    before = (run / "checkpoint.json").read_text()
    r = cli("train", "--out", run, "--classifier", trained["classifier"], *TINY_SET, "--set", change, "--resume",
            "--steps", "6", "--quiet")
    r.assert_one_line_error(str(run), change.split("=")[0])
    assert (run / "checkpoint.json").read_text() == before  # nothing rewritten


def test_resume_may_extend_the_run(trained, tmp_path):
    run = tmp_path / "m"
    assert cli("train", "--out", run, "--classifier", trained["classifier"], *TINY_SET, "--quiet").code == 0
    r = cli("train", "--out", run, "--classifier", trained["classifier"], *TINY_SET, "--resume", "--steps", "6",
            "--quiet")
    assert r.code == 0, r.err
    assert read_meta(run).step == 6
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_diverging_training_stops_and_keeps_the_last_finite_checkpoint(trained, tmp_path):
    run = tmp_path / "m"
    cfg = load_config(None, [*TINY, f"classifier.weights={trained['classifier']}", "masker_train.mode=ca",
                             "masker_train.classifier_lr=1e12", "masker_train.steps=40",
                             "masker_train.checkpoint_every=1"])
    with pytest.raises(DivergedError, match=r"diverged at step \d+: .* = (nan|inf)"):
        train_masker(cfg, run, progress=False)
    kept = read_meta(run).step
    assert kept >= 1
    masker = load_masker(run)  # the last finite checkpoint loads (non-finite weights would not)
    assert masker.info["steps"] == kept


def test_diverging_training_is_one_line_on_the_command_line(trained, tmp_path):
    r = cli("train", "--out", tmp_path / "m", "--classifier", trained["classifier"], *TINY_SET, "--mode", "ca",
            "--set", "masker_train.classifier_lr=1e12", "--steps", "40", "--quiet")
    r.assert_one_line_error("diverged at step")


def test_lock_is_released_after_a_normal_run(trained, tmp_path):
    run = tmp_path / "m"
    assert cli("train", "--out", run, "--classifier", trained["classifier"], *TINY_SET, "--quiet").code == 0
    with RunLock(run) as lock:  # free again: entering would raise RunDirBusyError otherwise
        assert lock.path.is_file()


def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path):
    out = tmp_path / "new" / "run"
    r = cli("train", "--out", out, "--classifier", tmp_path / "missing.safetensors", *TINY_SET, "--quiet")
    r.assert_one_line_error("missing.safetensors")
    assert not (tmp_path / "new").exists()


def test_a_failed_run_keeps_a_folder_it_did_not_create(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()  # the user's, empty: kept
    r = cli("train", "--out", out, "--classifier", tmp_path / "missing.safetensors", *TINY_SET, "--quiet")
    r.assert_one_line_error("missing.safetensors")
    assert out.is_dir()
    with pytest.raises(RuntimeError), RunLock(tmp_path / "empty"):  # created here, failed with only the lock
        raise RuntimeError("boom")
    assert not (tmp_path / "empty").exists()
