"""Structured pruning: remove whole hidden units, so that the layers shrink.

A removed unit takes its column of ``W_l``, its bias and its row of ``W_{l+1}`` with
it (:meth:`sparseprune.MLP.remove_units`): ``model.sizes`` shrinks and the dense
products get smaller, which is where structured pruning pays, with no sparse kernel.
The network computes exactly what the masked network with the unit's outgoing
weights zeroed computes.
"""

import numbers
from collections.abc import Mapping

import numpy as np

from .._validation import check_int, check_real
from .unstructured import check_model
from .units import check_unit_scores, get_unit_criterion

__all__ = ["UnitPlan", "neurons", "unit_counts"]

UNIT_SCOPES = ("layer", "global")


def _hidden(model):
    n_hidden = len(model.layers) - 1
    if n_hidden < 1:
        raise ValueError(f"model {list(model.sizes)} has no hidden layer: no unit to remove")
    return n_hidden


def _check_layer(l, n_hidden, name):
    l = check_int(l, name)
    if not 0 <= l < n_hidden:
        raise ValueError(f"{name} must name a hidden layer, 0..{n_hidden - 1} (layer "
                         f"{n_hidden}'s outputs are the classes), got {l}")
    return l


def _count(amount, n, name):
    """A fraction (float in [0, 1), rounded with round()) or a count (int >= 0) of
    ``n`` units, as an int."""
    if isinstance(amount, (bool, np.bool_)) or not isinstance(amount, numbers.Real):
        raise TypeError(f"{name} must be a fraction (float) or a count (int), got "
                        f"{type(amount).__name__} {amount!r}")
    if isinstance(amount, numbers.Integral):
        return check_int(amount, name, minimum=0)
    return round(check_real(amount, name, low=0.0, high=1.0, high_open=True) * n)


def unit_counts(model, amount, layers=None, scope="layer"):
    """How many units to remove: ``{hidden layer index: count}`` (``scope="layer"``), or
    ``("global", count, layers)`` for one ranking over ``layers``.

    ``amount``: a fraction (float in [0, 1): ``round(amount * n)`` of ``n`` units, as
    torch rounds) or a count (int), of each layer's units or of all of ``layers``'
    units together (``"global"``); or a mapping {layer index: fraction or count}, each
    layer its own (``"layer"`` scope, ``layers`` not given). A request that would
    remove every unit of a layer is a ValueError.
    """
    check_model(model)
    n_hidden = _hidden(model)
    if not isinstance(scope, str) or scope not in UNIT_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(map(repr, UNIT_SCOPES))} for "
                         f"units, got {scope!r}")
    if isinstance(amount, Mapping):
        if layers is not None or scope != "layer":
            raise ValueError("amount as a mapping {layer: amount} names the layers itself: "
                             "give neither layers nor scope='global' with it")
        amounts = {_check_layer(l, n_hidden, f"amount key {l!r}"): a for l, a in amount.items()}
    else:
        if layers is None:
            layers = range(n_hidden)
        elif isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError(f"layers must be a list of hidden layer indices, got {layers!r}")
        layers = sorted({_check_layer(l, n_hidden, f"layers entry {l!r}") for l in layers})
        if not layers:
            raise ValueError("layers must name at least one hidden layer")
        if scope == "global":
            units = [model.sizes[l + 1] for l in layers]
            count = _count(amount, sum(units), "amount")
            room = sum(units) - len(units)
            if count > room:
                raise ValueError(f"amount asks for {count} of the {sum(units)} units of "
                                 f"layers {layers}; at most {room} can go, as every layer "
                                 f"keeps at least one")
            return ("global", count, layers)
        amounts = {l: amount for l in layers}
    counts = {}
    for l, a in sorted(amounts.items()):
        n = model.sizes[l + 1]
        counts[l] = _count(a, n, f"amount[{l}]" if isinstance(amount, Mapping) else "amount")
        if counts[l] >= n:
            raise ValueError(f"amount for layer {l} would remove {counts[l]} of its {n} "
                             f"units; a layer keeps at least one")
    return counts


def _lowest(scores, count):
    """Indices of the ``count`` lowest scores, ties to the lower index."""
    return np.argsort(scores, kind="stable")[:count]


def neurons(model, amount, criterion="l2", data=None, layers=None, scope="layer"):
    """Remove whole hidden units from ``model``, in place; its layers shrink.

    Parameters
    ----------
    model : MLP
        With at least one hidden layer. Its masks are kept on the surviving weights, so
        structured and unstructured pruning compose (shrink, then sparsify).
    amount : float, int or {layer index: float or int}
        A fraction of the units (float in [0, 1), ``round(amount * n)`` of ``n``: torch's
        convention) or a count (int), of each layer in ``layers`` (``scope="layer"``) or
        of all their units together (``scope="global"``); a mapping gives each layer its
        own. Removing every unit of a layer is a ValueError.
    criterion : "l2", "l1", "taylor", "activation" or a UnitCriterion
        What a unit is worth (:mod:`sparseprune.prune.units`): the norm of its incoming
        weights, the first-order Taylor estimate of the loss's change when it goes (on
        ``data``), or its mean absolute output (on ``data``). The lowest go first, ties
        to the lower index.
    data : (X, y), optional
        Required by "taylor" and "activation" ("activation" takes ``(X, None)``).
    layers : list of int, optional
        The hidden layers to shrink (indices into ``model.layers``, the last excluded:
        its outputs are the classes); all of them by default.
    scope : "layer" or "global"
        Per layer, or one ranking over the units of all ``layers`` (scores compared
        across layers as they are; each layer's best unit is never removed, so no layer
        empties).

    Returns
    -------
    model
    """
    counts = unit_counts(model, amount, layers, scope)
    criterion = get_unit_criterion(criterion, data)
    scores = check_unit_scores(criterion, criterion.scores(model), model)
    if isinstance(counts, tuple):
        _, count, chosen = counts
        ranked = []
        for l in chosen:
            s = scores[l].copy()
            s[np.argmax(s)] = np.inf  # each layer's best unit stays
            ranked.append(s)
        flat = _lowest(np.concatenate(ranked), count)
        offsets = np.cumsum([0] + [s.size for s in ranked])
        removal = {l: flat[(flat >= lo) & (flat < hi)] - lo
                   for l, lo, hi in zip(chosen, offsets[:-1], offsets[1:])}
    else:
        removal = {l: _lowest(scores[l], k) for l, k in counts.items()}
    for l, units in removal.items():
        if units.size:
            model.remove_units(l, units)
    return model


class UnitPlan:
    """The iterative driver's plan for removing units (``structure="neurons"``).

    ``target``: the fraction of the hidden units, as they are when the plan is made,
    to have removed at the last step; ``scope`` "layer" (that fraction of each hidden
    layer), "global" (of all of them, one ranking) or {layer index: fraction} (each
    named layer its own, ``target`` for the rest). The schedule runs from 0 (units
    removed before count as the starting point) to the target.
    """

    def __init__(self, model, target, scope, criterion, data):
        n_hidden = _hidden(model)
        self.start = list(model.sizes[1:-1])
        self.criterion = get_unit_criterion(criterion, data)
        self.global_scope = scope == "global"
        if isinstance(scope, Mapping):
            fractions = {_check_layer(l, n_hidden, f"scope key {l!r}"): f
                         for l, f in scope.items()}
            self.fractions = [check_real(fractions.get(l, target), f"scope[{l}]", low=0.0,
                                         high=1.0, high_open=True) for l in range(n_hidden)]
        elif scope in UNIT_SCOPES:
            self.fractions = [target] * n_hidden
        else:
            raise ValueError(f"scope must be 'layer', 'global' or a mapping {{layer: "
                             f"fraction}} with structure='neurons', got {scope!r}")
        self.target = target
        # Checked before anything is removed: the final request must be possible.
        if self.global_scope:
            self.final = unit_counts(model, target, scope="global")[1]
        else:
            self.final = [unit_counts(model, {l: f})[l] for l, f in enumerate(self.fractions)]

    def prune(self, model, step, steps, schedule):
        """Remove the units of ``step`` (1..steps); returns the step's target fraction."""
        last = step == steps
        if self.global_scope:
            total = sum(self.start)
            goal = self.final if last else min(
                round(schedule(step, steps, self.target, 0.0) * total), self.final)
            removed = total - sum(model.sizes[1:-1])
            neurons(model, max(goal - removed, 0), self.criterion, scope="global")
            return goal / total
        goals, counts = [], {}
        for l, (n0, f, final) in enumerate(zip(self.start, self.fractions, self.final)):
            goals.append(final if last else
                         min(round(schedule(step, steps, f, 0.0) * n0), final))
            counts[l] = max(goals[-1] - (n0 - model.sizes[l + 1]), 0)
        neurons(model, counts, self.criterion)
        return sum(goals) / sum(self.start)
