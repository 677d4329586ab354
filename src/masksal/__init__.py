"""masksal: masking-based saliency maps, and the yardstick to judge every saliency method."""

from masksal.classifiers import Classifier, ClassifierSpec, create_classifier
from masksal.explainers.base import Explainer
from masksal.types import Batch

__version__ = "0.1.0"

__all__ = ["Batch", "Classifier", "ClassifierSpec", "Explainer", "create_classifier", "__version__"]
