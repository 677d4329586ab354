"""A training run's directory: one writer at a time, a log that never repeats a step, and the
rule that a run is only resumed (or a cached stage only reused) with the recipe it started with.

A run directory holds the checkpoint (:mod:`masksal.checkpoint`), ``log.jsonl`` (one JSON line
per logged step) and, when a run ends, ``metrics.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from masksal.checkpoint import is_checkpoint, load_config_of, read_meta
from masksal.config import ExperimentConfig

LOCK = ".lock"


class RunDirBusyError(FileExistsError):
    """Another process is writing the same run directory."""


class RunLock:
    """Hold ``out/.lock`` while writing a run directory (``fcntl.flock``, released by the OS when
    the process ends, so a killed run leaves no stale lock).

    A run that fails before writing anything leaves no trace: when the lock created the
    directory and the run ends with an exception while the lock is all it holds, the directory is
    removed (a bad option or a missing weight file does not leave an empty ``--out`` behind).

    Raises:
        RunDirBusyError: on entry, when another live process holds it (the message names its pid).
    """

    def __init__(self, out: str | Path, enabled: bool = True) -> None:
        self.path = Path(out) / LOCK
        self.enabled = enabled
        self._fd: int | None = None
        self._created: Path | None = None  # the outermost folder the lock had to create

    def __enter__(self) -> RunLock:
        if not self.enabled:  # e.g. torchrun's other ranks: rank 0 writes the directory
            return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks, run without one
            return self
        missing = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        self._created = missing[-1] if missing else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirBusyError(f"{self.path.parent} is being written by another masksal process (pid {holder}): "
                                  "wait for it to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and self._created is not None and self._fd is not None:
            try:
                if [p.name for p in self.path.parent.iterdir()] == [LOCK]:
                    self.path.unlink()
                    folder = self.path.parent
                    while True:  # up to the outermost folder it created, each left empty
                        folder.rmdir()
                        if folder == self._created:
                            break
                        folder = folder.parent
            except OSError:  # something appeared meanwhile: keep it
                pass
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class RunLog:
    """``log.jsonl``: appended one line per logged step; on resume, lines after the checkpoint's
    step are dropped first (they belong to the part of the run that is recomputed)."""

    def __init__(self, path: str | Path, start_step: int, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if start_step > 0 and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if isinstance(rec, dict) and int(rec.get("step", 0)) <= start_step:
                    kept.append(line)
        self.path.write_text("".join(f"{ln}\n" for ln in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record, default=float) + "\n")

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


# -- recipes -----------------------------------------------------------------------------------

# Settings that do not change the weights a run produces: evaluation sizes, cache folders,
# loader workers, logging and checkpoint cadence; for a classifier, which layers a masker taps
# later; for a masker, the path its classifier was read from and the number of steps (a longer
# run continues a shorter one).
_NOT_RECIPE: dict[str, dict[str, tuple[str, ...]]] = {
    "classifier": {"data": ("n_val", "n_test", "cache_dir", "num_workers"), "classifier": ("taps",),
                   "classifier_train": ("log_every", "checkpoint_every")},
    "masker": {"data": ("n_val", "n_test", "cache_dir", "num_workers"), "classifier": ("weights",),
               "masker_train": ("steps", "log_every", "checkpoint_every")},
}
_RECIPE_SECTIONS = {"classifier": ("data", "classifier", "classifier_train"),
                    "masker": ("data", "classifier", "masker", "objectives", "masker_train")}
_ARCH_DEFAULTS = {"small_resnet18": {"width": 16}}


def recipe(cfg: ExperimentConfig, kind: str = "classifier") -> dict[str, dict[str, Any]]:
    """The settings of ``cfg`` that decide the weights of a trained ``kind`` (``"classifier"``
    or ``"masker"``), as ``{section: {key: value}}``."""
    d = cfg.to_dict()
    skip = _NOT_RECIPE[kind]
    out = {sec: {k: v for k, v in d[sec].items() if k not in skip.get(sec, ())} for sec in _RECIPE_SECTIONS[kind]}
    clf = out["classifier"]
    clf["kwargs"] = {**_ARCH_DEFAULTS.get(str(clf["arch"]), {}), **(clf.get("kwargs") or {})}
    return out


def recipe_difference(ckpt: str | Path, cfg: ExperimentConfig, kind: str = "classifier") -> list[str]:
    """``section.key (saved vs wanted)`` for every recipe setting where the checkpoint ``ckpt``
    was trained differently from ``cfg``; empty when ``cfg`` would train the same weights."""
    saved, wanted = recipe(load_config_of(ckpt), kind), recipe(cfg, kind)
    diff = []
    for sec in wanted:
        for k in sorted(set(saved[sec]) | set(wanted[sec])):
            if saved[sec].get(k) != wanted[sec].get(k):
                diff.append(f"{sec}.{k} ({saved[sec].get(k)!r} vs {wanted[sec].get(k)!r})")
    return diff


def check_same_recipe(ckpt: str | Path, cfg: ExperimentConfig, kind: str, remedy: str) -> None:
    """Raise if the checkpoint ``ckpt`` (when there is one) was trained with other settings than
    ``cfg`` would use: a cached stage is then neither reused nor resumed.

    Raises:
        FileExistsError: one line naming ``ckpt``, the first settings that differ, and ``remedy``.
    """
    if not is_checkpoint(ckpt):
        return
    diff = recipe_difference(ckpt, cfg, kind)
    if diff:
        raise FileExistsError(f"{ckpt} holds a {kind} trained with other settings (saved vs wanted: "
                              f"{'; '.join(diff[:4])}): {remedy}")


def start_step(out: str | Path, cfg: ExperimentConfig, kind: str, resume: bool) -> int:
    """The step a run in ``out`` starts from: 0 for a new run, the checkpoint's step to resume.

    Raises:
        FileExistsError: ``out`` holds a checkpoint and ``resume`` is False, or it was trained
            with another recipe (only the number of steps and logging settings may change).
        FileNotFoundError: ``resume`` with no checkpoint in ``out``.
    """
    out = Path(out)
    if is_checkpoint(out):
        if not resume:
            raise FileExistsError(f"{out} already holds a checkpoint: pass --resume to continue it, or choose "
                                  "another --out")
        meta = read_meta(out)
        if meta.kind != kind:
            raise FileExistsError(f"{out} holds a {meta.kind} checkpoint, not a {kind}: choose another --out")
        check_same_recipe(out, cfg, kind, "resume with the settings it started with (only the number of steps "
                          "may change), or choose another --out")
        return meta.step
    if resume:
        raise FileNotFoundError(f"{out}: nothing to resume (no checkpoint there)")
    return 0


def stage_done(ckpt: str | Path, steps: int | None = None) -> bool:
    """Whether a run directory holds a finished stage: ``steps`` reached when given, else its
    ``metrics.json`` written (a classifier run writes it when it ends)."""
    ckpt = Path(ckpt)
    if not is_checkpoint(ckpt):
        return False
    if steps is not None:
        return read_meta(ckpt).step >= steps
    return (ckpt / "metrics.json").is_file()
