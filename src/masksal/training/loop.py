"""The loop both trainings share: steps, progress bar, log, callbacks, checkpoints, interrupts,
and a stop when training diverges.

A training is an object with ``step(batch, step) -> record`` (the numbers of that step) and the
means to save itself; :func:`run_steps` drives it from ``start`` to ``total``. Every
``log_every`` steps the record (averaged over processes under torchrun) goes to the log and to
the callbacks; every ``checkpoint_every`` steps, on Ctrl-C and at the end, ``save(step)`` writes a
checkpoint. A step whose loss terms are not finite stops the run with :class:`DivergedError`
before anything is saved, so the last checkpoint on disk is the last finite one.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from masksal.distributed import all_reduce_mean, backend, get_world_size, is_main_process
from masksal.precision import MixedPrecision, RunOptions
from masksal.rundir import RunLog
from masksal.types import Batch


class DivergedError(ValueError):
    """Training produced a non-finite loss or weights."""


class Callback(Protocol):
    """``callback(step, record)`` or ``callback(step, record, view)``, called every ``log_every``
    steps; ``view`` holds the step's ``images`` and ``masks`` (the first 16, detached) for
    callbacks that draw them (:class:`masksal.training.TensorBoardLogger`)."""

    def __call__(self, step: int, record: dict[str, float], *args: Any) -> None: ...


_NAMED_BAD = 20  # unreadable samples named on the terminal (all are counted)


def _takes_view(cb: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(cb).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 3


class Training(Protocol):
    def step(self, batch: Batch, step: int) -> dict[str, float]: ...

    def view(self) -> dict[str, Any]: ...


def describe_run(desc: str, run: RunOptions, amp: MixedPrecision, global_batch: int, lrs: dict[str, float],
                 progress: bool) -> dict[str, Any]:
    """What a run computes with, for ``meta.json``; rank 0 prints it as one line when ``progress``."""
    n = get_world_size()
    info: dict[str, Any] = {"world_size": n, "backend": backend(), "global_batch_size": global_batch,
                            "per_process_batch_size": global_batch // n, **lrs, "amp": amp.name,
                            "compile": run.compile, "sync_batchnorm": run.sync_batchnorm and n > 1}
    if progress and is_main_process():
        procs = f"{n} processes ({info['backend']})" if n > 1 else "1 process"
        lr = ", ".join(f"{v:g}" if k == "lr" else f"{k.removesuffix('_lr')} {v:g}" for k, v in lrs.items())
        tqdm.write(f"{desc}: {procs}, global batch {global_batch} ({n} x {global_batch // n}), learning rate {lr}, "
                   f"amp {amp.name}, sync BatchNorm {'on' if info['sync_batchnorm'] else 'off'}, "
                   f"compile {'on' if run.compile else 'off'}", file=sys.stderr)
    return info


def check_finite(record: dict[str, float], step: int, where: str) -> None:
    """Raise :class:`DivergedError` naming the first non-finite term of ``record``."""
    bad = [k for k, v in record.items() if not math.isfinite(v)]
    if bad:
        raise DivergedError(f"training diverged at step {step}: {bad[0]} = {record[bad[0]]} (lower the learning "
                            f"rate?); {where}")


def run_steps(
    training: Training,
    batches: Iterable[Batch],
    *,
    start: int,
    total: int,
    log_every: int,
    checkpoint_every: int,
    desc: str,
    progress: bool = True,
    log: RunLog | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
    save: Callable[[int], None] | None = None,
    postfix: Sequence[str] = (),
) -> dict[str, float]:
    """Run steps ``start .. total - 1`` of ``training``; returns the last logged record.

    Args:
        batches: the batches of those steps, in order.
        log: where logged records go (``None``: nowhere but the callbacks).
        callbacks: see :class:`Callback`.
        save: ``save(step)`` writes a checkpoint (``None``: an in-memory run).
        postfix: record keys shown on the progress bar.

    Raises:
        DivergedError: a non-finite loss term (nothing is saved for that step).
        KeyboardInterrupt: after saving the last finished step.
    """
    t0 = time.time()
    step = start
    last: dict[str, float] = {}
    takes_view = [_takes_view(cb) for cb in callbacks]
    bad = 0  # reads of unreadable samples
    named: set[str] = set()  # the distinct ones already named
    kept = "nothing was saved" if save is None else "the last finite checkpoint is kept"
    bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not (progress and is_main_process()),
               dynamic_ncols=True, file=sys.stderr)
    try:
        for batch in batches:
            bad += len(batch.skipped)
            for message in batch.skipped:  # each unreadable file named once, the first 20 of them
                if message not in named and len(named) < _NAMED_BAD:
                    named.add(message)
                    more = " (no more are named; the log's bad_samples counts every read)" \
                        if len(named) == _NAMED_BAD else ""
                    tqdm.write(f"skipped unreadable sample: {message}{more}", file=sys.stderr)
            if len(batch) == 0:  # every sample of this step was unreadable: the step does nothing
                step += 1
                bar.update(1)
                continue
            record = training.step(batch, step)
            check_finite(record, step + 1, kept)
            record["bad_samples"] = float(bad)
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == total:
                record = all_reduce_mean(record)
                last = record
                if log is not None:
                    log.write({"step": step, **record, "time": time.time() - t0})
                shown = {k.replace("masked_", ""): f"{v:.3g}" for k, v in record.items() if k in postfix}
                if shown:
                    bar.set_postfix(shown)
                view = training.view() if any(takes_view) else {}
                for cb, wants in zip(callbacks, takes_view, strict=True):
                    cb(step, record, view) if wants else cb(step, record)
            if save is not None and step % checkpoint_every == 0 and step < total:
                save(step)
    except KeyboardInterrupt:
        bar.close()
        if save is not None:
            save(step)
        raise
    bar.close()
    if save is not None:
        save(step)
    return last
