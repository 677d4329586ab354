"""Evaluation: every metric for any explainer over a dataset (:func:`evaluate`), sharded under
torchrun (:func:`evaluate_sharded`), several methods compared side by side with their speed
(:func:`compare_methods`), and the tables of the results."""

from masksal.evaluation.compare import PeakMemory, compare_methods, write_outputs
from masksal.evaluation.evaluate import METRICS, evaluate, evaluate_sharded
from masksal.evaluation.table import format_table, speed_table

__all__ = ["METRICS", "PeakMemory", "compare_methods", "evaluate", "evaluate_sharded", "format_table",
           "speed_table", "write_outputs"]
