"""Evaluation: every metric for any explainer over a dataset (:func:`evaluate`), sharded under
torchrun (:func:`evaluate_sharded`), several methods compared side by side with their speed
(:func:`compare_methods`), bootstrap intervals (``ci=``), tuning a method's settings on a validation
split (:func:`tune`), and the tables of the results."""

from masksal.evaluation.compare import PeakMemory, compare_methods, write_outputs
from masksal.evaluation.evaluate import METRICS, evaluate, evaluate_sharded
from masksal.evaluation.table import format_table, speed_table
from masksal.evaluation.tuning import TuningResult, tune

__all__ = ["METRICS", "PeakMemory", "TuningResult", "compare_methods", "evaluate", "evaluate_sharded",
           "format_table", "speed_table", "tune", "write_outputs"]
