"""Tests of per-sample errors (masksal.data.base) and their collation (masksal.types.collate).

One unreadable file (missing, truncated, not an image; or a broken mask) never ends a run: the
dataset returns an error sample, ``collate`` leaves it out and names it in ``Batch.skipped``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import image, write
from PIL import Image
from torch.utils.data import DataLoader

from masksal.data import WSOLDataset, collate_skip_errors, error_sample, is_error, load_dataset
from masksal.types import collate


def _folder(tmp_path: Path) -> tuple[Path, Path]:
    image(tmp_path / "a.png", 12, 16)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    image(tmp_path / "c.png", 16, 12, seed=3)
    return tmp_path, bad


def test_collate_leaves_out_error_samples_and_names_them(tmp_path: Path) -> None:
    root, bad = _folder(tmp_path)
    ds = load_dataset(f"folder:{root}", size=8)
    assert ds[1] == {"error": str(ds[1]["error"]), "id": "b.jpg"} and is_error(ds[1])
    assert str(ds[1]["error"]).startswith(f"{bad}: ") and "\n" not in ds[1]["error"]
    (batch,) = list(DataLoader(ds, batch_size=3, collate_fn=collate))
    assert len(batch) == 2 and batch.ids == ["a.png", "c.png"]
    assert batch.images.shape == (2, 3, 8, 8) and batch.labels.tolist() == [-1, -1]
    assert batch.skipped == [ds[1]["error"]]
    assert batch.to("cpu").skipped == batch.skipped
    # A batch of bad samples only is empty, and still says what was left out.
    empty = collate([ds[1], error_sample("x", "/data/x.png: missing\nfile")])
    assert len(empty) == 0 and empty.images.shape == (0, 3, 0, 0) and empty.labels.shape == (0,)
    assert empty.skipped == [ds[1]["error"], "/data/x.png: missing file"]
    assert collate([ds[0]]).skipped == []
    # The older pair form stays available.
    batch2, errors = collate_skip_errors([ds[0], ds[1]])
    assert batch2 is not None and len(batch2) == 1 and errors == [ds[1]["error"]]
    assert collate_skip_errors([ds[1]]) == (None, [ds[1]["error"]])


def _wsol(tmp_path: Path) -> tuple[Path, Path]:
    meta, data = tmp_path / "meta", tmp_path / "data"
    names = [f"{i}.png" for i in range(6)]
    for i, name in enumerate(names):
        image(data / name, 10, 10, seed=i)
        mask = np.zeros((10, 10), bool)
        mask[2:5, 3:7] = True
        Image.fromarray(mask).save(data / f"m{name}")
    write(meta / "image_ids.txt", "".join(f"{n}\n" for n in names))
    write(meta / "class_labels.txt", "".join(f"{n},{i % 2}\n" for i, n in enumerate(names)))
    write(meta / "localization.txt", "".join(f"{n},m{n},\n" for n in names))
    return meta, data


def test_every_bad_file_is_counted_and_named_and_the_rest_scored(tmp_path: Path) -> None:
    meta, data = _wsol(tmp_path)
    (data / "1.png").unlink()  # listed but missing
    full = (data / "3.png").read_bytes()
    (data / "3.png").write_bytes(full[: len(full) // 2])  # truncated
    (data / "m4.png").write_bytes(b"broken")  # a broken mask
    ds = WSOLDataset(meta, data, size=8)
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate))
    assert [len(b) for b in batches] == [2, 1]
    assert [i for b in batches for i in b.ids] == ["0.png", "2.png", "5.png"]
    skipped = [m for b in batches for m in b.skipped]
    assert len(skipped) == 3
    for message, name in zip(skipped, ["1.png", "3.png", "m4.png"], strict=True):
        assert message.startswith(f"{data / name}: ") and "\n" not in message, message
    assert all(b.masks is not None for b in batches if len(b))


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_training_images_never_end_the_epoch(tmp_path: Path, workers: int) -> None:
    for c in ("cat", "dog"):
        for i in range(3):
            image(tmp_path / c / f"{i}.png", 12, 12, seed=i)
    ds = load_dataset(f"imagefolder:{tmp_path}", split="all", size=8, augment=False)
    (tmp_path / "dog/1.png").unlink()  # removed after the listing, as on a flaky disk
    (tmp_path / "cat/2.png").write_bytes(b"")
    loader = DataLoader(ds, batch_size=2, collate_fn=collate, num_workers=workers)
    seen = skipped = 0
    for batch in loader:
        seen += len(batch)
        skipped += len(batch.skipped)
        assert batch.images.shape[1:] == (3, 8, 8) or len(batch) == 0
        assert torch.isfinite(batch.images).all()
    assert (seen, skipped) == (4, 2)
