"""Structured pruning: whole hidden units go, the layers shrink, the function stays."""

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import reference as ref
import sparseprune as spp
import torch_oracle
from helpers import params, random_model, random_problem
from strategies import dtypes, seeds

requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                    reason="PyTorch (the test extra) is the oracle")


@st.composite
def hidden_sizes(draw, max_depth=3, max_width=8):
    """Layer widths with at least one hidden layer of at least two units."""
    depth = draw(st.integers(1, max_depth))
    hidden = draw(st.lists(st.integers(2, max_width), min_size=depth, max_size=depth))
    return [draw(st.integers(1, 6)), *hidden, draw(st.integers(2, 5))]


def assert_same_probabilities(got, want):
    """Equal to rounding: the removed units' terms are exact zeros, but BLAS sums in
    blocks whose boundaries move when a layer's width changes, so a sum of the same
    nonzero terms may round differently in its last bit (measured: at most 2.2e-16 in
    float64 probabilities over 200 random models)."""
    eps = np.finfo(got.dtype).eps
    assert_allclose(got, want, rtol=8 * eps, atol=2 * eps)


def zeroed(model, removal):
    """The masked model in which the removed units' incoming and outgoing weights are
    zeroed (a deep copy; its sizes unchanged)."""
    copy = random_model(model.sizes, model.dtype, 0)
    for layer, source in zip(copy.layers, model.layers):
        layer.weight, layer.bias, layer.mask = source.weight, source.bias, source.mask.copy()
    for l, units in removal.items():
        first, second = copy.layers[l], copy.layers[l + 1]
        mask = first.mask.copy()
        mask[:, units] = False
        first.mask = mask
        mask = second.mask.copy()
        mask[units, :] = False
        second.mask = mask
    return copy


@given(sizes=hidden_sizes(), dtype=dtypes, seed=seeds, fraction=st.floats(0, 0.99),
       criterion=st.sampled_from(["l2", "l1"]))
@settings(max_examples=60)
def test_removed_units_compute_what_the_zeroed_model_computes(sizes, dtype, seed, fraction,
                                                              criterion):
    model = random_model(sizes, dtype, seed)
    spp.prune.random(model, 0.3, seed=seed)
    weights, _, _ = params(model)
    X, _ = random_problem(13, sizes[0], sizes[-1], seed)
    norm = 2 if criterion == "l2" else 1
    removal, expected_sizes = {}, list(sizes)
    for l, w in enumerate(weights[:-1]):
        count = round(fraction * sizes[l + 1])
        if count >= sizes[l + 1]:
            return  # would empty the layer: test_every_unit_of_a_layer_is_refused
        scores = np.linalg.norm(w.astype(np.float64), ord=norm, axis=0)
        removal[l] = np.argsort(scores, kind="stable")[:count]
        expected_sizes[l + 1] -= count
    reference = zeroed(model, removal)
    assert spp.prune.neurons(model, fraction, criterion=criterion) is model
    assert model.sizes == tuple(expected_sizes)
    assert [layer.shape for layer in model.layers] == list(zip(expected_sizes[:-1],
                                                              expected_sizes[1:]))
    # The survivors' weights, biases and masks are the zeroed model's, units in order.
    for l, (layer, ref_layer) in enumerate(zip(model.layers, reference.layers)):
        rows = np.delete(np.arange(ref_layer.shape[0]), removal.get(l - 1, []))
        cols = np.delete(np.arange(ref_layer.shape[1]), removal.get(l, []))
        assert_array_equal(layer.weight, ref_layer.weight[np.ix_(rows, cols)])
        assert_array_equal(layer.mask, ref_layer.mask[np.ix_(rows, cols)])
        assert_array_equal(layer.bias, ref_layer.bias[cols])
    assert_array_equal(model.predict(X), reference.predict(X))
    assert_same_probabilities(model.predict_proba(X), reference.predict_proba(X))


def test_shrunk_digits_net_predicts_as_the_zeroed_one():
    """The digits net with half its hidden units gone, in float64."""
    model = random_model([64, 256, 128, 10], np.float64, 0)
    X, _ = random_problem(200, 64, 10, 0)
    weights = params(model)[0]
    removal = {l: np.argsort(np.linalg.norm(w, axis=0), kind="stable")[: w.shape[1] // 2]
               for l, w in enumerate(weights[:-1])}
    reference = zeroed(model, removal)
    spp.prune.neurons(model, 0.5)
    assert model.sizes == (64, 128, 64, 10)
    assert_array_equal(model.predict(X), reference.predict(X))
    assert_same_probabilities(model.predict_proba(X), reference.predict_proba(X))


@requires_torch
@given(sizes=hidden_sizes(max_width=6), seed=seeds, n=st.integers(1, 16),
       batch_size=st.integers(1, 8))
@settings(max_examples=25)
def test_unit_taylor_against_torch_gates(sizes, seed, n, batch_size):
    """|dL/dm| for a gate m = 1 on each hidden unit, averaged over the batches."""
    model = random_model(sizes, np.float64, seed)
    X, y = random_problem(n, sizes[0], sizes[-1], seed)
    weights, biases, _ = params(model)
    batches = list(torch_oracle.batch_gradients(weights, biases, X, y, batch_size, gates=True))
    got = spp.prune.UnitTaylor(X, y, batch_size=batch_size).scores(model)
    for l, s in enumerate(got):
        assert_allclose(s, np.mean([np.abs(m[l]) for _, _, m in batches], axis=0),
                        rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_activation_scores_are_mean_absolute_outputs(backend):
    model = random_model([5, 7, 6, 3], np.float64, 2)
    spp.prune.random(model, 0.3, seed=2)
    X, y = random_problem(23, 5, 3, 2)
    acts = ref.forward(*params(model)[:2], X)
    for labels in (y, None):
        got = spp.prune.Activation(X, labels, batch_size=4, backend=backend).scores(model)
        for s, a in zip(got, acts[1:-1]):
            assert_allclose(s, np.abs(a).mean(axis=0), rtol=1e-12, atol=1e-15)


def test_taylor_and_activation_remove_what_they_score_lowest(blobs):
    X, y, _, _ = blobs
    for criterion in ("taylor", "activation"):
        model = spp.MLP([6, 12, 10, 4], dtype="float64", seed=0)
        model.fit(X, y, epochs=3, progress=False)
        scores = spp.prune.get_unit_criterion(criterion, (X, y)).scores(model)
        reference = zeroed(model, {l: np.argsort(s, kind="stable")[:3]
                                   for l, s in enumerate(scores)})
        spp.prune.neurons(model, 3, criterion=criterion, data=(X, y))
        assert model.sizes == (6, 9, 7, 4)
        assert_allclose(model.predict_proba(X), reference.predict_proba(X), rtol=1e-13,
                        atol=1e-15)


def test_global_scope_ranks_across_layers_and_keeps_each_layers_best():
    model = spp.MLP([3, 4, 4, 2], dtype="float64", seed=0)
    first, second = model.layers[0], model.layers[1]
    first.weight = np.tile([1.0, 2.0, 3.0, 4.0], (3, 1))     # column norms ~ 1.7 .. 6.9
    second.weight = np.tile([0.1, 0.2, 0.3, 0.4], (4, 1))    # column norms 0.2 .. 0.8
    spp.prune.neurons(model, 4, scope="global")
    # The four lowest are the second layer's, but its best unit stays: 3 + 1.
    assert model.sizes == (3, 3, 1, 2)
    assert_array_equal(model.layers[1].weight[0], [0.4])
    assert_array_equal(model.layers[0].weight[0], [2.0, 3.0, 4.0])
    model = spp.MLP([3, 4, 4, 2], seed=0)
    spp.prune.neurons(model, 0.5, scope="global", layers=[1])
    assert model.sizes == (3, 4, 2, 2)


def test_a_mapping_gives_each_layer_its_own_amount():
    model = spp.MLP([3, 10, 8, 6, 2], seed=0)
    spp.prune.neurons(model, {0: 0.25, 2: 5})
    assert model.sizes == (3, 8, 8, 1, 2)  # round(2.5) = 2 (to even), 5 of 6
    spp.prune.neurons(model, 1, layers=[1])
    assert model.sizes == (3, 8, 7, 1, 2)


def test_shrink_then_sparsify(blobs):
    X, y, Xt, yt = blobs
    model = spp.MLP([6, 16, 12, 4], seed=0)
    model.fit(X, y, epochs=5, lr=0.1, progress=False)
    spp.prune.neurons(model, 0.5)
    spp.prune.magnitude(model, 0.5)
    n = sum(layer.n_weights for layer in model.layers)
    assert model.sizes == (6, 8, 6, 4) and n == 6 * 8 + 8 * 6 + 6 * 4
    assert sum(int((~layer.mask).sum()) for layer in model.layers) == round(0.5 * n)
    smodel = model.to_sparse()
    assert smodel.sizes == model.sizes
    assert_array_equal(smodel.predict(Xt), model.predict(Xt))
    model.fit(X, y, epochs=1, progress=False)  # trains at its new size


def test_masks_survive_shrinking():
    model = spp.MLP([4, 6, 3], seed=0)
    spp.prune.magnitude(model, 0.5, scope="layer")
    masks = [layer.mask.copy() for layer in model.layers]
    scores = np.abs(model.layers[0].weight.astype(np.float64)).sum(axis=0)
    kept = np.sort(np.argsort(scores, kind="stable")[2:])
    spp.prune.neurons(model, 2, criterion="l1")
    assert_array_equal(model.layers[0].mask, masks[0][:, kept])
    assert_array_equal(model.layers[1].mask, masks[1][kept])


def test_iterative_removes_units_along_the_schedule_and_never_restores_them(blobs):
    X, y, Xt, yt = blobs
    model = spp.MLP([6, 16, 12, 4], seed=0)
    # Every unit marked by its bias (0 fine-tuning epochs keep the marks).
    for layer in model.layers[:-1]:
        layer.bias = np.arange(layer.out_features) / 100
    marks = []
    records = spp.prune.iterative(
        model, X, y, 0.75, steps=4, schedule="linear", finetune_epochs=0, progress=False,
        structure="neurons", criterion="l1",
        callback=lambda r, m: marks.append([set(l.bias.tolist()) for l in m.layers[:-1]]))
    # Linear to 75%: 3, 6, 9, 12 of 16 units; round(2.25, 4.5, 6.75, 9) of 12 (halves to
    # even).
    assert [r.sizes for r in records] == [(6, 13, 10, 4), (6, 10, 8, 4), (6, 7, 5, 4),
                                          (6, 4, 3, 4)]
    assert [r.target for r in records] == pytest.approx([5 / 28, 10 / 28, 16 / 28, 21 / 28])
    for before, after in zip(marks, marks[1:]):
        assert all(a <= b for a, b in zip(after, before))
    assert records[-1].total == model.count_parameters()[0] == 6 * 4 + 4 * 3 + 3 * 4 + 11


def test_iterative_neurons_with_fine_tuning_global_scope_and_taylor(blobs):
    X, y, Xt, yt = blobs
    model = spp.MLP([6, 16, 12, 4], seed=0)
    model.fit(X, y, epochs=5, lr=0.1, progress=False)
    records = spp.prune.iterative(model, X, y, 0.5, steps=2, finetune_epochs=2, lr=0.05,
                                  structure="neurons", criterion="taylor", scope="global",
                                  validation_data=(Xt, yt), progress=False)
    assert sum(model.sizes[1:-1]) == 28 - 14
    assert records[-1].val_accuracy == model.score(Xt, yt)
    assert records[-1].description_length.n_samples == len(y)


# -- what it refuses ----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(amount=1.0), ValueError, "amount must be < 1"),
    (dict(amount=-0.1), ValueError, "amount must be >= 0"),
    (dict(amount=-1), ValueError, "amount must be >= 0"),
    (dict(amount=True), TypeError, "fraction .* or a count"),
    (dict(amount="half"), TypeError, "fraction .* or a count"),
    (dict(amount=4), ValueError, "remove 4 of its 4 units; a layer keeps at least one"),
    (dict(amount=0.9), ValueError, "remove 4 of its 4 units"),
    (dict(amount=7, scope="global"), ValueError, "at most 6 can go"),
    (dict(amount=1, layers=[2]), ValueError, r"layers entry 2 must name a hidden layer, 0..1"),
    (dict(amount=1, layers=[-1]), ValueError, "must name a hidden layer"),
    (dict(amount=1, layers=[]), ValueError, "at least one hidden layer"),
    (dict(amount=1, layers=1), TypeError, "layers must be a list"),
    (dict(amount={5: 1}), ValueError, "amount key 5 must name a hidden layer"),
    (dict(amount={0: 1}, layers=[0]), ValueError, "give neither layers"),
    (dict(amount=1, scope="erk"), ValueError, "scope must be one of 'layer', 'global'"),
    (dict(amount=1, criterion="taylor"), ValueError, r"pass data=\(X, y\)"),
    (dict(amount=1, criterion="activation"), ValueError, r"pass data=\(X, y\)"),
    (dict(amount=1, criterion="magnitude"), ValueError, "'l2', 'l1', 'taylor', 'activation'"),
])
def test_bad_requests_change_nothing(kwargs, error, match):
    model = spp.MLP([3, 4, 4, 2], seed=0)
    with pytest.raises(error, match=match):
        spp.prune.neurons(model, **kwargs)
    assert model.sizes == (3, 4, 4, 2)


def test_every_unit_of_a_layer_is_refused_in_the_driver_too(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 2, 4], seed=0)
    with pytest.raises(ValueError, match="remove 2 of its 2 units"):
        spp.prune.iterative(model, X, y, 0.8, steps=2, structure="neurons", progress=False)
    with pytest.raises(ValueError, match="scope must be 'layer', 'global' or a mapping"):
        spp.prune.iterative(model, X, y, 0.3, structure="neurons", scope="erk",
                            progress=False)
    with pytest.raises(ValueError, match="structure must be one of 'weights', 'neurons'"):
        spp.prune.iterative(model, X, y, 0.3, structure="units", progress=False)
    assert model.sizes == (6, 2, 4)


def test_a_model_without_hidden_layers():
    with pytest.raises(ValueError, match="no hidden layer"):
        spp.prune.neurons(spp.MLP([3, 2], seed=0), 1)


@pytest.mark.parametrize("layer, units, error, match", [
    (1, [0], ValueError, "layer must name a hidden layer, 0..0"),
    (0, [4], ValueError, r"units must lie in \[0, 4\)"),
    (0, [0, 1, 2, 3], ValueError, "remove all 4 units of layer 0"),
    (0, [[0]], TypeError, "1-D array of unit indices"),
    (0, np.array([True, False]), TypeError, "1-D array of unit indices"),
])
def test_remove_units_refuses(layer, units, error, match):
    model = spp.MLP([3, 4, 2], seed=0)
    with pytest.raises(error, match=match):
        model.remove_units(layer, units)
    assert model.sizes == (3, 4, 2)
