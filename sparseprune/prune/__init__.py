"""Pruning: criteria say what to cut, schedules say how fast, drivers apply them.

``magnitude(model, sparsity, scope)`` prunes once; ``iterative(model, X, y, ...)``
prunes along a schedule with fine-tuning.
"""

from .criteria import CRITERIA, Criterion, Magnitude, Random, get_criterion
from .iterative import PruneStep, iterative
from .gates import L0History, l0
from .schedules import SCHEDULES, constant, cubic, geometric, get_schedule, linear
from .unstructured import keep_mask, magnitude, random, unstructured

__all__ = [
    "CRITERIA", "Criterion", "Magnitude", "PruneStep", "Random", "SCHEDULES", "constant",
    "cubic", "geometric", "get_criterion", "get_schedule", "iterative", "keep_mask",
    "linear", "magnitude", "random", "unstructured", "L0History", "l0",
]
