"""Checkpoint directories: safetensors weights + resolved config + classifier identity.

Layout (format version 2)::

    CKPT/
      checkpoint.json         the pointer: which step directory is the current checkpoint
      step-000200/            one complete checkpoint
        meta.json             kind ("classifier" or "masker"), step, classifier identity
                              (architecture, classes, taps, normalization, weight fingerprint),
                              image size, class names, run facts (mode, origin classifier...)
        config.yaml           the resolved experiment config
        classifier.safetensors  classifier weights (in CA mode: the co-trained copy)
        masker.safetensors    masker weights (kind "masker" only)
        train_state.pt        optimizer states and step, for --resume: tensors only, read with
                              weights_only=True
      log.jsonl, metrics.json   the run's log and results (see masksal.rundir)

A save is a transaction: every file of the new checkpoint is written into a fresh directory,
flushed, and only then does one atomic rename of ``checkpoint.json`` make it current; the
previous checkpoint is deleted after that. A kill at any moment leaves the previous complete
checkpoint or the new one, never a mix. (No library does this for a set of files; a temporary
file plus ``os.replace`` is the POSIX way to replace one file atomically.) Directories of
format 1 (the files directly in ``CKPT/``) are still read.

Loading never executes code: safetensors, JSON, YAML (safe loader) and
``torch.load(weights_only=True)``. Every defect is one ``ValueError`` / ``FileNotFoundError``
line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from masksal.classifiers import Classifier, ClassifierSpec, as_classifier, classifier_from_spec
from masksal.config import ExperimentConfig, config_from_dict, save_config
from masksal.masker import Masker, MaskerConfig, MaskerNet

FORMAT = "masksal-checkpoint"
VERSION = 2
POINTER = "checkpoint.json"
KINDS = ("classifier", "masker")

def _no_fault(_what: str) -> None:
    return None


_fault_point: Callable[[str], None] = _no_fault
"""Called between the writes of a save; the fault-injection tests replace it to kill the
process at each point in turn."""


# -- small file helpers ------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)``, flush it to disk, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN and inf written as JSON ``NaN``/``Infinity``)."""
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=float)))


def read_json(path: Path, what: str = "file") -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


# -- metadata ----------------------------------------------------------------------------------


@dataclass
class CheckpointMeta:
    """What ``meta.json`` says.

    Attributes:
        run: facts of the training run: ``mode`` (``fix``/``ca``/``pool``), the fingerprint of
            the classifier the masker started from (``origin_fingerprint``: in CA mode the saved
            classifier is a co-trained copy), and how it computed (world size, AMP...).
    """

    kind: str
    step: int
    classifier: ClassifierSpec
    classifier_fingerprint: str
    image_size: int
    classes: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "step": self.step,
                "classifier": self.classifier.to_dict(),
                "classifier_fingerprint": self.classifier_fingerprint,
                "image_size": self.image_size, "classes": self.classes, "run": self.run}

    @property
    def mode(self) -> str | None:
        return self.run.get("mode")

    @property
    def explains_copy(self) -> bool:
        """True when the saved classifier is a co-trained copy, not the one the run started from."""
        origin = self.run.get("origin_fingerprint")
        return self.kind == "masker" and origin is not None and origin != self.classifier_fingerprint


def checkpoint_files(ckpt: str | Path) -> Path:
    """The directory holding the current checkpoint's files (``CKPT/step-N``, or ``CKPT`` itself
    for format 1).

    Raises:
        FileNotFoundError: ``ckpt`` is not a checkpoint directory.
        ValueError: a damaged pointer file.
    """
    d = Path(ckpt)
    pointer = d / POINTER
    if pointer.is_file():
        raw = read_json(pointer, "checkpoint pointer")
        if not isinstance(raw, dict) or not isinstance(raw.get("current"), str):
            raise ValueError(f"{pointer}: not a masksal checkpoint pointer (expected {{\"current\": \"step-...\"}})")
        current = d / raw["current"]
        if Path(raw["current"]).name != raw["current"] or not current.is_dir():
            raise ValueError(f"{pointer}: names {raw['current']!r}, which is not a directory of {d}")
        return current
    if (d / "meta.json").is_file():
        return d
    if not d.exists():
        raise FileNotFoundError(f"{d}: no such checkpoint directory (masksal train writes one; masksal demo "
                                "writes runs/demo)")
    raise FileNotFoundError(f"{d}: not a masksal checkpoint (no {POINTER} or meta.json)")


def is_checkpoint(ckpt: str | Path) -> bool:
    d = Path(ckpt)
    return (d / POINTER).is_file() or (d / "meta.json").is_file()


def read_meta(ckpt: str | Path) -> CheckpointMeta:
    """Read and validate ``meta.json`` of a checkpoint directory."""
    path = checkpoint_files(ckpt) / "meta.json"
    raw = read_json(path, "checkpoint metadata")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not a masksal checkpoint (format {raw.get('format')!r})")
    try:
        version = int(raw.get("version", 0))
    except (TypeError, ValueError):
        raise ValueError(f"{path}: 'version' is not a number") from None
    if version > VERSION:
        raise ValueError(f"{path}: checkpoint version {version} is newer than this masksal understands ({VERSION})")
    if raw.get("kind") not in KINDS:
        raise ValueError(f"{path}: 'kind' must be one of {KINDS}, got {raw.get('kind')!r}")
    try:
        spec = ClassifierSpec.from_dict(raw["classifier"])
        run = dict(raw.get("run") or raw.get("extra") or {})
        return CheckpointMeta(kind=raw["kind"], step=int(raw["step"]), classifier=spec,
                              classifier_fingerprint=str(raw["classifier_fingerprint"]),
                              image_size=int(raw["image_size"]), classes=[str(c) for c in raw.get("classes", [])],
                              run=run)
    except KeyError as e:
        raise ValueError(f"{path}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: malformed value ({type(e).__name__}: {e})") from None


def load_config_of(ckpt: str | Path) -> ExperimentConfig:
    """The resolved experiment config saved with a checkpoint."""
    p = checkpoint_files(ckpt) / "config.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing (the checkpoint's config)")
    try:
        raw = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    return config_from_dict(raw if raw is not None else {}, str(p))


# -- weights -----------------------------------------------------------------------------------


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def all_finite(module: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``module`` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


def load_checkpoint_file(path: Path, module: nn.Module, step: int | None = None, check_finite: bool = True) -> None:
    """Load a checkpoint's safetensors file into ``module`` (every tensor must fit).

    Args:
        step: the step ``meta.json`` records; a file written at another step is refused.
        check_finite: refuse weights with NaN or inf (a diverged run).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (checkpoint weights)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file, truncated or damaged? ({e})") from None
    if step is not None and meta.get("step") not in (None, str(step)):
        raise ValueError(f"{path}: written at step {meta.get('step')}, but meta.json says step {step}")
    try:
        result = module.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise ValueError(f"{path}: weights do not fit the network ({first})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit the network: missing {result.missing_keys[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}")
    if check_finite and not all_finite(module):
        raise ValueError(f"{path}: weights contain NaN or inf (the run diverged); use an earlier checkpoint")


def load_train_state(ckpt: str | Path) -> dict[str, Any]:
    """Optimizer states etc. for ``--resume``: tensors and plain containers only."""
    p = checkpoint_files(ckpt) / "train_state.pt"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: missing, nothing to resume from")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with code in it, truncated file, not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{p}: refused, not a plain tensor file loadable with weights_only=True ({first[:160]})") \
            from None
    if not isinstance(state, dict):
        raise ValueError(f"{p}: expected a dict of training state, got {type(state).__name__}")
    return state


# -- saving ------------------------------------------------------------------------------------


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
    run: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> Path:
    """Write a complete checkpoint of ``step`` into ``ckpt`` and make it current, atomically.

    Returns:
        The new step directory.
    """
    from safetensors.torch import save_file

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    d = Path(ckpt)
    d.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{step:06d}-", dir=d))
    try:
        save_file(_state(classifier.model), str(staging / "classifier.safetensors"), metadata={"step": str(step)})
        _fault_point("classifier.safetensors")
        if masker is not None:
            save_file(_state(masker), str(staging / "masker.safetensors"), metadata={"step": str(step)})
            _fault_point("masker.safetensors")
        if train_state is not None:
            torch.save(dict(train_state, step=torch.tensor(step)), staging / "train_state.pt")
            _fault_point("train_state.pt")
        save_config(cfg, staging / "config.yaml")
        _fault_point("config.yaml")
        meta = CheckpointMeta(kind=kind, step=step, classifier=classifier.spec,
                              classifier_fingerprint=fingerprint or classifier.fingerprint(),
                              image_size=cfg.data.image_size, classes=list(classes or []), run=dict(run or {}))
        (staging / "meta.json").write_text(json.dumps(meta.to_dict(), indent=2, default=float))
        _fault_point("meta.json")
        for f in staging.iterdir():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(staging, 0o755 & ~_umask())
        target = d / f"step-{step:06d}"
        n = 0
        while target.exists():  # saving the same step again (a final save after an interrupt)
            n += 1
            target = d / f"step-{step:06d}.{n}"
        os.replace(staging, target)
        _fault_point("step directory")
        _fsync_dir(d)
        write_json(d / POINTER, {"format": FORMAT, "version": VERSION, "current": target.name, "kind": kind,
                                 "step": step})
        _fault_point("pointer")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _remove_stale(d, keep=target.name)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale(d: Path, keep: str) -> None:
    """Delete earlier step directories, leftover staging directories and format-1 files."""
    for p in d.iterdir():
        if p.name == keep:
            continue
        if p.is_dir() and (p.name.startswith("step-") or p.name.startswith(".staging-")):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name in ("meta.json", "config.yaml", "classifier.safetensors", "masker.safetensors",
                                         "train_state.pt"):
            p.unlink(missing_ok=True)


# -- loading models ----------------------------------------------------------------------------


def load_classifier(ckpt: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> Classifier:
    """The classifier stored in a checkpoint directory (either kind), in eval mode.

    Args:
        model: for a classifier of a custom architecture, the module to load the weights into
            (a plain ``nn.Module`` or a :class:`Classifier`); its taps and normalization come
            from the checkpoint, and the loaded weights must match the stored fingerprint.
    """
    meta = read_meta(ckpt)
    files = checkpoint_files(ckpt)
    spec = meta.classifier
    if model is None:
        clf = classifier_from_spec(spec)
    else:
        inner = model.model if isinstance(model, Classifier) else model
        clf = as_classifier(inner, taps=spec.taps, mean=spec.mean, std=spec.std,
                            reshape=model.reshape if isinstance(model, Classifier) else None)
        clf.spec = ClassifierSpec(arch=spec.arch, num_classes=spec.num_classes, taps=list(spec.taps),
                                  mean=spec.mean, std=spec.std, kwargs=dict(spec.kwargs))
    load_checkpoint_file(files / "classifier.safetensors", clf.model, meta.step)
    if model is not None and clf.fingerprint() != meta.classifier_fingerprint:
        raise ValueError(f"{files / 'classifier.safetensors'}: loaded into the given model, the weights' fingerprint "
                         f"differs from meta.json's ({meta.classifier_fingerprint}): another architecture?")
    return clf.to(device).eval()


def masker_net_for(classifier: Classifier, image_size: int, cfg: MaskerConfig) -> MaskerNet:
    """An untrained masker network reading ``classifier``'s taps at ``image_size``."""
    shapes = classifier.tap_shapes(image_size)
    return MaskerNet({t: shapes[t][0] for t in classifier.taps}, cfg,
                     num_classes=classifier.num_classes if cfg.conditional else None)


def load_masker(ckpt: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> Masker:
    """Load a trained :class:`~masksal.masker.Masker` (classifier + masker) for explaining.

    Args:
        ckpt: a masker checkpoint directory (``masksal train``, ``Masker.save``).
        model: for a classifier built from your own module, that module (its architecture
            cannot be rebuilt from a name); the stored weights are loaded into it and checked
            against the stored fingerprint.
        device: where to put the networks.

    Example:
        >>> masker = load_masker("runs/demo/masker_ca")          # doctest: +SKIP
        >>> maps = masker.explain(images)                        # doctest: +SKIP
    """
    meta = read_meta(ckpt)
    if meta.kind != "masker":
        raise ValueError(f"{ckpt}: a {meta.kind} checkpoint, not a masker (train one with masksal train)")
    cfg = load_config_of(ckpt)
    clf = load_classifier(ckpt, model, device)
    net = masker_net_for(clf, meta.image_size, cfg.masker)
    load_checkpoint_file(checkpoint_files(ckpt) / "masker.safetensors", net, meta.step)
    info: dict[str, Any] = {"checkpoint": str(ckpt), "steps": meta.step, "image_size": meta.image_size,
                            "classes": meta.classes,
            **{k: meta.run[k] for k in ("mode", "origin_fingerprint") if k in meta.run},
            "fingerprint": meta.classifier_fingerprint, "explains_copy": meta.explains_copy, "config": cfg}
    return Masker(clf, net.to(device), info=info).eval()
