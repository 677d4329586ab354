"""Training: the classifier and the masker, in memory (``fit_*``) or into a checkpoint directory
with resume (``train_*``), one loop for both (:mod:`masksal.training.loop`)."""

from masksal.training.callbacks import TensorBoardLogger
from masksal.training.classifier import ClassifierTraining, accuracy, fit_classifier, train_classifier
from masksal.training.data import StepBatchSampler, build_dataset, dataset_classes, dataset_num_classes
from masksal.training.loop import Callback, DivergedError, run_steps
from masksal.training.masker import default_objectives, default_taps, fit_masker, train_masker
from masksal.training.masker_step import MaskerTraining, masker_step

__all__ = [
    "Callback",
    "ClassifierTraining",
    "DivergedError",
    "MaskerTraining",
    "StepBatchSampler",
    "TensorBoardLogger",
    "accuracy",
    "build_dataset",
    "dataset_classes",
    "dataset_num_classes",
    "default_objectives",
    "default_taps",
    "fit_classifier",
    "fit_masker",
    "masker_step",
    "run_steps",
    "train_classifier",
    "train_masker",
]
