"""masksal: masking-based saliency maps, and the yardstick to judge every saliency method.

The public API, in a handful of names:

* :func:`create_classifier` / :class:`Classifier`: wrap a classifier, get logits and taps;
* :func:`train_classifier`, :func:`train_masker`: the training loops (:func:`load_config` for
  their configuration);
* :func:`load_masker` -> :class:`Masker`, whose ``explain(images)`` gives maps in one pass;
* :func:`create_explainer`: the rival saliency methods, same protocol (:class:`Explainer`);
* :func:`evaluate`: every metric for any explainer over a dataset (:mod:`masksal.metrics`).
"""

from masksal import metrics
from masksal.checkpoint import load_classifier, load_masker
from masksal.classifiers import Classifier, ClassifierSpec, create_classifier
from masksal.config import ExperimentConfig, load_config
from masksal.evaluation import evaluate
from masksal.explainers import Explainer, create_explainer
from masksal.masker import Masker, MaskerNet
from masksal.training import train_classifier, train_masker
from masksal.types import Batch

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Classifier",
    "ClassifierSpec",
    "ExperimentConfig",
    "Explainer",
    "Masker",
    "MaskerNet",
    "create_classifier",
    "create_explainer",
    "evaluate",
    "load_classifier",
    "load_config",
    "load_masker",
    "metrics",
    "train_classifier",
    "train_masker",
    "__version__",
]
