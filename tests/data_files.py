"""Tiny real-format files for the data tests (imported by tests/test_data_*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def image(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Write a random ``h x w`` RGB image (format from the suffix) and return its pixels."""
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def boxes(sample: dict[str, Any]) -> list[list[float]]:
    return [[float(v) for v in b] for b in sample["boxes"].tolist()]


def assert_one_line(exc: pytest.ExceptionInfo[BaseException], prefix: str) -> None:
    """The error message is one line starting with ``prefix`` (typically ``"<file>:<line>: "``)."""
    message = str(exc.value)
    assert "\n" not in message, message
    assert message.startswith(prefix), message


# Hand-computed: a 40 x 20 (W x H) image at S = 10, shorter side -> scale 1/2, resized 20 x 10,
# centre crop keeps x in [5, 15). A 30 x 30 image at S = 10 -> scale 1/3, no crop.
BOXES_40x20 = [[10, 4, 29, 13], [20, 0, 39, 19]]
BOXES_40x20_S10 = [[0.0, 2.0, 9.0, 6.0], [5.0, 0.0, 9.0, 9.0]]
BOX_30x30 = [3, 0, 5, 29]
BOX_30x30_S10 = [1.0, 0.0, 1.0, 9.0]
