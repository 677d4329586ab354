"""What the reproduction experiments share: budgets, config files, cached stages, evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masksal.config import ExperimentConfig, load_config
from masksal.rundir import stage_done

Log = Callable[[str], Any]


@dataclass(frozen=True)
class Budget:
    """Sizes of a reproduction run on the built-in benchmark.

    ``None`` for a size keeps the value of the experiment's config file (the paper-scale recipe).

    Attributes:
        name: ``"small"`` (2 CPU cores, about half an hour per command) or ``"full"`` (a GPU).
        n_train, n_test: benchmark images for training and for the test split.
        classifier_epochs: epochs of the shared classifier.
        masker_steps, batch_size: masker training steps and batch size per row.
        seeds: default number of seeds per ablation row and per few-shot K.
        maxboxacc_step: MaxBoxAcc threshold grid step (0.001 is the reference; 0.01 is ten times
            faster and moves the numbers by a fraction of a point).
        roar_train, roar_epochs, roar_width, roar_size: ROAR's retrained classifiers: training
            images, epochs, base width, and the side the degraded images are resized to before
            training (``None``: the benchmark's 64 px; pixels are removed at 64 px either way).
        fewshot_ks: examples per class of the few-shot runs (``None`` = all).
        photo_steps, photo_size, photo_batch: the real-photo masker's steps, image side, batch.
    """

    name: str
    n_train: int | None
    n_test: int
    classifier_epochs: int | None
    masker_steps: int | None
    batch_size: int | None
    seeds: int
    maxboxacc_step: float
    roar_train: int
    roar_epochs: int
    roar_width: int
    roar_size: int | None
    fewshot_ks: tuple[int | None, ...]
    photo_steps: int
    photo_size: int
    photo_batch: int

    def data_overrides(self) -> dict[str, Any]:
        """Typed overrides for the data and classifier sizes of this budget."""
        out: dict[str, Any] = {"data.n_test": self.n_test, "data.n_val": self.n_test}
        if self.n_train is not None:
            out["data.n_train"] = self.n_train
        if self.classifier_epochs is not None:
            out["classifier_train.epochs"] = self.classifier_epochs
        return out

    def masker_overrides(self, seed: int) -> dict[str, Any]:
        """Typed overrides for one masker run of this budget (seed included)."""
        out = {**self.data_overrides(), "masker_train.seed": seed}
        if self.masker_steps is not None:
            out["masker_train.steps"] = self.masker_steps
            # Keep CASM's pool meaningful on a short run: ten snapshots over the run.
            out["masker_train.pool_every"] = max(1, self.masker_steps // 10)
        if self.batch_size is not None:
            out["masker_train.batch_size"] = self.batch_size
        return out


SMALL = Budget(name="small", n_train=None, n_test=500, classifier_epochs=None, masker_steps=250, batch_size=32,
               seeds=3, maxboxacc_step=0.01, roar_train=40000, roar_epochs=6, roar_width=8, roar_size=None,
               fewshot_ks=(1, 2, 5, 10, 50, None), photo_steps=200, photo_size=160, photo_batch=8)
FULL = Budget(name="full", n_train=None, n_test=2000, classifier_epochs=None, masker_steps=None, batch_size=None,
              seeds=3, maxboxacc_step=0.001, roar_train=40000, roar_epochs=10, roar_width=16, roar_size=None,
              fewshot_ks=(1, 2, 5, 10, 50, 125, None), photo_steps=600, photo_size=224, photo_batch=16)
BUDGETS = {"small": SMALL, "full": FULL}


def get_budget(name: str) -> Budget:
    """The budget named ``"small"`` or ``"full"``."""
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}: choose 'small' (CPU, about 30 minutes) or 'full' (GPU)")
    return BUDGETS[name]


def final_config_path() -> Path:
    """The packaged config of the paper's final model, with the paper's own decoder (``paper``;
    ``final`` is the same recipe with the decoder the demo uses, docs/reproduce.md)."""
    from masksal.config import config_path

    return config_path("paper")


def load_experiment(path: Path, overrides: Mapping[str, Any], extra: Sequence[str] = ()) -> ExperimentConfig:
    """The config at ``path`` with typed ``overrides``, then the user's ``--set`` strings ``extra``."""
    from masksal.config import parse_overrides, with_overrides

    cfg = with_overrides(load_config(path), overrides, "budget")
    return with_overrides(cfg, parse_overrides(extra), "--set") if extra else cfg


# Where `masksal demo` writes its classifier: trained with the same recipe as the small budget's,
# so a user who ran the demo first does not train it a second time.
DEMO_CLASSIFIER = Path("runs/demo/classifier")


def ensure_classifier(out: Path, budget: Budget, classifier: str | Path | None, progress: bool, log: Log,
                      overrides: Sequence[str] = (), device: str = "auto") -> Path:
    """The classifier checkpoint every row starts from.

    ``classifier`` if given; else a finished classifier in ``out / "classifier"`` or the demo's
    (``runs/demo/classifier``) trained with exactly this budget's recipe; else one trained
    (resumable) into ``out / "classifier"`` with the data section of ``configs/final.yaml`` plus
    the budget's sizes and ``overrides``.

    Raises:
        FileExistsError: ``out / "classifier"`` holds a classifier trained with another recipe
            (it is never overwritten: delete it, or pass it as ``classifier``).
    """
    from masksal.checkpoint import is_checkpoint
    from masksal.precision import RunOptions
    from masksal.rundir import check_same_recipe, recipe_difference
    from masksal.training import train_classifier

    if classifier is not None:
        path = Path(classifier)
        if not is_checkpoint(path):
            raise FileNotFoundError(f"{path}: not a classifier checkpoint directory (no meta.json)")
        log(f"classifier: using {path}")
        return path
    cfg = load_experiment(final_config_path(), {**budget.data_overrides(), "name": "reproduce-classifier"}, overrides)
    path = out / "classifier"
    if is_checkpoint(path):
        check_same_recipe(path, cfg, "classifier", f"delete it, or pass --classifier {path} to use it")
        if stage_done(path):
            log(f"classifier: reusing {path}")
            return path
    elif stage_done(DEMO_CLASSIFIER) and not recipe_difference(DEMO_CLASSIFIER, cfg):
        log(f"classifier: reusing the demo's {DEMO_CLASSIFIER} (trained with the same recipe)")
        return DEMO_CLASSIFIER
    log(f"classifier: training {cfg.classifier.arch} on {cfg.data.n_train} images for "
        f"{cfg.classifier_train.epochs} epochs into {path}")
    res = train_classifier(cfg, path, resume=is_checkpoint(path), progress=progress, run=RunOptions(device=device))
    log(f"classifier: test accuracy {res['test_accuracy']:.1f}%")
    return path


def train_run(cfg: ExperimentConfig, ckpt: Path, progress: bool, device: str = "auto") -> None:
    """Train (or finish, or reuse) the masker of ``cfg`` in ``ckpt``.

    Raises:
        FileExistsError: ``ckpt`` holds a run of more steps than ``cfg`` asks for.
    """
    from masksal.checkpoint import is_checkpoint, read_meta
    from masksal.precision import RunOptions
    from masksal.training import train_masker

    steps = cfg.masker_train.steps
    if is_checkpoint(ckpt) and read_meta(ckpt).step > steps:
        raise FileExistsError(f"{ckpt} holds a run of {read_meta(ckpt).step} steps, more than the {steps} "
                              "asked for: delete it or choose another --out")
    if stage_done(ckpt, steps):
        return
    train_masker(cfg, ckpt, resume=is_checkpoint(ckpt), progress=progress, run=RunOptions(device=device))


def finished_eval(ckpt: Path, steps: int) -> dict[str, float] | None:
    """The saved evaluation (``eval.json``) of a run, if it was made at ``steps`` steps."""
    p = ckpt / "eval.json"
    if not p.is_file():
        return None
    saved = json.loads(p.read_text())
    return saved if saved.get("steps") == steps else None


def classifier_accuracy(ckpt: Path) -> float | None:
    p = ckpt / "metrics.json"
    if not p.is_file():
        return None
    return float(json.loads(p.read_text()).get("test_accuracy", math.nan))


METRIC_KEYS = ("le", "om", "f1", "maxboxacc_v2", "pxap", "sm")
METRIC_NAMES = {"le": "LE", "om": "OM", "f1": "F1", "maxboxacc_v2": "MaxBoxAccV2", "pxap": "PxAP", "sm": "SM",
                "top1": "top-1", "mask_mean": "mask mean"}
LOWER_IS_BETTER = {"le": True, "om": True, "f1": False, "maxboxacc_v2": False, "pxap": False, "sm": True}


def evaluate_masker(ckpt: Path, cfg: ExperimentConfig, original_classifier: Path, budget: Budget,
                    progress: bool, with_sm: bool = True) -> dict[str, float]:
    """LE, OM, F1, MaxBoxAccV2, PxAP (and SM) of a masker on the benchmark's test split.

    LE/OM/top-1 use the masker's own classifier (in CA mode the co-trained one); SM classifies
    the crops with the original classifier, as Dabkowski & Gal define it.
    """
    from torch.utils.data import DataLoader

    from masksal.checkpoint import load_classifier, load_masker
    from masksal.evaluation import evaluate
    from masksal.training import build_dataset
    from masksal.types import collate

    masker = load_masker(ckpt)
    test = build_dataset(cfg, "test")
    loader = DataLoader(test, batch_size=100, collate_fn=collate)
    res = evaluate(masker, masker.classifier, loader, metrics=("le_om_f1", "maxboxacc", "pxap"), progress=progress,
                   metric_options={"maxboxacc": {"threshold_step": budget.maxboxacc_step}})
    keys = ("le", "om", "f1", "maxboxacc_v2", "pxap", "top1", "mask_mean")
    out: dict[str, float] = {k: float(res[k]) for k in keys if k in res}
    if with_sm:
        original = load_classifier(original_classifier)
        sm = evaluate(masker, original, loader, metrics=("sm",), progress=progress)
        out["sm"] = float(sm["sm"])
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for fewer than two finite values)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def seed_summary(seeds: Sequence[dict[str, float]], skip: Sequence[str] = ()) -> tuple[dict[str, float],
                                                                                     dict[str, float]]:
    """Per-metric mean and sample standard deviation over the seeds' metric dicts (every key any
    seed has, but those in ``skip``); see :func:`mean_std`."""
    keys = sorted({k for s in seeds for k in s} - set(skip))
    stats = {k: mean_std([s.get(k, math.nan) for s in seeds]) for k in keys}
    return {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()}


def fmt(mean: float, std: float = math.nan, digits: int = 1) -> str:
    """``"12.3 ± 0.4"``, ``"12.3"`` with one seed, ``""`` when there is no value."""
    if mean is None or not np.isfinite(mean):
        return ""
    s = f"{mean:.{digits}f}"
    return s + (f" ± {std:.{digits}f}" if np.isfinite(std) else "")


def budget_dict(budget: Budget) -> dict[str, Any]:
    return asdict(budget)
