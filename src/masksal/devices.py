"""Devices and CPU threads: one place that turns a device name into a ``torch.device``.

``resolve_device("auto")`` is CUDA when a GPU is visible, else the CPU; under ``torchrun`` a CUDA
device without an index is the process's own GPU (``cuda:LOCAL_RANK``). A device that does not
exist here is a one-line ``ValueError`` naming the option, before any work is done.
"""

from __future__ import annotations

import os

import torch
from torch import nn

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU when it has none)."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def resolve_device(name: str | torch.device, option: str = "--device") -> torch.device:
    """The ``torch.device`` for ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``...).

    Args:
        name: the device name, or a ``torch.device``.
        option: how the caller's user names this setting, for the error message.

    Raises:
        ValueError: an unknown name, or a device this machine does not have.
    """
    if isinstance(name, torch.device):
        device = name
    else:
        text = str(name).strip().lower()
        if text == "auto":
            text = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(text)
        except RuntimeError:
            raise ValueError(f"{option} {name!r}: unknown device; use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: no CUDA GPU is available on this machine; use {option} cpu "
                             "(or auto)")
        if device.index is None:
            local = os.environ.get("LOCAL_RANK")
            device = torch.device("cuda", int(local) if local is not None else torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{option} {name}: MPS is not available on this machine; use {option} cpu")
    elif device.type not in ("cpu", "cuda", "mps", "xpu", "meta"):
        raise ValueError(f"{option} {name!r}: unsupported device type; use {DEVICE_HELP}")
    return device
