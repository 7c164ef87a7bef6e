"""Sparse training: ``fit(backend="sparse")`` and ``backend="auto"`` against the dense
masked backend, and the sparse backend's gradients against the dense backend's."""

import numpy as np
import pytest
from helpers import params, random_model, random_problem, tol
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from strategies import batches, densities, dtypes, seeds

from sparseprune.kernels.dense import IDENTITY, RELU
from sparseprune.layers import MaskedLinear
from sparseprune.train import DenseBackend, SparseBackend, choose_backends

OPTIMIZERS = {
    "sgd-momentum": dict(optimizer="sgd", lr=0.1, momentum=0.9),
    "sgd-momentum-decay": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": dict(optimizer="adam", lr=0.01),
    "adam-decay": dict(optimizer="adam", lr=0.01, weight_decay=0.05),
}
# No hidden layer, one, three.
DEPTHS = {"no-hidden": [6, 4], "one-hidden": [6, 9, 4], "three-hidden": [6, 9, 7, 5, 4]}


def pruned_model(sizes, dtype, seed=3, density=0.4):
    """A random model (random biases too) with about ``density`` of its weights live."""
    model = random_model(sizes, dtype, seed)
    rng = np.random.default_rng(seed + 100)
    for layer in model.layers:
        layer.mask = rng.random(layer.shape) < density
    return model


def train(model, backend, epochs=3, n=37, batch_size=8, **options):
    """37 samples in batches of 8: four full batches and a short one of 5 per epoch."""
    X, y = random_problem(n, model.sizes[0], model.sizes[-1], 0)
    Xv, yv = random_problem(11, model.sizes[0], model.sizes[-1], 1)
    return model.fit(X, y, epochs=epochs, batch_size=batch_size, validation_data=(Xv, yv),
                     progress=False, seed=5, backend=backend, **options)


@pytest.mark.parametrize("sizes", DEPTHS.values(), ids=DEPTHS.keys())
@pytest.mark.parametrize("options", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_and_auto_backends_train_like_dense(sizes, options, dtype):
    """Same seed, same data: the weights agree to rounding (the CSR kernels sum in
    another order than BLAS), pruned weights stay exactly zero, masks do not move."""
    models = {b: pruned_model(sizes, dtype) for b in ("dense", "sparse", "auto")}
    before_w, _, before_masks = params(models["dense"])
    histories = {b: train(m, b, **options) for b, m in models.items()}

    dense = models["dense"]
    for backend in ("sparse", "auto"):
        model = models[backend]
        for i, (layer, ref_layer) in enumerate(zip(model.layers, dense.layers)):
            assert layer.weight.dtype == dtype
            assert_array_equal(layer.mask, before_masks[i])
            assert_array_equal(layer.weight[~layer.mask], 0.0)
            assert_allclose(layer.weight, ref_layer.weight, **tol(dtype))
            assert_allclose(layer.bias, ref_layer.bias, **tol(dtype))
        h, ref_h = histories[backend], histories["dense"]
        assert h.epoch == ref_h.epoch == [1, 2, 3]
        for key in ("loss", "val_loss"):
            assert_allclose(h[key], ref_h[key], **tol(dtype))
        assert h.accuracy == ref_h.accuracy and h.val_accuracy == ref_h.val_accuracy
    # Training did train: every layer's live weights moved.
    for layer, w in zip(dense.layers, before_w):
        assert not np.array_equal(layer.weight[layer.mask], w[layer.mask])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fits_in_a_row_train_like_dense(dtype):
    """The sparse backend keeps each layer's twin from one fit to the next: fits in a row,
    with the weights and biases assigned, a layer pruned further and the dense backend
    in between, end where the same fits of the dense backend end."""
    models = {b: pruned_model([6, 9, 7, 4], dtype) for b in ("dense", "sparse")}
    rng = np.random.default_rng(0)
    new_weight = rng.uniform(-1, 1, (9, 7))
    new_bias = rng.uniform(-1, 1, 7)
    for backend, model in models.items():
        train(model, backend, epochs=1)
        train(model, backend, epochs=1)
        model.layers[1].weight = new_weight
        model.layers[1].bias = new_bias
        train(model, backend, epochs=1)
        model.layers[0].mask = model.layers[0].mask & (np.abs(model.layers[0].weight) > 0.1)
        train(model, backend, epochs=1)
        train(model, "dense", epochs=1)
        train(model, backend, epochs=1)
    for layer, ref_layer in zip(models["sparse"].layers, models["dense"].layers):
        assert_array_equal(layer.mask, ref_layer.mask)
        assert_array_equal(layer.weight[~layer.mask], 0.0)
        assert_allclose(layer.weight, ref_layer.weight, **tol(dtype))
        assert_allclose(layer.bias, ref_layer.bias, **tol(dtype))


@pytest.mark.parametrize("backend", ["sparse", "auto"])
@pytest.mark.parametrize("batch_size", [1, 5, 36, 37, None])
def test_batch_sizes(backend, batch_size):
    """Batch 1, a short last batch, a last batch of 1, the full set."""
    dense, other = pruned_model([5, 7, 3], np.float64), pruned_model([5, 7, 3], np.float64)
    train(dense, "dense", epochs=2, batch_size=batch_size)
    train(other, backend, epochs=2, batch_size=batch_size)
    for layer, ref_layer in zip(other.layers, dense.layers):
        assert_allclose(layer.weight, ref_layer.weight, **tol(np.float64))
        assert_array_equal(layer.weight[~layer.mask], 0.0)


@pytest.mark.parametrize("backend", ["sparse", "auto"])
def test_a_layer_with_no_live_weight(backend):
    """A layer pruned to nothing (zero nonzeros) trains its bias only."""
    dense, other = pruned_model([5, 7, 3], np.float32), pruned_model([5, 7, 3], np.float32)
    for model in (dense, other):
        model.layers[1].mask = np.zeros((7, 3), bool)
    train(dense, "dense")
    train(other, backend)
    assert_array_equal(other.layers[1].weight, 0.0)
    for layer, ref_layer in zip(other.layers, dense.layers):
        assert_allclose(layer.weight, ref_layer.weight, **tol(np.float32))
        assert_allclose(layer.bias, ref_layer.bias, **tol(np.float32))


@pytest.mark.parametrize("backend", ["sparse", "auto"])
def test_zero_epochs_change_nothing(backend):
    model = pruned_model([5, 7, 3], np.float32)
    before = params(model)
    history = train(model, backend, epochs=0)
    assert len(history) == 0
    for old, new in zip(before, params(model)):
        for a, b in zip(old, new):
            assert_array_equal(a, b)


def test_auto_chooses_one_backend_per_layer():
    model = pruned_model([5, 7, 6, 3], np.float32)
    backends = choose_backends(model, "auto", 16)
    assert [b.layer for b in backends] == model.layers
    assert all(type(e) in (DenseBackend, SparseBackend) for e in backends)
    assert [type(e) for e in choose_backends(model, "sparse", 16)] == [SparseBackend] * 3
    assert [type(e) for e in choose_backends(model, "dense", 16)] == [DenseBackend] * 3


# -- the backends, one layer, one pass -------------------------------------------------


@st.composite
def masked_layers(draw):
    """(MaskedLinear with a random mask, rng); zero or all weights live occur."""
    dtype = draw(dtypes)
    n_in, n_out = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    rng = np.random.default_rng(draw(seeds))
    mask = rng.random((n_in, n_out)) < draw(densities)
    layer = MaskedLinear(rng.uniform(-1, 1, (n_in, n_out)), rng.uniform(-1, 1, n_out),
                         mask=mask, dtype=dtype)
    return layer, rng


@given(masked_layers(), batches, st.booleans())
def test_sparse_backend_against_dense_backend(case, batch, relu):
    """For the same x and dz: grad_data equals the dense (masked) grad_weight at the
    pattern positions, dx and the forward output agree; finish() writes the values back
    to exactly the live positions."""
    layer, rng = case
    dtype = layer.dtype
    dense, sparse = DenseBackend(layer), SparseBackend(layer)
    x = rng.uniform(-2, 2, (layer.in_features, batch)).astype(dtype)
    dz = rng.uniform(-2, 2, (layer.out_features, batch)).astype(dtype)

    outs = [np.full((layer.out_features, batch), np.nan, dtype) for _ in range(2)]
    act = RELU if relu else IDENTITY
    dense.forward_fm(x, outs[0], act)
    sparse.forward_fm(x, outs[1], act)
    scale = (np.abs(layer.weight.T) @ np.abs(x)).max() + 1.0
    assert_allclose(outs[1], outs[0], **tol(dtype, scale=scale))

    dxs = [np.full((layer.in_features, batch), np.nan, dtype) for _ in range(2)]
    dense.backward_fm(x, dz, dxs[0])
    sparse.backward_fm(x, dz, dxs[1])
    indptr, indices, data = sparse.sparse.csr_arrays()
    assert sparse.parameters[0][0] is data and sparse.grads[0] is sparse.grad_data
    assert sparse.parameters[1][0] is layer.bias
    assert data.size == layer.n_active
    rows = np.repeat(np.arange(layer.out_features), np.diff(indptr))
    assert layer.mask[indices, rows].all()
    scale = (np.abs(x) @ np.abs(dz).T).max() + 1.0
    assert_allclose(sparse.grad_data, dense.grad_weight[indices, rows], **tol(dtype, scale=scale))
    assert_array_equal(dense.grad_weight[~layer.mask], 0.0)
    scale = (np.abs(layer.weight) @ np.abs(dz)).max() + 1.0
    assert_allclose(dxs[1], dxs[0], **tol(dtype, scale=scale))

    # An optimizer step on the sparse values, then finish(): exactly those values land
    # at their positions, nothing else changes.
    expected = layer.weight.copy()
    new = rng.uniform(-1, 1, data.size).astype(dtype)
    data[:] = new
    expected[indices, rows] = new
    sparse.finish()
    assert_array_equal(layer.weight, expected)
    assert_array_equal(layer.weight[~layer.mask], 0.0)
    # The bias is shared with the layer: an update to it needs no copying back.
    assert sparse.sparse.bias is layer.bias
