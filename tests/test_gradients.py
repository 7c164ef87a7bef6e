"""MLP forward and gradients against the NumPy reference and finite differences."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import reference as ref
import sparseprune as spp
from helpers import params, random_model, random_problem, tol
from sparseprune.passes import PREDICT_CHUNK
from strategies import dtypes, mlp_sizes, seeds


@given(mlp_sizes(), dtypes, seeds, st.integers(1, 9))
def test_predict_proba_and_evaluate_match_reference(sizes, dtype, seed, n):
    model = random_model(sizes, dtype, seed)
    X, y = random_problem(n, sizes[0], sizes[-1], seed)
    weights, biases, _ = params(model)
    # Layer outputs are sums of up to 6 products of O(1) terms, rounded in dtype.
    proba = model.predict_proba(X)
    assert proba.shape == (n, sizes[-1]) and proba.dtype == dtype
    assert_allclose(proba, ref.predict_proba(weights, biases, X.astype(dtype)),
                    **tol(dtype, scale=10))
    loss, accuracy = model.evaluate(X, y)
    assert_allclose(loss, ref.mean_loss(weights, biases, X.astype(dtype), y),
                    **tol(dtype, scale=10))
    predicted = model.predict(X)
    assert predicted.shape == (n,) and predicted.dtype == np.int64
    assert accuracy == model.score(X, y) == np.mean(predicted == y)


def test_predict_across_chunk_boundary():
    """Inference runs in chunks of PREDICT_CHUNK samples: the seams must not show."""
    model = random_model([3, 4, 3], np.float64, 0)
    X, _ = random_problem(2 * PREDICT_CHUNK + 3, 3, 3, 0)
    weights, biases, _ = params(model)
    expected = ref.predict_proba(weights, biases, X)
    assert_allclose(model.predict_proba(X), expected, **tol(np.float64))
    assert_array_equal(model.predict(X), np.argmax(expected, axis=1))


def test_predict_score_and_evaluate_agree_on_a_float32_near_tie():
    """Logits 0.1 and the next float32 above it: their probabilities round to the same
    0.5, but class 1 is still the more probable one. predict/score must not disagree
    with evaluate() (and so with fit's history and iterative's records)."""
    model = spp.MLP([1, 2], dtype="float32", seed=0)
    low = np.float32(0.1)
    model.layers[0].weight = np.array([[low, np.nextafter(low, np.float32(1))]])
    model.layers[0].bias = np.zeros(2)
    X, y = np.ones((1, 1)), np.array([1])
    assert model.evaluate(X, y)[1] == 1.0
    assert model.predict(X)[0] == 1
    assert model.score(X, y) == 1.0


@given(mlp_sizes(), dtypes, seeds, st.integers(1, 9))
def test_loss_and_gradients_match_backprop_reference(sizes, dtype, seed, n):
    model = random_model(sizes, dtype, seed)
    X, y = random_problem(n, sizes[0], sizes[-1], seed)
    weights, biases, _ = params(model)
    loss, grads = model.loss_and_gradients(X, y)
    exp_loss, exp_grads = ref.backprop(weights, biases, X.astype(dtype), y)
    assert_allclose(loss, exp_loss, **tol(dtype, scale=10))
    assert len(grads) == len(sizes) - 1
    for (gw, gb), (ew, eb), layer in zip(grads, exp_grads, model.layers):
        assert gw.shape == layer.shape and gw.dtype == dtype
        assert gb.shape == (layer.out_features,) and gb.dtype == dtype
        assert_allclose(gw, ew, **tol(dtype, scale=10))
        assert_allclose(gb, eb, **tol(dtype, scale=10))


def finite_difference(model, X, y, layer, name, index, h=1e-6):
    """Central difference of the mean loss in one parameter, through the public setter."""
    values = getattr(layer, name).copy()
    losses = []
    for sign in (1, -1):
        perturbed = values.copy()
        perturbed[index] += sign * h
        setattr(layer, name, perturbed)
        losses.append(model.evaluate(X, y)[0])
    setattr(layer, name, values)
    return (losses[0] - losses[1]) / (2 * h)


@pytest.mark.parametrize("sizes", [[3, 2], [4, 5, 3], [3, 4, 4, 2], [2, 3, 3, 3, 4]],
                         ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_match_central_differences(sizes, seed):
    """float64, h = 1e-6: truncation O(h^2) ~ 1e-12, roundoff eps * loss / h ~ 1e-10; a
    ReLU kink within h of a unit's pre-activation is vanishingly unlikely on random data."""
    model = random_model(sizes, np.float64, seed)
    X, y = random_problem(7, sizes[0], sizes[-1], seed)
    _, grads = model.loss_and_gradients(X, y)
    for layer, (gw, gb) in zip(model.layers, grads):
        numeric_w = np.array([finite_difference(model, X, y, layer, "weight", i)
                              for i in np.ndindex(layer.shape)]).reshape(layer.shape)
        numeric_b = np.array([finite_difference(model, X, y, layer, "bias", j)
                              for j in range(layer.out_features)])
        assert_allclose(gw, numeric_w, rtol=1e-6, atol=1e-8)
        assert_allclose(gb, numeric_b, rtol=1e-6, atol=1e-8)


@given(mlp_sizes(), dtypes, seeds)
def test_weight_gradients_are_zero_outside_the_mask(sizes, dtype, seed):
    model = random_model(sizes, dtype, seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.mask = rng.random(layer.shape) < 0.5
    X, y = random_problem(5, sizes[0], sizes[-1], seed)
    weights, biases, masks = params(model)
    _, grads = model.loss_and_gradients(X, y)
    _, exp_grads = ref.backprop(weights, biases, X.astype(dtype), y)
    for (gw, _), (ew, _), mask in zip(grads, exp_grads, masks):
        assert_array_equal(gw[~mask], 0)
        assert_allclose(gw[mask], ew[mask], **tol(dtype, scale=10))


def test_loss_and_gradients_leaves_the_model_alone():
    model = random_model([4, 5, 3], np.float32, 0)
    X, y = random_problem(6, 4, 3, 0)
    before = params(model)
    model.loss_and_gradients(X, y)
    for old, new in zip(before, params(model)):
        for a, b in zip(old, new):
            assert_array_equal(a, b)
