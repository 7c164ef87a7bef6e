"""Dynamic sparse training: start sparse, stay sparse, move the connections.

The network trains at a fixed sparsity from its first step. Every ``update_every``
steps each layer drops its smallest-magnitude active weights and grows as many new
connections: at random (SET, Mocanu et al. 2018) or where the dense gradient of the
step's batch is largest (RigL, Evci et al. 2020). The fraction moved decays along a
schedule (cosine by default, reaching zero at 3/4 of training, as RigL's). Grown
weights start at zero with fresh optimizer state; the others keep theirs.

With ``backend="sparse"`` the layers train through the CSR kernels and their pattern is
rebuilt only at updates: every step in between costs what the nonzeros cost. RigL's
dense gradient is computed at update steps only, one layer at a time, from the
activations and output gradients the step left in the workspace (``x @ dz.T``); no more
than one layer's dense gradient is held at once.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .._tuning import check_backend
from .._validation import check_choice, check_int, check_real, check_sparsity
from ..passes import Workspace
from ..train import (FitOptions, bind, check_validation_data, choose_backends, record_epoch,
                     run_epoch, take_rows)
from .scopes import check_scope, layer_counts
from .unstructured import check_model

__all__ = ["DROP_SCHEDULES", "END_FRACTION", "METHODS", "DynamicHistory", "MaskUpdate",
           "drop_fraction_at", "drop_positions", "dynamic", "grow_positions"]

METHODS = ("rigl", "set")
DROP_SCHEDULES = ("cosine", "linear", "constant")
#: Connections stop moving at this fraction of the training steps (RigL's end_step).
END_FRACTION = 0.75


def drop_fraction_at(step, end, initial, schedule):
    """The fraction of each layer's active weights moved at ``step`` of ``end``:
    ``initial`` decayed to 0 along ``schedule`` ("cosine": ``initial (1 + cos(pi t /
    end)) / 2``; "linear"; "constant": ``initial`` until ``end``), 0 from ``end`` on."""
    if step >= end:
        return 0.0
    if schedule == "cosine":
        return initial * 0.5 * (1.0 + math.cos(math.pi * step / end))
    if schedule == "linear":
        return initial * (1.0 - step / end)
    return initial


def _smallest(values, where, k):
    """The ``k`` entries of ``where`` (flat indices, increasing) of smallest ``values``
    (ties to the lower index), in O(n): a partition finds the k-th value, and only the
    entries equal to it need choosing (a full sort of millions of candidates at every
    update cost more than the steps between updates)."""
    if k <= 0:
        return where[:0]
    if k >= where.size:
        return where
    kth = np.partition(values, k - 1)[k - 1]
    below = where[values < kth]
    ties = where[values == kth]  # increasing, so the lower indices come first
    return np.concatenate([below, ties[: k - below.size]])


def drop_positions(weights, active, k):
    """Flat indices of the ``k`` active entries of smallest |weight| (ties to the lower
    index). weights: (n,); active: bool (n,)."""
    where = np.flatnonzero(active)
    return _smallest(np.abs(weights[where]), where, k)


def grow_positions(scores, candidates, k):
    """Flat indices of the ``k`` candidates of largest score (ties to the lower index).
    scores: (n,); candidates: bool (n,)."""
    where = np.flatnonzero(candidates)
    return _smallest(-scores[where], where, k)


@dataclass(frozen=True)
class MaskUpdate:
    """One update of the connections: at optimizer step ``step`` the fraction
    ``fraction`` of each layer's active weights moved. Per layer: ``active`` weights,
    ``dropped`` and ``grown`` flat (in * out) positions; ``turnover`` is the share of
    all active weights that moved."""

    step: int
    fraction: float
    active: tuple
    dropped: tuple
    grown: tuple

    @property
    def moved(self):
        return tuple(len(d) for d in self.dropped)

    @property
    def turnover(self):
        return sum(self.moved) / max(1, sum(self.active))


@dataclass
class DynamicHistory:
    """Per epoch, as :class:`~sparseprune.train.History` (``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``), and every mask update."""

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    updates: list = field(default_factory=list)


def _initial_masks(model, sparsity, scope, rng):
    """A random mask per layer with the budget's number of active weights."""
    shapes = [layer.shape for layer in model.layers]
    counts = layer_counts("layer" if scope == "global" else scope, shapes, sparsity)
    masks = []
    for (n_in, n_out), pruned in zip(shapes, counts):
        flat = np.zeros(n_in * n_out, bool)
        flat[rng.choice(flat.size, flat.size - pruned, replace=False)] = True
        masks.append(flat.reshape(n_in, n_out))
    return masks


def dynamic(model, X, y, sparsity, method="rigl", epochs=100, update_every=100,
            drop_fraction=0.3, drop_schedule="cosine", scope="erk", backend="sparse",
            validation_data=None, callback=None, progress=True, **fit_options):
    """Train ``model`` sparse from the start, moving connections as it goes; in place.

    The model's masks are replaced by random ones at ``sparsity``, shared among layers
    by ``scope`` ("erk" by default, Evci et al.'s; "layer", a {layer: sparsity} mapping;
    "global" draws each layer at the same sparsity); its weights keep their values where
    active. Then it trains ``epochs`` epochs, and every ``update_every`` optimizer steps
    before 3/4 of them each layer moves ``round(f * active)`` connections, ``f`` being
    ``drop_fraction`` decayed along ``drop_schedule``: the smallest |w| go, and as many
    come where ``method`` says ("rigl": largest |dense gradient| of the step's batch,
    "set": uniformly at random), among every position left inactive. Each layer's
    number of active weights never changes.

    ``fit_options`` are :class:`~sparseprune.train.FitOptions`' (``lr``, ``batch_size``,
    ``optimizer``, ``seed``, ...); by default every epoch trains (``tol=None``), since
    the schedule counts steps. ``callback(update, model)``, if given, is called after
    each update with the model's weights and masks as they now are.

    Returns a :class:`DynamicHistory`.
    """
    check_model(model)
    sparsity = check_sparsity(sparsity)
    method = check_choice(method, "method", METHODS)
    update_every = check_int(update_every, "update_every", minimum=1)
    drop_fraction = check_real(drop_fraction, "drop_fraction", low=0.0, high=1.0)
    drop_schedule = check_choice(drop_schedule, "drop_schedule", DROP_SCHEDULES)
    scope = check_scope(scope, len(model.layers))
    backend = check_backend(backend)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (update, model), got {callback!r}")
    taken = sorted({"progress", "backend"} & set(fit_options))
    if taken:
        raise TypeError(f"dynamic() got unexpected keyword arguments {taken}")
    options = FitOptions.from_kwargs("dynamic", **{"tol": None, **fit_options},
                                     epochs=epochs, progress=False, backend=backend)
    xs = model.sample_major(X)
    targets = model.targets(y, xs.shape[0])
    validation = check_validation_data(model, validation_data)
    n = xs.shape[0]
    batch = options.batch_for(n)
    seed = int(model.rng.integers(2**63)) if options.seed is None else options.seed
    # Shuffling draws from the seed as fit's does; the masks and SET's growth from a
    # stream of their own.
    rng = np.random.default_rng(seed)
    pattern_rng = np.random.default_rng((seed, 1))
    for layer, mask in zip(model.layers, _initial_masks(model, sparsity, scope, pattern_rng)):
        layer.mask = mask
    ws = Workspace(model.sizes, batch, model.dtype, model.activation, model.head)
    # "auto" measures each layer's backend once; updates rebuild each in its own kind.
    backends = choose_backends(model, options.backend, batch)
    makers = [type(each) for each in backends]
    optimizer = options.make_optimizer()
    grads = bind(optimizer, backends, ws)
    end = END_FRACTION * options.epochs * -(-n // batch)
    history = DynamicHistory()
    step = 0
    bar = tqdm(range(1, options.epochs + 1), desc=method, unit="epoch", disable=not progress)
    try:
        def take(idx, out):
            take_rows(xs, idx, out)

        def after_step(b):
            nonlocal step
            step += 1
            fraction = drop_fraction_at(step, end, drop_fraction, drop_schedule)
            if step % update_every == 0 and fraction > 0:
                update = _move(model, backends, grads, optimizer, ws, b, method, fraction,
                               step, makers, pattern_rng)
                history.updates.append(update)
                if callback is not None:
                    for each in backends:
                        each.finish()
                    callback(update, model)

        for epoch in bar:
            loss, correct = run_epoch(model, n, take, targets, batch, rng, ws, backends,
                                      optimizer, grads, after_step=after_step)
            bar.set_postfix(record_epoch(history, epoch, model, backends, loss, correct, n,
                                         targets, validation), refresh=False)
    finally:
        for each in backends:
            each.finish()
        bar.close()
    return history


def _move(model, backends, grads, optimizer, ws, batch, method, fraction, step, makers, rng):
    """Drop and grow in every layer; rebuild its backend and its optimizer state."""
    acts = ws.acts(batch)
    hidden_grads = ws.grads(batch)
    last = len(backends) - 1
    active, drops, grows = [], [], []
    for i, (layer, backend) in enumerate(zip(model.layers, backends)):
        backend.finish()  # the layer's weight now holds the trained values
        weight = np.array(layer.weight, dtype=np.float64).ravel()
        mask = layer.mask.ravel().copy()
        n_active = int(mask.sum())
        k = min(round(fraction * n_active), mask.size - n_active)
        active.append(n_active)
        if k == 0:
            drops.append(np.empty(0, np.int64))
            grows.append(np.empty(0, np.int64))
            continue
        dropped = drop_positions(weight, mask, k)
        mask[dropped] = False
        if method == "rigl":
            # The dense gradient of the step's batch, this layer's alone: x (in, b) times
            # the gradient at its pre-activation (out, b), left in the workspace.
            dz = acts[-1] if i == last else hidden_grads[i]
            scores = np.abs(acts[i].astype(np.float64) @ dz.T.astype(np.float64)).ravel()
            grown = grow_positions(scores, ~mask, k)
        else:
            grown = rng.choice(np.flatnonzero(~mask), k, replace=False)
        mask[grown] = True
        weight[grown] = 0.0  # grown connections start at zero
        drops.append(np.sort(dropped))
        grows.append(np.sort(grown))
        old_positions = backend_positions(backend, layer)
        layer.mask = mask.reshape(layer.shape)
        layer.weight = (weight * mask).reshape(layer.shape)
        fresh = makers[i](layer)
        source = _continuation(old_positions, backend_positions(fresh, layer), grown,
                               layer.n_weights)
        values, live = fresh.parameters[0]
        optimizer.remap(2 * i, values, live, source)
        grads[2 * i] = fresh.grads[0]
        backends[i] = fresh
    return MaskUpdate(step=step, fraction=fraction, active=tuple(active), dropped=tuple(drops),
                      grown=tuple(grows))


def backend_positions(backend, layer):
    """The flat (in * out) position of each entry of the backend's weight parameter."""
    if getattr(backend, "positions", None) is None:
        return np.arange(layer.n_weights)
    inputs, outputs = backend.positions
    return inputs * layer.out_features + outputs


def _continuation(old, new, grown, size):
    """For each new entry the index of the old entry it continues, -1 if it is new (a
    grown connection: fresh state)."""
    index = np.full(size, -1, np.int64)
    index[old] = np.arange(old.size)
    source = index[new]
    fresh = np.zeros(size, bool)
    fresh[grown] = True
    source[fresh[new]] = -1
    return source
