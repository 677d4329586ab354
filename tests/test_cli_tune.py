"""``masksal tune``, ``benchmark --tuned`` / several runs a row, ``evaluate --ci``, as a user runs them."""

import json

import pytest
from typer.testing import CliRunner

from masksal.cli import app
from masksal.evaluation.tuning import TuningResult, write_tuning

runner = CliRunner()
TINY = ["--set", "data.image_size=32", "--set", "data.n_train=80", "--set", "data.n_test=32",
        "--set", "data.families=[digits]", "--set", "data.cache_dir=null", "--set", "classifier.kwargs={width: 8}",
        "--set", "classifier_train.epochs=1", "--set", "classifier_train.batch_size=16"]


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_tune")
    r = runner.invoke(app, ["train-classifier", "--out", str(root / "clf"), "--quiet", "--threads", "1", *TINY])
    assert r.exit_code == 0, r.output
    return root / "clf"


def test_tune_writes_the_table_and_the_chosen_specs(clf, tmp_path):
    out = tmp_path / "tune"
    r = runner.invoke(app, ["tune", "gradcam,centre", "--classifier", str(clf), "--num-images", "16", "--limit", "12",
                            "--grid", "gradcam:layer=[layer4,layer3]", "--ci-resamples", "50", "--out", str(out),
                            "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "tuning.json").read_text())["methods"]
    assert [m["authors_spec"] for m in data] == ["gradcam", "centre"]
    assert [t["spec"] for t in data[0]["trials"]] == ["gradcam", "gradcam:layer=layer3"]  # the --grid, not the class's
    assert len(data[1]["trials"]) == 3 and data[1]["images"] == 12  # centre's declared grid: 3 sigmas
    best = (out / "best_specs.txt").read_text().splitlines()
    assert best == [data[0]["best_spec"], data[1]["best_spec"]]
    assert "maxboxacc_v2 ↑ (val)" in (out / "tuning.md").read_text() and "chosen:" in r.output


@pytest.mark.parametrize("args, message", [
    (["gradcam", "--metric", "accuracy"], "--metric 'accuracy'"),
    (["masker:some/dir"], "training recipe"),
    (["gradcam", "--grid", "gradcam:sigma=[1,2]"], "no option(s) ['sigma']"),
])
def test_tune_bad_input_is_one_line(clf, tmp_path, args, message):
    r = runner.invoke(app, ["tune", *args, "--classifier", str(clf), "--num-images", "8", "--limit", "4",
                            "--out", str(tmp_path / "t"), "--quiet"])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1].startswith("error: ") and message in r.output


def test_benchmark_with_tuned_rows_runs_and_intervals(clf, tmp_path):
    tuned = tmp_path / "tune"
    write_tuning([TuningResult(method="gradcam", authors_spec="gradcam", best_spec="gradcam:layer=layer3",
                               metric="maxboxacc_v2", higher_is_better=True, budget=6, images=8, grid={}),
                  TuningResult(method="centre", authors_spec="centre", best_spec="centre", metric="maxboxacc_v2",
                               higher_is_better=True, budget=6, images=8, grid={})], tuned)
    methods = "gradcam,centre,rise:n_masks=8;seed=0|n_masks=8;seed=1"
    r = runner.invoke(app, ["benchmark", "--methods", methods, "--classifier", str(clf), "--num-images", "12",
                            "--metrics", "le_om_f1,maxboxacc", "--tuned", str(tuned), "--ci-resamples", "50",
                            "--out", str(tmp_path / "b"), "--quiet", "--threads", "1"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "b" / "benchmark.json").read_text())["results"]
    assert [x["method"] for x in rows] == ["gradcam (authors')", "gradcam:layer=layer3 (tuned)",
                                           "centre (authors' = tuned)",
                                           "rise:n_masks=8;seed=0|n_masks=8;seed=1 (2 runs)"]
    assert rows[3]["runs"] == 2 and rows[3]["ci_over"] == "seeds and images"
    assert all(x["ci"]["le"][0] <= x["le"] <= x["ci"]["le"][1] for x in rows)
    md = (tmp_path / "b" / "benchmark.md").read_text()
    assert "95 % bootstrap interval over the images" in md and " [" in md
    r = runner.invoke(app, ["benchmark", "--methods", "gradcam", "--classifier", str(clf), "--num-images", "8",
                            "--metrics", "le_om_f1", "--tuned", str(tmp_path / "none"), "--quiet",
                            "--out", str(tmp_path / "b2")])
    assert r.exit_code == 2 and "no tuning.json" in r.output


def test_evaluate_ci(clf, tmp_path):
    out = tmp_path / "e.json"
    r = runner.invoke(app, ["evaluate", "gradcam", "--classifier", str(clf), "--num-images", "12", "--quiet",
                            "--metrics", "le_om_f1", "--ci", "--ci-resamples", "50", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["ci_resamples"] == 50 and res["ci"]["le"][0] <= res["le"] <= res["ci"]["le"][1]
    assert "bootstrap interval" in r.output
