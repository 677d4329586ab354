"""Where a backbone's taps are and how their outputs become ``(B, C, h, w)`` maps.

The masker and Grad-CAM read maps ``(B, C, h, w)``. Convolutional stages (ResNet, ConvNeXt and
EfficientNet stages) give them directly; other layers do not:

* vision transformers (timm ViT / DeiT, torchvision ``vit_b_16``) give token sequences
  ``(B, N, C)``: ``N = p + h * w``, the ``p`` prefix tokens (class, distillation, register tokens:
  first in the sequence, as timm and torchvision place them) then the patch tokens, row by row;
* Swin stages (timm, torchvision) and the layers inside a ConvNeXt block give channels-last
  maps ``(B, h, w, C)``.

:func:`to_grid` turns either into ``(B, C, h, w)``. It uses what the model declares
(:func:`token_layout`: timm's ``patch_embed`` and ``num_prefix_tokens``, torchvision's
``patch_size`` and class token, timm's ``output_fmt``) and otherwise infers the layout from the
shapes and the input size (rules in :func:`to_grid`). Anything else takes a ``reshape=`` hook on
:class:`~masksal.classifiers.Classifier`.

:func:`family_taps` and :func:`family_cam_layer` name the default masker taps and Grad-CAM layer
of the families masksal knows (ResNets, plain ViTs, models with timm's ``feature_info``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from masksal.devices import module_device

__all__ = ["MAX_PREFIX_TOKENS", "TokenLayout", "family_cam_layer", "family_taps", "find_taps", "to_grid",
           "token_grid", "token_layout", "vit_blocks"]

MAX_PREFIX_TOKENS = 16
"""Most prefix tokens (class + distillation + registers) tried when a model does not declare them."""


@dataclass(frozen=True)
class TokenLayout:
    """What a model declares about the geometry of its token and channels-last outputs.

    Attributes:
        patch_size: ``(ph, pw)`` pixels per patch token, or ``None`` if unknown.
        num_prefix_tokens: tokens before the patch tokens (class, distillation, registers), or
            ``None`` if unknown.
        ceil_grid: the last partial patch is padded (timm's ``dynamic_img_pad``): the grid is
            ``ceil(H / ph)`` rather than ``floor``.
        channels_last: the model's 4-D outputs are ``(B, h, w, C)`` (timm's ``output_fmt="NHWC"``,
            e.g. Swin); breaks the tie when a shape reads both ways.
    """

    patch_size: tuple[int, int] | None = None
    num_prefix_tokens: int | None = None
    ceil_grid: bool = False
    channels_last: bool = False


def _pair(v: object) -> tuple[int, int] | None:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, Sequence) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    return None


def _is_torchvision_vit(model: nn.Module) -> bool:
    from torchvision.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def token_layout(model: nn.Module) -> TokenLayout:
    """The :class:`TokenLayout` a timm or torchvision model declares (empty for other models)."""
    embed = getattr(model, "patch_embed", None)
    patch = _pair(getattr(embed, "patch_size", None)) if embed is not None else None
    ratio = _pair(getattr(embed, "feature_ratio", None)) if embed is not None else None
    if patch is not None and ratio is not None:  # timm's hybrid ViT: patches of a CNN stem's feature map
        patch = (patch[0] * ratio[0], patch[1] * ratio[1])
    prefix = getattr(model, "num_prefix_tokens", None)
    if _is_torchvision_vit(model):
        patch = _pair(getattr(model, "patch_size", None))
        prefix = 1  # torchvision's ViT always prepends its class token
    fmt = str(getattr(model, "output_fmt", "")).upper()
    return TokenLayout(patch_size=patch, num_prefix_tokens=int(prefix) if isinstance(prefix, int) else None,
                       ceil_grid=bool(getattr(embed, "dynamic_img_pad", False)), channels_last=fmt == "NHWC")


def _fits(h: int, w: int, image_size: tuple[int, int]) -> bool:
    """Whether an ``h x w`` grid is the image ``H x W`` seen at one stride (up to the rounding of
    a padded or strided last row / column): ``h / H == w / W`` within one cell each way."""
    height, width = image_size
    if h < 1 or w < 1 or h > height or w > width:
        return False
    return abs(w - h * width / height) < 1 and abs(h - w * height / width) < 1


def _channels_last(shape: Sequence[int], image_size: tuple[int, int], hint: bool) -> bool:
    """Whether a 4-D output ``shape`` is ``(B, h, w, C)``: the pair of dimensions that fits the
    image's aspect ratio is the grid; when both pairs fit (e.g. ``(B, 8, 8, 8)``) the model's
    declared format decides (``hint``), channels-first by default."""
    first, last = _fits(shape[2], shape[3], image_size), _fits(shape[1], shape[2], image_size)
    if first and last:
        return hint
    return last


def _divisor_grids(m: int, image_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Grids ``(h, w)`` with ``h * w == m`` that fit the image's aspect ratio."""
    return [(h, m // h) for h in range(1, m + 1) if m % h == 0 and _fits(h, m // h, image_size)]


def token_grid(n_tokens: int, image_size: tuple[int, int], layout: TokenLayout = TokenLayout()) -> tuple[int, int, int]:
    """``(p, h, w)``: the prefix tokens and the patch grid of a sequence of ``n_tokens`` tokens.

    Rules, in order:

    1. a declared patch size: the grid is ``(H // ph, W // pw)`` (``ceil`` with ``ceil_grid``;
       both are tried otherwise); it is taken when the remaining ``p = N - h * w`` tokens are the
       declared prefix, none (e.g. ``patch_embed``'s own output), or, with no declared prefix,
       at most :data:`MAX_PREFIX_TOKENS`;
    2. otherwise (token counts of another stride, no declared patch size) the grid is inferred:
       for ``p`` = the declared prefix, then 0, 1, ... :data:`MAX_PREFIX_TOKENS`, the grids of at
       least two cells with ``h * w = N - p`` and the image's aspect ratio; the first ``p`` whose
       grid divides the image exactly wins, else the first ``p`` with an approximate fit (padded
       patches).

    Raises:
        ValueError: no grid fits (the message says what was tried).
    """
    height, width = image_size
    declared = layout.num_prefix_tokens
    if layout.patch_size is not None:
        ph, pw = layout.patch_size
        ceil = (-(-height // ph), -(-width // pw))
        grids = [ceil] if layout.ceil_grid else [(height // ph, width // pw), ceil]
        for h, w in grids:
            p = n_tokens - h * w
            if h > 0 and w > 0 and (p in (0, declared) or (declared is None and 0 <= p <= MAX_PREFIX_TOKENS)):
                return p, h, w
    order = ([declared] if declared is not None else []) + list(range(min(n_tokens, MAX_PREFIX_TOKENS + 1)))
    approximate: tuple[int, int, int] | None = None
    for p in dict.fromkeys(order):  # in order, without repeats
        if not 0 <= p < n_tokens - 1:
            continue
        grids = _divisor_grids(n_tokens - p, image_size)
        exact = [(h, w) for h, w in grids if height % h == 0 and width % w == 0]
        if exact:
            return (p, *exact[0])
        if grids and approximate is None:
            approximate = (p, *grids[0])
    if approximate is not None:
        return approximate
    raise ValueError(f"cannot tell the patch grid of {n_tokens} tokens for a {height}x{width} image (tried "
                     f"patch size {layout.patch_size}, then 0-{MAX_PREFIX_TOKENS} prefix tokens and grids of the "
                     "image's aspect ratio)")


def to_grid(output: Tensor, image_size: tuple[int, int], layout: TokenLayout = TokenLayout(),
            batch: int | None = None) -> Tensor:
    """A tap's output as a ``(B, C, h, w)`` map (a view where possible, no copy).

    Args:
        output: ``(B, C, h, w)`` (returned as is), ``(B, h, w, C)`` (channels-last: permuted) or
            ``(B, N, C)`` tokens (prefix tokens dropped, patch tokens laid on their grid; see
            :func:`token_grid`). Which dimensions of a 4-D output are the grid is read from the
            shape: the pair that has the image's aspect ratio (see ``TokenLayout.channels_last``
            for the tie).
        image_size: ``(H, W)`` of the input images.
        layout: what the model declares (:func:`token_layout`).
        batch: the batch size, when known: a sequence-first ``(N, B, C)`` output (PyTorch's
            ``nn.TransformerEncoderLayer`` default) is recognized by it and transposed.

    Raises:
        ValueError: an output of another rank, or tokens with no grid that fits.
    """
    if output.dim() == 4:
        return output.permute(0, 3, 1, 2) if _channels_last(output.shape, image_size, layout.channels_last) else output
    if output.dim() == 3:
        if batch is not None and output.shape[0] != batch and output.shape[1] == batch:
            output = output.transpose(0, 1)
        b, n, c = output.shape
        p, h, w = token_grid(n, image_size, layout)
        return output[:, p:].reshape(b, h, w, c).permute(0, 3, 1, 2)
    raise ValueError(f"expected a (B, C, h, w) map, a channels-last (B, h, w, C) map or (B, N, C) tokens, got "
                     f"shape {tuple(output.shape)}")


# -- finding the stages of any model -------------------------------------------------------------


def _spatial(t: Any) -> tuple[int, int] | None:
    """``(h, w)`` of a map of the square one-image dry run, else None: ``(1, C, h, h)``, or
    channels-last ``(1, h, h, C)`` (Swin stages, the inside of ConvNeXt blocks). The batch of
    one rejects windows stacked along the batch (Swin's attention windows)."""
    if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[0] != 1:
        return None
    if t.shape[-1] == t.shape[-2] and t.shape[-1] > 1:
        return int(t.shape[-2]), int(t.shape[-1])
    if t.shape[1] == t.shape[2] and t.shape[1] > 1:
        return int(t.shape[1]), int(t.shape[2])
    return None


@torch.no_grad()
def find_taps(model: nn.Module, image_size: int = 224, count: int = 2) -> list[str]:
    """The last ``count`` spatial stages of ``model``, found by one dry run.

    Every submodule's input and output are watched during a forward pass of a blank square
    image. Outputs that are maps (``(B, C, h, w)``, or channels-last ``(B, h, w, C)`` as in Swin)
    are grouped by resolution; for each resolution
    the module that *finished last* with it stands for the stage (for a ResNet that is
    ``layer3``, not ``layer3.1.relu``: a stage's container finishes after its parts). Skipped:
    parts of a block that changes the resolution (the expansion layer inside a strided
    MobileNet block is not a stage of its own), and layers that enlarge the map (VGG's
    adaptive pooling to 7x7). The last ``count`` resolutions are returned, coarsest last.

    ResNets, ViTs and timm models with ``feature_info`` get named defaults without a dry run
    (:func:`family_taps`); this is for every other module.

    Raises:
        ValueError: fewer than ``count`` spatial stages (e.g. a vision transformer, whose blocks
            all have one resolution: :func:`masksal.taps.family_taps` names a ViT's, or name them).
    """
    from masksal.classifiers import Classifier, eval_mode  # here: classifiers imports this module

    inner = model.model if isinstance(model, Classifier) else model
    seen: dict[str, tuple[tuple[int, int] | None, tuple[int, int] | None]] = {}
    order: list[str] = []
    handles = []
    for name, module in inner.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, inputs: Any, out: Any, name: str = name) -> None:
            first = inputs[0] if isinstance(inputs, tuple) and inputs else None
            seen[name] = (_spatial(first), _spatial(out))
            if name in order:
                order.remove(name)
            order.append(name)  # completion order, last call wins
        handles.append(module.register_forward_hook(hook))
    device = module_device(inner)
    with eval_mode(inner):
        try:
            x = torch.zeros(1, 3, image_size, image_size, device=device)
            inner(model.normalize(x) if isinstance(model, Classifier) else x)
        finally:
            for h in handles:
                h.remove()

    def inside_resizing_block(name: str, out: tuple[int, int]) -> bool:
        parts = name.split(".")
        for i in range(1, len(parts)):
            a_in, a_out = seen.get(".".join(parts[:i]), (None, None))
            if a_in == out and a_out != out:
                return True
        return False

    last: dict[tuple[int, int], str] = {}
    sizes: list[tuple[int, int]] = []
    for name in order:
        res_in, res_out = seen[name]
        if res_out is None or (res_in is not None and res_out[0] > res_in[0]):
            continue
        if inside_resizing_block(name, res_out):
            continue
        last[res_out] = name
        if res_out in sizes:
            sizes.remove(res_out)
        sizes.append(res_out)
    stages = [last[r] for r in sizes]
    if len(stages) < count:
        raise ValueError(f"found {len(stages)} spatial stage(s) in the model ({stages}); a masker needs "
                         f"{count}: name the taps yourself (module names from model.named_modules())")
    return stages[-count:]


# -- defaults per family ------------------------------------------------------------------------


def vit_blocks(model: nn.Module) -> list[str]:
    """Names of a plain vision transformer's blocks in order (timm ViT / DeiT: ``blocks.i``;
    torchvision ViT: ``encoder.layers.encoder_layer_i``); empty for other models."""
    if _is_torchvision_vit(model):
        layers = model.get_submodule("encoder.layers")
        return [f"encoder.layers.{n}" for n, _ in layers.named_children()]
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and hasattr(model, "patch_embed") \
            and isinstance(getattr(model, "num_prefix_tokens", None), int):
        return [f"blocks.{i}" for i in range(len(blocks))]
    return []


def family_taps(model: nn.Module) -> list[str] | None:
    """Default masker taps for a known family, or ``None``.

    * ResNets: ``layer3``, ``layer4`` (the paper's final model);
    * plain ViTs: the outputs of the last two blocks. Every block has the same resolution, so
      depth is the only choice; the last blocks carry the most class evidence, and the paper's
      choice for CNNs (the top two stages) reads the same way;
    * models with timm's ``feature_info`` (Swin, ConvNeXt, EfficientNet...): the last two stages.
    """
    names = dict(model.named_modules())
    if "layer3" in names and "layer4" in names:
        return ["layer3", "layer4"]
    blocks = vit_blocks(model)
    if len(blocks) >= 2:
        return blocks[-2:]
    info = getattr(model, "feature_info", None)
    if info is not None:
        try:
            mods = [str(i["module"]) for i in info]
        except (TypeError, KeyError):
            return None
        if len(mods) >= 2 and all(m in names for m in mods[-2:]):
            return mods[-2:]
    return None


def family_cam_layer(model: nn.Module) -> str | None:
    """Default Grad-CAM layer for a known family, or ``None``.

    * ResNets: ``layer4``;
    * plain ViTs: the first normalization of the last block (its attention's input). Not the
      last block's output: a class-token head reads only the class token after the last block,
      so the gradient with respect to that block's patch tokens is exactly zero (the blank
      Grad-CAM maps users of ViTs report); one step earlier, the last attention carries it to
      every patch token;
    * models with timm's ``feature_info``: the last stage.
    """
    names = dict(model.named_modules())
    if "layer4" in names:
        return "layer4"
    blocks = vit_blocks(model)
    if blocks:
        for norm in ("norm1", "ln_1"):  # timm, torchvision
            if f"{blocks[-1]}.{norm}" in names:
                return f"{blocks[-1]}.{norm}"
        return blocks[-1]
    taps = family_taps(model)
    return taps[-1] if taps else None
