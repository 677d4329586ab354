"""masksal: masking-based saliency maps, and the yardstick to judge every saliency method.

The public API, in a handful of names:

* :func:`fit_masker` -> :class:`Masker`: train a masker for any classifier (an ``nn.Module``)
  on your data, in memory; ``masker.explain(images)`` gives maps in one forward pass,
  ``masker.save(dir)`` / :func:`load_masker` keep it;
* :func:`create_explainer`: every saliency method (the masker and its rivals) behind one call,
  ``explain(images, targets=None)`` (:class:`Explainer`);
* :func:`evaluate`: every metric for any explainer over a dataset (:mod:`masksal.metrics`);
* :func:`create_classifier` / :class:`Classifier`: wrap a classifier, get logits and taps;
* :func:`train_classifier`, :func:`train_masker`, :func:`load_config`: the config-driven,
  resumable training runs behind the command line.

Heavy optional dependencies (captum, OpenCV, matplotlib, timm) are imported where they are used,
so ``import masksal`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# name -> module that defines it; imported on first use (PEP 562), so `import masksal` is cheap.
_LAZY = {
    "Batch": "masksal.types",
    "Classifier": "masksal.classifiers",
    "ClassifierSpec": "masksal.classifiers",
    "ExperimentConfig": "masksal.config",
    "Explainer": "masksal.explainers.base",
    "Explanation": "masksal.explainers.base",
    "Masker": "masksal.masker",
    "MaskerNet": "masksal.masker",
    "TensorBoardLogger": "masksal.training",
    "as_classifier": "masksal.classifiers",
    "create_classifier": "masksal.classifiers",
    "create_explainer": "masksal.explainers.registry",
    "evaluate": "masksal.evaluation",
    "export_masker": "masksal.export",
    "fit_classifier": "masksal.training",
    "fit_masker": "masksal.training",
    "load_classifier": "masksal.checkpoint",
    "load_config": "masksal.config",
    "load_masker": "masksal.checkpoint",
    "train_classifier": "masksal.training",
    "train_masker": "masksal.training",
}

__all__ = [*sorted(_LAZY), "__version__", "metrics"]


def __getattr__(name: str) -> Any:
    if name == "metrics":
        return import_module("masksal.metrics")
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'masksal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from masksal import metrics as metrics
    from masksal.checkpoint import load_classifier as load_classifier
    from masksal.checkpoint import load_masker as load_masker
    from masksal.classifiers import Classifier as Classifier
    from masksal.classifiers import ClassifierSpec as ClassifierSpec
    from masksal.classifiers import as_classifier as as_classifier
    from masksal.classifiers import create_classifier as create_classifier
    from masksal.config import ExperimentConfig as ExperimentConfig
    from masksal.config import load_config as load_config
    from masksal.evaluation import evaluate as evaluate
    from masksal.explainers.base import Explainer as Explainer
    from masksal.explainers.base import Explanation as Explanation
    from masksal.explainers.registry import create_explainer as create_explainer
    from masksal.export import export_masker as export_masker
    from masksal.masker import Masker as Masker
    from masksal.masker import MaskerNet as MaskerNet
    from masksal.training import TensorBoardLogger as TensorBoardLogger
    from masksal.training import fit_classifier as fit_classifier
    from masksal.training import fit_masker as fit_masker
    from masksal.training import train_classifier as train_classifier
    from masksal.training import train_masker as train_masker
    from masksal.types import Batch as Batch
