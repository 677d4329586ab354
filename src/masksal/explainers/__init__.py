"""Saliency methods behind one protocol, :class:`Explainer`: ``explain(images, targets) -> maps``.

Build one by name with :func:`create_explainer` (``"gradcam"``, ``"rise"``, ``"ep"``...) or use
the classes directly; every class is built with the classifier and its settings.
"""

from masksal.explainers.base import Explainer
from masksal.explainers.baselines import CentreBaseline, RandomBaseline
from masksal.explainers.extremal_perturbation import ExtremalPerturbation, SmoothMaxMask
from masksal.explainers.fido import FIDO
from masksal.explainers.gradcam import GradCAM, PytorchGradCamExplainer
from masksal.explainers.gradients import GuidedBackprop, IntegratedGradients, SmoothGrad, VanillaGradients
from masksal.explainers.meaningful_perturbation import MeaningfulPerturbation
from masksal.explainers.prediction_difference import PredictionDifference
from masksal.explainers.registry import (
    ExplainerFactory,
    available_explainers,
    create_explainer,
    parse_method_spec,
    register_explainer,
)
from masksal.explainers.rise import RISE

__all__ = [
    "RISE",
    "CentreBaseline",
    "Explainer",
    "ExplainerFactory",
    "ExtremalPerturbation",
    "FIDO",
    "GradCAM",
    "GuidedBackprop",
    "IntegratedGradients",
    "MeaningfulPerturbation",
    "PredictionDifference",
    "PytorchGradCamExplainer",
    "RandomBaseline",
    "SmoothGrad",
    "SmoothMaxMask",
    "VanillaGradients",
    "available_explainers",
    "create_explainer",
    "parse_method_spec",
    "register_explainer",
]
