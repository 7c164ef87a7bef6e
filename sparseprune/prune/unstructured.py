"""Unstructured pruning: remove individual weights by score, over a scope."""

import warnings

import numpy as np

from .._validation import check_sparsity
from .criteria import Random, check_score_arrays, get_criterion
from .scopes import check_scope, layer_counts

__all__ = ["EmptyLayerWarning", "apply_counts", "check_model", "check_scores", "keep_mask",
           "magnitude", "prune", "random", "unstructured"]


class EmptyLayerWarning(UserWarning):
    """Global pruning took every weight of a layer: the model's outputs no longer depend
    on its input. Filter it where that is what you are exploring (an MDL sweep to 99%)."""


def check_model(model):
    """``model`` if it is an MLP (a model with masks to prune), else a TypeError."""
    layers = getattr(model, "layers", None)
    if not layers or not all(hasattr(layer, "mask") for layer in layers):
        raise TypeError(f"model must be a sparseprune MLP, got {type(model).__name__}")
    return model


def check_scores(criterion, scores, layers):
    """A criterion is user code: its scores get the same checks as any input. Returns
    them as float64 arrays, one (in, out) per layer."""
    return check_score_arrays(criterion, scores, [layer.shape for layer in layers],
                              shape_note=" (in, out)")


def _keep(scores, alive, n_prune):
    ranked = np.where(alive, scores, -np.inf)
    order = np.argsort(ranked, kind="stable")
    mask = alive.copy()
    mask[order[:n_prune]] = False
    return mask


def keep_mask(scores, alive, sparsity):
    """The mask that prunes ``round(sparsity * n)`` of ``n`` entries.

    scores: float64 (n,), higher is more important; alive: bool (n,), the current mask.
    Entries already pruned are pruned first and count towards the total, so the mask
    only ever loses entries. Among the rest the lowest scores go; ties go to the lower
    index, so the result is deterministic. Returns a new bool (n,) array.
    """
    return _keep(scores, alive, round(sparsity * scores.size))


def apply_counts(model, scores, counts):
    """Prune ``model`` in place by ``scores`` (float64 (in, out) per layer, checked):
    ``counts`` an int, the weights to have pruned over all layers in one ranking, or a
    list of ints, those of each layer. Already pruned weights count and stay pruned.

    One ranking over layers of different scales can take every weight of a layer, as
    torch's ``global_unstructured`` does (the masks here stay torch's): the model's
    outputs then no longer depend on its input, which an :class:`EmptyLayerWarning`
    says. A budget per layer that rounds to the whole layer is the caller's own ask."""
    layers = model.layers
    if not isinstance(counts, int):
        for layer, s, k in zip(layers, scores, counts):
            layer.mask = _keep(s.ravel(), layer.mask.ravel(), k).reshape(layer.shape)
        return model
    had_weights = [layer.mask.any() for layer in layers]
    flat = _keep(np.concatenate([s.ravel() for s in scores]),
                 np.concatenate([layer.mask.ravel() for layer in layers]), counts)
    offsets = np.cumsum([0] + [layer.n_weights for layer in layers])
    for layer, lo, hi in zip(layers, offsets[:-1], offsets[1:]):
        layer.mask = flat[lo:hi].reshape(layer.shape)
    emptied = [i for i, (had, layer) in enumerate(zip(had_weights, layers))
               if had and not layer.mask.any()]
    if emptied:
        warnings.warn(f"global pruning removed every weight of layer(s) {emptied}: the "
                      f"model's outputs no longer depend on its input (scope='layer' or "
                      f"'erk' share the budget layer by layer)", EmptyLayerWarning,
                      stacklevel=3)
    return model


def prune(model, sparsity, criterion="magnitude", data=None, scope="global"):
    """Prune ``model`` in place to ``sparsity`` by ``criterion`` scores, over ``scope``.

    Parameters
    ----------
    model : MLP
    sparsity : float in [0, 1)
        Fraction of weights to have pruned afterwards: exactly ``round(sparsity * n)``
        with ``n`` the weights of all layers (``scope="global"``, one ranking over every
        layer) or of each layer (``scope="layer"``); see ``scope`` for the others.
        Weights pruned before count as pruned, and none is ever restored: asking for
        less than the current sparsity changes nothing. Biases are never pruned.
    criterion : str or :class:`~sparseprune.prune.criteria.Criterion`
        "magnitude" (|w|), "random" (drawn from the model's seed; ``Random(seed)``
        chooses another), or by gradients on ``data``: "taylor" (|w g| per batch,
        averaged), "snip" (|w g| normalized, from one batch: prune at initialization),
        "movement" (-w g; see :class:`~sparseprune.prune.criteria.Movement` for its
        one-shot and its iterative use). A Criterion object (``Taylor(X, y,
        batch_size=32)``) chooses its own options.
    data : (X, y), optional
        Training samples (n_samples, n_features) and labels (n_samples,), required by
        the gradient criteria by name (a clear error without them).
    scope : "global", "layer", "erk" or {layer index: sparsity}
        How the budget is shared among layers (:mod:`sparseprune.prune.scopes`): one
        ranking over all layers; the same sparsity in each; Erdos-Renyi-Kernel
        densities (exactly ``round(sparsity * n)`` weights pruned in all); or each named
        layer's own sparsity, ``sparsity`` for the rest.

    Returns
    -------
    model
    """
    check_model(model)
    sparsity = check_sparsity(sparsity)
    layers = model.layers
    scope = check_scope(scope, len(layers))
    criterion = get_criterion(criterion, seed=model.seed, data=data)
    scores = check_scores(criterion, criterion.scores(model), layers)
    counts = layer_counts(scope, [layer.shape for layer in layers], sparsity)
    if counts is None:
        counts = round(sparsity * sum(layer.n_weights for layer in layers))
    return apply_counts(model, scores, counts)


def unstructured(model, sparsity, criterion="magnitude", scope="global", data=None):
    """Prune ``model`` in place to ``sparsity`` by ``criterion``: :func:`prune` (the
    name of sparseprune 0.1, its arguments in their order then)."""
    return prune(model, sparsity, criterion=criterion, data=data, scope=scope)


def magnitude(model, sparsity, scope="global"):
    """Prune the smallest-magnitude weights of ``model`` in place; see :func:`prune`.

    The masks are those ``torch.nn.utils.prune.global_unstructured`` (``scope="global"``)
    or ``l1_unstructured`` per layer (``scope="layer"``) choose on the same weights.
    Returns the model.
    """
    return prune(model, sparsity, criterion="magnitude", scope=scope)


def random(model, sparsity, scope="global", seed=None):
    """Prune uniformly random weights of ``model`` in place; see :func:`prune`.

    ``seed`` defaults to the model's own, as ``criterion="random"`` does, so a seeded
    model prunes reproducibly either way."""
    check_model(model)
    return prune(model, sparsity, criterion=Random(model.seed if seed is None else seed),
                 scope=scope)
