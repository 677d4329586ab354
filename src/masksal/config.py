"""Experiment configuration: typed dataclasses, loaded from YAML, overridable from the CLI.

An experiment is an :class:`ExperimentConfig` of sections: ``data``, ``classifier``,
``classifier_train``, ``masker``, ``objectives`` and ``masker_train``. A YAML file holds any
subset; missing keys keep their defaults. Every value is checked against its field's type and
range when the config is built (``masker_lr: 1e-4`` is a float even though YAML reads it as a
string), and a wrong key or value is one ``ValueError`` line naming the file, the key, the value
and what is expected.

Inside the library configs are built as objects: :func:`with_overrides` applies typed
``{"section.key": value}`` changes. Strings are parsed only at the command-line edge
(``--set masker_train.steps=200``, the value read as YAML), by :func:`parse_overrides`.

Files written by earlier versions (a ``train`` section holding the masker's training, the infill
and the device) are read too: ``train`` becomes ``masker_train``, ``train.infill`` moves to
``objectives.infill`` and ``train.device`` (a run option now: ``--device``) is dropped.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from masksal.masker import MaskerConfig
from masksal.objectives import ObjectiveConfig

CLASSIFIER_MODES = ("fix", "ca", "pool")


def _positive(**extra: Any) -> dict[str, Any]:
    return {"min": 1, **extra}


@dataclass
class DataConfig:
    """Where training and evaluation images come from.

    ``dataset`` is a data spec (:func:`masksal.data.load_dataset`): ``"benchmark"`` (the
    built-in procedural benchmark), ``"imagefolder:DIR"``, ``"wsol:METADATA:IMAGES"``,
    ``"imagenet:ROOT"``, ``"cub:ROOT"``. ``fresh_each_epoch`` (benchmark only): classifier
    training draws new images every epoch (same source objects, new compositions).
    """

    dataset: str = "benchmark"
    image_size: int = field(default=64, metadata={"min": 16})
    n_train: int = field(default=40000, metadata=_positive())
    n_val: int = field(default=2000, metadata=_positive())
    n_test: int = field(default=2000, metadata=_positive())
    seed: int = 0
    families: list[str] = field(default_factory=lambda: ["digits", "animals"])
    max_distractors: int = field(default=2, metadata={"min": 0})
    fresh_each_epoch: bool = True
    examples_per_class: int | None = field(default=None, metadata=_positive())
    num_workers: int = field(default=0, metadata={"min": 0})
    cache_dir: str | None = "runs/cache"


@dataclass
class ClassifierConfig:
    """The classifier: architecture, taps and weights.

    ``weights`` is a classifier checkpoint directory written by ``masksal train-classifier``, a
    ``.safetensors`` file or a plain state-dict file; ``None`` trains from scratch (only for
    ``train-classifier``). ``kwargs`` go to the architecture's constructor (the built-in
    ``small_resnet18`` takes ``width``, 16 by default); ``None`` taps: the top two stages.
    """

    arch: str = "small_resnet18"
    kwargs: dict[str, Any] = field(default_factory=dict)
    taps: list[str] | None = None
    weights: str | None = None
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("classifier.mean and classifier.std need 3 values (RGB)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"classifier.std must be positive, got {self.std}")


@dataclass
class ClassifierTrainConfig:
    """Training of the classifier itself (``masksal train-classifier``): SGD with Nesterov momentum
    (``optimizer: sgd``) or AdamW (``adamw``: ``momentum`` unused; what vision transformers trained
    from scratch need), with a one-cycle learning rate.

    ``multilabel``: sigmoid outputs trained with binary cross-entropy, every object of an image a
    positive label (``data.dataset: benchmark:pairs`` lists two per image); its accuracy is then
    the share of images whose top-1 class is one of their labels. Train its masker with
    ``objectives.multilabel: true``.
    """

    optimizer: str = field(default="sgd", metadata={"choices": ("sgd", "adamw")})
    epochs: int = field(default=8, metadata=_positive())
    batch_size: int = field(default=128, metadata=_positive())
    lr: float = field(default=0.2, metadata={"min": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    weight_decay: float = field(default=5e-4, metadata={"min": 0.0})
    label_smoothing: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    multilabel: bool = False
    seed: int = 0
    log_every: int = field(default=10, metadata=_positive())
    checkpoint_every: int = field(default=200, metadata=_positive())


@dataclass
class MaskerTrainConfig:
    """Training of the masker (paper defaults where they make sense on a CPU budget).

    ``mode``: ``"fix"`` (frozen classifier), ``"ca"`` (classifier trained alongside, the
    paper's best), ``"pool"`` (CA plus a pool of classifier snapshots, as CASM).
    """

    mode: str = field(default="fix", metadata={"choices": CLASSIFIER_MODES})
    steps: int = field(default=1300, metadata=_positive())
    batch_size: int = field(default=64, metadata=_positive())
    masker_lr: float = field(default=1e-3, metadata={"min": 0.0})
    masker_weight_decay: float = field(default=1e-4, metadata={"min": 0.0})
    classifier_lr: float = field(default=1e-3, metadata={"min": 0.0})
    classifier_momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    classifier_weight_decay: float = field(default=1e-4, metadata={"min": 0.0})
    grad_clip: float = field(default=10.0, metadata={"min": 0.0})
    lr_decay_every: int | None = field(default=None, metadata=_positive())
    lr_decay: float = field(default=0.1, metadata={"min": 0.0})
    pool_size: int = field(default=30, metadata=_positive())
    pool_every: int = field(default=100, metadata=_positive())
    pool_prob: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    seed: int = 0
    log_every: int = field(default=10, metadata=_positive())
    checkpoint_every: int = field(default=200, metadata=_positive())


@dataclass
class ExperimentConfig:
    """One experiment: everything ``masksal train`` needs, saved resolved in the checkpoint."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    classifier_train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    masker: MaskerConfig = field(default_factory=MaskerConfig)
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    masker_train: MaskerTrainConfig = field(default_factory=MaskerTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = tuple(f.name for f in dataclasses.fields(ExperimentConfig) if f.name != "name")


# -- building and checking -------------------------------------------------------------------


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin in (list, tuple, Sequence):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the field type ``hint``, or ``ValueError`` naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _convert(a, value, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: expected {_expected(hint)}, got {value!r}")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())  # YAML 1.1 reads 1e-4 (no dot) as a string
            except ValueError:
                raise ValueError(f"{where}: expected a number, got {value!r}") from None
        else:
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(out):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return out
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{where}: expected a string, got {value!r}")
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _check_range(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    if value is None or isinstance(value, bool):
        return
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{where}: expected one of {', '.join(meta['choices'])}, got {value!r}")
    if isinstance(value, (int, float)):
        if "min" in meta and value < meta["min"]:
            raise ValueError(f"{where}: expected a value >= {meta['min']}, got {value!r}")
        if "max" in meta and value > meta["max"]:
            raise ValueError(f"{where}: expected a value <= {meta['max']}, got {value!r}")


def build_section(cls: type, values: Any, where: str) -> Any:
    """An instance of the config dataclass ``cls`` from ``values``, typed and checked (see module doc)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of keys to values, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(fields))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build_section(hint, value if value is not None else {}, f"{where}.{key}")  # type: ignore[arg-type]
        else:
            kwargs[key] = _convert(hint, value, f"{where}.{key}")
            _check_range(fields[key], kwargs[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


def _migrate(d: dict[str, Any]) -> dict[str, Any]:
    """Read configs of earlier versions: ``train`` -> ``masker_train`` (its ``infill`` ->
    ``objectives.infill``; its ``device``, now a run option, dropped; its ``seed`` also seeded
    the classifier's training then, so it becomes ``classifier_train.seed`` when that is unset)."""
    if "train" not in d:
        return d
    d = dict(d)
    old = d.pop("train")
    if not isinstance(old, dict):
        raise ValueError(f"train: expected a mapping of keys to values, got {type(old).__name__}")
    old = dict(old)
    old.pop("device", None)
    if "infill" in old:
        d["objectives"] = {**(d.get("objectives") or {}), "infill": old.pop("infill")}
    if "seed" in old:
        ct = dict(d.get("classifier_train") or {})
        ct.setdefault("seed", old["seed"])
        d["classifier_train"] = ct
    d["masker_train"] = {**old, **(d.get("masker_train") or {})}
    return d


def config_from_dict(d: Any, where: str = "config") -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a nested dict (unknown keys and ill-typed or
    out-of-range values are ``ValueError`` lines naming ``where`` and the key)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping of sections, got {type(d).__name__}")
    return build_section(ExperimentConfig, _migrate(d), where)


def with_overrides(cfg: ExperimentConfig, changes: Mapping[str, Any], where: str = "override") -> ExperimentConfig:
    """A copy of ``cfg`` with ``{"section.key": value}`` changes, typed and checked like a file.

    Raises:
        ValueError: one line naming ``where``, the key, the value and what is expected.

    Example:
        >>> cfg = with_overrides(ExperimentConfig(), {"masker_train.steps": 200, "masker_train.mode": "ca"})
        >>> cfg.masker_train.steps, cfg.masker_train.mode
        (200, 'ca')
    """
    d = cfg.to_dict()
    for path, value in changes.items():
        _set_path(d, path, value, where)
    new_arch = d["classifier"]["arch"] != cfg.classifier.arch
    if new_arch and not any(k.startswith("classifier.kwargs") for k in changes):
        d["classifier"]["kwargs"] = {}  # another architecture: the old one's constructor settings do not apply
    return config_from_dict(d, where)


def _set_path(d: dict[str, Any], path: str, value: Any, where: str) -> None:
    keys = [k.strip() for k in path.strip().split(".")]
    if keys[0] == "train":  # the section's earlier name
        keys = ["objectives", "infill"] if keys[1:] == ["infill"] else ["masker_train", *keys[1:]]
    label = f"{where} {path}={value!r}"
    if not all(keys):
        raise ValueError(f"{label}: expected section.key=value")
    cls: Any = ExperimentConfig
    node = d
    for i, k in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise ValueError(f"{label}: unknown key {'.'.join(keys[:i + 1])!r} (known here: {known})")
        hint = typing.get_type_hints(cls)[k]
        last = i == len(keys) - 1
        if dataclasses.is_dataclass(hint):
            if last:
                raise ValueError(f"{label}: {k!r} is a section: set one of its keys ({k}.KEY=value)")
            cls, node = hint, node[k]
            continue
        if last:
            converted = _convert(hint, value, label)
            _check_range(fields[k], converted, label)
            node[k] = converted
        elif typing.get_origin(hint) in (dict, Mapping):  # e.g. classifier.kwargs.width=8
            inner = dict(node.get(k) or {})
            inner[".".join(keys[i + 1:])] = value
            node[k] = inner
        else:
            raise ValueError(f"{label}: {'.'.join(keys[:i + 1])!r} is a value, not a section")
        return


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=value", ...]`` (the CLI's ``--set``) -> ``{"a.b": value}``, values read as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected section.key=value")
        path, raw = item.split("=", 1)
        try:
            out[path.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[path.strip()] = raw
    return out


def packaged_configs() -> list[str]:
    """Names of the configs shipped with masksal (``final``, ``ablation/ca``...)."""
    root = resources.files("masksal") / "configs"
    names: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            names.append(entry.name[:-5])
        elif entry.is_dir():
            names += [f"{entry.name}/{e.name[:-5]}" for e in sorted(entry.iterdir(), key=lambda e: e.name)
                      if e.name.endswith(".yaml")]
    return names


def config_path(name: str | Path) -> Path:
    """A config file: ``name`` itself when it is a file, else the packaged config of that name.

    Raises:
        FileNotFoundError: neither exists (the message lists the packaged names).
    """
    p = Path(name)
    if p.is_file():
        return p
    key = str(name).removesuffix(".yaml").removeprefix("configs/")
    packaged = resources.files("masksal") / "configs" / f"{key}.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    raise FileNotFoundError(f"config file not found: {name} (packaged configs: {', '.join(packaged_configs())})")


def load_config(path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] | None = None
                ) -> ExperimentConfig:
    """Load a YAML config (a file, a packaged name such as ``"final"``, or the defaults when
    ``path`` is None) and apply overrides (``--set`` strings, or a typed mapping)."""
    d: Any = {}
    where = "defaults"
    if path is not None:
        p = config_path(path)
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{p}: cannot read ({e})") from None
        d = loaded if loaded is not None else {}
        where = str(p)
    cfg = config_from_dict(d, where)
    if overrides:
        changes = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
        cfg = with_overrides(cfg, changes, "--set" if not isinstance(overrides, Mapping) else "override")
    return cfg


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
