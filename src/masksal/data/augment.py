"""Light augmentation for training on small photo datasets: random resized crop and flip.

Built from :mod:`torchvision.transforms.v2` (``RandomResizedCrop`` + ``RandomHorizontalFlip``).
Each draw is a pure function of ``(seed, epoch, index)``: the transforms run with torch's CPU
generator seeded from those numbers (and restored after), so a sample's augmentation does not
depend on the order samples are loaded in, on the number of loader workers, or on whether a run
was resumed. The epoch is set with ``dataset.set_epoch(e)``.

When it is on by default (see :func:`augment_by_default`): for the training split of a photo
dataset (``imagefolder:``, and :func:`~masksal.data.pairs.from_pairs` when asked) holding fewer
than :data:`SMALL_PER_CLASS` images per class on average. It is never applied to evaluation
splits, to datasets with boxes or masks, or to the built-in benchmark (whose images are drawn
fresh every epoch instead).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import v2

__all__ = ["SMALL_PER_CLASS", "Augment", "augment_by_default"]

# Below this many training images per class (on average) a photo dataset counts as small: a
# classifier or masker then sees each image many times, and crops/flips keep it from memorizing
# pixels. ImageNet (~1,280 per class) is above; CUB (30) and a hand-made folder are below.
SMALL_PER_CLASS = 1000


def augment_by_default(split: str, num_images: int, num_classes: int | None) -> bool:
    """The default rule: training split and fewer than :data:`SMALL_PER_CLASS` images per class."""
    if split != "train" or num_images == 0:
        return False
    return num_images / max(1, num_classes or 1) < SMALL_PER_CLASS


class Augment:
    """Random resized crop to ``size x size`` then a random horizontal flip.

    Args:
        size: output side ``S``.
        scale: range of the crop's area as a fraction of the image (``(0.35, 1.0)``: light, the
            object usually stays in view; torchvision's ImageNet default ``(0.08, 1.0)`` is strong).
        ratio: range of the crop's aspect ratio (torchvision's default).
        flip: probability of a horizontal flip.
        seed: base seed of every draw.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.35, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: float = 0.5, seed: int = 0) -> None:
        if int(size) < 1:
            raise ValueError(f"augmentation size must be positive, got {size!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"augmentation scale must satisfy 0 < low <= high <= 1, got {scale!r}")
        self.size, self.scale, self.ratio, self.flip, self.seed = int(size), scale, ratio, flip, int(seed)
        self._pipeline = v2.Compose([
            v2.RandomResizedCrop(self.size, scale=scale, ratio=ratio, antialias=True),
            v2.RandomHorizontalFlip(flip),
        ])

    def __repr__(self) -> str:
        return f"Augment(size={self.size}, scale={self.scale}, flip={self.flip}, seed={self.seed})"

    def draw_seed(self, epoch: int, index: int) -> int:
        """The 63-bit seed of sample ``index`` in ``epoch`` (numpy's SeedSequence mixes the three)."""
        state = np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(1, np.uint64)
        return int(state[0]) >> 1

    def __call__(self, image: Tensor, epoch: int, index: int) -> Tensor:
        """Augment one image.

        Args:
            image: ``(3, H, W)`` uint8, or float in [0, 1].
            epoch: training epoch (another epoch draws another crop).
            index: sample index in the dataset.

        Returns:
            ``(3, S, S)`` float32 in [0, 1].
        """
        # torchvision's random transforms draw from the global CPU generator: seed it for this
        # draw and restore it after, so the caller's stream is untouched and the draw depends on
        # (seed, epoch, index) only. (The generator itself, not torch.manual_seed/fork_rng, which
        # also visit every device backend and cost ~50x more.)
        generator = torch.random.default_generator
        state = generator.get_state()
        try:
            generator.manual_seed(self.draw_seed(epoch, index))
            out = self._pipeline(image)
        finally:
            generator.set_state(state)
        if out.dtype == torch.uint8:
            return out.float().div_(255.0)
        return out.float().clamp_(0.0, 1.0)
