"""Unit criteria: which hidden units (neurons) to remove. A unit criterion scores every
hidden unit; the lowest scores go first.

A unit criterion has one method, ``scores(model) -> list of float64 arrays (units,)``,
one per hidden layer (the outputs of ``model.layers[l]`` for ``l`` up to the last but
one), higher meaning more important.
"""

import numpy as np

from .criteria import Criterion, GradientCriterion, check_score_arrays, from_registry

__all__ = ["UNIT_CRITERIA", "Activation", "L1Norm", "L2Norm", "UnitCriterion", "UnitTaylor",
           "check_unit_scores", "get_unit_criterion"]


class UnitCriterion(Criterion):
    """Base class of the unit criteria: :meth:`scores` gives one array per hidden layer."""


class L2Norm(UnitCriterion):
    """The L2 norm of the unit's incoming weights (its column of ``W_l``): torch's
    ``ln_structured(n=2, dim=0)`` on the (out, in) weight."""

    name = "l2"

    def scores(self, model):
        return [np.sqrt((layer.weight.astype(np.float64) ** 2).sum(axis=0))
                for layer in model.layers[:-1]]


class L1Norm(UnitCriterion):
    """The L1 norm of the unit's incoming weights: ``ln_structured(n=1, dim=0)``."""

    name = "l1"

    def scores(self, model):
        return [np.abs(layer.weight.astype(np.float64)).sum(axis=0)
                for layer in model.layers[:-1]]


class UnitTaylor(GradientCriterion, UnitCriterion):
    """First-order Taylor of a unit (Molchanov et al. 2017, 2019): ``|dL/dm|`` for a gate
    ``m = 1`` on the unit's output, averaged over the mini-batches.

    The gate's gradient is ``sum_n a_n dL/da_n`` over the batch (``a`` the unit's
    output): the first-order estimate of how the loss changes when the unit is removed.
    It equals ``sum_k W[j, k] dL/dW[j, k]`` over the unit's outgoing weights (row ``j``
    of ``W_{l+1}``), which is how it is computed here, from the training engine's
    weight gradients.
    """

    name = "taylor"

    def scores(self, model):
        total = [np.zeros(layer.out_features) for layer in model.layers[:-1]]
        count = 0
        for batch in self.batches(model):
            for l, acc in enumerate(total):
                acc += np.abs((batch.weights(l + 1) * batch.gradient(l + 1)).sum(axis=1))
            count += 1
        return [acc / count for acc in total]


class Activation(GradientCriterion, UnitCriterion):
    """The mean absolute output of the unit over the data, ``mean_n |a_n|``: a unit that
    is (almost) always zero, a dead ReLU, goes first. ``y`` may be None: labels do not
    enter."""

    name = "activation"

    def labels(self, model, n_samples):
        # The engine's pass needs labels; they change the gradients, not the activations.
        if self.y is None:
            return np.zeros(n_samples, np.int64)
        return super().labels(model, n_samples)

    def scores(self, model):
        total = [np.zeros(layer.out_features) for layer in model.layers[:-1]]
        n = 0
        for batch in self.batches(model):
            for acc, a in zip(total, batch.activations):
                acc += np.abs(a.astype(np.float64)).sum(axis=1)
            n += batch.size
        return [acc / n for acc in total]


UNIT_CRITERIA = {"l2": L2Norm, "l1": L1Norm, "taylor": UnitTaylor, "activation": Activation}


def get_unit_criterion(criterion, data=None):
    """A unit criterion by name ("l2", "l1", "taylor", "activation"), or ``criterion``
    itself if it is a :class:`UnitCriterion`. "taylor" and "activation" need
    ``data=(X, y)`` ("activation" takes ``(X, None)`` too)."""
    return from_registry(criterion, UNIT_CRITERIA, UnitCriterion, data, "units")


def check_unit_scores(criterion, scores, model):
    """A unit criterion's scores checked: float64 (units,) per hidden layer, no NaN."""
    return check_score_arrays(criterion, scores,
                              [(layer.out_features,) for layer in model.layers[:-1]],
                              per="hidden layer")
