"""spp.from_sklearn against scikit-learn itself: every hidden activation, every kind of
target (binary, multi-class, multi-label, regression with one or many outputs), both
dtypes; predictions, probabilities and scores equal the estimator's (float64 to 1e-10,
float32 to 1e-5). Then the import's independence and bad input."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor

import sparseprune as spp
from strategies import dtypes, seeds

ACTIVATIONS = ["relu", "tanh", "logistic", "identity"]
KINDS = ["binary", "multiclass", "multilabel", "regression", "regression-multi"]
#: The issue's tolerances for imported predictions.
TOL = {np.float32: 1e-5, np.float64: 1e-10}


def problem(kind, n, n_features, seed, labels=None):
    """X (n, f) and y for ``kind``; classifier labels from ``labels`` if given."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    if kind in ("binary", "multiclass"):
        k = 2 if kind == "binary" else 4
        labels = np.arange(k) if labels is None else np.asarray(labels)[:k]
        y = labels[np.arange(n) % k]  # every class present
        rng.shuffle(y)
    elif kind == "multilabel":
        y = rng.integers(0, 2, (n, 3))
    else:
        y = X @ rng.normal(size=(n_features, 1 if kind == "regression" else 3))
        y = y[:, 0] if kind == "regression" else y
    return X, y


def fitted(kind, activation, dtype, seed=0, hidden=(7, 5), n=40, n_features=6,
           labels=None, max_iter=30):
    """A scikit-learn MLP fitted briefly on ``kind``'s data (in ``dtype``), with the data."""
    X, y = problem(kind, n, n_features, seed, labels)
    X = X.astype(dtype)
    cls = MLPRegressor if kind.startswith("regression") else MLPClassifier
    est = cls(hidden_layer_sizes=hidden, activation=activation, max_iter=max_iter,
              random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return est, X, y


def assert_same_predictions(model, est, X, y, dtype):
    tol = TOL[dtype]
    if isinstance(est, MLPClassifier):
        assert_array_equal(model.predict(X), est.predict(X))
        assert_allclose(model.predict_proba(X), est.predict_proba(X), rtol=tol, atol=tol)
    else:
        assert_allclose(model.predict(X), est.predict(X), rtol=tol, atol=tol)
        if len(X) < 2:
            return  # scikit-learn's R^2 of one sample is undefined (a warning and nan)
        # R^2 divides the predictions' rounding by the targets' spread, which for a few
        # samples can be tiny: the score is checked on the model's own predictions (the
        # predictions themselves are checked above).
        expected = r2_score(y.astype(np.float64), model.predict(X).astype(np.float64))
        assert model.score(X, y) == pytest.approx(expected, rel=tol, abs=tol)
        return
    assert model.score(X, y) == pytest.approx(est.score(X, y), rel=tol, abs=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_predictions_equal_the_estimators(activation, kind, dtype):
    est, X, y = fitted(kind, activation, dtype)
    assert est.coefs_[0].dtype == dtype
    model = spp.from_sklearn(est)
    assert model.dtype == dtype and model.activation == activation
    assert model.loss == {"binary": "sigmoid", "multiclass": "softmax",
                          "multilabel": "sigmoid"}.get(kind, "squared")
    assert model.sizes == (6, 7, 5, est.n_outputs_)
    assert model.sparsity == 0.0
    assert_same_predictions(model, est, X, y, dtype)
    # New data, one sample at a time and non-contiguous: the same.
    X_new = np.asfortranarray(np.random.default_rng(1).normal(size=(9, 12))[:, ::2])
    assert_same_predictions(model, est, X_new[:1], est.predict(X_new[:1]), dtype)
    if isinstance(est, MLPClassifier):
        assert_array_equal(model.predict(X_new), est.predict(X_new))


@pytest.mark.parametrize("kind, labels", [
    ("multiclass", ["cat", "dog", "emu", "yak"]), ("multiclass", [-3, 7, 100, 2]),
    ("binary", ["cat", "dog"]), ("binary", [-3, 7]),
    ("binary", np.array(["no", "yes"], dtype=object)), ("binary", [True, False])])
def test_classes_of_any_label_type_come_along(kind, labels):
    est, X, y = fitted(kind, "relu", np.float64, labels=labels)
    model = spp.from_sklearn(est)
    assert_array_equal(model.classes, est.classes_)
    assert_array_equal(model.predict(X), est.predict(X))
    assert model.score(X, y) == est.score(X, y)


def test_an_explicit_dtype_converts():
    est, X, _ = fitted("multiclass", "tanh", np.float64)
    model = spp.from_sklearn(est, dtype="float32")
    assert model.dtype == np.float32
    assert_allclose(model.predict_proba(X), est.predict_proba(X), rtol=1e-5, atol=1e-5)


def test_no_hidden_layer():
    est, X, _ = fitted("regression", "relu", np.float64, hidden=())
    model = spp.from_sklearn(est)
    assert model.sizes == (6, 1)
    assert_allclose(model.predict(X), est.predict(X), rtol=1e-10, atol=1e-10)


@given(st.lists(st.integers(1, 6), min_size=1, max_size=3), st.integers(1, 5),
       st.sampled_from(ACTIVATIONS), st.sampled_from(KINDS), dtypes, seeds,
       st.integers(1, 7))
def test_random_shapes(hidden, n_features, activation, kind, dtype, seed, batch):
    est, _, _ = fitted(kind, activation, dtype, seed=seed % 1000, hidden=tuple(hidden),
                       n=12, n_features=n_features, max_iter=2)
    model = spp.from_sklearn(est)
    X = np.random.default_rng(seed).normal(size=(batch, n_features)).astype(dtype)
    assert_same_predictions(model, est, X, est.predict(X), dtype)


def test_the_import_is_a_copy():
    """Pruning and training the import leave the estimator as it was."""
    est, X, y = fitted("multiclass", "relu", np.float64)
    before = [c.copy() for c in est.coefs_] + [b.copy() for b in est.intercepts_]
    proba = est.predict_proba(X)
    model = spp.from_sklearn(est)
    spp.prune.magnitude(model, 0.7)
    model.fit(X, y, epochs=2, progress=False)
    for old, new in zip(before, est.coefs_ + est.intercepts_):
        assert_array_equal(old, new)
    assert_array_equal(est.predict_proba(X), proba)


def test_an_unfitted_estimator_is_an_error():
    with pytest.raises(NotFittedError, match="unfitted MLPClassifier; call its fit"):
        spp.from_sklearn(MLPClassifier())
    with pytest.raises(ValueError, match="unfitted MLPRegressor"):  # NotFittedError is one
        spp.from_sklearn(MLPRegressor())


@pytest.mark.parametrize("thing", [LogisticRegression(), "model", None, np.zeros(3)])
def test_anything_else_is_a_type_error(thing):
    with pytest.raises(TypeError, match="estimator must be a fitted scikit-learn "
                                        "MLPClassifier or MLPRegressor, got"):
        spp.from_sklearn(thing)


def test_a_poisson_regressor_has_no_head():
    X, y = problem("regression", 30, 4, 0)
    est = MLPRegressor(hidden_layer_sizes=(3,), loss="poisson", max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, np.abs(y))
    with pytest.raises(ValueError, match="output activation 'exp'.*no sparseprune head"):
        spp.from_sklearn(est)


def test_a_bad_dtype_is_named():
    est, _, _ = fitted("binary", "relu", np.float64)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        spp.from_sklearn(est, dtype="int8")
