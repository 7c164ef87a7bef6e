"""Unstructured pruning: remove individual weights by score, globally or per layer."""

import numpy as np

from .._validation import check_choice, check_sparsity
from .criteria import Random, get_criterion

__all__ = ["SCOPES", "check_model", "keep_mask", "magnitude", "random", "unstructured"]

SCOPES = ("global", "layer")


def check_model(model):
    """``model`` if it is an MLP (a model with masks to prune), else a TypeError."""
    layers = getattr(model, "layers", None)
    if not layers or not all(hasattr(layer, "mask") for layer in layers):
        raise TypeError(f"model must be a sparseprune MLP, got {type(model).__name__}")
    return model


def _check_scores(criterion, scores, layers):
    """A criterion is user code: its scores get the same checks as any input."""
    if not isinstance(scores, (list, tuple)) or len(scores) != len(layers):
        raise ValueError(f"criterion {criterion!r} must return one score array per layer "
                         f"({len(layers)}), got {type(scores).__name__}")
    checked = []
    for i, (s, layer) in enumerate(zip(scores, layers)):
        s = np.asarray(s, dtype=np.float64)
        if s.shape != layer.shape:
            raise ValueError(f"criterion {criterion!r} scores for layer {i} must have shape "
                             f"{layer.shape} (in, out), got {s.shape}")
        if np.isnan(s).any():
            raise ValueError(f"criterion {criterion!r} scores for layer {i} contain NaN")
        checked.append(s)
    return checked


def keep_mask(scores, alive, sparsity):
    """The mask that prunes ``round(sparsity * n)`` of ``n`` entries.

    scores: float64 (n,), higher is more important; alive: bool (n,), the current mask.
    Entries already pruned are pruned first and count towards the total, so the mask
    only ever loses entries. Among the rest the lowest scores go; ties go to the lower
    index, so the result is deterministic. Returns a new bool (n,) array.
    """
    n = scores.size
    n_prune = round(sparsity * n)
    ranked = np.where(alive, scores, -np.inf)
    order = np.argsort(ranked, kind="stable")
    mask = alive.copy()
    mask[order[:n_prune]] = False
    return mask


def unstructured(model, sparsity, criterion="magnitude", scope="global"):
    """Prune ``model`` in place to ``sparsity`` by ``criterion`` scores.

    Parameters
    ----------
    model : MLP
    sparsity : float in [0, 1)
        Fraction of weights to have pruned afterwards: exactly ``round(sparsity * n)``
        with ``n`` the weights of all layers (``scope="global"``, one ranking over every
        layer) or of each layer (``scope="layer"``). Weights pruned before count as
        pruned, and none is ever restored: asking for less than the current sparsity
        changes nothing. Biases are never pruned.
    criterion : "magnitude", "random" or a :class:`~sparseprune.prune.criteria.Criterion`
        "random" draws from the model's seed, so a seeded model prunes reproducibly;
        ``Random(seed)`` chooses another.
    scope : "global" or "layer"

    Returns
    -------
    model
    """
    check_model(model)
    sparsity = check_sparsity(sparsity)
    check_choice(scope, "scope", SCOPES)
    criterion = get_criterion(criterion, seed=model.seed)
    layers = model.layers
    scores = _check_scores(criterion, criterion.scores(model), layers)
    if scope == "layer":
        for layer, s in zip(layers, scores):
            layer.mask = keep_mask(s.ravel(), layer.mask.ravel(), sparsity).reshape(layer.shape)
        return model
    flat = keep_mask(
        np.concatenate([s.ravel() for s in scores]),
        np.concatenate([layer.mask.ravel() for layer in layers]),
        sparsity,
    )
    offsets = np.cumsum([0] + [layer.n_weights for layer in layers])
    for layer, lo, hi in zip(layers, offsets[:-1], offsets[1:]):
        layer.mask = flat[lo:hi].reshape(layer.shape)
    return model


def magnitude(model, sparsity, scope="global"):
    """Prune the smallest-magnitude weights of ``model`` in place; see :func:`unstructured`.

    The masks are those ``torch.nn.utils.prune.global_unstructured`` (``scope="global"``)
    or ``l1_unstructured`` per layer (``scope="layer"``) choose on the same weights.
    Returns the model.
    """
    return unstructured(model, sparsity, criterion="magnitude", scope=scope)


def random(model, sparsity, scope="global", seed=None):
    """Prune uniformly random weights of ``model`` in place; see :func:`unstructured`.

    ``seed`` defaults to the model's own, as ``criterion="random"`` does, so a seeded
    model prunes reproducibly either way."""
    check_model(model)
    return unstructured(model, sparsity, criterion=Random(model.seed if seed is None else seed),
                        scope=scope)
