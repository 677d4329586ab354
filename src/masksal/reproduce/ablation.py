"""``masksal reproduce ablation``: every row of the paper's ablation study on the built-in benchmark.

One YAML per row in ``configs/ablation/`` (:data:`ROWS` says what each row changes). The run
trains one classifier (or reuses ``--classifier``), trains every row for each seed (FIX rows
against that classifier, CA/pool rows starting from it), evaluates each masker on the test split
and writes ``report.md`` and ``report.html``: the table of LE, OM, F1, MaxBoxAccV2, PxAP and SM
(mean ± standard deviation over seeds), the paper's numbers where they are known, and the paper's
qualitative claims marked as holding or not on this data. Every finished row is reused by a
later run (delete its folder to redo it); an interrupted row resumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from masksal.checkpoint import write_json
from masksal.report.markdown import markdown_table
from masksal.reproduce import _common as common


@dataclass(frozen=True)
class Row:
    """One row of the ablation: its config file ``configs/ablation/<name>.yaml`` and what it tests."""

    name: str
    title: str
    group: str


ROWS: tuple[Row, ...] = (
    Row("in_only", "masked-in only (FIX)", "objectives"),
    Row("out_only", "masked-out only, entropy (FIX)", "objectives"),
    Row("both_fix", "masked-in + masked-out entropy (FIX)", "objectives"),
    Row("ca", "masked-in + masked-out entropy (CA) = final", "classifier"),
    Row("out_ce", "masked-in + masked-out CE (CA)", "objectives"),
    Row("all_stages", "masker reads layer1..layer4 (FIX)", "masker"),
    Row("gumbel", "Gumbel-softmax masks (FIX)", "masker"),
    Row("infill_blur", "infill: blur (FIX)", "infill"),
    Row("infill_noise", "infill: noise (FIX)", "infill"),
    Row("infill_image_mean", "infill: image mean colour (FIX)", "infill"),
    Row("casm", "CASM: pool, masked-out entropy only", "pool"),
    Row("casm_ce", "CASM: pool, masked-out CE only", "pool"),
    Row("casm_uniform", "CASM: pool, masked-out uniform CE only", "pool"),
    Row("dabkowski_gal", "Dabkowski & Gal: in + out CE + area (FIX)", "prior work"),
)
ROW_NAMES = tuple(r.name for r in ROWS)

# The paper's own numbers (ImageNet, ResNet-50, 224 px) for the same rows where a source gives
# them. The paper's Table 1 was not available offline, so only the final model's numbers are
# filled in; every other cell stays empty rather than guessed.
PAPER: dict[str, dict[str, float]] = {
    "ca": {"le": 35.75, "om": 48.43, "f1": 62.0, "sm": 0.523},
}
PAPER_SOURCE = ("Paper column: the final CA model on ImageNet validation as printed by the paper's scorer in its "
                "code's README (LE 35.75, OM 48.43, F1 62.0, SM 0.523; Figure 1C gives LE 35.8 for the fully "
                "trained final model). The other rows of the paper's Table 1 were not available offline and are "
                "left empty.")


PAPER_KEYS = ("le", "om", "f1", "sm")


def load_paper_numbers(path: str | Path) -> tuple[dict[str, dict[str, float]], str]:
    """Read the paper's numbers for the report from a YAML file.

    The file holds ``rows: {row: {le: .., om: .., f1: .., sm: ..}}`` (any subset of rows and
    metrics) and ``source:``, one sentence saying where the numbers come from (it is printed
    above the table). Its rows replace the built-in ones (:data:`PAPER`).

    Raises:
        ValueError: unknown row or metric, a value that is not a number, or no ``source``.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the paper's numbers ({e.__class__.__name__}: {e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), dict) or not str(doc.get("source", "")).strip():
        raise ValueError(f"{path}: expected a mapping with 'rows: {{row: {{le: .., om: .., f1: .., sm: ..}}}}' and "
                         "'source: <where the numbers come from>'")
    rows: dict[str, dict[str, float]] = {}
    for row, vals in doc["rows"].items():
        if row not in ROW_NAMES:
            raise ValueError(f"{path}: unknown row {row!r}; rows: {', '.join(ROW_NAMES)}")
        if not isinstance(vals, dict) or not set(vals) <= set(PAPER_KEYS):
            raise ValueError(f"{path}: row {row!r} must map some of {', '.join(PAPER_KEYS)} to numbers")
        try:
            rows[row] = {k: float(v) for k, v in vals.items()}
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: row {row!r}: every value must be a number ({e})") from e
    return rows, str(doc["source"]).strip()


@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper: ``better`` beats (or matches) every row of ``others`` on LE.

    ``kind``: ``"better"`` (``better`` has a lower LE by more than the tolerance) or
    ``"not_worse"`` (``better`` is not worse by more than the tolerance).
    """

    text: str
    better: str
    others: tuple[str, ...]
    kind: str
    source: str


CLAIMS: tuple[Claim, ...] = (
    Claim("Using both masked-in and masked-out objectives beats either alone", "both_fix", ("in_only", "out_only"),
          "better", "abstract, ingredient (1)"),
    Claim("Training the classifier alongside the masker (CA) beats a fixed classifier (FIX)", "ca", ("both_fix",),
          "better", "abstract, ingredient (2)"),
    Claim("Masked-out entropy is at least as good as masked-out cross-entropy", "ca", ("out_ce",), "not_worse",
          "final model's choice"),
    Claim("Reading only the top stages (layer3, layer4) is at least as good as all stages", "both_fix",
          ("all_stages",), "not_worse", "final model's choice"),
    Claim("Gumbel-softmax masks do not help", "both_fix", ("gumbel",), "not_worse",
          "abstract: simple formulation beats complex variants"),
    Claim("Infilling the removed region (blur, noise, image mean) does not help over the mean colour", "both_fix",
          ("infill_blur", "infill_noise", "infill_image_mean"), "not_worse",
          "abstract: simple formulation beats complex variants"),
    Claim("A pool of classifier snapshots (CASM) is not needed: the final model matches or beats CASM", "ca",
          ("casm", "casm_ce", "casm_uniform"), "not_worse", "abstract: simple formulation beats complex variants"),
    Claim("The final model beats Dabkowski & Gal's objective", "ca", ("dabkowski_gal",), "better",
          "comparison with prior work"),
)


def row_config(name: str) -> Path:
    """The packaged ``configs/ablation/<name>.yaml``."""
    from masksal.config import config_path

    return config_path(f"ablation/{name}")


def _row_dir(out: Path, row: str, seed: int) -> Path:
    return out / "rows" / row / f"seed{seed}"


def run_ablation(out: str | Path = "runs/reproduce", budget: common.Budget | None = None, seeds: int | None = None,
                 classifier: str | Path | None = None, rows: Sequence[str] | None = None,
                 steps: int | None = None, overrides: Sequence[str] = (), paper_numbers: str | Path | None = None,
                 progress: bool = True, log: common.Log = print, device: str = "auto") -> dict[str, Any]:
    """Train and evaluate every ablation row; write ``report.md``, ``report.html``, ``results.json``.

    Args:
        out: output folder; rows go to ``out/rows/<row>/seed<k>/``.
        budget: sizes (:data:`~masksal.reproduce.SMALL` by default).
        seeds: seeds per row (default: the budget's).
        classifier: an existing classifier checkpoint to start from (else one is trained).
        rows: a subset of :data:`ROW_NAMES` (default: all).
        steps: masker steps per row, overriding the budget's.
        overrides: ``section.key=value`` settings applied to every row and to the classifier
            (after the budget's).
        paper_numbers: a YAML file of the paper's numbers for the report's paper columns (see
            :func:`load_paper_numbers`); its rows replace the built-in ones.
        progress: progress bars.

    Returns:
        ``{"rows": {row: {"seeds": [metrics...], "mean": {...}, "std": {...}}}, "claims": [...], ...}``.
    """
    from dataclasses import replace

    from masksal.reproduce._common import SMALL

    b = budget or SMALL
    if steps is not None:
        b = replace(b, masker_steps=steps)
    n_seeds = seeds or b.seeds
    names = list(rows or ROW_NAMES)
    unknown = [r for r in names if r not in ROW_NAMES]
    if unknown:
        raise ValueError(f"unknown ablation row(s) {unknown}; rows: {', '.join(ROW_NAMES)}")
    paper, paper_source = dict(PAPER), PAPER_SOURCE
    if paper_numbers is not None:  # read before any training, so a bad file fails at once
        extra, source = load_paper_numbers(paper_numbers)
        paper.update(extra)
        paper_source = f"{PAPER_SOURCE} Added from {paper_numbers}: {source}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clf = common.ensure_classifier(out, b, classifier, progress, log, overrides, device)
    results: dict[str, Any] = {"budget": common.budget_dict(b), "seeds": n_seeds, "classifier": str(clf),
                               "classifier_test_accuracy": common.classifier_accuracy(clf), "rows": {},
                               "paper": paper, "paper_source": paper_source}
    jobs = [(r, s) for r in names for s in range(n_seeds)]
    bar = tqdm(jobs, desc="ablation rows", unit="run", disable=not progress, dynamic_ncols=True)
    for row, seed in bar:
        bar.set_postfix_str(f"{row} seed {seed}")
        d = _row_dir(out, row, seed)
        cfg = common.load_experiment(row_config(row), {**b.masker_overrides(seed), "classifier.weights": str(clf)},
                                     overrides)
        saved = common.finished_eval(d, cfg.masker_train.steps)
        if saved is not None:
            log(f"{row} (seed {seed}): reusing {d}")
            m = saved
        else:
            log(f"{row} (seed {seed}): training {cfg.masker_train.steps} steps ({cfg.masker_train.mode.upper()})")
            common.train_run(cfg, d, progress, device)
            m = {**common.evaluate_masker(d, cfg, clf, b, progress=False), "steps": cfg.masker_train.steps}
            write_json(d / "eval.json", m)
            log(f"{row} (seed {seed}): "
                + ", ".join(f"{common.METRIC_NAMES[k]} {m[k]:.2f}" for k in common.METRIC_KEYS if k in m))
        results["rows"].setdefault(row, {"seeds": []})["seeds"].append(m)
    for r in results["rows"].values():
        r["mean"], r["std"] = common.seed_summary(r["seeds"])
    results["claims"] = judge_claims(results["rows"])
    write_json(out / "results.json", results)
    md = ablation_markdown(results)
    (out / "report.md").write_text(md)
    write_ablation_html(out / "report.html", results)
    log(f"report: {(out / 'report.md').resolve()} and report.html")
    return results


# The verdict of a claim is taken on LE (the paper's headline metric); the same rule is applied
# to these metrics too and shown next to it, so a claim that holds on LE but not on the others
# (or the reverse) is visible.
SECOND_OPINIONS = ("maxboxacc_v2", "pxap")


def _tolerance(rows: dict[str, Any], names: Sequence[str], metric: str = "le") -> float:
    """One point, or twice the largest seed spread of ``metric`` over the rows compared, whichever is larger."""
    spreads = [rows[n]["std"].get(metric, math.nan) for n in names if n in rows]
    finite = [s for s in spreads if np.isfinite(s)]
    return max(1.0, 2.0 * max(finite)) if finite else 1.0


def _verdict(rows: dict[str, Any], better: str, others: Sequence[str], kind: str,
             metric: str) -> tuple[str, float, dict[str, float]]:
    """Status, tolerance and per-row gaps of one claim on one metric; gaps are oriented so that
    positive means ``better`` is better (LE and SM: lower is better; the others: higher)."""
    names = (better, *others)
    if any(metric not in rows[n]["mean"] or not np.isfinite(rows[n]["mean"][metric]) for n in names):
        return "not measured", math.nan, {}
    tol = _tolerance(rows, names, metric)
    sign = 1.0 if common.LOWER_IS_BETTER.get(metric, False) else -1.0
    base = rows[better]["mean"][metric]
    diffs = {o: sign * (rows[o]["mean"][metric] - base) for o in others}
    if any(d < -tol for d in diffs.values()):
        return "does not hold", tol, diffs
    if kind == "better" and not all(d > tol for d in diffs.values()):
        return "inconclusive", tol, diffs
    return "holds", tol, diffs


def judge_claims(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """Mark each of :data:`CLAIMS` as ``"holds"``, ``"does not hold"``, ``"inconclusive"`` or
    ``"not run"`` from the rows' mean LE (lower is better).

    A ``"better"`` claim holds when every other row's LE exceeds ``better``'s by more than the
    tolerance (one point, or twice the seed spread), does not hold when any other row is lower by
    more than it, and is inconclusive otherwise. A ``"not_worse"`` claim holds unless some other
    row is lower by more than the tolerance. The same rule on MaxBoxAccV2 and PxAP (higher is
    better) gives ``"by_metric"``, shown next to the LE verdict.
    """
    out: list[dict[str, Any]] = []
    for c in CLAIMS:
        names = (c.better, *c.others)
        if any(n not in rows for n in names):
            out.append({"claim": c.text, "source": c.source, "status": "not run", "differences": {}, "by_metric": {}})
            continue
        status, tol, diffs = _verdict(rows, c.better, c.others, c.kind, "le")
        by_metric = {m: _verdict(rows, c.better, c.others, c.kind, m)[0] for m in SECOND_OPINIONS}
        out.append({"claim": c.text, "source": c.source, "status": status, "better": c.better, "kind": c.kind,
                    "tolerance": tol, "differences": diffs, "by_metric": by_metric})
    return out


def _table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["row", "what it changes", *[common.METRIC_NAMES[k] for k in common.METRIC_KEYS], "mask mean",
              *[f"paper {common.METRIC_NAMES[k]}" for k in PAPER_KEYS]]
    body = []
    titles = {r.name: r.title for r in ROWS}
    for name, r in results["rows"].items():
        mean, std = r["mean"], r["std"]
        cells = [common.fmt(mean.get(k, math.nan), std.get(k, math.nan), 3 if k == "sm" else 1)
                 for k in common.METRIC_KEYS]
        paper = results.get("paper", PAPER).get(name, {})
        body.append([name, titles.get(name, name), *cells, common.fmt(mean.get("mask_mean", math.nan), digits=2),
                     *[common.fmt(paper[k], digits=3 if k == "sm" else 2) if k in paper else ""
                       for k in PAPER_KEYS]])
    return header, body


_CLAIM_HEADER = ["claim", "source", "status (LE)", "evidence (LE points)", "same rule on MaxBoxAccV2 / PxAP"]


def _claim_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in results["claims"]:
        diffs = "; ".join(f"{k}: {v:+.1f}" for k, v in c["differences"].items())
        second = " / ".join(c.get("by_metric", {}).get(m, "") for m in SECOND_OPINIONS) if c.get("by_metric") else ""
        rows.append([c["claim"], c["source"], c["status"],
                     f"LE of the others minus {c.get('better', '')}: {diffs} (tolerance {c.get('tolerance', 0):.1f})"
                     if diffs else "", second])
    return rows


def _preamble(results: dict[str, Any]) -> list[str]:
    b = results["budget"]
    acc = results.get("classifier_test_accuracy")
    steps = b["masker_steps"] or "the config's"
    return [
        f"common.Budget `{b['name']}`: {steps} masker steps per row, batch {b['batch_size'] or 'from the config'}, "
        f"{results['seeds']} seed(s) per row (mean ± standard deviation over seeds), "
        f"{b['n_test']} test images of the built-in benchmark (64 px, 20 classes).",
        f"Classifier: {results['classifier']}" + (f", test accuracy {acc:.1f}%." if acc is not None else "."),
        "LE, OM: % (lower is better; box from the largest connected component of the map above its mean, hit if "
        "IoU > 0.5). F1: % (mask vs box). MaxBoxAccV2, PxAP: % (wsolevaluation; MaxBoxAcc threshold step "
        f"{b['maxboxacc_step']}). SM: saliency metric (lower is better).",
        results.get("paper_source", PAPER_SOURCE),
    ]


def ablation_markdown(results: dict[str, Any]) -> str:
    """The report as Markdown: the table, the claims, the settings."""
    header, body = _table_rows(results)
    parts = ["# Ablation study on the built-in benchmark", "", *[p + "  " for p in _preamble(results)], "",
             markdown_table(header, body), "## The paper's claims on this data", "",
             markdown_table(_CLAIM_HEADER, _claim_rows(results))]
    if results["budget"]["name"] == "small":
        parts.append("With the small budget every masker is trained for a few minutes of CPU time: the rows are "
                     "far from converged and differences of a few points are within run-to-run noise. Use "
                     "`--budget full` on a GPU for the paper-scale recipe.\n")
    return "\n".join(parts)


def write_ablation_html(path: Path, results: dict[str, Any]) -> Path:
    """The report as HTML (same content as the Markdown, plus a chart of LE per row)."""
    from masksal.report import Report

    rep = Report("Ablation study on the built-in benchmark")
    for p in _preamble(results):
        rep.paragraph(p, note=True)
    header, body = _table_rows(results)
    rep.table(header, body)
    rep.image(_le_chart(results), "LE per row (mean over seeds; bars show the spread)", width_px=900)
    rep.heading("The paper's claims on this data")
    rep.table(_CLAIM_HEADER, _claim_rows(results))
    if results["budget"]["name"] == "small":
        rep.paragraph("Small budget: the rows are far from converged; differences of a few points are within "
                      "run-to-run noise.", note=True)
    return rep.write(path)


def _le_chart(results: dict[str, Any]) -> np.ndarray:
    from masksal.report.plots import figure_to_array, plt

    names = list(results["rows"])
    means = [results["rows"][n]["mean"].get("le", math.nan) for n in names]
    stds = [results["rows"][n]["std"].get("le", math.nan) for n in names]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=90)
    ax.bar(range(len(names)), means, yerr=[s if np.isfinite(s) else 0 for s in stds], color="#4a7bb7", capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("LE (%) ↓")
    fig.tight_layout()
    return figure_to_array(fig)
