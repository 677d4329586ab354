"""The demo pipeline end to end on a tiny plan: outputs, caching, report."""

import json

import pytest

from masksal.demo import DemoPlan, run_demo

TINY = DemoPlan(n_train=100, n_test=48, classifier_epochs=1, masker_steps=4, overrides={
    "data.image_size": 32, "data.families": ["digits"], "data.n_val": 16, "classifier.kwargs": {"width": 8},
    "classifier_train.batch_size": 20, "masker_train.batch_size": 8, "masker.hidden": 8})


def test_demo_writes_metrics_and_report_and_reuses_its_cache(tmp_path):
    lines: list[str] = []
    m = run_demo(tmp_path, plan=TINY, progress=False, log=lines.append)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("classifier_test_accuracy", "masker_LE", "centre_LE"):
        assert key in saved and 0 <= saved[key] <= 100
    assert saved["masker"]["images"] == 48 and saved["centre_baseline"]["images"] == 48
    html = (tmp_path / "report.html").read_text()
    assert html.count("<img") >= 16 * 3  # image, mask and box-from-mask panels for >= 16 test images
    assert any(str((tmp_path / "report.html").resolve()) in x for x in lines)
    lines.clear()
    again = run_demo(tmp_path, plan=TINY, progress=False, log=lines.append)
    assert any("classifier: reusing" in x for x in lines) and any("masker: reusing" in x for x in lines)
    assert again["masker_LE"] == m["masker_LE"]
    # Another plan never reuses or resumes these stages (a quick run followed by the full one).
    longer = DemoPlan(**{**TINY.__dict__, "classifier_epochs": 2})
    with pytest.raises(FileExistsError, match=r"classifier_train.epochs \(1 vs 2\)"):
        run_demo(tmp_path, plan=longer, progress=False, log=lines.append)
    other_masker = DemoPlan(**{**TINY.__dict__, "overrides": {**TINY.overrides, "objectives.tv_weight": 0.5}})
    with pytest.raises(FileExistsError, match=r"masker_ca holds a masker .*objectives.tv_weight"):
        run_demo(tmp_path, plan=other_masker, progress=False, log=lines.append)


def test_quick_demo_has_its_own_default_folder(monkeypatch):
    from typer.testing import CliRunner

    import masksal.demo
    from masksal.cli import app

    seen = []
    monkeypatch.setattr(masksal.demo, "run_demo", lambda out, **kw: seen.append((str(out), kw["quick"])))
    assert CliRunner().invoke(app, ["demo", "--quick"]).exit_code == 0
    assert CliRunner().invoke(app, ["demo"]).exit_code == 0
    assert seen == [("runs/demo_quick", True), ("runs/demo", False)]
