"""Layer-wise budgets (scopes) and the gradient criteria: Taylor, SNIP, movement."""

import importlib.util
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import reference as ref
import sparseprune as spp
import torch_oracle
from helpers import params, random_model, random_problem
from sparseprune.train import FitOptions, fit_fm
from strategies import mlp_sizes, seeds, sparsities

requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                    reason="PyTorch (the test extra) is the oracle")


def pruned_counts(model):
    return [int((~layer.mask).sum()) for layer in model.layers]


# -- ERK ----------------------------------------------------------------------------------


def erk_by_bisection(shapes, sparsity):
    """The ERK densities found another way: the kept count sum_l min(1, eps r_l) n_l
    rises monotonically with eps, so bisect eps until it matches (1 - s) N."""
    n = np.array([a * b for a, b in shapes], float)
    raw = np.array([(a + b) / (a * b) for a, b in shapes])
    want = (1 - sparsity) * n.sum()
    lo, hi = 0.0, 1.0 / raw.min()  # at hi every layer is dense
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (np.minimum(1, mid * raw) * n).sum() < want else (lo, mid)
    return np.minimum(1.0, hi * raw)


shapes_lists = st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300)), min_size=1,
                        max_size=5)


@given(shapes_lists, sparsities)
def test_erk_densities_against_the_formula(shapes, sparsity):
    d = spp.prune.erk_densities(shapes, sparsity)
    n = np.array([a * b for a, b in shapes], float)
    raw = np.array([(a + b) / (a * b) for a, b in shapes])
    assert d.shape == (len(shapes),) and (d > 0).all() and (d <= 1).all()
    assert (d * n).sum() == pytest.approx((1 - sparsity) * n.sum(), rel=1e-9)
    free = d < 1
    if free.any():
        eps = d[free] / raw[free]
        assert_allclose(eps, eps[0], rtol=1e-9)  # one eps for every layer under the cap
        # The cap: a dense layer is one the formula would have made denser than dense.
        assert (eps[0] * raw[~free] >= 1 - 1e-9).all()
    assert_allclose(d, erk_by_bisection(shapes, sparsity), rtol=1e-7, atol=1e-9)


def test_erk_by_hand():
    """2x2 and 10x10 at 50%: raw densities 1 and 0.2; eps = 52 / 24 caps the first
    layer, whose 4 weights leave 48 for the second (eps 2.4, density 0.48)."""
    assert_allclose(spp.prune.erk_densities([(2, 2), (10, 10)], 0.5), [1.0, 0.48])
    assert spp.prune.layer_counts("erk", [(2, 2), (10, 10)], 0.5) == [0, 52]


@given(shapes_lists, sparsities)
def test_erk_counts_hit_the_global_count(shapes, sparsity):
    """Largest remainder: every layer keeps floor(d n) or one more, and the kept weights
    add up to N - round(s N), exactly what the global scope keeps."""
    counts = spp.prune.layer_counts("erk", shapes, sparsity)
    n = np.array([a * b for a, b in shapes])
    kept = n - np.array(counts)
    assert kept.sum() == n.sum() - round(sparsity * n.sum())
    exact = spp.prune.erk_densities(shapes, sparsity) * n
    assert (kept >= np.floor(exact - 1e-6)).all() and (kept <= np.ceil(exact + 1e-6)).all()
    assert ((kept >= 0) & (kept <= n)).all()


def test_erk_on_the_digits_net():
    """64-256-128-10 at 90%: the thin output layer gets the highest density."""
    d = spp.prune.erk_densities([(64, 256), (256, 128), (128, 10)], 0.9)
    assert d[2] > d[0] > d[1]
    model = spp.MLP([64, 256, 128, 10], seed=0)
    spp.prune.prune(model, 0.9, scope="erk")
    assert sum(pruned_counts(model)) == round(0.9 * 50432)
    assert pruned_counts(model) == spp.prune.layer_counts(
        "erk", [layer.shape for layer in model.layers], 0.9)


# -- scopes with any criterion -------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layer", "erk", {0: 0.25, 2: 0.75}])
@given(sizes=mlp_sizes(max_depth=3, max_width=8), seed=seeds, sparsity=sparsities)
@settings(max_examples=40)
def test_per_layer_scopes_prune_their_counts_by_score(scope, sizes, seed, sparsity):
    model = spp.MLP(sizes, dtype="float64", seed=seed)
    if isinstance(scope, dict):
        scope = {k: v for k, v in scope.items() if k < len(model.layers)}
    weights = params(model)[0]
    spp.prune.prune(model, sparsity, scope=scope)
    expected = spp.prune.layer_counts(scope, [w.shape for w in weights], sparsity)
    assert pruned_counts(model) == expected
    for layer, w in zip(model.layers, weights):
        mask = layer.mask
        if 0 < mask.sum() < mask.size:
            assert np.abs(w[~mask]).max() <= np.abs(w[mask]).min()


def test_a_mapping_names_some_layers_and_the_rest_get_the_sparsity():
    model = spp.MLP([8, 16, 12, 4], seed=0)
    spp.prune.prune(model, 0.5, scope={2: 0.25})
    assert pruned_counts(model) == [64, 96, 12]


@pytest.mark.parametrize("scope, error, match", [
    ({3: 0.5}, ValueError, "names layer 3, but the model has layers 0..2"),
    ({-1: 0.5}, ValueError, "names layer -1"),
    ({0: 1.0}, ValueError, r"scope\[0\] must be < 1"),
    ({"0": 0.5}, TypeError, "scope key '0' must be an integer"),
    ("erk ", ValueError, "scope must be one of 'global', 'layer', 'erk'"),
    (["layer"], TypeError, "or a mapping"),
])
def test_bad_scopes(scope, error, match):
    model = spp.MLP([4, 5, 3, 2], seed=0)
    with pytest.raises(error, match=match):
        spp.prune.prune(model, 0.5, scope=scope)
    with pytest.raises(error, match=match):
        spp.prune.iterative(model, *random_problem(4, 4, 2, 0), 0.5, steps=1,
                            finetune_epochs=0, progress=False, scope=scope)
    assert model.sparsity == 0


@pytest.mark.parametrize("scope", ["erk", {1: 0.3}])
def test_iterative_reaches_each_layers_count(scope, blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 8, 4], seed=0)
    shapes = [layer.shape for layer in model.layers]
    seen = []
    spp.prune.iterative(model, X, y, 0.8, steps=3, finetune_epochs=1, scope=scope,
                        progress=False, callback=lambda r, m: seen.append(pruned_counts(m)))
    assert seen[-1] == spp.prune.layer_counts(scope, shapes, 0.8)
    for before, after in zip(seen, seen[1:]):
        assert all(a >= b for a, b in zip(after, before))


# -- gradient criteria against autograd --------------------------------------------------------


def masked_model(sizes, seed, sparsity=0.3):
    """A float64 model with random biases and part of its weights pruned."""
    model = random_model(sizes, np.float64, seed)
    spp.prune.random(model, sparsity, seed=seed)
    return model


@requires_torch
@pytest.mark.parametrize("backend", ["dense", "sparse"])
@given(sizes=mlp_sizes(max_width=6), seed=seeds, n=st.integers(1, 20),
       batch_size=st.integers(1, 8))
@settings(max_examples=25)
def test_taylor_scores_against_torch(backend, sizes, seed, n, batch_size):
    model = masked_model(sizes, seed)
    X, y = random_problem(n, sizes[0], sizes[-1], seed)
    weights, biases, _ = params(model)
    batches = list(torch_oracle.batch_gradients(weights, biases, X, y, batch_size))
    expected = [np.mean([np.abs(w * g[i]) for _, g, _ in batches], axis=0)
                for i, w in enumerate(weights)]
    got = spp.prune.Taylor(X, y, batch_size=batch_size, backend=backend).scores(model)
    for s, e in zip(got, expected):
        assert s.dtype == np.float64
        assert_allclose(s, e, rtol=1e-9, atol=1e-13)


@requires_torch
@pytest.mark.parametrize("backend", ["dense", "sparse"])
@given(sizes=mlp_sizes(max_width=6), seed=seeds, n=st.integers(1, 20),
       batch_size=st.integers(1, 8), n_batches=st.integers(1, 3))
@settings(max_examples=25)
def test_snip_scores_against_torch(backend, sizes, seed, n, batch_size, n_batches):
    """|w g| normalized over the model, g the mean loss's gradient over the first
    batches (a mean over their samples: batches weighed by their sizes)."""
    model = masked_model(sizes, seed)
    X, y = random_problem(n, sizes[0], sizes[-1], seed)
    weights, biases, _ = params(model)
    batches = list(torch_oracle.batch_gradients(weights, biases, X, y, batch_size))
    batches = batches[:n_batches]
    samples = sum(b for b, _, _ in batches)
    sensitivity = [np.abs(w * sum(b * g[i] for b, g, _ in batches) / samples)
                   for i, w in enumerate(weights)]
    total = sum(s.sum() for s in sensitivity)
    got = spp.prune.SNIP(X, y, batch_size=batch_size, batches=n_batches,
                         backend=backend).scores(model)
    for s, e in zip(got, sensitivity):
        assert_allclose(s, e / total if total > 0 else e, rtol=1e-9, atol=1e-13)
    if total > 0:
        assert sum(s.sum() for s in got) == pytest.approx(1.0, rel=1e-12)


@requires_torch
@given(sizes=mlp_sizes(max_width=6), seed=seeds, n=st.integers(1, 20),
       batch_size=st.integers(1, 8))
@settings(max_examples=25)
def test_one_shot_movement_scores_against_torch(sizes, seed, n, batch_size):
    """No weight moves: -w times the sum of the batches' gradients."""
    model = masked_model(sizes, seed)
    X, y = random_problem(n, sizes[0], sizes[-1], seed)
    weights, biases, _ = params(model)
    batches = list(torch_oracle.batch_gradients(weights, biases, X, y, batch_size))
    got = spp.prune.Movement(X, y, batch_size=batch_size).scores(model)
    for i, (s, w) in enumerate(zip(got, weights)):
        assert_allclose(s, -w * sum(g[i] for _, g, _ in batches), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_movement_accumulates_over_training_steps(backend):
    """-sum_t w_t g_t over full-batch SGD steps, against the NumPy reference's training:
    the weights of every step and their gradients by ``reference.backprop``."""
    sizes = [5, 7, 3]
    model = masked_model(sizes, 4, sparsity=0.4)
    X, y = random_problem(30, 5, 3, 4)
    weights, biases, masks = params(model)
    movement = spp.prune.Movement(X, y)
    options = FitOptions(epochs=4, lr=0.1, optimizer="sgd", momentum=0.0, progress=False,
                         backend=backend)
    fit_fm(model, model.feature_major(X), y, None, options, on_batch=movement.observe)
    expected = [np.zeros(w.shape) for w in weights]
    sgd = ref.TorchSGD(lr=0.1)
    for _ in range(4):
        _, grads = ref.backprop(weights, biases, X, y)
        for i, ((gw, _), mask) in enumerate(zip(grads, masks)):
            expected[i] -= weights[i] * gw * mask
        weights, biases = ref.train_full_batch(weights, biases, masks, X, y, sgd, 1)
    for got, want in zip(movement.scores(model), expected):
        assert_allclose(got, want, rtol=1e-9, atol=1e-13)
    assert any(np.abs(e).max() > 0 for e in expected)


def test_iterative_movement_adds_the_fine_tuning_to_the_first_pass(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], dtype="float64", seed=0)
    one_shot = spp.prune.Movement(X, y).scores(model)
    movement = spp.prune.Movement(X, y)
    spp.prune.iterative(model, X, y, 0.5, steps=2, finetune_epochs=2, criterion=movement,
                        progress=False, batch_size=32)
    # Pruned weights are 0 in every later step: only live weights' terms were added.
    observed = [t - s for t, s in zip(movement.total, one_shot)]
    assert any(np.abs(o).max() > 0 for o in observed)
    with pytest.raises(ValueError, match="reset"):
        movement.scores(spp.MLP([6, 3, 4], seed=0))
    movement.reset()
    assert movement.scores(spp.MLP([6, 3, 4], seed=0))[0].shape == (6, 3)


@pytest.mark.parametrize("criterion", ["taylor", "snip", "movement"])
def test_gradient_criteria_prune_the_lowest_scores(criterion, blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], dtype="float64", seed=1)
    model.fit(X, y, epochs=3, progress=False)
    expected = spp.prune.get_criterion(criterion, data=(X, y)).scores(model)
    spp.prune.prune(model, 0.6, criterion=criterion, data=(X, y))
    scores = np.concatenate([s.ravel() for s in expected])
    mask = np.concatenate([layer.mask.ravel() for layer in model.layers])
    assert (~mask).sum() == round(0.6 * mask.size)
    assert scores[~mask].max() <= scores[mask].min()


# -- what criteria refuse -----------------------------------------------------------------


@pytest.mark.parametrize("criterion", ["taylor", "snip", "movement"])
def test_gradient_criteria_without_data(criterion, blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    with pytest.raises(ValueError, match=rf"criterion '{criterion}' .* pass data=\(X, y\)"):
        spp.prune.prune(model, 0.5, criterion=criterion)
    with pytest.raises(TypeError, match=r"data must be a pair \(X, y\)"):
        spp.prune.prune(model, 0.5, criterion=criterion, data=X)
    with pytest.raises(ValueError, match="features per sample"):
        spp.prune.prune(model, 0.5, criterion=criterion, data=(X[:, :3], y))
    with pytest.raises(ValueError, match="labels"):
        spp.prune.prune(model, 0.5, criterion=criterion, data=(X, y[:-1]))
    assert model.sparsity == 0


@pytest.mark.parametrize("make, match", [
    (lambda X, y: spp.prune.Taylor(X, y, batch_size=0), "batch_size must be >= 1"),
    (lambda X, y: spp.prune.SNIP(X, y, batches=0), "batches must be >= 1"),
    (lambda X, y: spp.prune.Movement(X, y, backend="gpu"), "backend"),
])
def test_gradient_criteria_check_their_options(make, match, blobs):
    X, y, _, _ = blobs
    with pytest.raises(ValueError, match=match):
        make(X, y)


class _Scores(spp.prune.Criterion):
    """A user's criterion that returns whatever it is given."""

    def __init__(self, scores):
        self.given = scores

    def scores(self, model):
        return self.given


class _UnitScores(spp.prune.UnitCriterion, _Scores):
    pass


@pytest.mark.parametrize("prune, kind, data_words", [
    (lambda model, c, data: spp.prune.prune(model, 0.5, criterion=c, data=data),
     "Criterion", "weights by their gradients"),
    (lambda model, c, data: spp.prune.neurons(model, 0.5, criterion=c, data=data),
     "UnitCriterion", "units"),
], ids=["weights", "units"])
def test_criteria_by_name_are_checked(prune, kind, data_words):
    model = spp.MLP([4, 6, 3], seed=0)
    with pytest.raises(ValueError, match=rf"criterion must be one of .* or a {kind}, "
                                         rf"got 'nope'"):
        prune(model, "nope", None)
    with pytest.raises(ValueError, match=rf"criterion 'taylor' scores {data_words} on "
                                         rf"data: pass data=\(X, y\)"):
        prune(model, "taylor", None)
    with pytest.raises(TypeError, match="data must be a pair"):
        prune(model, "taylor", "X")
    assert model.sparsity == 0


@pytest.mark.parametrize("per, made, good", [
    ("layer", _Scores, [np.ones((4, 6)), np.ones((6, 3))]),
    ("hidden layer", _UnitScores, [np.ones(6)]),
], ids=["weights", "units"])
def test_a_criterions_scores_are_checked(per, made, good):
    """A user's criterion returns user data: counted, shaped and NaN-checked, each error
    naming the criterion and the layer."""
    run = (spp.prune.neurons if made is _UnitScores else spp.prune.prune)
    model = spp.MLP([4, 6, 3], seed=0)
    n = len(good)
    with pytest.raises(ValueError, match=rf"must return one score array per {per} \({n}\), "
                                         rf"got list"):
        run(model, 0.5, criterion=made(good + good))
    bad = [np.ones(s.shape + (1,)) if i == n - 1 else s for i, s in enumerate(good)]
    shape = good[-1].shape
    note = " \\(in, out\\)" if made is _Scores else ""
    with pytest.raises(ValueError, match=rf"scores for layer {n - 1} must have shape "
                                         rf"{re.escape(str(shape))}{note}, got"):
        run(model, 0.5, criterion=made(bad))
    nan = [s.copy() for s in good]
    nan[0][0] = np.nan
    with pytest.raises(ValueError, match="scores for layer 0 contain NaN"):
        run(model, 0.5, criterion=made(nan))
    assert model.sparsity == 0 and model.sizes == (4, 6, 3)
    run(model, 0.5, criterion=made(good))
