"""One bad sample never ends a run: it is skipped, counted and named, and the rest is scored."""

from __future__ import annotations

import json

import pytest

from masksal.data.benchmark import BenchmarkDataset
from masksal.data.export import export_wsol

from .conftest import TINY_SET, cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def wsol_with_a_bad_image(tmp_path):
    export = export_wsol(BenchmarkDataset("test", n=12, size=32, families=("digits",)), tmp_path / "w", split="test")
    images = sorted((tmp_path / "w" / "dataset").rglob("*.png"))
    images[3].write_bytes(b"not an image")  # unreadable
    images[7].unlink()  # missing
    return export.spec, images


def test_evaluate_skips_counts_and_names_bad_samples(trained, tmp_path, wsol_with_a_bad_image):
    spec, images = wsol_with_a_bad_image
    out = tmp_path / "res.json"
    r = cli("evaluate", f"masker:{trained['masker']}", "--data", spec, "--metrics", "le_om_f1,maxboxacc",
            "--val-split", "none", "--out", out, "--quiet")
    assert r.traceback is None
    assert r.code == 1  # the run is not clean ...
    assert "2 sample(s) could not be read" in r.error_line and images[3].name in r.err
    res = json.loads(out.read_text())  # ... but every other image is scored and written
    assert res["images"] == 10 and res["bad_samples"] == 2 and 0 <= res["le"] <= 100
    assert any(images[7].name in m for m in res["bad_sample_messages"])
    assert "unreadable sample" in r.out  # named under the table too


def test_training_skips_bad_samples(trained, tmp_path):
    export = export_wsol(BenchmarkDataset("train", n=24, size=32, families=("digits",)), tmp_path / "w",
                         split="train")
    images = sorted(p for p in (tmp_path / "w" / "dataset").rglob("*.png")
                    if not p.stem.endswith(("_mask", "_ignore")))  # the images, not their masks
    images[0].write_bytes(b"\x89PNG truncated")
    images[1].write_bytes(b"not an image")
    r = cli("train", "--out", tmp_path / "m", "--classifier", trained["classifier"], *TINY_SET,
            "--data", export.spec, "--steps", "6", "--quiet")  # 6 steps of 8: every image met twice
    assert r.traceback is None and r.code == 0, r.err
    for bad in images[:2]:  # each named once, though met twice
        assert sum(bad.name in line for line in r.err.splitlines()) == 1, r.err
    log = [json.loads(x) for x in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["bad_samples"] >= 1


def test_a_truncated_benchmark_cache_is_regenerated(tmp_path):
    ds = BenchmarkDataset("test", n=6, size=32, families=("digits",), cache_dir=tmp_path)
    cache = next(tmp_path.rglob("*.npz"))
    cache.write_bytes(cache.read_bytes()[:200])
    again = BenchmarkDataset("test", n=6, size=32, families=("digits",), cache_dir=tmp_path)
    assert again.cache_rebuilt is not None
    assert (again[0]["image"] == ds[0]["image"]).all()
