"""Scopes: how the pruning budget is shared among layers.

A scope turns a sparsity into how many weights each layer loses:

- ``"global"``: one ranking over every layer's scores (no per-layer counts);
- ``"layer"``: the same sparsity in every layer, ``round(sparsity * n_l)`` of its
  ``n_l`` weights (torch's ``l1_unstructured`` per layer);
- ``"erk"``: Erdos-Renyi-Kernel (Evci et al. 2020): layer density proportional to
  ``(n_in + n_out) / (n_in * n_out)``, scaled so that the whole model reaches the
  sparsity, capped at dense with the cap's surplus shared by the others (see
  :func:`erk_densities`, :func:`layer_counts` for the rounding);
- a mapping ``{layer index: sparsity}``: the sparsity of each layer it names; the
  layers it does not name get the sparsity given beside it.
"""

from collections.abc import Mapping

import numpy as np

from .._validation import check_choice, check_int, check_sparsity

__all__ = ["SCOPES", "check_scope", "erk_densities", "layer_counts"]

SCOPES = ("global", "layer", "erk")


def check_scope(scope, n_layers, name="scope"):
    """``scope`` checked against a model of ``n_layers`` layers: one of :data:`SCOPES`,
    or a mapping turned into a dict {int layer index: float sparsity}."""
    if isinstance(scope, Mapping):
        checked = {}
        for key, value in scope.items():
            index = check_int(key, f"{name} key {key!r}")
            if not 0 <= index < n_layers:
                raise ValueError(f"{name} names layer {index}, but the model has layers "
                                 f"0..{n_layers - 1}")
            checked[index] = check_sparsity(value, f"{name}[{index}]")
        return checked
    if not isinstance(scope, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, SCOPES))} or a mapping "
                        f"{{layer index: sparsity}}, got {type(scope).__name__}")
    return check_choice(scope, name, SCOPES)


def erk_densities(shapes, sparsity):
    """The Erdos-Renyi-Kernel density of each layer, float64 (n_layers,).

    shapes: [(n_in, n_out)] per layer. The density of layer ``l`` is
    ``min(1, eps * (n_in + n_out) / (n_in * n_out))`` with the one ``eps`` for which the
    kept weights add up to ``(1 - sparsity) * N`` (``N`` all weights). A layer the
    formula would make denser than dense is kept dense, and ``eps`` is solved again for
    the rest, until none is over (RigL's ``get_sparsities_erdos_renyi``).
    """
    sizes = np.array([n_in * n_out for n_in, n_out in shapes], dtype=np.float64)
    raw = np.array([(n_in + n_out) / (n_in * n_out) for n_in, n_out in shapes])
    kept = (1.0 - sparsity) * sizes.sum()
    dense = np.zeros(len(shapes), dtype=bool)
    while not dense.all():
        free = ~dense
        eps = (kept - sizes[dense].sum()) / (raw[free] * sizes[free]).sum()
        # A layer over the cap at this eps is over it at every later eps too (capping
        # only raises eps), so all of them can be capped at once.
        over = free & (eps * raw > 1.0)
        if not over.any():
            return np.where(dense, 1.0, eps * raw)
        dense |= over
    return np.ones(len(shapes))


def _largest_remainder(exact, limits, total):
    """Integers ``k_l <= limits_l`` summing to ``total``, each ``floor(exact_l)`` or one
    more: the ``total - sum(floor)`` largest fractional parts get the extra one, ties to
    the lower index (Hamilton's apportionment)."""
    counts = np.minimum(np.floor(exact), limits).astype(np.int64)
    fraction = exact - np.floor(exact)
    short = int(total - counts.sum())
    for l in np.argsort(-fraction, kind="stable"):
        if short <= 0:
            break
        if counts[l] < limits[l]:
            counts[l] += 1
            short -= 1
    # Rounding error in the densities can leave the floors one over: take it back where
    # the fractional part was smallest.
    for l in np.argsort(fraction, kind="stable"):
        if short >= 0:
            break
        if counts[l] > 0:
            counts[l] -= 1
            short += 1
    return counts


def layer_counts(scope, shapes, sparsity):
    """How many weights each layer must have pruned: a list of ints, one per layer, or
    None for ``"global"`` (one ranking of ``round(sparsity * N)`` weights over all).

    scope: checked by :func:`check_scope`; shapes: [(n_in, n_out)] per layer.

    Rounding: ``"layer"`` and a mapping prune ``round(s_l * n_l)`` of each layer's
    ``n_l`` weights (Python's round, halves to even: torch's convention). ``"erk"`` keeps
    exactly ``N - round(sparsity * N)`` weights in all, as the global scope does: each
    layer keeps ``floor(d_l * n_l)`` (``d_l`` from :func:`erk_densities`) and the weights
    still missing go one each to the layers with the largest fractional parts of
    ``d_l * n_l`` (ties to the lower index); a dense layer keeps all its weights.
    """
    n = [n_in * n_out for n_in, n_out in shapes]
    if isinstance(scope, dict):
        return [round(scope.get(l, sparsity) * n_l) for l, n_l in enumerate(n)]
    if scope == "global":
        return None
    if scope == "layer":
        return [round(sparsity * n_l) for n_l in n]
    total = sum(n)
    kept = _largest_remainder(erk_densities(shapes, sparsity) * np.array(n, dtype=np.float64),
                              np.array(n), total - round(sparsity * total))
    return [n_l - int(k) for n_l, k in zip(n, kept)]
