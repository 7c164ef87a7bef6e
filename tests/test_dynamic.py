"""prune.dynamic (RigL, SET): exact sparsity, untouched pruned positions between updates,
RigL's growth against a plain NumPy gradient, backends that agree, and bad input."""

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import reference as ref
import sparseprune as spp
from helpers import random_problem
from sparseprune.prune import regrowth as dyn


def test_drop_fraction_schedules():
    assert dyn.drop_fraction_at(0, 100, 0.3, "cosine") == pytest.approx(0.3)
    assert dyn.drop_fraction_at(50, 100, 0.3, "cosine") == pytest.approx(0.15)
    assert dyn.drop_fraction_at(25, 100, 0.3, "cosine") == pytest.approx(
        0.15 * (1 + math.cos(math.pi / 4)))
    assert dyn.drop_fraction_at(50, 100, 0.3, "linear") == pytest.approx(0.15)
    assert dyn.drop_fraction_at(99, 100, 0.3, "constant") == 0.3
    for schedule in dyn.DROP_SCHEDULES:
        assert dyn.drop_fraction_at(100, 100, 0.3, schedule) == 0.0


def test_drop_and_grow_select_against_numpy():
    rng = np.random.default_rng(0)
    w = rng.normal(size=50)
    w[[3, 9]] = 0.01  # a tie in |w|: the lower index goes first
    active = rng.random(50) < 0.6
    active[[3, 9]] = True
    dropped = dyn.drop_positions(w, active, 5)
    candidates = np.flatnonzero(active)
    expected = candidates[np.lexsort((candidates, np.abs(w[candidates])))][:5]
    assert_array_equal(np.sort(dropped), np.sort(expected))
    assert 3 in dropped and 9 in dropped
    scores = np.round(rng.random(50), 1)  # ties among scores
    grown = dyn.grow_positions(scores, ~active, 4)
    idle = np.flatnonzero(~active)
    assert_array_equal(np.sort(grown), np.sort(idle[np.lexsort((idle, -scores[idle]))][:4]))
    # Ties at the boundary go to the lower indices.
    flat = np.zeros(10)
    assert_array_equal(np.sort(dyn.grow_positions(flat, np.ones(10, bool), 3)), [0, 1, 2])
    assert_array_equal(np.sort(dyn.drop_positions(flat, np.ones(10, bool), 2)), [0, 1])


def small(seed=0, dtype="float64"):
    return spp.MLP([6, 20, 12, 3], dtype=dtype, seed=seed)


@pytest.mark.parametrize("method", dyn.METHODS)
@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_sparsity_is_exact_and_pruned_positions_stay_zero(method, backend):
    X, y = random_problem(96, 6, 3, 0)
    model = small()
    seen = []

    def check(update, model):
        counts = tuple(layer.n_active for layer in model.layers)
        assert counts == update.active  # the same number of active weights as before
        for layer in model.layers:
            assert (layer.weight[~layer.mask] == 0).all()
        seen.append((update, [layer.mask.copy() for layer in model.layers],
                     [layer.weight.copy() for layer in model.layers]))

    history = spp.prune.dynamic(model, X, y, 0.8, method=method, epochs=6, update_every=2,
                                batch_size=16, backend=backend, seed=3, callback=check,
                                progress=False)
    shapes = [layer.shape for layer in model.layers]
    expected = spp.prune.layer_counts("erk", shapes, 0.8)
    assert [layer.n_weights - layer.n_active for layer in model.layers] == expected
    assert len(history.updates) == len(seen) > 3
    assert all(u.turnover > 0 for u in history.updates[:3])
    assert history.updates[0].fraction == pytest.approx(
        dyn.drop_fraction_at(2, 0.75 * 6 * 6, 0.3, "cosine"))
    # Between updates nothing touches the pattern: each mask is the one before, minus
    # what the update dropped, plus what it grew; grown weights start at zero.
    for (_, before, _), (update, after, weights) in zip(seen, seen[1:]):
        for m0, m1, w, dropped, grown in zip(before, after, weights, update.dropped,
                                             update.grown):
            expected = m0.ravel().copy()
            expected[dropped] = False
            expected[grown] = True
            assert_array_equal(m1.ravel(), expected)
            assert m0.ravel()[dropped].all()
            assert (w.ravel()[grown] == 0).all()


def test_without_updates_it_is_fit_on_the_initial_mask():
    """update_every beyond the last step: dynamic trains exactly as fit does on the same
    random mask (same shuffling, same optimizer)."""
    X, y = random_problem(64, 6, 3, 1)
    a = small(2)
    spp.prune.dynamic(a, X, y, 0.7, epochs=3, update_every=10_000, batch_size=16, seed=4,
                      progress=False, backend="dense")
    b = small(2)
    masks = dyn._initial_masks(b, 0.7, "erk", np.random.default_rng((4, 1)))
    for layer, mask in zip(b.layers, masks):
        layer.mask = mask
    b.fit(X, y, epochs=3, batch_size=16, seed=4, tol=None, progress=False)
    for la, lb in zip(a.layers, b.layers):
        assert_array_equal(la.mask, lb.mask)
        assert_allclose(la.weight, lb.weight, rtol=1e-12, atol=1e-15)


def test_rigl_grows_the_largest_dense_gradients():
    """One full-batch SGD step, then one update: the weights that go are the smallest
    |w| after the step, the ones that come the inactive positions of largest |gradient|
    at the step's weights, both computed here in plain NumPy."""
    X, y = random_problem(40, 6, 3, 5)
    model = small(7)
    masks = dyn._initial_masks(model, 0.6, "layer", np.random.default_rng((9, 1)))
    for layer, mask in zip(model.layers, masks):
        layer.mask = mask
    weights = [layer.weight.copy() for layer in model.layers]
    biases = [layer.bias.copy() for layer in model.layers]
    _, grads = ref.backprop(weights, biases, X, y)
    lr, fraction = 0.1, 0.3
    captured = []
    # Four steps (connections move before 3/4 of them); the first update is checked.
    spp.prune.dynamic(model, X, y, 0.6, method="rigl", epochs=4, update_every=1,
                      drop_fraction=fraction, drop_schedule="constant", scope="layer",
                      batch_size="full", optimizer="sgd", momentum=0.0, lr=lr, seed=9,
                      callback=lambda u, m: captured.append([l.mask.copy() for l in m.layers]),
                      progress=False)
    assert len(captured) == 2
    for w, (g, _), mask, new in zip(weights, grads, masks, captured[0]):
        stepped = (w - lr * g * mask).ravel()
        k = round(fraction * mask.sum())
        dropped = dyn.drop_positions(stepped, mask.ravel(), k)
        idle = mask.ravel().copy()
        idle[dropped] = False
        grown = dyn.grow_positions(np.abs(g).ravel(), ~idle, k)
        expected = idle.copy()
        expected[grown] = True
        assert_array_equal(new.ravel(), expected)


@pytest.mark.parametrize("method", dyn.METHODS)
def test_the_backends_train_the_same_network(method):
    X, y = random_problem(80, 6, 3, 2)
    results = []
    for backend in ("dense", "sparse"):
        model = small(4)
        spp.prune.dynamic(model, X, y, 0.75, method=method, epochs=5, update_every=3,
                          batch_size=16, backend=backend, seed=1, progress=False)
        results.append(model)
    for a, b in zip(*(m.layers for m in results)):
        assert_array_equal(a.mask, b.mask)
        assert_allclose(a.weight, b.weight, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sparsity=1.0), ValueError, "sparsity must be < 1.0"),
    (dict(update_every=0), ValueError, "update_every must be >= 1"),
    (dict(method="grasp"), ValueError, "method must be one of 'rigl', 'set'"),
    (dict(drop_fraction=1.5), ValueError, "drop_fraction must be <= 1.0"),
    (dict(drop_schedule="step"), ValueError, "drop_schedule must be one of"),
    (dict(scope={5: 0.5}), ValueError, "scope names layer 5"),
    (dict(backend="gpu"), ValueError, "backend must be one of"),
    (dict(callback=3), TypeError, "callback must be callable"),
    (dict(momentum=0.9), ValueError, "momentum is an SGD option"),
])
def test_bad_input(kwargs, error, match):
    X, y = random_problem(20, 6, 3, 0)
    model = small()
    masks = [layer.mask.copy() for layer in model.layers]
    kwargs = {"sparsity": 0.5, **kwargs}
    with pytest.raises(error, match=match):
        spp.prune.dynamic(model, X, y, progress=False, epochs=1, **kwargs)
    assert all((layer.mask == m).all() for layer, m in zip(model.layers, masks))
