"""Checkpoint directories: safetensors weights + resolved config + classifier identity.

Layout of a checkpoint directory::

    meta.json               format, kind ("classifier" or "masker"), step, classifier identity
                            (architecture, classes, taps, normalization, weight fingerprint),
                            image size, class names
    config.yaml             the resolved experiment config
    classifier.safetensors  classifier weights (in CA mode: the co-trained classifier)
    masker.safetensors      masker weights (kind "masker" only)
    train_state.pt          optimizer states, step and RNG states, for --resume; a plain
                            tensor dict read with weights_only=True
    log.jsonl               one JSON line per logged training step

Every file is written to a temporary name and renamed, so a crash never leaves a half-written
file; each weight file records its step, and loading checks the files agree. Loading never
executes code: safetensors, JSON, YAML (safe loader) and ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from masksal.classifiers import Classifier, ClassifierSpec, classifier_from_spec
from masksal.config import ExperimentConfig, config_from_dict, save_config
from masksal.masker import Masker, MaskerConfig, MaskerNet

FORMAT = "masksal-checkpoint"
VERSION = 1


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_weights(path: Path, module: torch.nn.Module, step: int) -> None:
    sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write(path, lambda p: save_file(sd, str(p), metadata={"step": str(step)}))


def load_weights(path: Path, module: torch.nn.Module, step: int | None) -> None:
    """Load a safetensors file of a checkpoint into ``module`` (every tensor must fit).

    Args:
        step: the step ``meta.json`` records; a file written at another step (an interrupted
            save) is refused. ``None`` skips the check.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file missing: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if step is not None and meta.get("step") not in (None, str(step)):
        raise ValueError(f"{path}: written at step {meta.get('step')}, but meta.json says step {step} "
                         "(an interrupted save?): resume from the last complete checkpoint")
    sd = load_file(str(path))
    result = module.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}")


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2)))


@dataclass
class CheckpointMeta:
    kind: str
    step: int
    classifier: ClassifierSpec
    classifier_fingerprint: str
    image_size: int
    classes: list[str]
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "step": self.step,
                "classifier": self.classifier.to_dict(),
                "classifier_fingerprint": self.classifier_fingerprint,
                "image_size": self.image_size, "classes": self.classes, "extra": self.extra}


def read_meta(ckpt: str | Path) -> CheckpointMeta:
    """Read and validate ``meta.json`` of a checkpoint directory."""
    d = Path(ckpt)
    path = d / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{d}: not a masksal checkpoint (no meta.json)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not a masksal checkpoint (format {raw.get('format')!r})")
    if int(raw.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: checkpoint version {raw['version']} is newer than this masksal "
                         f"understands ({VERSION})")
    return CheckpointMeta(kind=raw["kind"], step=int(raw["step"]),
                          classifier=ClassifierSpec.from_dict(raw["classifier"]),
                          classifier_fingerprint=raw["classifier_fingerprint"],
                          image_size=int(raw["image_size"]), classes=list(raw.get("classes", [])),
                          extra=dict(raw.get("extra", {})))


def save_checkpoint(
    ckpt: str | Path,
    *,
    kind: str,
    step: int,
    cfg: ExperimentConfig,
    classifier: Classifier,
    masker: MaskerNet | None = None,
    train_state: dict[str, Any] | None = None,
    classes: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write (or update) a checkpoint directory; ``meta.json`` is written last."""
    d = Path(ckpt)
    d.mkdir(parents=True, exist_ok=True)
    _save_weights(d / "classifier.safetensors", classifier.model, step)
    if masker is not None:
        _save_weights(d / "masker.safetensors", masker, step)
    if train_state is not None:
        state = dict(train_state, step=torch.tensor(step))
        atomic_write(d / "train_state.pt", lambda p: torch.save(state, p))
    atomic_write(d / "config.yaml", lambda p: save_config(cfg, p))
    meta = CheckpointMeta(kind=kind, step=step, classifier=classifier.spec,
                          classifier_fingerprint=classifier.fingerprint(),
                          image_size=cfg.data.image_size, classes=list(classes or []),
                          extra=dict(extra or {}))
    write_json(d / "meta.json", meta.to_dict())


# Settings that do not change the weights a run produces (evaluation sizes, cache folders,
# loader workers, logging and checkpoint cadence, the device; for a classifier, which layers a
# masker taps later; for a masker, how many steps: a longer run continues a shorter one).
_NOT_RECIPE: dict[str, dict[str, tuple[str, ...]]] = {
    "classifier": {"data": ("n_val", "n_test", "cache_dir", "num_workers"), "classifier": ("taps",)},
    "masker": {"data": ("n_val", "n_test", "cache_dir", "num_workers"), "classifier": ("weights",),
               "train": ("steps", "log_every", "checkpoint_every", "device")},
}
_RECIPE_SECTIONS = {"classifier": ("data", "classifier", "classifier_train"),
                    "masker": ("data", "classifier", "masker", "objectives", "train")}


def recipe(cfg: ExperimentConfig, kind: str = "classifier") -> dict[str, Any]:
    """The settings of ``cfg`` that decide the weights of a trained ``kind`` (``"classifier"`` or
    ``"masker"``), as ``{section: {key: value}}`` (the classifier's seed under ``"seed"``)."""
    d = cfg.to_dict()
    skip = _NOT_RECIPE[kind]
    out: dict[str, Any] = {sec: {k: v for k, v in d[sec].items() if k not in skip.get(sec, ())}
                           for sec in _RECIPE_SECTIONS[kind]}
    if kind == "classifier":
        out["seed"] = {"train.seed": d["train"]["seed"]}
    return out


def recipe_difference(ckpt: str | Path, cfg: ExperimentConfig, kind: str = "classifier") -> list[str]:
    """``section.key (saved vs wanted)`` for every recipe setting where the checkpoint ``ckpt``
    was trained differently from ``cfg``; empty when ``cfg`` would train the same weights."""
    saved, wanted = recipe(load_config_of(ckpt), kind), recipe(cfg, kind)
    diff = []
    for sec in wanted:
        for k in sorted(set(saved[sec]) | set(wanted[sec])):
            if saved[sec].get(k) != wanted[sec].get(k):
                name = k if sec == "seed" else f"{sec}.{k}"
                diff.append(f"{name} ({saved[sec].get(k)!r} vs {wanted[sec].get(k)!r})")
    return diff


def check_same_recipe(ckpt: str | Path, cfg: ExperimentConfig, kind: str, remedy: str) -> None:
    """Raise if the checkpoint ``ckpt`` (when there is one) was trained with other settings than
    ``cfg`` would use: a cached stage is then neither reused nor resumed.

    Raises:
        FileExistsError: one line naming ``ckpt``, the first settings that differ, and ``remedy``.
    """
    if not (Path(ckpt) / "meta.json").is_file():
        return
    diff = recipe_difference(ckpt, cfg, kind)
    if diff:
        raise FileExistsError(f"{ckpt} holds a {kind} trained with other settings (saved vs wanted: "
                              f"{'; '.join(diff[:4])}): {remedy}")


def stage_done(ckpt: str | Path, steps: int | None = None) -> bool:
    """Whether a checkpoint directory holds a finished stage: ``steps`` reached when given, else
    its ``metrics.json`` written (a classifier run writes it when it ends)."""
    ckpt = Path(ckpt)
    if not (ckpt / "meta.json").is_file():
        return False
    if steps is not None:
        return read_meta(ckpt).step >= steps
    return (ckpt / "metrics.json").is_file()


def load_config_of(ckpt: str | Path) -> ExperimentConfig:
    import yaml

    p = Path(ckpt) / "config.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file missing: {p}")
    return config_from_dict(yaml.safe_load(p.read_text()) or {}, str(p))


def load_classifier(ckpt: str | Path, classifier: Classifier | None = None,
                    device: str | torch.device = "cpu") -> Classifier:
    """The classifier stored in a checkpoint directory (either kind), in eval mode.

    For a classifier of a custom architecture, build the module yourself and pass it as
    ``classifier``: its architecture and taps are checked against the checkpoint.
    """
    meta = read_meta(ckpt)
    if classifier is None:
        classifier = classifier_from_spec(meta.classifier)
    elif classifier.taps != meta.classifier.taps:
        raise ValueError(f"{ckpt}: checkpoint's classifier taps are {meta.classifier.taps}, the given "
                         f"classifier's are {classifier.taps}")
    load_weights(Path(ckpt) / "classifier.safetensors", classifier.model, meta.step)
    return classifier.to(device).eval()


def load_masker(ckpt: str | Path, classifier: Classifier | None = None,
                device: str | torch.device = "cpu") -> Masker:
    """Load a trained :class:`~masksal.masker.Masker` (classifier + masker) for explaining.

    Example:
        >>> masker = load_masker("runs/demo/masker")          # doctest: +SKIP
        >>> maps = masker.explain(images)                     # (B, H, W) in [0, 1]
    """
    meta = read_meta(ckpt)
    if meta.kind != "masker":
        raise ValueError(f"{ckpt}: a {meta.kind} checkpoint, not a masker (train one with masksal train)")
    cfg = load_config_of(ckpt)
    clf = load_classifier(ckpt, classifier, device)
    shapes = clf.tap_shapes(meta.image_size)
    net = MaskerNet({t: shapes[t][0] for t in clf.taps}, MaskerConfig(**cfg.masker.__dict__))
    load_weights(Path(ckpt) / "masker.safetensors", net, meta.step)
    return Masker(clf, net.to(device)).eval()


def load_train_state(ckpt: str | Path) -> dict[str, Any]:
    p = Path(ckpt) / "train_state.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{ckpt}: no train_state.pt to resume from")
    return torch.load(p, map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
