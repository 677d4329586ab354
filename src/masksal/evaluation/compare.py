"""Saliency methods side by side on one classifier, dataset and metric suite (``masksal benchmark``).

For each method: every metric of the evaluation suite, throughput (maps/s), time per image and
peak memory, all measured in the same run on the same batches. Writes a Markdown table, JSON,
and an HTML page with the same images explained by every method.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from masksal.classifiers import Classifier
from masksal.evaluation.evaluate import evaluate
from masksal.evaluation.table import format_table, speed_table
from masksal.explainers.base import SupportsExplain
from masksal.metrics.base import Accumulator


class PeakMemory:
    """Peak memory used while the block runs, in MiB above what was in use when it started.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's resident set size, sampled
    every few milliseconds from ``/proc/self/statm`` (PyTorch's CPU allocator has no counter of
    its own), so a very short spike can be missed.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib = float("nan")
        self._stop = threading.Event()
        self._base = 0
        self._max = 0

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        except OSError:
            return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(0.005)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._max = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = self._max
        self.peak_mib = max(0, peak - self._base) / 2**20


def compare_methods(
    methods: Sequence[tuple[str, SupportsExplain | Sequence[SupportsExplain]]],
    classifier: Classifier,
    loader: DataLoader,
    *,
    metrics: Sequence[str],
    limit: int | None = None,
    progress: bool = True,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    ci: int = 0,
    ci_seed: int = 0,
    ci_level: float = 0.95,
) -> list[dict[str, Any]]:
    """Evaluate each ``(spec, explainer)`` on the same batches; adds speed and memory columns.

    ``speedup_vs_masker`` compares each method's maps/s with the first masker in the list. An entry
    whose explainer is a sequence is one method run with several training seeds (or random seeds):
    each is evaluated, the row holds the mean over them (``runs``, ``run_values``) and, with ``ci``,
    intervals over seeds and images (:func:`~masksal.evaluation.intervals.combine_runs`). With
    ``ci`` every row gets bootstrap intervals over the images (same resamples for every method).
    """
    from masksal.evaluation.intervals import combine_runs

    device = next(classifier.parameters()).device
    rows: list[dict[str, Any]] = []
    for spec, explainers in methods:
        group = list(explainers) if isinstance(explainers, Sequence) else [explainers]
        results, states, peak = [], [], 0.0
        for explainer in group:
            with PeakMemory(device) as mem:
                st: dict[str, Accumulator] = {}
                res = evaluate(explainer, classifier, loader, metrics=metrics, limit=limit, progress=progress,
                               metric_options=metric_options, ci=ci if len(group) == 1 else 0, ci_seed=ci_seed,
                               ci_level=ci_level, keep_per_image=ci > 0, states=st)
            results.append(res)
            states.append(st)
            peak = max(peak, mem.peak_mib)
        res = results[0] if len(group) == 1 else combine_runs(results, states, n=ci, seed=ci_seed, level=ci_level)
        res["method"] = spec
        res["explainer"] = spec
        res["peak_memory_mib"] = peak
        res["ms_per_image"] = 1000.0 / res["maps_per_second"] if res["maps_per_second"] else float("nan")
        rows.append(res)
    masker_rate = next((r["maps_per_second"] for r in rows if r["method"].startswith("masker")), None)
    for r in rows:
        r["masker_speedup"] = masker_rate / r["maps_per_second"] if masker_rate else float("nan")
    return rows


def write_outputs(rows: list[dict[str, Any]], out_dir: Path, context: dict[str, Any]) -> dict[str, Path]:
    """``benchmark.md`` (quality and speed tables) and ``benchmark.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "benchmark.md"
    md.write_text("## Quality\n\n" + format_table(rows) + "\n\n## Speed\n\n" + speed_table(rows) + "\n\n"
                  + "Measured on: " + str(context.get("device")) + "\n")
    js = out_dir / "benchmark.json"
    js.write_text(json.dumps({"context": context, "results": rows}, indent=2, default=float))
    return {"markdown": md, "json": js}
