"""The skeleton every saliency method in masksal follows.

A method is a subclass of :class:`Explainer`. The public call, ``explain(images, targets=None)``,
is the same for all of them and does the chores once: it accepts tensors, PIL images or NumPy
arrays (one image or a batch), checks that they are pixel values in ``[0, 1]``, moves them to the
model's device, puts the model in eval mode (restoring every submodule's own mode afterwards) and
turns ``targets`` into one class per image. The subclass implements only its own math in
``_maps(images, targets)``.

``explain_with_logits`` returns the classifier's logits on the clean images as well: methods that
run the classifier on them anyway (the masker, Grad-CAM, the top-1 forward pass of RISE...) hand
back the logits of that pass, so an evaluation loop needs no second forward pass for the top-1
prediction.

Methods that ignore the model (the centre and random baselines) may be built without one
(``classifier=None``); their ``explain_with_logits`` then returns ``logits=None``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from masksal.classifiers import Classifier, as_classifier, eval_mode
from masksal.devices import module_device

if TYPE_CHECKING:
    from PIL import Image

ImageLike: TypeAlias = "Tensor | np.ndarray | Image.Image"
"""One image ``(3, H, W)`` / ``(H, W, 3)``, or a batch ``(B, 3, H, W)``, float in [0, 1] or uint8."""
Images: TypeAlias = "ImageLike | Sequence[ImageLike]"
Targets: TypeAlias = "Tensor | int | Sequence[int] | None"
"""One class index for the whole batch, one per image, or ``None`` for each image's top-1 class."""

RANGE_TOLERANCE = 0.02
"""How far outside [0, 1] float pixels may stray (resampling overshoot) before we refuse them."""


@dataclass
class Explanation:
    """What an explainer computed for a batch.

    Attributes:
        maps: ``(B, H, W)`` float32 saliency maps at the images' resolution, larger = more salient.
        logits: ``(B, C)`` the classifier's logits on the clean images when the method computed
            them on its way (``None`` otherwise).
    """

    maps: Tensor
    logits: Tensor | None = None


@runtime_checkable
class SupportsExplain(Protocol):
    """Anything with ``explain(images, targets) -> (B, H, W) maps``: what evaluation needs."""

    @property
    def name(self) -> str: ...

    def explain(self, images: Tensor, targets: Tensor | None = None) -> Tensor: ...


class Explainer(ABC):
    """Base class of every saliency method.

    Args:
        classifier: the model to explain: a :class:`~masksal.classifiers.Classifier`, or any
            ``nn.Module`` returning logits for ImageNet-normalized images (it is wrapped with
            :func:`~masksal.classifiers.as_classifier`; wrap it yourself to give another
            normalization). ``None`` only for methods that ignore the model
            (``requires_classifier = False``).

    Subclasses set ``name``, implement ``_maps`` and, if they need autograd, set
    ``needs_grad = True`` (``_maps`` then runs with gradients enabled; otherwise under
    ``torch.no_grad()``, which the method may re-enable locally). A method that runs the
    classifier subclasses :class:`ClassifierExplainer`, where ``classifier`` is never ``None``.

    Raises:
        ValueError: ``classifier`` is ``None`` for a method that needs one, or not a module.
    """

    name: str = "explainer"
    """The method's name in reports (an instance may carry its own, e.g. ``masker:masker_ca``)."""
    needs_grad: ClassVar[bool] = False
    requires_classifier: ClassVar[bool] = True
    """Whether the method runs the model (the baselines do not and accept ``classifier=None``)."""
    class_specific: ClassVar[bool] = True
    """Whether the map depends on ``targets`` (the class-agnostic masker's does not)."""
    TUNING_GRID: ClassVar[dict[str, list[Any]]] = {}
    """Settings worth trying when tuning the method on a validation split (option -> values), read
    by :func:`masksal.evaluation.tune`; empty for a method without settings to tune."""

    classifier: Classifier | None

    def __init__(self, classifier: Classifier | nn.Module | None) -> None:
        if classifier is None:
            if self.requires_classifier:
                raise ValueError(f"{type(self).__name__} needs a classifier to explain: pass a "
                                 "masksal Classifier or an nn.Module returning logits")
            self.classifier = None
        else:
            self.classifier = as_classifier(classifier)

    # -- the public calls -------------------------------------------------------------------

    def explain(self, images: Images, targets: Targets = None) -> Tensor:
        """Saliency maps for ``images``.

        Args:
            images: a ``(B, 3, H, W)`` or ``(3, H, W)`` tensor (float in [0, 1] or uint8), a PIL
                image, an ``(H, W, 3)`` array, or a list of same-sized images.
            targets: the class to explain: an ``int`` for the whole batch, one per image
                (``(B,)`` tensor or list), or ``None`` for each image's top-1 class.

        Returns:
            ``(B, H, W)`` float32 maps (``(H, W)`` for a single image), on the device the images
            came on (the CPU for PIL images and arrays).

        Raises:
            ValueError: images that are not RGB pixel values in [0, 1] (e.g. already normalized),
                or a number of targets that does not match the images.
        """
        return self._explain(images, targets, with_logits=False).maps

    def explain_with_logits(self, images: Images, targets: Targets = None) -> Explanation:
        """Like :meth:`explain`, with the classifier's logits on the clean images.

        The logits come from the method's own forward pass on the clean images when it ran one
        (Grad-CAM, the masker, the top-1 pass when ``targets`` is ``None``...); otherwise one
        forward pass is added. Without a classifier (a baseline built with ``classifier=None``)
        ``logits`` is ``None``.

        Returns:
            :class:`Explanation` with ``maps`` as :meth:`explain` returns them and ``logits``
            ``(B, C)`` (``(C,)`` for a single image) on the same device, or ``None``.
        """
        return self._explain(images, targets, with_logits=True)

    def _explain(self, images: Images, targets: Targets, with_logits: bool) -> Explanation:
        clf = self.classifier
        x, home, single = prepare_images(images, module_device(clf) if clf is not None else None,
                                         _floating_dtype(clf) if clf is not None else torch.float32)
        t = prepare_targets(targets, x.shape[0], x.device)
        classes = clf.num_classes if clf is not None else -1
        if t is not None and classes > 0 and t.numel() and (int(t.min()) < 0 or int(t.max()) >= classes):
            raise ValueError(f"targets must be class indices in 0..{classes - 1}, got {int(t.min())}..{int(t.max())}")
        with self._eval(), torch.set_grad_enabled(self.needs_grad):
            out = self._maps(x, t)
            result = out if isinstance(out, Explanation) else Explanation(out)
            if with_logits and result.logits is None and clf is not None:
                with torch.no_grad():
                    result.logits = clf(x)
        maps = result.maps.detach().float().to(home)
        logits = result.logits.detach().to(home) if with_logits and result.logits is not None else None
        if single:
            maps = maps[0]
            logits = logits[0] if logits is not None else None
        return Explanation(maps, logits)

    # -- for subclasses ---------------------------------------------------------------------

    @abstractmethod
    def _maps(self, images: Tensor, targets: Tensor | None) -> Tensor | Explanation:
        """The method's math.

        Args:
            images: ``(B, 3, H, W)`` in [0, 1] on the model's device, in the model's floating
                dtype (float32 without a classifier).
            targets: ``(B,)`` int64 on the same device, or ``None`` for the top-1 class.

        Returns:
            ``(B, H, W)`` maps, or an :class:`Explanation` carrying the clean logits too.
        """

    def resolve_targets(self, images: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``(targets, logits)``: the given targets (and no logits), or the top-1 class of one
        forward pass and its logits (hand them back in an :class:`Explanation`)."""
        if targets is not None:
            return targets, None
        if self.classifier is None:
            raise ValueError(f"{type(self).__name__} has no classifier to find the top-1 class: pass targets")
        with torch.no_grad():
            logits = self.classifier(images)
        return logits.argmax(dim=1), logits

    def modules_to_eval(self) -> list[nn.Module]:
        """The networks put in eval mode while explaining (the classifier; the masker adds its net)."""
        return [self.classifier] if self.classifier is not None else []

    @property
    def device(self) -> torch.device:
        """Where the model lives (inputs are moved there); the CPU without a classifier."""
        return module_device(self.classifier) if self.classifier is not None else torch.device("cpu")

    @classmethod
    def _option_names(cls) -> list[str]:
        """The constructor's named arguments after the classifier: the method's settings."""
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def options(self) -> dict[str, Any]:
        """The method's settings: the constructor's arguments (after the classifier) that the
        instance keeps under the same name. Used by ``repr`` and the benchmark tables."""
        return {name: getattr(self, name) for name in self._option_names() if hasattr(self, name)}

    def _keep_options(self, values: dict[str, Any]) -> None:
        """Keep each constructor argument after the classifier found in ``values`` (the
        constructor's ``locals()``) under its own name: what :meth:`options` reads back. A
        subclass declares their types as class attributes."""
        for name in self._option_names():
            if name in values:
                setattr(self, name, values[name])

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    @contextmanager
    def _eval(self) -> Iterator[None]:
        with ExitStack() as stack:
            for m in self.modules_to_eval():
                stack.enter_context(eval_mode(m))
            yield


def _floating_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the module's first floating-point parameter or buffer (float32 if none)."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.float32


# -- input coercion ---------------------------------------------------------------------------


def _one_to_tensor(image: ImageLike) -> Tensor:
    """One image as a ``(3, H, W)`` tensor, or a batch as ``(B, 3, H, W)``, dtype kept."""
    if isinstance(image, Tensor):
        return image
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] != 3:
            arr = arr[..., :3].transpose(2, 0, 1)  # HWC -> CHW
        elif arr.ndim == 4 and arr.shape[-1] in (3, 4) and arr.shape[1] != 3:
            arr = arr[..., :3].transpose(0, 3, 1, 2)  # BHWC -> BCHW
        return torch.from_numpy(np.ascontiguousarray(arr))
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)
    raise ValueError(f"images must be tensors, PIL images or NumPy arrays, got {type(image).__name__}")


def prepare_images(images: Images, device: torch.device | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, torch.device, bool]:
    """Coerce ``images`` to a ``(B, 3, H, W)`` tensor of ``dtype`` in [0, 1] on ``device``.

    Args:
        images: see :meth:`Explainer.explain`.
        device: where the result goes (``None``: where the input is).
        dtype: floating dtype of the result (the model's: a float64 model gets float64 pixels).

    Returns:
        ``(images, home device, single)``: ``home`` is where the input lived (maps go back
        there), ``single`` whether one image (not a batch) was given.

    Raises:
        ValueError: one line saying what is wrong and what to pass instead.
    """
    single = False
    if isinstance(images, Sequence):
        if not images:
            raise ValueError("images: got an empty list")
        parts = [_one_to_tensor(im) for im in images]
        parts = [p[None] if p.dim() == 3 else p for p in parts]
        sizes = {tuple(p.shape[-2:]) for p in parts}
        if len(sizes) > 1:
            raise ValueError(f"images: a list of images must share one size to form a batch, got sizes "
                             f"{sorted(sizes)}; resize them first (e.g. torchvision.transforms.v2.Resize)")
        x = torch.cat([p.to(parts[0].dtype) for p in parts])
    else:
        x = _one_to_tensor(images)  # not a list or tuple here
        if x.dim() == 3:
            x, single = x[None], True
    home = x.device
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be RGB: (B, 3, H, W) or (3, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("images: got an empty batch")
    if x.dtype == torch.uint8:
        x = x.to(device or home).to(dtype).div_(255.0)
    elif x.is_floating_point():
        x = x.to(device or home)
        lo, hi = (float(v) for v in torch.aminmax(x))  # one pass over the pixels
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("images contain NaN or inf values")
        if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
            raise ValueError(f"images must be pixel values in [0, 1], got values in [{lo:.2f}, {hi:.2f}]: pass "
                             "images before normalization (the explainer normalizes for the classifier), "
                             "or uint8 images")
        if lo < 0.0 or hi > 1.0:
            x = x.clamp(0.0, 1.0)
        x = x.to(dtype)
    else:
        raise ValueError(f"images must be float in [0, 1] or uint8, got dtype {x.dtype}")
    return x, home, single


def prepare_targets(targets: Targets, n: int, device: torch.device) -> Tensor | None:
    """``targets`` as ``(n,)`` int64 on ``device`` (an ``int`` is repeated), or ``None``.

    Raises:
        ValueError: a number of targets other than ``n``, or a negative class.
    """
    if targets is None:
        return None
    if isinstance(targets, (int, np.integer)):
        t = torch.full((n,), int(targets), dtype=torch.long, device=device)
    else:
        t = torch.as_tensor(targets, device=device).long().reshape(-1)
        if t.numel() == 1 and n > 1:
            t = t.expand(n).clone()
    if t.shape[0] != n:
        raise ValueError(f"targets must hold one class per image: got {t.shape[0]} for {n} images")
    if bool((t < 0).any()):
        raise ValueError(f"targets must be class indices >= 0, got {t.min().item()}")
    return t


class ClassifierExplainer(Explainer):
    """Base class of the methods that run the classifier: ``classifier`` is always set (the
    constructor refuses ``None``)."""

    requires_classifier: ClassVar[bool] = True
    classifier: Classifier
