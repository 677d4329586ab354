"""``.npz`` array caches: written atomically, read back only when whole and of the expected shape."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["load_npz", "save_npz_atomic"]


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` through a temporary file and one rename: a reader (or a kill)
    never sees a half-written file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path, keys: Sequence[str], n: int, item_shape: tuple[int, ...]
             ) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """Read a cache written by :func:`save_npz_atomic`, checking it is whole.

    A cache file can still be cut short or damaged (copied from elsewhere, a full disk, written by
    an older version): every array is read in full (a truncated zip member fails there), and all
    must hold ``n`` rows, the first key's rows of shape ``item_shape``.

    Returns:
        ``(arrays, None)`` from a sound file, or ``(None, "<path>: <why>")`` (one line) when the
        caller must rebuild it.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in keys}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        return None, f"{path}: unreadable ({' '.join(str(exc).split()) or type(exc).__name__})"
    first = arrays[keys[0]]
    if first.shape != (n, *item_shape) or any(len(a) != n for a in arrays.values()):
        return None, f"{path}: holds arrays of the wrong shape ({keys[0]} {first.shape}, expected {(n, *item_shape)})"
    return arrays, None
