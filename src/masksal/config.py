"""Experiment configuration: typed dataclasses, loaded from YAML, overridable from the CLI.

A config file holds any subset of the sections below; missing keys keep their defaults and
unknown keys are an error naming the key and the file. ``--set train.steps=200`` style
overrides (``section.key=value``, value parsed as YAML) apply after the file.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from masksal.masker import MaskerConfig
from masksal.objectives import ObjectiveConfig

CLASSIFIER_MODES = ("fix", "ca", "pool")


@dataclass
class DataConfig:
    """Where training and evaluation images come from.

    ``dataset`` is ``"benchmark"`` (the built-in procedural benchmark) or a dataset spec of
    :func:`masksal.data.load_dataset` (``"folder:DIR"``, ``"imagenet:ROOT"``, ...).
    ``fresh_each_epoch`` (benchmark only): classifier training draws new images every epoch
    (same source objects, new compositions), so longer training does not overfit ``n_train``
    fixed images.
    """

    dataset: str = "benchmark"
    image_size: int = 64
    n_train: int = 40000
    n_val: int = 2000
    n_test: int = 2000
    seed: int = 0
    families: list[str] = field(default_factory=lambda: ["digits", "animals"])
    max_distractors: int = 2
    fresh_each_epoch: bool = True
    examples_per_class: int | None = None
    num_workers: int = 0
    cache_dir: str | None = "runs/cache"


@dataclass
class ClassifierConfig:
    """The classifier: architecture, taps and weights.

    ``weights`` is a classifier checkpoint directory written by ``masksal train-classifier``, a
    ``.safetensors`` file or a plain state-dict file; ``None`` trains from scratch (only for
    ``train-classifier``).
    """

    arch: str = "small_resnet18"
    kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 16})
    taps: list[str] | None = None
    weights: str | None = None
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])


@dataclass
class ClassifierTrainConfig:
    """Training of the classifier itself (``masksal train-classifier``): SGD + one-cycle."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0


@dataclass
class TrainConfig:
    """Training of the masker (paper defaults where they make sense on a CPU budget).

    ``mode``: ``"fix"`` (frozen classifier), ``"ca"`` (classifier trained alongside, the
    paper's best), ``"pool"`` (CA plus a pool of classifier snapshots, as CASM).
    """

    mode: str = "fix"
    steps: int = 1300
    batch_size: int = 64
    masker_lr: float = 1e-3
    masker_weight_decay: float = 1e-4
    classifier_lr: float = 1e-3
    classifier_momentum: float = 0.9
    classifier_weight_decay: float = 1e-4
    grad_clip: float = 10.0
    lr_decay_every: int | None = None
    lr_decay: float = 0.1
    infill: str = "mean"
    pool_size: int = 30
    pool_every: int = 100
    pool_prob: float = 0.5
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in CLASSIFIER_MODES:
            raise ValueError(f"train.mode must be one of {CLASSIFIER_MODES}, got {self.mode!r}")


@dataclass
class ExperimentConfig:
    """One experiment: everything ``masksal train`` needs, saved resolved in the checkpoint."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    classifier_train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    masker: MaskerConfig = field(default_factory=MaskerConfig)
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{where}.{key}")  # type: ignore[arg-type]
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def config_from_dict(d: dict[str, Any], where: str = "config") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a nested dict (unknown keys are errors)."""
    return _build(ExperimentConfig, d, where)  # type: ignore[no-any-return]


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``"a.b.c=value"`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected section.key=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        node = d
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {item!r}: {k!r} is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return d


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    d: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        d = loaded or {}
        where = str(p)
    apply_overrides(d, overrides or [])
    return config_from_dict(d, where)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
