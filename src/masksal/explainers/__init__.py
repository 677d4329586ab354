"""Saliency methods behind one base class, :class:`Explainer`: ``explain(images, targets) -> maps``.

Build one by name with :func:`create_explainer` (``"gradcam"``, ``"rise"``, ``"ep"``, ``"rollout"``, ``"masker"``...)
or use the classes directly; every class is built with the classifier (a masksal ``Classifier`` or
any ``nn.Module``) and its settings, and ``explain_with_logits`` hands back the classifier's logits
with the maps.
"""

from masksal.explainers.base import ClassifierExplainer, Explainer, Explanation
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
from masksal.explainers.rollout import AttentionRollout, GradientRollout

__all__ = [
    "RISE",
    "AttentionRollout",
    "CentreBaseline",
    "ClassifierExplainer",
    "Explainer",
    "ExplainerFactory",
    "Explanation",
    "ExtremalPerturbation",
    "FIDO",
    "GradCAM",
    "GradientRollout",
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
