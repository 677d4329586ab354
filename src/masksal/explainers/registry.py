"""Saliency methods by name: ``create_explainer("rise", classifier, n_masks=500)``.

Every method of masksal is registered, the trained masker included:
``create_explainer("masker", checkpoint="runs/demo/masker_ca")`` loads one (it brings its own
classifier). The registry is open: ``register_explainer(name, factory)`` adds a method (a factory
is any callable ``factory(classifier, **options) -> Explainer``, usually the class itself).
Command lines name a method with options as one string, ``"rise:n_masks=500,batch_size=100"`` or
``"masker:runs/demo/masker_ca"``, read by :func:`parse_method_spec`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from masksal.classifiers import Classifier, as_classifier
from masksal.devices import module_device
from masksal.explainers.base import Explainer
from masksal.explainers.baselines import CentreBaseline, RandomBaseline
from masksal.explainers.extremal_perturbation import ExtremalPerturbation
from masksal.explainers.fido import FIDO
from masksal.explainers.gradcam import GradCAM, PytorchGradCamExplainer
from masksal.explainers.gradients import GuidedBackprop, IntegratedGradients, SmoothGrad, VanillaGradients
from masksal.explainers.meaningful_perturbation import MeaningfulPerturbation
from masksal.explainers.prediction_difference import PredictionDifference
from masksal.explainers.rise import RISE
from masksal.explainers.rollout import AttentionRollout, GradientRollout

ExplainerFactory = Callable[..., Explainer]
"""``factory(classifier, **options) -> Explainer``; ``classifier`` may be ``None`` for methods
registered with ``requires_classifier=False``."""

_FACTORIES: dict[str, ExplainerFactory] = {}
_ALIASES: dict[str, str] = {}
_REQUIRES_CLASSIFIER: dict[str, bool] = {}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_explainer(name: str, factory: ExplainerFactory, aliases: Sequence[str] = (),
                       replace: bool = False, requires_classifier: bool | None = None) -> None:
    """Make a saliency method available to :func:`create_explainer` under ``name``.

    Args:
        name: the method's name (case-insensitive; ``-`` reads as ``_``).
        factory: ``factory(classifier, **options) -> Explainer``, e.g. the explainer class.
        aliases: other names for the same method.
        replace: allow replacing a method already registered under one of these names.
        requires_classifier: whether ``create_explainer`` must be given a classifier for this
            method (``None``: the factory's ``requires_classifier`` attribute, as on
            :class:`~masksal.explainers.base.Explainer` subclasses; True if it has none).

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
    if requires_classifier is None:
        requires_classifier = bool(getattr(factory, "requires_classifier", True))
    _REQUIRES_CLASSIFIER[canonical] = requires_classifier
    for a in other:
        _FACTORIES.pop(a, None)
        _ALIASES[a] = canonical


def available_explainers() -> list[str]:
    """Registered method names, sorted (aliases not included)."""
    return sorted(_FACTORIES)


def explainer_factory(name: str) -> ExplainerFactory:
    """The factory registered under ``name`` (or an alias), e.g. the class, to read its declared
    attributes such as ``TUNING_GRID``.

    Raises:
        ValueError: unknown method.
    """
    return _FACTORIES[_lookup(name)]


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


def _lookup(name: str) -> str:
    key = _normalize(name)
    key = _ALIASES.get(key, key)
    if key not in _FACTORIES:
        names = ", ".join(available_explainers() + sorted(_ALIASES))
        raise ValueError(f"unknown saliency method {name!r}; available: {names}")
    return key


def create_explainer(name: str, classifier: Classifier | nn.Module | None = None, **options: Any) -> Explainer:
    """Build the saliency method ``name``.

    Args:
        name: a name from :func:`available_explainers` or an alias (``mp``, ``ep``).
        classifier: the model to explain: a :class:`~masksal.classifiers.Classifier`, any
            ``nn.Module`` returning logits for ImageNet-normalized images, or ``None`` for methods
            that bring their own model (``masker``: its checkpoint holds the classifier) or use
            none (``centre``, ``random``).
        **options: the method's settings (see its class), e.g. ``n_masks=500`` for ``rise``, or
            ``checkpoint="runs/demo/masker_ca"`` (and ``device``) for ``masker``.

    Returns:
        An :class:`~masksal.explainers.base.Explainer`.

    Raises:
        ValueError: unknown method, an option the method does not take, or no classifier for a
            method that needs one.

    Example:
        >>> import torch, torchvision
        >>> rise = create_explainer("rise", torchvision.models.resnet18(num_classes=3), n_masks=50)
        >>> rise
        RISE(n_masks=50, grid_size=7, p=0.5, batch_size=128, seed=0)
        >>> rise.explain(torch.rand(3, 32, 32)).shape
        torch.Size([32, 32])
        >>> create_explainer("centre")
        CentreBaseline(kind='gaussian', sigma=0.25, box_fraction=0.5)
    """
    key = _lookup(name)
    factory = _FACTORIES[key]
    accepted = _accepted_options(factory)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"{key} does not take option(s) {unknown}; its options: {', '.join(accepted)}")
    if classifier is None and _REQUIRES_CLASSIFIER.get(key, True):
        raise ValueError(f"method {key!r} needs a classifier to explain: create_explainer({key!r}, classifier) "
                         "with a masksal Classifier or an nn.Module returning logits")
    return factory(classifier, **options)


def load_masker_explainer(classifier: Classifier | nn.Module | None = None, checkpoint: str | Path | None = None,
                          device: str | torch.device | None = None) -> Explainer:
    """The trained masker in ``checkpoint``, as registered under ``"masker"``.

    Args:
        classifier: ``None`` (the masker explains the classifier stored with it), or the
            classifier you mean to explain: it must have the stored classifier's weights (a
            masker only explains the classifier it was trained with) or, for a masker trained
            alongside its classifier (CA), the weights that classifier started from (the maps
            still come from the co-trained copy; metrics may score with the original).
        checkpoint: the masker's checkpoint directory.
        device: where to load it (default: the given classifier's device, else the CPU).

    Raises:
        ValueError: no checkpoint, not a masker checkpoint, or a classifier with other weights.
    """
    # Imported here: checkpoint imports masker, which imports this package's base class.
    from masksal.checkpoint import load_masker, read_meta

    if checkpoint is None or str(checkpoint).strip() == "":
        raise ValueError("method 'masker' needs its checkpoint: create_explainer('masker', checkpoint=DIR) "
                         "or the spec masker:DIR")
    path = Path(str(checkpoint))
    if classifier is not None:
        clf = as_classifier(classifier)
        meta = read_meta(path)
        if clf.fingerprint() not in (meta.classifier_fingerprint, meta.run.get("origin_fingerprint")):
            raise ValueError(f"masker {path}: trained with another classifier (weights differ) than the one given")
        if device is None:
            device = module_device(clf)
    masker = load_masker(path, device=device if device is not None else "cpu")
    masker.info.setdefault("checkpoint", str(path))
    return masker


def _split_top_level(text: str) -> list[str]:
    """Split on commas and semicolons that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in {text!r}")
        elif ch in ",;" and depth == 0:
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

    Options are separated by ``,`` or ``;`` (``;`` when the spec itself sits in a comma-separated
    list of methods). A leading value without ``=`` is the method's first option:
    ``"masker:runs/x"`` reads as ``checkpoint=runs/x``, ``"rise:500"`` as ``n_masks=500``. Values
    are read as int, float, bool (``true``/``false``), ``None`` (``none``), a list in brackets
    (``areas=[0.05,0.1]``) or else a string (quotes optional).

    Raises:
        ValueError: no name, an option without ``=`` after the first, unbalanced brackets, or a
            leading value for a method that is not registered.

    Example:
        >>> parse_method_spec("rise:n_masks=500,batch_size=100")
        ('rise', {'n_masks': 500, 'batch_size': 100})
        >>> parse_method_spec("masker:runs/demo/masker_ca")
        ('masker', {'checkpoint': 'runs/demo/masker_ca'})
        >>> parse_method_spec("ep:areas=[0.05,0.1];jitter=false")
        ('ep', {'areas': [0.05, 0.1], 'jitter': False})
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"method spec {spec!r} has no method name")
    options: dict[str, Any] = {}
    if rest.strip():
        for i, item in enumerate(_split_top_level(rest)):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq and i == 0 and key:
                options[_first_option(name, key, spec)] = _parse_value(item)
                continue
            if not eq or not key:
                raise ValueError(f"method spec {spec!r}: expected key=value, got {item.strip()!r}")
            options[key] = _parse_value(value)
    return name, options


def _first_option(name: str, value: str, spec: str) -> str:
    """The option a leading value without ``=`` stands for: the factory's first after the classifier."""
    accepted = _accepted_options(_FACTORIES[_lookup(name)])
    if not accepted:
        raise ValueError(f"method spec {spec!r}: {name} takes no positional option; write key=value")
    if value in accepted:  # "rise:n_masks": an option name without its value
        raise ValueError(f"method spec {spec!r}: expected {value}=VALUE")
    return accepted[0]


register_explainer("gradcam", GradCAM)
register_explainer("saliency", VanillaGradients)
register_explainer("ig", IntegratedGradients)
register_explainer("smoothgrad", SmoothGrad)
register_explainer("guided_backprop", GuidedBackprop)
register_explainer("rise", RISE)
register_explainer("rollout", AttentionRollout, aliases=["attention_rollout"])
register_explainer("grad_rollout", GradientRollout)
register_explainer("meaningful_perturbation", MeaningfulPerturbation, aliases=["mp"])
register_explainer("extremal_perturbation", ExtremalPerturbation, aliases=["ep"])
register_explainer("centre", CentreBaseline)
register_explainer("random", RandomBaseline)
register_explainer("pytorch_grad_cam", PytorchGradCamExplainer)
register_explainer("masker", load_masker_explainer, requires_classifier=False)
register_explainer("prediction_difference", PredictionDifference, aliases=["pda"])
register_explainer("fido", FIDO)
