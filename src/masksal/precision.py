"""How a run computes on its device, apart from what it trains: mixed precision and ``torch.compile``.

:class:`RunOptions` is kept out of the experiment config (it changes speed, not the recipe) and
recorded in the checkpoint's ``meta.json`` (``run``) next to the world size and global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

AMP_MODES = ("auto", "off", "bf16", "fp16")



@dataclass
class RunOptions:
    """How a training run computes, not what it trains (kept out of the experiment config).

    Attributes:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:K"`` (see
            :func:`masksal.devices.resolve_device`).
        amp: automatic mixed precision: ``"auto"`` (bf16 on a GPU that supports it, else fp16
            with loss scaling; off on CPU), ``"off"``, ``"bf16"`` or ``"fp16"``.
        compile: ``torch.compile`` the masker, and the classifier where it runs one plain
            forward per step (``train-classifier``; the masked images in FIX mode). The forward
            that reads the taps stays eager (a compiled graph would not run their hooks), and so
            does the classifier in CA / pool mode, whose BatchNorm updates would otherwise break
            the backward pass of that eager forward.
        sync_batchnorm: under a process group, BatchNorm statistics over the global batch
            (:func:`convert_sync_batchnorm`), so the run matches a single-process one.
    """

    device: str = "auto"
    amp: str = "auto"
    compile: bool = False
    sync_batchnorm: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")


class MixedPrecision:
    """Autocast and loss scaling for one device; every method is the identity when it is off.

    Args:
        mode: one of :data:`AMP_MODES` (see :class:`RunOptions`).
        device: the training device.
    """

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
        self.device_type = device.type
        self.dtype: torch.dtype | None = None
        if mode == "bf16" or (mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
            self.dtype = torch.bfloat16
        elif mode == "fp16" or (mode == "auto" and device.type == "cuda"):
            self.dtype = torch.float16
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        """``"off"``, ``"bf16"`` or ``"fp16"``."""
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> torch.autocast:
        """Context manager for forward passes."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        """``loss.backward(**kwargs)``, scaled when fp16."""
        self.scaler.scale(loss).backward(**kwargs)

    def step(self, opt: torch.optim.Optimizer, clip: tuple[Iterable[Tensor], float] | None = None) -> None:
        """Unscale, optionally clip ``(parameters, max_norm)``, and step (skipped on inf/NaN in fp16)."""
        if clip is not None:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(list(clip[0]), clip[1])
        self.scaler.step(opt)

    def update(self) -> None:
        """Adjust the loss scale once per iteration, after every optimizer stepped."""
        self.scaler.update()


def compiled(module: nn.Module, enabled: bool) -> Callable[..., Any]:
    """``torch.compile(module)`` when ``enabled``, else ``module`` (shares its parameters)."""
    return torch.compile(module) if enabled else module
