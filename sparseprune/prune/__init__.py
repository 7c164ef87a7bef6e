"""Pruning: criteria say what to cut, scopes say how the budget is shared among layers,
schedules say how fast, drivers apply them.

``prune(model, sparsity, criterion, data, scope)`` (and ``magnitude``) prunes weights
once; ``neurons(model, amount, criterion)`` removes whole hidden units, shrinking the
layers; ``iterative(model, X, y, ...)`` does either along a schedule with fine-tuning;
``lottery(model, X, y, ...)`` finds a lottery ticket and ``reinit(ticket)`` its control;
``l0(model, X, y, lam)`` learns the mask with hard-concrete gates; ``dynamic(model, X,
y, sparsity, method="rigl"|"set")`` trains sparse from the start, moving connections.
"""

from .criteria import (
    CRITERIA, SNIP, Criterion, GradientCriterion, Magnitude, Movement, Random, Taylor,
    get_criterion,
)
from .iterative import PruneStep, iterative
from .regrowth import DynamicHistory, MaskUpdate, dynamic
from .gates import L0History, l0
from .lottery import LotteryRound, Ticket, lottery, reinit
from .schedules import SCHEDULES, constant, cubic, geometric, get_schedule, linear
from .scopes import SCOPES, erk_densities, layer_counts
from .structured import neurons
from .units import (
    UNIT_CRITERIA, Activation, L1Norm, L2Norm, UnitCriterion, UnitTaylor, get_unit_criterion,
)
from .unstructured import EmptyLayerWarning, keep_mask, magnitude, prune, random, unstructured

__all__ = [
    "Activation", "CRITERIA", "Criterion", "DynamicHistory", "EmptyLayerWarning",
    "GradientCriterion", "L0History", "L1Norm", "MaskUpdate", "dynamic",
    "L2Norm", "LotteryRound", "Magnitude", "Movement", "PruneStep", "Random", "SCHEDULES",
    "SCOPES", "SNIP", "Taylor", "Ticket", "UNIT_CRITERIA", "UnitCriterion", "UnitTaylor",
    "constant", "cubic", "erk_densities", "geometric", "get_criterion", "get_schedule",
    "get_unit_criterion", "iterative", "keep_mask", "l0", "layer_counts", "linear",
    "lottery", "magnitude", "neurons", "prune", "random", "reinit", "unstructured",
]
