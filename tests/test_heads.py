"""Activations and output heads through the whole model: forward and gradients against
the NumPy reference and finite differences, what predict/predict_proba/score return
(scikit-learn's metrics as the oracle), the sparse model, files, and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.metrics import accuracy_score, r2_score

import reference as ref
import sparseprune as spp
from helpers import params, tol
from strategies import dtypes, mlp_sizes, seeds

ACTIVATIONS = ["relu", "tanh", "logistic", "identity", "gelu", "gelu_tanh"]
LOSSES = ["softmax", "sigmoid", "squared"]


def problem(loss, n, n_features, n_outputs, seed):
    """X (n, f) and targets fitting ``loss``: class indices, 0/1 labels or values."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    if loss == "softmax":
        y = rng.integers(0, n_outputs, n)
    elif loss == "sigmoid":
        y = rng.integers(0, 2, (n, n_outputs))
        y = y[:, 0] if n_outputs == 1 else y
    else:
        y = rng.normal(size=(n, n_outputs))
        y = y[:, 0] if n_outputs == 1 else y
    return X, y


def make(sizes, dtype, seed, activation, loss):
    model = spp.MLP(sizes, dtype=dtype, seed=seed, activation=activation, loss=loss)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.bias = rng.normal(0.0, 0.5, layer.out_features)
    return model


def sizes_for(loss):
    return mlp_sizes(min_classes=2 if loss == "softmax" else 1)


@st.composite
def cases(draw):
    activation = draw(st.sampled_from(ACTIVATIONS))
    loss = draw(st.sampled_from(LOSSES))
    return draw(sizes_for(loss)), draw(dtypes), draw(seeds), activation, loss, \
        draw(st.integers(1, 9))


@given(cases())
def test_loss_and_gradients_match_backprop_reference(case):
    sizes, dtype, seed, activation, loss, n = case
    model = make(sizes, dtype, seed, activation, loss)
    X, y = problem(loss, n, sizes[0], sizes[-1], seed)
    weights, biases, masks = params(model)
    value, grads = model.loss_and_gradients(X, y)
    expected_value, expected = ref.backprop(weights, biases, X.astype(dtype), y, activation,
                                            loss)
    assert_allclose(value, expected_value, **tol(dtype, scale=10 + abs(expected_value)))
    for (gw, gb), (ew, eb), mask in zip(grads, expected, masks):
        scale = 10 + np.abs(ew).max(initial=0)
        assert_allclose(gw, ew * mask, **tol(dtype, scale=scale, ops=256))
        assert_allclose(gb, eb, **tol(dtype, scale=scale, ops=256))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_against_finite_differences(activation, loss):
    """Central differences in float64 on every weight and bias of a small net."""
    sizes = [3, 4, 3, 2 if loss != "squared" else 1]
    model = make(sizes, "float64", 7, activation, loss)
    X, y = problem(loss, 5, 3, sizes[-1], 8)
    _, grads = model.loss_and_gradients(X, y)
    h = 1e-6
    for layer, (gw, gb) in zip(model.layers, grads):
        for which, grad in (("weight", gw), ("bias", gb)):
            values = getattr(layer, which).copy()
            numeric = np.empty_like(values)
            for idx in np.ndindex(values.shape):
                shifted = []
                for step in (h, -h):
                    trial = values.copy()
                    trial[idx] += step
                    setattr(layer, which, trial)
                    shifted.append(model.evaluate(X, y)[0])
                numeric[idx] = (shifted[0] - shifted[1]) / (2 * h)
            setattr(layer, which, values)
            # ReLU's kink: a pre-activation within h of 0 makes the difference one-sided.
            assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


@given(cases())
@settings(max_examples=40)
def test_predictions_match_the_reference(case):
    sizes, dtype, seed, activation, loss, n = case
    model = make(sizes, dtype, seed, activation, loss)
    X, y = problem(loss, n, sizes[0], sizes[-1], seed)
    weights, biases, _ = params(model)
    logits = ref.forward(weights, biases, X.astype(dtype), activation)[-1]
    k = sizes[-1]
    scale = 10 + np.abs(logits).max()
    if loss == "softmax":
        assert_allclose(model.predict_proba(X), ref.softmax(logits), **tol(dtype, scale=scale))
        assert_array_equal(model.predict(X), model.predict_fm(model.feature_major(X)))
        assert model.predict(X).shape == (n,)
        assert model.score(X, y) == accuracy_score(y, model.predict(X))
    elif loss == "sigmoid":
        p = 1 / (1 + np.exp(-logits))
        proba = model.predict_proba(X)
        if k == 1:
            assert proba.shape == (n, 2)
            assert_allclose(proba, np.column_stack([1 - p[:, 0], p[:, 0]]),
                            **tol(dtype, scale=scale))
            assert model.predict(X).shape == (n,)
        else:
            assert_allclose(proba, p, **tol(dtype, scale=scale))
            assert model.predict(X).shape == (n, k)
        predicted = model.predict(X)
        assert set(np.unique(predicted)) <= {0, 1}
        # subset accuracy, as scikit-learn's accuracy_score for multi-label
        assert model.score(X, y) == pytest.approx(accuracy_score(y, predicted))
    else:
        values = model.predict(X)
        assert values.dtype == dtype and values.shape == ((n,) if k == 1 else (n, k))
        assert_allclose(values, logits[:, 0] if k == 1 else logits, **tol(dtype, scale=scale))
        with pytest.raises(TypeError, match="predict_proba needs a classification head"):
            model.predict_proba(X)
        if n >= 2:
            expected = r2_score(y, values.astype(np.float64))
            # R^2 divides by the targets' spread: on a few samples a float32 model's
            # rounding is amplified (n=3 gave -2727.0403 against -2727.0373).
            rel = 1e-6 if np.dtype(dtype) == np.float64 else 1e-5
            assert model.score(X, y) == pytest.approx(expected, rel=rel, abs=1e-6)
    loss_value, score = model.evaluate(X, y)
    assert_allclose(loss_value, ref.head_loss(logits, y, loss), **tol(dtype, scale=scale))
    if loss != "squared" or n >= 2:
        assert score == pytest.approx(model.score(X, y), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_model_equals_the_masked_one(activation, loss, dtype, tmp_path):
    sizes = [6, 8, 5, 3 if loss != "squared" else 2]
    model = make(sizes, dtype, 3, activation, loss)
    spp.prune.magnitude(model, 0.6)
    X, y = problem(loss, 11, 6, sizes[-1], 4)
    for backend in ("sparse", "dense"):
        smodel = model.to_sparse(backend=backend)
        assert (smodel.activation, smodel.loss) == (activation, loss)
        assert_allclose(smodel.predict_fm(smodel.feature_major(X)),
                        model.predict_fm(model.feature_major(X)), **tol(dtype, scale=100))
        assert smodel.score(X, y) == pytest.approx(model.score(X, y), abs=0.1)
    path = tmp_path / "model.npz"
    smodel.save(path)
    loaded = spp.load(path)
    assert (loaded.activation, loaded.loss) == (activation, loss)
    loaded.backend = "dense"
    for a, b in zip(loaded.layers, smodel.layers):
        assert_array_equal(a.data, b.data)
        a.backend = b.backend
    assert_array_equal(loaded.predict(X), smodel.predict(X))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", LOSSES)
def test_training_lowers_the_loss_dense_and_sparse(activation, loss):
    sizes = [5, 16, 3 if loss != "squared" else 2]
    X, y = problem(loss, 64, 5, sizes[-1], 1)
    losses = []
    for backend in ("dense", "sparse"):
        model = make(sizes, "float64", 2, activation, loss)
        spp.prune.magnitude(model, 0.3)
        before = model.evaluate(X, y)[0]
        history = model.fit(X, y, epochs=30, lr=0.05, optimizer="sgd", batch_size=16,
                            tol=None, progress=False, backend=backend, seed=0)
        assert model.evaluate(X, y)[0] < before
        assert len(history.accuracy) == 30 and np.isfinite(history.accuracy).all()
        losses.append(history.loss)
    # The two backends train the same network, to rounding.
    assert_allclose(losses[0], losses[1], rtol=1e-8)


def test_classes_are_labels_in_and_out(tmp_path):
    X, y = problem("softmax", 60, 4, 3, 0)
    labels = np.array(["cat", "dog", "emu"])
    model = spp.MLP([4, 8, 3], dtype="float64", seed=0, classes=labels)
    model.fit(X, labels[y], epochs=5, optimizer="sgd", lr=0.1, progress=False)
    predicted = model.predict(X)
    assert predicted.dtype.kind == "U" and set(predicted) <= set(labels)
    assert model.score(X, labels[y]) == np.mean(predicted == labels[y])
    assert_array_equal(predicted, labels[model.predict_fm(model.feature_major(X))])
    smodel = model.to_sparse()
    smodel.save(tmp_path / "m.npz")
    loaded = spp.load(tmp_path / "m.npz")
    assert_array_equal(loaded.classes, labels)
    assert_array_equal(loaded.predict(X), predicted)
    with pytest.raises(ValueError, match="not among the model's classes"):
        model.score(X, np.where(y == 0, "cow", labels[y]))
    with pytest.raises(ValueError, match="not among the model's classes"):
        model.fit(X, y, epochs=1, progress=False)  # indices are not the labels
    # A binary sigmoid classifier with two labels.
    binary = spp.MLP([4, 1], seed=0, loss="sigmoid", classes=[-1, 1])
    t = np.where(X[:, 0] > 0, 1, -1)
    binary.fit(X, t, epochs=50, lr=0.5, optimizer="sgd", progress=False)
    assert set(binary.predict(X)) <= {-1, 1} and binary.score(X, t) > 0.9


def test_losses_by_the_names_peers_use():
    for alias, name in (("cross_entropy", "softmax"), ("bce", "sigmoid"), ("mse", "squared"),
                        ("squared_error", "squared"), ("binary_cross_entropy", "sigmoid")):
        assert spp.MLP([2, 2], loss=alias).loss == name


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(activation="softplus"), ValueError, "activation must be one of 'relu', 'tanh'"),
    (dict(loss="hinge"), ValueError, "loss must be one of 'softmax', 'sigmoid', 'squared'"),
    (dict(sizes=[3, 1]), ValueError, "loss='sigmoid' for a binary classifier"),
    (dict(classes=[0, 1]), ValueError, "classes must hold 3 labels"),
    (dict(classes=[0, 1, 1]), ValueError, "classes must be distinct"),
    (dict(classes=[[0], [1], [2]]), TypeError, "classes must be a 1-D array"),
    (dict(loss="squared", classes=[0, 1, 2]), ValueError, "classes are for classifiers"),
])
def test_bad_model_arguments(kwargs, error, match):
    kwargs = {"sizes": [3, 3], **kwargs}
    with pytest.raises(error, match=match):
        spp.MLP(**kwargs)


@pytest.mark.parametrize("loss, y, error, match", [
    ("softmax", np.linspace(0, 1, 6), ValueError, "a regression target\\? use loss='squared'"),
    ("softmax", np.zeros((6, 2)), ValueError, "must be 1-D"),
    ("sigmoid", np.full((6, 2), 0.5), ValueError, "must hold 0/1 labels"),
    ("sigmoid", np.zeros((6, 3)), ValueError, "must have shape \\(n_samples, 2\\)"),
    ("squared", np.zeros(6), ValueError, "must have shape \\(n_samples, 2\\)"),
    ("squared", np.full((6, 2), np.nan), ValueError, "y contains NaN"),
    ("squared", np.zeros((5, 2)), ValueError, "y has 5 samples, X has 6"),
    ("squared", np.full((6, 2), "a"), TypeError, "y must be numeric"),
    ("squared", [[1.0, 2.0], [3.0]] * 3, TypeError, "y must be numeric, could not convert"),
    ("squared", np.zeros((6, 2), complex), TypeError, "y must be real, got dtype complex128"),
])
def test_targets_that_do_not_fit_the_loss(loss, y, error, match):
    model = spp.MLP([3, 2], loss=loss, seed=0)
    X = np.zeros((6, 3))
    before = model.layers[0].weight.copy()
    with pytest.raises(error, match=match):
        model.fit(X, y, epochs=1, progress=False)
    with pytest.raises(error, match=match):
        model.score(X, y)
    assert_array_equal(model.layers[0].weight, before)


def test_description_length_needs_a_softmax_head():
    model = spp.MLP([3, 2], loss="squared", seed=0)
    with pytest.raises(TypeError, match="softmax head; this model's loss is 'squared'"):
        spp.mdl.description_length(model, np.zeros((4, 3)), np.zeros((4, 2)))
