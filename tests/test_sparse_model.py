"""``MLP.to_sparse()``: a SparseMLP holding only the surviving weights, predicting what the
masked model predicts."""

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

import sparseprune as spp
from helpers import random_model, random_problem, tol
from sparseprune._tuning import MEASURE_SAMPLES
from sparseprune.passes import PREDICT_CHUNK

DEPTHS = {"no-hidden": [7, 3], "one-hidden": [7, 12, 4], "three-hidden": [7, 12, 9, 6, 5]}
# Batch 1, odd, and more than one inference chunk (with an odd tail).
BATCHES = [1, 7, PREDICT_CHUNK + 5]


def pruned(sizes, dtype, sparsity=0.6, seed=0):
    model = random_model(sizes, dtype, seed)
    spp.prune.magnitude(model, sparsity)
    return model


def assert_same_predictions(pred, proba_ref, dtype):
    """Predicted classes equal the reference's argmax, except where its top two
    probabilities are so close that rounding may order them either way."""
    expected = np.argmax(proba_ref, axis=1)
    top2 = np.sort(proba_ref, axis=1)[:, -2:]
    near_tie = top2[:, 1] - top2[:, 0] <= 1e3 * np.finfo(dtype).eps
    assert_array_equal(pred[~near_tie], expected[~near_tie])
    assert near_tie.mean() < 0.01


@pytest.mark.parametrize("sizes", DEPTHS.values(), ids=DEPTHS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_hold_only_the_surviving_weights(sizes, dtype):
    model = pruned(sizes, dtype)
    smodel = model.to_sparse()
    assert isinstance(smodel, spp.SparseMLP)
    assert smodel.sizes == model.sizes and smodel.dtype == dtype
    assert len(smodel.layers) == len(model.layers)
    for slayer, layer in zip(smodel.layers, model.layers):
        w = slayer.weight
        assert sp.issparse(w) and isinstance(w, sp.sparray)  # an array, not an spmatrix
        assert w.shape == layer.shape == (layer.in_features, layer.out_features)
        assert w.dtype == dtype
        assert w.nnz == slayer.nnz == layer.mask.sum()
        # The pattern is the mask (weights that happen to be 0 but live stay stored).
        pattern = np.zeros(layer.shape, bool)
        pattern[w.tocoo().coords] = True
        assert_array_equal(pattern, layer.mask)
        assert_array_equal(w.toarray(), layer.weight)
        assert_array_equal(slayer.bias, layer.bias)
        assert slayer.bias is not layer.bias  # a copy: training the MLP changes nothing
    assert smodel.count_parameters() == model.count_parameters()
    assert smodel.sparsity == pytest.approx(model.sparsity)
    assert smodel.nbytes() == sum(
        l.weight.data.nbytes + 2 * l.nnz + 4 * (l.out_features + 1) + l.bias.nbytes
        for l in smodel.layers)


def test_live_weights_that_are_zero_stay_in_the_pattern():
    model = random_model([4, 3], np.float64, 0)
    model.layers[0].weight = np.zeros((4, 3))
    assert model.layers[0].mask.all()
    smodel = model.to_sparse()
    assert smodel.layers[0].nnz == 12
    assert smodel.count_parameters() == model.count_parameters() == (15, 15)


@pytest.mark.parametrize("backend", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("sizes", DEPTHS.values(), ids=DEPTHS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predictions_equal_the_masked_model(backend, sizes, dtype):
    model = pruned(sizes, dtype, seed=len(sizes))
    smodel = model.to_sparse(backend=backend)
    assert [l.backend for l in smodel.layers] == [backend] * len(sizes[1:])
    X, y = random_problem(max(BATCHES), sizes[0], sizes[-1], 1)
    for batch in BATCHES:
        Xb, yb = X[:batch], y[:batch]
        expected = model.predict_proba(Xb)
        proba = smodel.predict_proba(Xb)
        assert proba.shape == expected.shape and proba.dtype == dtype
        assert_allclose(proba, expected, **tol(dtype, scale=10))
        pred = smodel.predict(Xb)
        assert pred.dtype == np.int64 and pred.shape == (batch,)
        assert_same_predictions(pred, expected, dtype)
        # score is the accuracy of predict; it equals the masked model's up to near ties.
        assert smodel.score(Xb, yb) == np.mean(pred == yb)
        assert abs(smodel.score(Xb, yb) - model.score(Xb, yb)) <= 0.01
        loss, accuracy = smodel.evaluate(Xb, yb)
        assert_allclose(loss, model.evaluate(Xb, yb)[0], **tol(dtype, scale=10))
    if backend == "auto":
        # The chunk's bucket was measured on MEASURE_SAMPLES samples: theirs is kept too.
        plan_keys = {1 << (b - 1).bit_length()
                     for b in (1, 7, PREDICT_CHUNK, 5, MEASURE_SAMPLES)}
        assert set(smodel.layers[0].plan.as_dict()["backend"]) == plan_keys
        assert set(smodel.plans()["layer 0"]["backend"]) == plan_keys
        smodel.reset_plan()
        assert smodel.plans() == {"model": {}, **{f"layer {i}": {} for i in range(len(sizes) - 1)}}


def test_a_layer_pruned_to_nothing():
    """Zero nonzeros in a layer: its output is its bias, for every input."""
    model = random_model([5, 6, 3], np.float64, 0)
    model.layers[1].mask = np.zeros((6, 3), bool)
    smodel = model.to_sparse(backend="sparse")
    assert smodel.layers[1].nnz == 0 and smodel.layers[1].weight.nnz == 0
    X, _ = random_problem(9, 5, 3, 0)
    expected = np.exp(model.layers[1].bias) / np.exp(model.layers[1].bias).sum()
    assert_allclose(smodel.predict_proba(X), np.tile(expected, (9, 1)), **tol(np.float64))
    assert_allclose(smodel.predict_proba(X), model.predict_proba(X), **tol(np.float64))


def test_the_sparse_model_is_independent_of_the_mlp():
    model = pruned([6, 8, 3], np.float32)
    smodel = model.to_sparse(backend="sparse")
    X, _ = random_problem(10, 6, 3, 0)
    before = smodel.predict_proba(X)
    model.fit(X, np.arange(10) % 3, epochs=2, lr=0.5, progress=False)
    assert_array_equal(smodel.predict_proba(X), before)


@pytest.mark.parametrize("backend", ["gpu", "csr", None])
def test_bad_backend(backend):
    with pytest.raises(ValueError, match="backend must be one of"):
        spp.MLP([3, 2], seed=0).to_sparse(backend=backend)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score", "evaluate"])
@pytest.mark.parametrize("X, error, match", [
    (np.zeros((4, 5)), ValueError, "X has 5 features.*expects 6"),
    (np.full((4, 6), np.nan), ValueError, "X contains NaN"),
    (np.zeros((0, 6)), ValueError, "X must hold at least one sample"),
])
def test_bad_X(method, X, error, match):
    smodel = pruned([6, 8, 3], np.float32).to_sparse()
    args = (X,) if method.startswith("predict") else (X, np.zeros(len(X), int))
    with pytest.raises(error, match=match):
        getattr(smodel, method)(*args)


def test_sparse_mlp_checks_its_layers():
    a = spp.SparseLinear(sp.random_array((4, 5), density=0.5, rng=0))
    b = spp.SparseLinear(sp.random_array((6, 3), density=0.5, rng=0))
    with pytest.raises(ValueError, match=r"layers\[1\] takes 6 inputs, layers\[0\] gives 5"):
        spp.SparseMLP([a, b])
    with pytest.raises(TypeError, match="non-empty list of SparseLinear"):
        spp.SparseMLP([])
    with pytest.raises(TypeError, match="non-empty list of SparseLinear"):
        spp.SparseMLP([spp.MLP([4, 5]).layers[0]])
    c = spp.SparseLinear(sp.random_array((5, 3), density=0.5, rng=0), dtype="float32")
    with pytest.raises(TypeError, match="layers must share one dtype"):
        spp.SparseMLP([a, c])


def test_mixed_backends_settle_the_blas_threads_once_per_bucket():
    """Dense and CSR layers in one model: the first call at a batch bucket measures
    whether holding BLAS to one thread pays, and the answer never changes results."""
    model = spp.MLP([20, 30, 16, 5], dtype="float64", seed=0)
    spp.prune.magnitude(model, 0.6)
    X = np.random.default_rng(1).standard_normal((37, 20))
    mixed = model.to_sparse(backend="sparse")
    mixed.layers[1].backend = "dense"
    expected = model.predict_proba(X)
    for _ in range(2):
        np.testing.assert_allclose(mixed.predict_proba(X), expected, rtol=1e-12, atol=1e-12)
    assert list(mixed.plan.as_dict()["blas"]) == [64]
    assert mixed.plan.as_dict()["blas"][64] in ("free", "single")
    uniform = model.to_sparse(backend="sparse")
    uniform.predict_proba(X[:1])
    assert uniform.plan.as_dict() == {"blas": {1: "free"}}


def test_the_blas_choice_for_a_large_batch_is_measured_on_its_leading_samples(monkeypatch):
    from sparseprune import model as model_module

    model = spp.MLP([20, 30, 16, 5], dtype="float64", seed=0)
    spp.prune.magnitude(model, 0.6)
    mixed = model.to_sparse(backend="sparse")
    mixed.layers[1].backend = "dense"
    X = np.random.default_rng(1).standard_normal((37, 20))
    expected = model.predict_proba(X)
    monkeypatch.setattr(model_module, "MEASURE_SAMPLES", 8)
    network = model_module._Network.logits_fm
    widths = []
    monkeypatch.setattr(model_module._Network, "logits_fm",
                        lambda self, xt: (widths.append(xt.shape[1]), network(self, xt))[1])
    np.testing.assert_allclose(mixed.predict_proba(X), expected, rtol=1e-12, atol=1e-12)
    # The whole batch once (the answer), then the contest on 8 samples, then the answer
    # served the way that won.
    assert widths[0] == 37 and widths[-1] == 37
    assert len(widths) > 3 and set(widths[1:-1]) == {8}
    assert list(mixed.plan.as_dict()["blas"]) == [8, 64]
