"""Run a function in several local CPU processes joined in a ``gloo`` group (tests, benchmarks).

``torchrun`` does the same for real runs; this starts the processes from Python so a test can
compare a 2-process run with a 1-process one.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_worker(index: int, fn: Callable[..., Any], args: tuple[Any, ...], world: int, port: int,
                  threads: int, results: str) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=world)
    try:
        out = fn(*args)
    finally:
        dist.destroy_process_group()
    with open(Path(results) / f"{index}.pkl", "wb") as f:
        pickle.dump(out, f)


def launch_local(fn: Callable[..., Any], world: int, *args: Any, threads: int | None = None) -> list[Any]:
    """Run ``fn(*args)`` in ``world`` new CPU processes joined in a ``gloo`` group on 127.0.0.1.

    For tests and benchmarks on one machine (``torchrun`` does the same for real runs). ``fn``
    must be importable (a module-level function) and its arguments and result picklable.

    Args:
        fn: the function every process runs once the group is up.
        world: number of processes.
        *args: arguments of ``fn``.
        threads: torch threads per process; default: the machine's cores divided among them.

    Returns:
        ``fn``'s results, by rank.
    """
    import torch.multiprocessing as mp

    threads = threads or max(1, (os.cpu_count() or 1) // world)
    with tempfile.TemporaryDirectory(prefix="masksal-launch-") as tmp:
        mp.start_processes(_local_worker, args=(fn, args, world, _free_port(), threads, tmp), nprocs=world,
                           join=True, start_method="spawn")
        results = []
        for i in range(world):
            with open(Path(tmp) / f"{i}.pkl", "rb") as f:
                results.append(pickle.load(f))  # written just above by our own child processes
    return results


