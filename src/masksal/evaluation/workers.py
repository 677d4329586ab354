"""Metric updates in worker processes, beside the model instead of after it.

The metrics that need no classifier (LE / OM / F1, MaxBoxAcc, PxAP, the pointing game) are plain
CPU work on the maps. With ``workers > 0`` each batch's maps go to one of ``workers`` processes
(round robin) that update their own copies of those accumulators, while the main process explains
the next batch; at the end the copies are merged into the main process's accumulators (they are
sums, so the result is the same as one process updating them all). The metrics that run the
classifier (SM, deletion / insertion, ROAD) stay in the main process, next to the model.

Workers are started with ``spawn`` (a forked child of a process running OpenMP threads can hang).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Mapping
from typing import Any

import torch

from masksal.metrics.base import Metric
from masksal.types import Batch

MAP_ONLY = ("le_om_f1", "maxboxacc", "pxap", "pointing_game")
"""The metrics a worker can compute: they read maps, boxes, masks and labels, never the model."""


def _work(inbox: Any, outbox: Any, metrics: dict[str, Metric], threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        while True:
            item = inbox.get()
            if item is None:
                break
            maps, batch, predictions = item
            for metric in metrics.values():
                if getattr(metric, "takes_predictions", False):
                    metric.update(maps, batch, predictions=predictions)  # type: ignore[call-arg]
                else:
                    metric.update(maps, batch)
        outbox.put(("done", metrics))
    except BaseException as e:  # noqa: BLE001 - reported to the main process, which raises it
        outbox.put(("error", f"{type(e).__name__}: {e}"))


class MetricWorkers:
    """``workers`` processes updating copies of ``metrics`` (see the module's docstring).

    Use as a context manager: ``submit`` each batch's maps, then ``collect`` merges the workers'
    accumulators into ``metrics`` (the objects given here, updated in place).
    """

    def __init__(self, metrics: Mapping[str, Metric], workers: int, threads: int = 1) -> None:
        self.metrics = dict(metrics)
        ctx = mp.get_context("spawn")
        self._outbox = ctx.Queue()
        self._inboxes = [ctx.Queue(maxsize=4) for _ in range(workers)]
        # Each worker starts from an empty copy of every accumulator.
        blank = {k: _blank(m) for k, m in self.metrics.items()}
        self._procs = [ctx.Process(target=_work, args=(q, self._outbox, blank, threads), daemon=True)
                       for q in self._inboxes]
        for p in self._procs:
            p.start()
        self._next = 0
        self._collected = False

    def submit(self, maps: torch.Tensor, batch: Batch, predictions: torch.Tensor) -> None:
        """Send one batch (moved to the CPU) to the next worker."""
        # These metrics never read pixels, only the images' shape: a stand-in of one stored value.
        shape = tuple(batch.images.shape)
        cpu = Batch(images=torch.zeros(1, 1, 1, 1).expand(*shape), labels=batch.labels.cpu(),
                    boxes=[b.cpu() for b in batch.boxes],
                    masks=None if batch.masks is None else batch.masks.cpu(), ids=list(batch.ids))
        self._put(self._inboxes[self._next], (maps.detach().float().cpu(), cpu, predictions.cpu()))
        self._next = (self._next + 1) % len(self._inboxes)

    def _put(self, q: Any, item: Any) -> None:
        while True:
            try:
                q.put(item, timeout=1.0)
                return
            except queue.Full:
                self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        try:
            status, payload = self._outbox.get_nowait()
        except queue.Empty:
            if any(not p.is_alive() for p in self._procs):
                raise RuntimeError("a metric worker process died") from None
            return
        if status == "error":
            raise RuntimeError(f"a metric worker failed: {payload}")
        self._outbox.put((status, payload))  # a finished worker's result: keep it for collect()

    def collect(self) -> None:
        """Wait for every worker and merge their accumulators into ``self.metrics``."""
        for q in self._inboxes:
            q.put(None)
        for _ in self._procs:
            status, payload = self._outbox.get()
            if status == "error":
                raise RuntimeError(f"a metric worker failed: {payload}")
            for k, m in payload.items():
                self.metrics[k].merge(m)
        self._collected = True

    def close(self) -> None:
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()

    def __enter__(self) -> MetricWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blank(metric: Metric) -> Metric:
    """An empty copy of ``metric`` (same settings, no state)."""
    import copy

    m = copy.copy(metric)
    m.reset()
    return m
