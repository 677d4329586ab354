"""Reproducing the paper's findings on the built-in benchmark (and a few real photos).

* :func:`run_ablation`: every row of the ablation study (``configs/ablation/*.yaml``), a table
  of LE, OM, F1, MaxBoxAccV2, PxAP and SM over seeds, and the paper's claims checked.
* :func:`run_fewshot`: the final recipe trained on K examples per class (the paper's Figure 1C).
* :func:`run_roar`: RemOve And Retrain (Hooker et al.) for the masker, Grad-CAM and random maps.
* :func:`run_photos`: a masker for an ImageNet EfficientNet-Lite0 on the photos that ship offline.

Each writes ``report.md`` / ``report.html`` and ``results.json`` and reuses what an earlier run
finished. :data:`SMALL` fits two CPU cores; :data:`FULL` is the paper-scale recipe for a GPU.
Command line: ``masksal reproduce ablation|fewshot|roar|photos``.
"""

from masksal.reproduce._common import BUDGETS, FULL, SMALL, Budget, get_budget
from masksal.reproduce.ablation import CLAIMS, ROW_NAMES, ROWS, judge_claims, run_ablation
from masksal.reproduce.fewshot import run_fewshot
from masksal.reproduce.photos import run_photos
from masksal.reproduce.roar import remove_top_pixels, run_roar

__all__ = [
    "BUDGETS",
    "CLAIMS",
    "FULL",
    "ROWS",
    "ROW_NAMES",
    "SMALL",
    "Budget",
    "get_budget",
    "judge_claims",
    "remove_top_pixels",
    "run_ablation",
    "run_fewshot",
    "run_photos",
    "run_roar",
]
