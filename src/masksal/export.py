"""Classify and explain in one call, and ship that call as one graph (ONNX or TorchScript).

:class:`ClassifyAndExplain` wraps a trained :class:`~masksal.masker.Masker`: one forward pass of
the classifier and the masker gives the logits and the saliency maps together, so an explanation
costs little more than the prediction itself. :func:`export_masker` writes that call as a single
graph, with the classifier's input normalization inside:

* input ``images``: ``(B, 3, S, S)`` float32 RGB in ``[0, 1]`` (not normalized), ``B`` free
  (dynamic batch), ``S`` the size given at export (the checkpoint's image size);
* outputs ``logits``: ``(B, C)`` float32 classifier logits (pre-softmax), and ``maps``:
  ``(B, S, S)`` float32 saliency in ``[0, 1]`` (0/1 for a Gumbel masker, thresholded at 0 as
  :meth:`Masker.explain` does in eval mode).

Gradient-based explainers cannot ship this way (an autograd graph does not export); the masker's
explanation is an ordinary forward pass and does. The ONNX file runs with onnxruntime alone, the
TorchScript file with ``torch.jit.load`` and no masksal.

Example:
    >>> from masksal.checkpoint import load_masker                      # doctest: +SKIP
    >>> masker = load_masker("runs/demo_quick/masker_ca")              # doctest: +SKIP
    >>> export_masker(masker, "masker.onnx", image_size=64)            # doctest: +SKIP
    >>> import onnxruntime as ort                                      # doctest: +SKIP
    >>> sess = ort.InferenceSession("masker.onnx")                     # doctest: +SKIP
    >>> logits, maps = sess.run(None, {"images": images_0_1})          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch
from torch import Tensor, nn

from masksal.classifiers import eval_mode
from masksal.masker import Masker

ExportFormat = Literal["onnx", "torchscript"]
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "maps")
DEFAULT_OPSET = 18  # the torch.export-based exporter's native opset


class ClassifyAndExplain(nn.Module):
    """Logits and saliency maps from one forward pass: the "classify and explain" call.

    Shares the masker's modules (no copy). Call it in eval mode (``.eval()``), as for inference.

    Args:
        masker: a trained masker (classifier + masker network).

    Example:
        >>> both = ClassifyAndExplain(masker).eval()                    # doctest: +SKIP
        >>> logits, maps = both(images)   # (B, C), (B, H, W) in [0, 1]   # doctest: +SKIP
    """

    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.classifier = masker.classifier
        self.net = masker.net

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits (B, C), maps (B, H, W) in [0, 1])`` for ``images (B, 3, H, W)`` in [0, 1]."""
        logits, feats = self.classifier.forward_with_taps(images)
        mask_logits = self.net(feats, (images.shape[-2], images.shape[-1]), images)
        return logits, self.net.mask(mask_logits)[:, 0]


def require(module: str, extra: str = "export") -> ModuleType:
    """Import an optional dependency, or fail with one line saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module} is not installed: pip install 'masksal[{extra}]'") from None


def export_masker(
    masker: Masker,
    path: str | Path,
    format: ExportFormat = "onnx",
    image_size: int = 224,
    opset: int = DEFAULT_OPSET,
    example_batch: int = 2,
) -> Path:
    """Write the masker's classify-and-explain call as one graph: images -> (logits, maps).

    Args:
        masker: the masker to export (its modes are restored afterwards; weights are unchanged).
        path: output file (``.onnx`` or ``.pt``); its folder is created. An existing file is
            replaced only once the new one is complete.
        format: ``"onnx"`` (torch.export-based exporter; needs ``onnx`` and ``onnxscript``) or
            ``"torchscript"`` (``torch.jit.trace``).
        image_size: side ``S`` of the square input images the graph takes (the checkpoint's size).
        opset: ONNX opset version (ignored for TorchScript).
        example_batch: batch size of the example input used for tracing; the batch dimension
            stays dynamic in both formats.

    Returns:
        The written path. Inputs and outputs are as in this module's docstring.

    Raises:
        ValueError: unknown format or a non-positive size.
        ImportError: a needed package is missing (one line naming it).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {format!r}")
    if image_size < 1 or example_batch < 1:
        raise ValueError(f"image_size and example_batch must be positive, got {image_size} and {example_batch}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(masker.parameters()).device
    example = torch.rand(example_batch, 3, image_size, image_size, device=device,
                         generator=torch.Generator(device).manual_seed(0))
    model = ClassifyAndExplain(masker)
    tmp = path.with_name(path.name + ".partial")
    with eval_mode(masker), torch.no_grad():
        if format == "onnx":
            _export_onnx(model, example, tmp, opset)
        else:
            _export_torchscript(model, example, tmp)
    tmp.replace(path)
    return path


def _export_onnx(model: nn.Module, example: Tensor, path: Path, opset: int) -> None:
    require("onnx")
    require("onnxscript")
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about its own internals, not about the model
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"images": {0: batch}}, opset_version=opset, verbose=False,
        )
    assert program is not None  # dynamo=True always returns the program
    # One self-contained file (weights inside): a deployable model is one artefact.
    program.save(str(path), external_data=False)


def _export_torchscript(model: nn.Module, example: Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is in maintenance mode and says so on every call
        # Tracing, not scripting: the taps are read by forward hooks, which scripting does not support.
        traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, str(path))
