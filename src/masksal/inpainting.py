"""A small inpainting network: the learned ("generative") infill of counterfactual saliency.

Chang et al. (ICLR 2019, FIDO) and the paper's infill ablation fill the removed region with a
generative inpainter, so that the classifier sees a plausible image instead of a grey hole. The
pretrained inpainters they used (a contextual-attention GAN, DFNet) are not available offline;
this module trains a compact U-Net on the built-in benchmark instead.

* :class:`InpaintingNet`: ``net(images, holes)`` -> the predicted full image; the input is the
  image with its holes prefilled by :func:`push_pull_fill` plus the hole channel, and the network
  starts close to that fill.
* :func:`random_holes`: training holes shaped like the masks it will fill: blobs (thresholded
  smooth noise, as a masker's masks), rectangles, and cell noise (as FIDO's sampled dropout
  masks); each may be inverted (masked-in images keep only a blob, the rest is a hole).
* :func:`train_inpainter`: masked-region reconstruction (L1 on the holes, weight 6, plus L1 on
  the visible pixels, weight 1: the weights of Liu et al. 2018, "Image Inpainting for Irregular
  Holes Using Partial Convolutions"), Adam.
* :func:`save_inpainter` / :func:`load_inpainter`: one safetensors file (architecture in its
  metadata).

Recipe (built-in benchmark, 64 px; see docs/methods.md for its time and what it buys):

    >>> from masksal.data.benchmark import BenchmarkDataset
    >>> train = BenchmarkDataset(split="train", n=8000, size=64)      # doctest: +SKIP
    >>> net = train_inpainter(train, steps=1000, batch_size=16)         # doctest: +SKIP
    >>> save_inpainter(net, "runs/inpainter_64.safetensors")            # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

FORMAT = "masksal-inpainter-v1"
HOLE_WEIGHT = 6.0
"""Weight of the L1 error on the holes against 1 on the visible pixels (Liu et al. 2018)."""


def push_pull_fill(images: Tensor, holes: Tensor) -> Tensor:
    """Fill holes by push-pull interpolation (Gortler et al. 1996): a pyramid of confidence-
    weighted averages pushed down to the coarsest level and pulled back up, so each hole pixel
    takes the colour of the nearest visible surroundings, smoothly. No parameters.

    Args:
        images: ``(B, C, H, W)``; holes: ``(B, 1, H, W)`` in [0, 1], 1 = missing.

    Returns:
        ``(B, C, H, W)``: ``images`` where visible, the interpolation where missing (an image with
        no visible pixel becomes grey 0.5).
    """
    conf = 1 - holes
    return _push_pull(images * conf, conf)


def _push_pull(weighted: Tensor, conf: Tensor) -> Tensor:
    colour = weighted / conf.clamp(min=1e-6)
    h, w = conf.shape[-2:]
    if h <= 1 and w <= 1:
        return torch.where(conf > 0, colour, torch.full_like(colour, 0.5))
    pad = (0, w % 2, 0, h % 2)  # zero confidence on the padding
    sums = F.avg_pool2d(F.pad(weighted, pad), 2) * 4
    total = F.avg_pool2d(F.pad(conf, pad), 2) * 4
    coarse_colour = sums / total.clamp(min=1e-6)
    coarse_conf = total.clamp(max=1.0)
    coarse = _push_pull(coarse_colour * coarse_conf, coarse_conf)
    up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
    return conf * colour + (1 - conf) * up


def _conv(cin: int, cout: int, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.LeakyReLU(0.2, inplace=True)]


class InpaintingNet(nn.Module):
    """Compact U-Net inpainter.

    Encoder: two 3x3 convs per level, 2x average-pool between; a bottleneck of two dilated
    convs at the coarsest scale widens the receptive field (a hole's fill needs context from
    beyond it: four levels and the dilation see the whole of a 64 px image); decoder: bilinear
    upsampling, concatenated skip, one 3x3 conv per level; a 1x1 conv over the last features and
    the input, clamped to [0, 1]. Narrow at full
    resolution, where the cost is (about 40 M multiply-adds per 64 px image with the default
    widths, 0.1 M parameters), since a CPU trains it. Any input size works (padded to a multiple
    of ``2 ** (levels - 1)``).

    Args:
        widths: channels per level, finest first.
    """

    def __init__(self, widths: Sequence[int] = (8, 16, 32, 64)) -> None:
        super().__init__()
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must list at least two positive channel counts, got {list(widths)}")
        self.widths = [int(w) for w in widths]
        self.recipe: dict[str, Any] = {}  # how it was trained (filled by train_inpainter)
        self.down = nn.ModuleList()
        cin = 4  # RGB with the holes prefilled by push-pull + the hole channel
        for w in self.widths:
            self.down.append(nn.Sequential(*_conv(cin, w), *_conv(w, w)))
            cin = w
        top = self.widths[-1]
        self.bottleneck = nn.Sequential(*_conv(top, top, dilation=2), *_conv(top, top, dilation=2))
        self.up = nn.ModuleList()
        for w_skip in reversed(self.widths[:-1]):
            self.up.append(nn.Sequential(*_conv(cin + w_skip, w_skip)))
            cin = w_skip
        # A linear head that also sees the prefilled input, initialized to copy it: the untrained
        # network is close to the push-pull fill, and training learns a correction. (A plain
        # U-Net with a sigmoid head and zeroed holes did not beat a local mean within a few hundred
        # steps: a ReLU network approximates the division of a normalized average poorly.)
        self.head = nn.Conv2d(cin + 4, 3, 1)
        assert self.head.bias is not None
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.weight[:, :cin] *= 0.1  # small, not zero: the body gets gradients from step one
            self.head.weight[:, cin:] = 0.0
            for c in range(3):
                self.head.weight[c, cin + c] = 1.0

    def forward(self, images: Tensor, holes: Tensor) -> Tensor:
        """The inpainted image.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1] (pixels under the holes are ignored).
            holes: ``(B, 1, H, W)`` in [0, 1], 1 = missing (soft values dim the pixel).

        Returns:
            ``(B, 3, H, W)`` in [0, 1]: the prediction everywhere (close to ``images`` outside
            the holes, a plausible fill inside).
        """
        if holes.dim() == 3:
            holes = holes[:, None]
        h, w = images.shape[-2:]
        k = 2 ** (len(self.widths) - 1)
        ph, pw = (-h) % k, (-w) % k
        z = torch.cat([push_pull_fill(images, holes), holes], dim=1)
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        z = z.contiguous(memory_format=torch.channels_last)  # small convs: channels-last is the fast path
        visible = z
        skips = []
        for i, block in enumerate(self.down):
            if i:
                z = F.avg_pool2d(z, 2)
            z = block(z)
            skips.append(z)
        z = self.bottleneck(z)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            z = F.interpolate(z, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            z = block(torch.cat([z, skip], dim=1))
        raw = self.head(torch.cat([z, visible], dim=1))[..., :h, :w]
        # clamp to [0, 1] with the identity's gradient, so an overshoot can still be corrected
        return (raw + (raw.clamp(0, 1) - raw).detach()).contiguous()

    @torch.no_grad()
    def inpaint(self, images: Tensor, holes: Tensor) -> Tensor:
        """``images`` with the holes replaced by the prediction (``x (1 - h) + net(x, h) h``),
        in eval mode, without gradients; shapes as :meth:`forward`."""
        was = self.training
        self.eval()
        try:
            if holes.dim() == 3:
                holes = holes[:, None]
            return images * (1 - holes) + self(images, holes) * holes
        finally:
            self.train(was)


# -- training holes -----------------------------------------------------------------------------


def _smooth_noise(n: int, size: tuple[int, int], cells: int, g: torch.Generator) -> Tensor:
    low = torch.rand(n, 1, cells, cells, generator=g)
    return F.interpolate(low, size=size, mode="bicubic", align_corners=False)


def random_holes(n: int, size: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
    """Random hole masks ``(n, 1, H, W)`` in [0, 1] (1 = missing), a third of each kind.

    * blobs: smooth noise (a 3-6 cell grid, bicubic) thresholded at a random quantile, so the
      hole covers 5-95 % of the image; a third of them have soft edges (as a sigmoid masker's);
    * rectangles: one to three axis-aligned boxes, sides 15-70 % of the image;
    * cell noise: a grid of 4 to ``H`` cells per side, each missing with a probability of
      0.1-0.9 (FIDO's sampled dropout masks look like this).

    Blobs and rectangles are inverted with probability 1/2 (the hole is everything but them).
    """
    g = generator or torch.Generator().manual_seed(0)
    h, w = size
    out = torch.empty(n, 1, h, w)
    kinds = torch.randint(0, 3, (n,), generator=g)
    for i in range(n):
        kind = int(kinds[i])
        if kind == 0:
            noise = _smooth_noise(1, size, int(torch.randint(3, 7, (1,), generator=g)), g)[0, 0]
            area = 0.05 + 0.9 * float(torch.rand(1, generator=g))
            thr = torch.quantile(noise.flatten(), 1 - area)
            if float(torch.rand(1, generator=g)) < 1 / 3:
                hole = torch.sigmoid((noise - thr) / (0.02 + 0.05 * float(torch.rand(1, generator=g))))
            else:
                hole = (noise > thr).float()
        elif kind == 1:
            hole = torch.zeros(h, w)
            for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
                bh = max(1, round(h * (0.15 + 0.55 * float(torch.rand(1, generator=g)))))
                bw = max(1, round(w * (0.15 + 0.55 * float(torch.rand(1, generator=g)))))
                y0 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
                x0 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
                hole[y0:y0 + bh, x0:x0 + bw] = 1
        else:
            cells = int(torch.randint(4, max(5, h + 1), (1,), generator=g))
            p = 0.1 + 0.8 * float(torch.rand(1, generator=g))
            grid = (torch.rand(1, 1, cells, cells, generator=g) < p).float()
            hole = F.interpolate(grid, size=size, mode="nearest")[0, 0]
        if kind != 2 and float(torch.rand(1, generator=g)) < 0.5:
            hole = 1 - hole
        out[i, 0] = hole
    return out


# -- training -------------------------------------------------------------------------------


def _as_uint8_images(images: Any) -> Tensor:
    """Training images as one ``(N, 3, H, W)`` uint8 tensor (compact: 12 KB per 64 px image)."""
    if hasattr(images, "images") and isinstance(images.images, np.ndarray):  # BenchmarkDataset
        arr = images.images
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if isinstance(images, Tensor):
        t = images
        if t.dim() == 4 and t.shape[1] != 3 and t.shape[-1] == 3:
            t = t.permute(0, 3, 1, 2)
        if t.dim() != 4 or t.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) or (N, H, W, 3), got shape {tuple(images.shape)}")
        return t.contiguous() if t.dtype == torch.uint8 else (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    try:
        n = len(images)
    except TypeError as e:
        raise ValueError("images must be a tensor, an array or a map-style dataset") from e
    items = [images[i] for i in range(n)]
    tensors = [it["image"] if isinstance(it, dict) else it for it in items]
    return _as_uint8_images(torch.stack([torch.as_tensor(t) for t in tensors]))


def train_inpainter(
    images: Any,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 2e-3,
    widths: Sequence[int] = (8, 16, 32, 64),
    seed: int = 0,
    device: str | torch.device = "cpu",
    log: Callable[[int, float], None] | None = None,
    log_every: int = 100,
) -> InpaintingNet:
    """Train an :class:`InpaintingNet` to fill :func:`random_holes` in ``images``.

    Args:
        images: the training images: a ``BenchmarkDataset`` (its uint8 array is used directly),
            a map-style dataset whose items are tensors or dicts with ``"image"``, or a tensor /
            array ``(N, 3, H, W)`` or ``(N, H, W, 3)``, float in [0, 1] or uint8.
        steps: optimizer steps (batches of random images, random flips, fresh random holes).
        batch_size: images per step.
        lr: Adam learning rate, decayed by a cosine to 1/20 of it.
        widths: the U-Net's channels per level.
        seed: seed of the weights, the batches and the holes.
        device: where to train.
        log: called as ``log(step, mean loss since the last call)`` every ``log_every`` steps.

    Returns:
        The trained network in eval mode, with ``net.recipe`` (dict) recording these settings,
        the number of images, their size and the seconds spent.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    data = _as_uint8_images(images)
    if data.shape[0] == 0:
        raise ValueError("images: got an empty training set")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    net = InpaintingNet(widths).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    size = (int(data.shape[2]), int(data.shape[3]))
    start, running = time.perf_counter(), 0.0
    net.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
        x = data[idx].float().div_(255.0)
        flip = torch.rand(batch_size, generator=g) < 0.5
        x[flip] = x[flip].flip(-1)
        holes = random_holes(batch_size, size, g)
        x, holes = x.to(dev), holes.to(dev)
        pred = net(x, holes)
        err = (pred - x).abs()
        loss = HOLE_WEIGHT * (err * holes).mean() + (err * (1 - holes)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if log is not None and step % log_every == 0:
            log(step, running / log_every)
            running = 0.0
    net.eval()
    net.recipe = {"steps": steps, "batch_size": batch_size, "lr": lr, "widths": list(net.widths), "seed": seed,
                  "images": int(data.shape[0]), "size": list(size),
                  "seconds": round(time.perf_counter() - start, 1)}
    return net


# -- files ----------------------------------------------------------------------------------


def save_inpainter(net: InpaintingNet, path: str | Path) -> Path:
    """Write ``net`` to one safetensors file; the architecture and recipe go in its metadata."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "widths": json.dumps(net.widths),
            "recipe": json.dumps(getattr(net, "recipe", {}))}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(p), metadata=meta)
    return p


def load_inpainter(path: str | Path, device: str | torch.device = "cpu") -> InpaintingNet:
    """Read an inpainter written by :func:`save_inpainter`, in eval mode on ``device``.

    Raises:
        ValueError: a file that is missing or not a masksal inpainter (one line naming it).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"inpainter weights not found: {p} (train them with masksal.inpainting.train_inpainter)")
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{p} is not a masksal inpainter file (metadata format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    net = InpaintingNet(json.loads(meta["widths"]))
    net.load_state_dict(load_file(str(p)))
    net.recipe = json.loads(meta.get("recipe", "{}"))
    return net.to(device).eval()
