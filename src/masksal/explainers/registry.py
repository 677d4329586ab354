"""Saliency methods by name: ``create_explainer("rise", classifier, n_masks=500)``.

The registry is open: ``register_explainer(name, factory)`` adds a method (a factory is any
callable ``factory(classifier, **options) -> Explainer``, usually the class itself).
Command lines name a method with options as one string, ``"rise:n_masks=500,batch_size=100"``,
read by :func:`parse_method_spec`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from masksal.classifiers import Classifier
from masksal.explainers.base import Explainer
from masksal.explainers.baselines import CentreBaseline, RandomBaseline
from masksal.explainers.extremal_perturbation import ExtremalPerturbation
from masksal.explainers.fido import FIDO
from masksal.explainers.gradcam import GradCAM, PytorchGradCamExplainer
from masksal.explainers.gradients import GuidedBackprop, IntegratedGradients, SmoothGrad, VanillaGradients
from masksal.explainers.meaningful_perturbation import MeaningfulPerturbation
from masksal.explainers.prediction_difference import PredictionDifference
from masksal.explainers.rise import RISE

ExplainerFactory = Callable[..., Explainer]
"""``factory(classifier, **options) -> Explainer``."""

_FACTORIES: dict[str, ExplainerFactory] = {}
_ALIASES: dict[str, str] = {}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_explainer(name: str, factory: ExplainerFactory, aliases: Sequence[str] = (),
                       replace: bool = False) -> None:
    """Make a saliency method available to :func:`create_explainer` under ``name``.

    Args:
        name: the method's name (case-insensitive; ``-`` reads as ``_``).
        factory: ``factory(classifier, **options) -> Explainer``, e.g. the explainer class.
        aliases: other names for the same method.
        replace: allow replacing a method already registered under one of these names.

    Raises:
        ValueError: a name is taken and ``replace`` is False.
    """
    canonical = _normalize(name)
    other = [_normalize(a) for a in aliases]
    if not replace:
        taken = [n for n in [canonical, *other] if n in _FACTORIES or n in _ALIASES]
        if taken:
            raise ValueError(f"explainer name(s) {taken} already registered (pass replace=True)")
    _ALIASES.pop(canonical, None)
    _FACTORIES[canonical] = factory
    for a in other:
        _FACTORIES.pop(a, None)
        _ALIASES[a] = canonical


def available_explainers() -> list[str]:
    """Registered method names, sorted (aliases not included)."""
    return sorted(_FACTORIES)


def _accepted_options(factory: ExplainerFactory) -> list[str] | None:
    """Option names the factory takes after the classifier, or None if it takes ``**kwargs``."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params[1:]
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def create_explainer(name: str, classifier: Classifier, **options: Any) -> Explainer:
    """Build the saliency method ``name`` for ``classifier``.

    Args:
        name: a name from :func:`available_explainers` or an alias (``mp``, ``ep``).
        classifier: the model to explain.
        **options: the method's settings (see its class), e.g. ``n_masks=500`` for ``rise``.

    Returns:
        An :class:`~masksal.explainers.base.Explainer`.

    Raises:
        ValueError: unknown method, or an option the method does not take.
    """
    key = _normalize(name)
    key = _ALIASES.get(key, key)
    if key not in _FACTORIES:
        names = ", ".join(available_explainers() + sorted(_ALIASES))
        raise ValueError(f"unknown saliency method {name!r}; available: {names}")
    factory = _FACTORIES[key]
    accepted = _accepted_options(factory)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"{key} does not take option(s) {unknown}; its options: {', '.join(accepted)}")
    return factory(classifier, **options)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in {text!r}")
    parts.append(text[start:])
    return parts


def _parse_value(text: str) -> Any:
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [_parse_value(v) for v in _split_top_level(inner)] if inner else []
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    return t


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Read ``"name:key=value,key=value"`` into ``(name, options)``.

    Values are read as int, float, bool (``true``/``false``), ``None`` (``none``), a list in
    brackets (``areas=[0.05,0.1]``) or else a string (quotes optional).

    Example:
        >>> parse_method_spec("rise:n_masks=500,batch_size=100")
        ('rise', {'n_masks': 500, 'batch_size': 100})
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"method spec {spec!r} has no method name")
    options: dict[str, Any] = {}
    if rest.strip():
        for item in _split_top_level(rest):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValueError(f"method spec {spec!r}: expected key=value, got {item.strip()!r}")
            options[key] = _parse_value(value)
    return name, options


register_explainer("gradcam", GradCAM)
register_explainer("saliency", VanillaGradients)
register_explainer("ig", IntegratedGradients)
register_explainer("smoothgrad", SmoothGrad)
register_explainer("guided_backprop", GuidedBackprop)
register_explainer("rise", RISE)
register_explainer("meaningful_perturbation", MeaningfulPerturbation, aliases=["mp"])
register_explainer("extremal_perturbation", ExtremalPerturbation, aliases=["ep"])
register_explainer("centre", CentreBaseline)
register_explainer("random", RandomBaseline)
register_explainer("pytorch_grad_cam", PytorchGradCamExplainer)
register_explainer("prediction_difference", PredictionDifference, aliases=["pda"])
register_explainer("fido", FIDO)
