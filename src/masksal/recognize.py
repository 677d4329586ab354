"""Which torchvision builder made a module: a user's ``torchvision.models.resnet18(num_classes=3)``
is saved as ``resnet18``, so that its checkpoint loads without the module."""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["torchvision_arch"]


def torchvision_arch(model: nn.Module, num_classes: int) -> str | None:
    """The torchvision model name that builds exactly this module's layout, else ``None``.

    A user's ``torchvision.models.resnet18(num_classes=3)`` is then saved as ``resnet18`` and its
    checkpoint loads without the module (``load_masker(dir)``, the command line). A candidate
    must be of the same class (builders with that return type), with the same tree of module
    types and the same parameter and buffer shapes; built on the meta device (no memory, no
    weights), once per class and class count. A subclass or an edited model stays ``"custom"``.
    """
    if not type(model).__module__.startswith("torchvision.models"):
        return None
    cls = type(model)
    own = _layout(model)
    return next((name for name, layout in _torchvision_layouts(f"{cls.__module__}.{cls.__qualname__}", num_classes)
                 if layout == own), None)


_Layout = tuple[tuple[str, ...], tuple[tuple[str, tuple[int, ...]], ...]]


def _layout(m: nn.Module) -> _Layout:
    """The module types in order and the shapes of every parameter and buffer."""
    return (tuple(type(x).__name__ for x in m.modules()),
            tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()))


@functools.lru_cache(maxsize=16)
def _torchvision_layouts(cls: str, num_classes: int) -> tuple[tuple[str, _Layout], ...]:
    """``(name, layout)`` of every torchvision classification builder whose return type is the
    class named ``cls`` (``module.qualname``)."""
    import inspect

    import torchvision

    found = []
    for name in torchvision.models.list_models(module=torchvision.models):
        builder = torchvision.models.get_model_builder(name)
        returns = inspect.signature(builder).return_annotation
        if not isinstance(returns, type) or f"{returns.__module__}.{returns.__qualname__}" != cls:
            continue
        try:
            with torch.device("meta"):
                candidate = builder(weights=None, num_classes=num_classes)
        except (TypeError, ValueError, RuntimeError):
            continue
        found.append((name, _layout(candidate)))
    return tuple(found)
