"""Re-drawing a trained network's parameters, unit by unit: the randomizations of the model
parameter randomization tests (:mod:`masksal.sanity`, :mod:`masksal.mprt`).

A unit is a residual block (or a stem layer, the head) for a ResNet: the granularity of the paper's
code. Cascading randomization re-draws units cumulatively, from the top down (Adebayo et al. 2018)
or from the input up (Hedström et al. 2023); independent randomization one unit at a time. Every
generator restores the trained weights when it ends or is abandoned.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn


def parameterized_units(model: nn.Module, depth: int = 2) -> list[str]:
    """Names of the model's parameterized units, from input to output.

    A unit is a submodule at most ``depth`` dots deep that holds parameters and has no such
    submodule below it: for a ResNet with ``depth=2`` that is ``conv1, bn1, layer1.0, ...,
    layer4.1, fc`` (one residual block per unit), the granularity of the paper's code.

    Args:
        model: any module (e.g. ``classifier.model``).
        depth: how many levels of the module tree to descend.

    Returns:
        Module names in ``named_modules`` order (input to output for sequential models).
    """
    candidates = [name for name, m in model.named_modules()
                  if name and name.count(".") < depth and any(True for _ in m.parameters())]
    return [n for n in candidates if not any(o.startswith(n + ".") for o in candidates)]


@torch.no_grad()
def randomize_unit(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` at random, in place (buffers are left alone).

    Convolution kernels: Kaiming normal (fan-out), the initialization of torchvision's ResNets;
    linear weights: uniform in ``+-1/sqrt(fan_in)`` (PyTorch's default); one-dimensional
    parameters (biases, normalization scales and shifts): uniform in ``+-1/sqrt(n)``, as the
    paper's code does. Draws come from ``generator`` (on the CPU), so a seed fixes the result.
    """
    for p in module.parameters():
        if not p.is_floating_point():
            continue
        if p.dim() == 4:
            fan_out = p.shape[0] * p.shape[2] * p.shape[3]
            new = torch.randn(p.shape, generator=generator) * math.sqrt(2.0 / fan_out)
        elif p.dim() >= 2:
            bound = 1.0 / math.sqrt(max(1, p[0].numel()))
            new = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
        else:
            bound = 1.0 / math.sqrt(max(1, p.numel()))
            new = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
        p.copy_(new.to(device=p.device, dtype=p.dtype))


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def cascading_randomization(model: nn.Module, units: Sequence[str] | None = None, seed: int = 0,
                            depth: int = 2, order: str = "top_down") -> Iterator[str]:
    """Randomize ``units`` cumulatively, from the top down by default; yield each unit's name once
    it is done.

    While the caller handles the value ``u`` of step ``k``, the ``k + 1`` units randomized so far
    (from the top: ``units[-1] ... u``; with ``order="bottom_up"``: ``units[0] ... u``) are random
    and all others keep their weights. The model's original state is restored when the iteration
    ends or is abandoned.

    Args:
        model: the module to randomize in place (e.g. ``classifier.model``).
        units: unit names, input to output; default :func:`parameterized_units`.
        seed: seed of the random draws.
        depth: passed to :func:`parameterized_units` when ``units`` is None.
        order: ``"top_down"`` (Adebayo et al.) or ``"bottom_up"`` (from the input up, the order
            of the smooth MPRT, :mod:`masksal.mprt`).

    Example:
        >>> for unit in cascading_randomization(clf.model):      # doctest: +SKIP
        ...     maps = masker.mask_logits(images)            # top units random
    """
    if order not in ("top_down", "bottom_up"):
        raise ValueError(f"order must be 'top_down' or 'bottom_up', got {order!r}")
    names = list(units) if units is not None else parameterized_units(model, depth)
    original = _snapshot(model)
    g = torch.Generator().manual_seed(seed)
    try:
        for name in (reversed(names) if order == "top_down" else names):
            randomize_unit(model.get_submodule(name), g)
            yield name
    finally:
        model.load_state_dict(original)


def independent_randomization(model: nn.Module, units: Sequence[str] | None = None, seed: int = 0,
                              depth: int = 2) -> Iterator[str]:
    """Randomize one unit at a time, from the top down; yield its name while it alone is random.

    Each unit gets its trained weights back before the next one is randomized, and the whole
    model is restored when the iteration ends or is abandoned. Arguments as
    :func:`cascading_randomization`.
    """
    names = list(units) if units is not None else parameterized_units(model, depth)
    original = _snapshot(model)
    g = torch.Generator().manual_seed(seed)
    try:
        for name in reversed(names):
            unit = model.get_submodule(name)
            kept = _snapshot(unit)
            randomize_unit(unit, g)
            yield name
            unit.load_state_dict(kept)
    finally:
        model.load_state_dict(original)
