"""Classifier wrapper: normalization, logits and named intermediate activations ("taps").

A :class:`Classifier` wraps any image classifier ``nn.Module`` (torchvision, timm, or your own)
and gives, from ONE forward pass, the logits and the activations of the layers the masker reads.
Input normalization belongs to the wrapper: every public call takes images in ``[0, 1]``.

Build one by name with :func:`create_classifier` (``"small_resnet18"``, ``"resnet50"``,
``"timm:resnet18"``...) or wrap your own module with ``Classifier(model, taps=[...])``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from masksal.devices import module_device
from masksal.recognize import torchvision_arch
from masksal.taps import TokenLayout, family_taps, find_taps, to_grid, token_layout

__all__ = ["Classifier", "ClassifierSpec", "SmallResNet", "TapReshape", "as_classifier", "classifier_from_spec",
           "create_classifier", "eval_mode", "find_taps", "load_weights", "module_device", "read_state_dict"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TapReshape = Callable[[str, Tensor, tuple[int, int]], "Tensor | None"]
"""``reshape(tap_name, output, (H, W)) -> (B, C, h, w) map``, or ``None`` to apply the automatic
rules of :func:`masksal.taps.to_grid` to that output."""


@dataclass
class ClassifierSpec:
    """What identifies a classifier in a checkpoint: enough to rebuild it and to check a match.

    ``arch`` is the name given to :func:`create_classifier` (``"custom"`` for a user module).
    """

    arch: str
    num_classes: int
    taps: list[str]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierSpec:
        return cls(
            arch=str(d["arch"]),
            num_classes=int(d["num_classes"]),
            taps=[str(t) for t in d["taps"]],
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            kwargs=dict(d.get("kwargs", {})),
        )


class Classifier(nn.Module):
    """An image classifier with input normalization and named taps.

    Args:
        model: any ``nn.Module`` mapping normalized images ``(B, 3, H, W)`` to logits ``(B, C)``.
        taps: names of submodules of ``model`` (as in ``model.named_modules()``) whose outputs the
            masker reads, finest first or in any order; empty for a classifier that only rival
            methods explain (see :func:`find_taps` to choose them).
        mean, std: per-channel normalization applied to ``[0, 1]`` images.
        spec: identity stored in checkpoints; built from the other arguments when omitted.
        reshape: ``reshape(tap, output, (H, W))`` turning a tap's raw output into a
            ``(B, C, h, w)`` map (``None`` from it: the automatic rules). Needed only for layouts
            the rules of :func:`masksal.taps.to_grid` do not read: ViT tokens, channels-last
            (Swin) maps and plain maps are reshaped automatically. Not saved in checkpoints:
            pass the wrapped model again when loading (``load_masker(dir, model=clf)``).

    Example:
        >>> import torchvision
        >>> clf = Classifier(torchvision.models.resnet18(num_classes=10), taps=["layer3", "layer4"])
        >>> logits, feats = clf.forward_with_taps(torch.rand(2, 3, 64, 64))
        >>> logits.shape, feats["layer4"].shape
        (torch.Size([2, 10]), torch.Size([2, 512, 2, 2]))
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        model: nn.Module,
        taps: Sequence[str] = (),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        spec: ClassifierSpec | None = None,
        reshape: TapReshape | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.reshape = reshape
        self._layout: TokenLayout | None = None
        names = dict(model.named_modules())
        missing = [t for t in taps if t not in names]
        if missing:
            candidates = ", ".join(n for n in names if n and n.count(".") == 0)
            raise ValueError(f"tap(s) {missing} are not modules of the classifier; top-level modules: "
                             f"{candidates}")
        self.taps = list(taps)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1))
        num_classes = _guess_num_classes(model)
        self.spec = spec or ClassifierSpec(
            arch=torchvision_arch(model, num_classes) or "custom", num_classes=num_classes, taps=list(taps),
            mean=tuple(mean), std=tuple(std),  # type: ignore[arg-type]
        )
        self.spec.taps = list(taps)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def normalize(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> normalized, channels-last (fast path for small convs)."""
        z = (images - self.mean) / self.std
        return z.contiguous(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, C)`` for images ``(B, 3, H, W)`` in [0, 1]."""
        return self.model(self.normalize(images))

    def forward_with_taps(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the tap activations ``{name: (B, C_t, H_t, W_t)}`` from one forward pass.

        Token outputs ``(B, N, C)`` and channels-last maps ``(B, h, w, C)`` come back as
        ``(B, C, h, w)`` maps (:meth:`as_map`)."""
        if not self.taps:
            raise ValueError("this classifier has no taps for a masker to read: name them, e.g. "
                             "Classifier(model, taps=['layer3', 'layer4']), or see masksal.classifiers.find_taps")
        feats: dict[str, Tensor] = {}
        handles = []
        modules = dict(self.model.named_modules())
        size = (int(images.shape[-2]), int(images.shape[-1]))
        for name in self.taps:
            def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                raw = out if isinstance(out, Tensor) else out[0]
                # no int() on the batch: a symbolic batch must stay symbolic in ONNX export
                feats[name] = self.as_map(name, raw, size, batch=images.shape[0])
            handles.append(modules[name].register_forward_hook(hook))
        try:
            logits = self.forward(images)
        finally:
            for h in handles:
                h.remove()
        return logits, feats

    @property
    def layout(self) -> TokenLayout:
        """What the wrapped model declares about its token / channels-last outputs."""
        if self._layout is None:
            self._layout = token_layout(self.model)
        return self._layout

    def as_map(self, name: str, output: Tensor, image_size: tuple[int, int], batch: int | None = None) -> Tensor:
        """The output of layer ``name`` as a ``(B, C, h, w)`` map, for images of ``image_size``.

        The ``reshape`` hook first, if any; then the automatic rules (:func:`masksal.taps.to_grid`:
        ``(B, C, h, w)`` kept, ``(B, h, w, C)`` permuted, ``(B, N, C)`` tokens laid on their grid
        without the class / register tokens). A view of ``output`` where possible.

        Raises:
            ValueError: one line naming the layer, its shape and the ``reshape=`` way out.
        """
        if self.reshape is not None:
            mapped = self.reshape(name, output, image_size)
            if mapped is not None:
                if not isinstance(mapped, Tensor) or mapped.dim() != 4:
                    got = tuple(mapped.shape) if isinstance(mapped, Tensor) else type(mapped).__name__
                    raise ValueError(f"the reshape hook returned {got} for tap {name!r}; expected a (B, C, h, w) map")
                return mapped
        try:
            return to_grid(output, image_size, self.layout, batch)
        except ValueError as e:
            raise ValueError(f"tap {name!r} (output {tuple(output.shape)}): {e}; pass Classifier(..., reshape=fn) "
                             "with fn(tap, output, (H, W)) -> (B, C, h, w)") from None

    def layer(self, name: str) -> nn.Module:
        """The submodule ``name`` of the wrapped model (e.g. ``"layer4"`` for Grad-CAM)."""
        return self.model.get_submodule(name)

    @torch.no_grad()
    def tap_shapes(self, image_size: int) -> dict[str, tuple[int, int, int]]:
        """``{tap: (channels, height, width)}`` for square inputs of ``image_size`` pixels (one dry
        run in eval mode; every submodule's own mode is restored afterwards)."""
        with eval_mode(self):
            _, feats = self.forward_with_taps(torch.zeros(1, 3, image_size, image_size, device=self.mean.device))
        return {k: (int(v.shape[1]), int(v.shape[2]), int(v.shape[3])) for k, v in feats.items()}

    def fingerprint(self) -> str:
        """A short hash of the weights: tells whether two classifiers are the same one."""
        h = hashlib.sha256()
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def as_classifier(
    model: nn.Module,
    *,
    taps: Sequence[str] = (),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    reshape: TapReshape | None = None,
) -> Classifier:
    """``model`` itself if it is a :class:`Classifier`, else ``model`` wrapped in one.

    A plain ``nn.Module`` is assumed to take images normalized with ``mean`` / ``std`` (ImageNet's
    by default, as torchvision and timm models do); the wrapper applies that normalization to
    ``[0, 1]`` images.
    """
    if isinstance(model, Classifier):
        return model
    if not isinstance(model, nn.Module):
        raise ValueError(f"expected a torch nn.Module classifier, got {type(model).__name__}")
    return Classifier(model, taps, mean, std, reshape=reshape)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode and restore every submodule's own mode on exit."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _guess_num_classes(model: nn.Module) -> int:
    for attr in ("num_classes",):
        if isinstance(getattr(model, attr, None), int):
            return int(getattr(model, attr))
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return int(last.out_features) if last is not None else -1


class SmallResNet(nn.Module):
    """ResNet-18 layout for small images (32-128 px): 3x3 stride-2 stem, no max-pool.

    Module names follow torchvision's ResNet (``conv1, bn1, layer1..layer4, fc``) so taps and
    Grad-CAM layers are named the same as for ``resnet18``/``resnet50``.
    """

    def __init__(self, num_classes: int, width: int = 16, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = width
        self.layer1 = self._make_layer(width, blocks[0], 1)
        self.layer2 = self._make_layer(width * 2, blocks[1], 2)
        self.layer3 = self._make_layer(width * 4, blocks[2], 2)
        self.layer4 = self._make_layer(width * 8, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _default_taps(arch: str, model: nn.Module) -> list[str]:
    """The family's taps (:func:`masksal.taps.family_taps`), else the top two stages of a dry run
    at 224 px (a model's stages do not depend on the input size)."""
    taps = family_taps(model)
    if taps is not None:
        return taps
    try:
        return find_taps(model, 224)
    except ValueError:
        raise ValueError(f"no default taps for architecture {arch!r}: name them with taps=[...] "
                         "(module names from model.named_modules())") from None


def create_classifier(
    arch: str,
    num_classes: int,
    taps: Sequence[str] | None = None,
    weights: str | Path | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    **kwargs: Any,
) -> Classifier:
    """Build a classifier by name, optionally loading a weight file (never executes code).

    Args:
        arch: ``"small_resnet18"`` (built-in, for 32-128 px images; ``width=`` sets its base
            width), a torchvision model name (``"resnet18"``, ``"resnet50"``, also written
            ``"torchvision:resnet50"``), or ``"timm:<name>"`` for any timm model.
        num_classes: number of output classes.
        taps: layers the masker reads; default: the top two stages (``layer3``, ``layer4`` for
            ResNets, the last two ``feature_info`` stages for timm models).
        weights: a ``.safetensors`` file or a PyTorch state-dict file (``.pt``/``.pth``, read
            with ``weights_only=True``).
        mean, std: the normalization the weights expect (ImageNet's by default).
        **kwargs: passed to the model constructor.
    """
    model: nn.Module
    if arch == "small_resnet18":
        model = SmallResNet(num_classes, **kwargs)
    elif arch.startswith("timm:"):
        import timm

        model = timm.create_model(arch[5:], pretrained=False, num_classes=num_classes, **kwargs)
    else:
        import torchvision

        name = arch.removeprefix("torchvision:")
        if name not in torchvision.models.list_models():
            raise ValueError(f"unknown classifier architecture {arch!r}: use 'small_resnet18', a "
                             "torchvision model name, or 'timm:<name>'")
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if weights is not None:
        try:
            load_weights(model, weights)
        except ValueError as e:
            raise ValueError(f"{e} (architecture {arch!r} with {num_classes} classes; name the right one with "
                             "--arch, or classifier.arch / classifier.kwargs)") from None
    model = model.to(memory_format=torch.channels_last)
    tap_names = list(taps) if taps else _default_taps(arch, model)
    spec = ClassifierSpec(arch=arch, num_classes=num_classes, taps=tap_names, mean=tuple(mean),  # type: ignore[arg-type]
                          std=tuple(std), kwargs=dict(kwargs))  # type: ignore[arg-type]
    return Classifier(model, tap_names, mean, std, spec=spec)


def classifier_from_spec(spec: ClassifierSpec) -> Classifier:
    """Rebuild an (untrained) classifier from its checkpoint identity."""
    if spec.arch == "custom":
        raise ValueError("this checkpoint's classifier is a custom module: build it and pass it, "
                         "e.g. load_masker(directory, model=my_module)")
    return create_classifier(spec.arch, spec.num_classes, spec.taps, mean=spec.mean, std=spec.std,
                             **spec.kwargs)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never executing code.

    Unwraps the usual containers (``{"state_dict": ...}``, ``{"model": ...}``) and DDP's
    ``module.`` prefix.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weight file not found: {p}")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: Any = load_file(str(p))
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle with code in it, or not a torch file at all
            raise ValueError(f"{p}: not a plain state-dict file that loads with weights_only=True "
                             f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{p}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, Tensor)}


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a weight file into ``model`` strictly, with a one-line error on mismatch."""
    sd = read_state_dict(path)
    own = model.state_dict()
    # Shape mismatches make load_state_dict raise a many-line RuntimeError: find them first.
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
                  if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"{path}: weights do not fit the model: {len(mismatched)} tensor(s) of another shape "
                         f"(e.g. {mismatched[0]})")
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit the model: {len(result.missing_keys)} missing "
                         f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected "
                         f"(e.g. {result.unexpected_keys[:3]})")
