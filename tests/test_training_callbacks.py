"""Callbacks of the training loops: plain functions and TensorBoard."""

from __future__ import annotations

import pytest
import torch

from masksal.config import load_config
from masksal.training import TensorBoardLogger, train_masker

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tensorboard_gets_every_term_and_a_mask_grid(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from masksal.training import train_classifier

    tiny = ["data.image_size=32", "data.n_train=48", "data.n_test=8", "data.families=[digits]", "data.cache_dir=null",
            "classifier.kwargs={width: 8}", "classifier_train.epochs=1", "classifier_train.batch_size=16",
            "masker_train.batch_size=8", "masker_train.steps=4", "masker_train.log_every=2", "masker.hidden=8"]
    train_classifier(load_config(None, tiny), tmp_path / "c", progress=False)
    seen: list[tuple[int, dict[str, float]]] = []
    logger = TensorBoardLogger(tmp_path / "tb", images_every=2)
    train_masker(load_config(None, [*tiny, f"classifier.weights={tmp_path / 'c'}"]), tmp_path / "m", progress=False,
                 callbacks=[logger, lambda step, rec: seen.append((step, rec))])
    logger.close()
    assert [s for s, _ in seen] == [2, 4]  # a plain (step, record) function works next to it
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/masked_in_ce", "loss/masked_out_entropy", "loss/area", "loss/total", "mask/mean",
            "accuracy/clean", "accuracy/masked_in", "accuracy/masked_out"} <= scalars
    assert [e.step for e in events.Scalars("loss/total")] == [2, 4]
    grids = events.Tags()["images"]
    assert grids and events.Images(grids[0])[0].width > 0  # images, masks and masked-in images
    assert torch.isfinite(torch.tensor([e.value for e in events.Scalars("loss/total")])).all()
