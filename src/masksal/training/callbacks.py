"""Callbacks for the training loops: TensorBoard logging (``log.jsonl`` stays the default log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Human names of the logged terms, shared with the report's plots.
GROUPS = {"loss": "loss", "accuracy": "accuracy", "mask": "mask", "lr": "learning rate"}


class TensorBoardLogger:
    """Write every logged record to TensorBoard, and a grid of images and masks every ``images_every`` steps.

    Scalars go under ``loss/`` (objective terms, classifier losses), ``accuracy/`` (clean,
    masked-in, masked-out) and ``mask/`` (mask mean); images under ``masks/``. Pass it in
    ``callbacks=[...]`` of :func:`~masksal.training.fit_masker` / ``train_masker``, or use
    ``masksal train --tensorboard DIR``; view with ``tensorboard --logdir DIR``.

    Args:
        log_dir: the TensorBoard run directory.
        images_every: steps between image grids (0: none).

    Raises:
        ImportError: the ``tensorboard`` package is missing (``pip install 'masksal[logging]'``).
    """

    def __init__(self, log_dir: str | Path, images_every: int = 100) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs the tensorboard package: pip install tensorboard "
                              "(or pip install 'masksal[logging]')") from None
        self.writer = SummaryWriter(str(log_dir))
        self.images_every = images_every
        self._last_images = -1

    @staticmethod
    def tag(key: str) -> str:
        if key.endswith("_accuracy"):
            return f"accuracy/{key.removesuffix('_accuracy')}"
        if key in ("mask_mean",):
            return "mask/mean"
        if key == "lr":
            return "lr"
        if key == "time":
            return "time"
        return f"loss/{key}"

    def __call__(self, step: int, record: dict[str, float], view: dict[str, Any]) -> None:
        for k, v in record.items():
            self.writer.add_scalar(self.tag(k), v, step)
        masks = view.get("masks")
        images = view.get("images")
        if (self.images_every and masks is not None and images is not None
                and (self._last_images < 0 or step - self._last_images >= self.images_every)):
            import torch
            from torchvision.utils import make_grid

            m = masks[:8].float().cpu().clamp(0, 1)[:, None].expand(-1, 3, -1, -1)
            x = images[:8].float().cpu().clamp(0, 1)
            grid = make_grid(torch.cat([x, m, x * m]), nrow=len(x))
            self.writer.add_image("masks/images, masks, masked-in", grid, step)
            self._last_images = step
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
