"""SparseLinear: ``SparseLinear(W, bias).forward(X) == X @ W + bias`` for any scipy.sparse
W (in, out), its parameter views, its backends, and what bad input gets."""

import copy as copy_module
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import sparseprune as spp
from sparseprune.kernels.dense import IDENTITY, RELU
from helpers import KERNEL_PATHS, in_threads, kernel_path, tol
BACKENDS = ("auto", "sparse", "dense")
from strategies import batches, scipy_weights, seeds


def reference(X, dense, bias):
    """X @ W + bias in float64; X as the layer sees it (already cast to its dtype)."""
    return X.astype(np.float64) @ dense + bias.astype(np.float64)


def forward_tol(X, dense, dtype):
    scale = (np.abs(X.astype(np.float64)) @ np.abs(dense)).max(initial=0.0) + 1.0
    return tol(dtype, scale=scale)


@given(scipy_weights(), batches, st.booleans(), seeds)
def test_forward_is_X_at_W_plus_bias(case, batch, with_bias, seed):
    W, dense, nnz = case
    rng = np.random.default_rng(seed)
    n_in, n_out = W.shape
    bias = rng.uniform(-1, 1, n_out).astype(W.dtype) if with_bias else np.zeros(n_out)
    layer = spp.SparseLinear(W, bias if with_bias else None)
    X = rng.uniform(-2, 2, (batch, n_in)).astype(W.dtype)

    assert layer.dtype == W.dtype and layer.shape == W.shape and layer.nnz == nnz
    for backend in BACKENDS:
        layer.backend = backend
        out = layer.forward(X)
        assert out.shape == (batch, n_out) and out.dtype == W.dtype
        assert_allclose(out, reference(X, dense, bias), **forward_tol(X, dense, W.dtype))
    assert_allclose(layer(X), out, **forward_tol(X, dense, W.dtype))


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_dense_backend_from_several_python_threads(path):
    """8 Python threads at once on a fresh dense-backend layer: the first calls race to
    make the dense copy (each publishes only a whole one), every answer is right."""
    rng = np.random.default_rng(11)
    W = sp.random_array((200, 150), density=0.3, rng=rng, dtype=np.float32)
    bias = rng.uniform(-1, 1, 150).astype(np.float32)
    layer = spp.SparseLinear(W, bias, backend="dense")
    inputs = [rng.uniform(-2, 2, (batch, 200)).astype(np.float32)
              for batch in (1, 3, 64, 100, 257, 1, 64, 130)]
    dense = W.toarray().astype(np.float64)

    def run(X):
        for _ in range(10):
            assert_allclose(layer.forward(X), reference(X, dense, bias),
                            **forward_tol(X, dense, np.float32))

    with kernel_path(path):
        in_threads(run, [(X,) for X in inputs])


@given(scipy_weights(), batches, seeds)
def test_values_written_in_place_are_served_by_every_backend(case, batch, seed):
    """``data`` is the layer's own array, and ``weight`` shares it: values written there
    in place are what the next forward computes with, on the sparse kernels and on the
    dense backend's copy of the weight alike, on both paths (sample- and feature-major)."""
    W, _, _ = case
    rng = np.random.default_rng(seed)
    n_in, n_out = W.shape
    X = rng.uniform(-2, 2, (batch, n_in)).astype(W.dtype)
    for backend in BACKENDS:
        layer = spp.SparseLinear(W, rng.uniform(-1, 1, n_out), backend=backend)
        for step in range(3):
            dense = layer.to_dense().astype(np.float64)
            expected = reference(X, dense, layer.bias)
            assert_allclose(layer.forward(X), expected, **forward_tol(X, dense, W.dtype))
            out = np.full((n_out, batch), np.nan, W.dtype)
            layer.forward_fm(np.ascontiguousarray(X.T), out, IDENTITY)
            assert_allclose(out.T, expected, **forward_tol(X, dense, W.dtype))
            # Then new values for some weights, through either view.
            values = layer.data if step == 0 else layer.weight.data
            changed = rng.random(layer.nnz) < 0.5
            values[changed] = rng.uniform(-2, 2, changed.sum())


@given(scipy_weights())
def test_weight_is_a_csc_array_equal_to_W(case):
    """Duplicates summed, indices sorted, explicit zeros kept as stored weights."""
    W, dense, nnz = case
    layer = spp.SparseLinear(W)
    weight = layer.weight
    assert isinstance(weight, sp.csc_array)
    assert weight.shape == W.shape and weight.dtype == W.dtype
    assert weight.nnz == nnz  # stored zeros are weights: not dropped
    assert weight.has_canonical_format
    assert_array_equal(weight.toarray(), dense)
    assert_array_equal(layer.to_dense(), dense)
    # The index arrays are read-only; the values are the layer's own.
    for index in (weight.indices, weight.indptr):
        assert not index.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            index[...] = 0
    if nnz:
        assert np.shares_memory(weight.data, layer.data)
    # Column indices are stored as uint16 (few inputs), indptr as int32.
    assert layer.nbytes() == layer.data.nbytes + 2 * nnz + 4 * (W.shape[1] + 1)


def test_weight_is_a_copy_of_W():
    """The layer does not keep the user's arrays: changing W later changes nothing."""
    W = sp.csc_array(np.array([[1.0, 0.0], [2.0, 3.0]]))
    layer = spp.SparseLinear(W)
    W.data[:] = 7.0
    W.indices[:] = 0
    assert_array_equal(layer.weight.toarray(), [[1.0, 0.0], [2.0, 3.0]])


def test_explicit_zeros_are_weights_that_train():
    """A stored zero stays in the pattern: its gradient is computed like any other."""
    W = sp.coo_array(([0.0, 1.0, 2.0, -2.0], ([0, 1, 0, 0], [0, 1, 1, 1])), shape=(2, 2))
    layer = spp.SparseLinear(W)  # (0, 1) holds 2 + (-2): a stored zero as well
    assert layer.nnz == 3
    assert_array_equal(layer.weight.toarray(), [[0.0, 0.0], [0.0, 1.0]])
    x = np.array([[1.0], [2.0]])  # (in, batch)
    dz = np.array([[3.0], [5.0]])  # (out, batch)
    grad = np.full(3, np.nan)
    layer.backward_fm(x, dz, grad)
    # Stored order: CSC of W, output by output; tocoo keeps that order.
    assert_array_equal(grad, (x @ dz.T)[layer.weight.tocoo().coords])
    assert grad[0] == 3.0  # the stored zero at (0, 0) gets x[0] * dz[0]


@pytest.mark.parametrize("make", [
    lambda X: np.asfortranarray(X),
    lambda X: np.repeat(X, 2, axis=1)[:, ::2],  # strided columns
    lambda X: np.repeat(X, 3, axis=0)[::3],  # strided rows
    lambda X: X.T.copy().T,  # a transposed view
], ids=["fortran", "column-slice", "row-slice", "transposed"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_X(make, backend, rng):
    W = sp.random_array((6, 5), density=0.5, rng=rng, dtype=np.float32)
    layer = spp.SparseLinear(W, rng.normal(size=5))
    layer.backend = backend
    X = rng.normal(size=(9, 6)).astype(np.float32)
    Xnc = make(X)
    assert not Xnc.flags.c_contiguous
    assert_array_equal(Xnc, X)
    expected = reference(X, W.toarray().astype(np.float64), layer.bias)
    assert_allclose(layer.forward(Xnc), expected, **forward_tol(X, W.toarray(), np.float32))


@pytest.mark.parametrize("x_dtype", [np.int64, np.int8, np.float64, np.float32, bool])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_other_X_dtypes_are_converted_to_the_layer_dtype(x_dtype, dtype, rng):
    W = sp.random_array((7, 4), density=0.6, rng=rng, dtype=dtype)
    layer = spp.SparseLinear(W, rng.normal(size=4))
    X = (rng.normal(size=(5, 7)) * 3).astype(x_dtype)
    out = layer.forward(X)
    assert out.dtype == dtype
    Xd = X.astype(dtype)  # what the layer computes with
    assert_allclose(out, reference(Xd, W.toarray().astype(np.float64), layer.bias),
                    **forward_tol(Xd, W.toarray(), dtype))


@pytest.mark.parametrize("w_dtype, expected", [
    (np.float32, np.float32), (np.float64, np.float64), (np.int64, np.float32),
    (np.int32, np.float32), (np.bool_, np.float32),
])
def test_layer_dtype_follows_W(w_dtype, expected):
    """W's own float dtype, float32 for anything else (the documented default)."""
    dense = np.array([[1, 0, 2], [0, 3, 0]])
    layer = spp.SparseLinear(sp.csr_array(dense.astype(w_dtype)))
    assert layer.dtype == expected
    assert_array_equal(layer.weight.toarray(), dense.astype(w_dtype).astype(expected))
    assert_array_equal(layer.forward(np.ones((1, 2))), [dense.astype(w_dtype).sum(axis=0)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_explicit_dtype(dtype, rng):
    W = sp.random_array((4, 3), density=0.5, rng=rng, dtype=np.float64)
    layer = spp.SparseLinear(W, np.arange(3), dtype=dtype)
    assert layer.dtype == dtype and layer.data.dtype == dtype and layer.bias.dtype == dtype
    assert_array_equal(layer.weight.toarray(), W.toarray().astype(dtype))


def test_bias_is_a_copy_and_checked_on_assignment(rng):
    bias = np.array([1.0, 2.0])
    layer = spp.SparseLinear(sp.eye_array(2, format="csr"), bias)
    bias[:] = 9.0
    assert_array_equal(layer.bias, [1.0, 2.0])
    layer.bias = [3, 4]
    assert layer.bias.dtype == np.float64
    assert_array_equal(layer.forward(np.ones((1, 2))), [[4.0, 5.0]])
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        layer.bias = np.zeros(3)
    with pytest.raises(ValueError, match="bias contains NaN"):
        layer.bias = [np.nan, 0.0]
    assert_array_equal(layer.bias, [3.0, 4.0])


# -- backends and the plan -----------------------------------------------------------


@given(scipy_weights(max_dim=40), st.lists(batches, min_size=1, max_size=4), seeds,
       st.booleans())
def test_backends_agree_and_auto_records_its_plan(case, batch_list, seed, relu):
    """"auto" times CSR against dense at the first call in each batch-size bucket (the
    next power of two) and keeps the faster; results equal "sparse" and "dense" either way."""
    W, dense, _ = case
    rng = np.random.default_rng(seed)
    n_in, n_out = W.shape
    layer = spp.SparseLinear(W, rng.uniform(-1, 1, n_out))
    fixed = {b: spp.SparseLinear(W, layer.bias, backend=b) for b in ("sparse", "dense")}
    assert layer.backend == "auto" and layer.plan.as_dict() == {}
    for batch in batch_list:
        x = rng.uniform(-2, 2, (n_in, batch)).astype(W.dtype)
        expected = dense.T @ x.astype(np.float64) + layer.bias[:, None]
        if relu:
            expected = np.maximum(expected, 0.0)
        scale = (np.abs(dense.T) @ np.abs(x.astype(np.float64))).max(initial=0.0) + 1.0
        for lay in (layer, *fixed.values()):
            out = np.full((n_out, batch), np.nan, W.dtype)
            assert lay.forward_fm(x, out, RELU if relu else IDENTITY) is out
            assert_allclose(out, expected, **tol(W.dtype, scale=scale))
    buckets = {1 << (b - 1).bit_length() for b in batch_list}
    chosen = layer.plan.as_dict()["backend"]
    assert set(chosen) == buckets
    assert set(chosen.values()) <= {"sparse", "dense"}
    assert all(layer.backend_for(b) == chosen[1 << (b - 1).bit_length()] for b in batch_list)
    for name, other in fixed.items():
        assert other.plan.as_dict() == {}  # a fixed backend measures nothing
        assert other.backend_for(batch_list[0]) == name


def test_plan_is_per_bucket_and_reset_by_a_new_backend(rng):
    layer = spp.SparseLinear(sp.random_array((8, 6), density=0.3, rng=rng))
    for batch in (1, 2, 3, 4, 5, 300, 256, 257):
        layer.forward(rng.normal(size=(batch, 8)))
    # The public sample-major path measures its own decision, "forward".
    assert set(layer.plan.as_dict()["forward"]) == {1, 2, 4, 8, 256, 512}
    assert "backend" not in layer.plan.as_dict()
    shown = layer.plan.as_dict()
    shown["forward"][1] = "nonsense"  # a copy: the layer's own plan is not touched
    assert layer.backend_for(1, public=True) in ("sparse", "dense")
    assert layer.backend_for(1) is None  # inside a model: not measured yet
    layer.backend = "auto"
    assert layer.plan.as_dict() == {} and layer.backend_for(1, public=True) is None
    layer.backend = "sparse"
    layer.forward(rng.normal(size=(3, 8)))
    assert layer.plan.as_dict() == {} and layer.backend == "sparse"
    layer.backend = "auto"
    layer.forward(rng.normal(size=(3, 8)))
    layer.plan.reset()
    assert layer.plan.as_dict() == {} and layer.backend == "auto"


@pytest.mark.parametrize("backend", ["gpu", "CSR", "csr", "", None, 1])
def test_bad_backend(backend):
    layer = spp.SparseLinear(sp.eye_array(3, format="csr"))
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'sparse', 'dense'"):
        layer.backend = backend
    assert layer.backend == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        spp.SparseLinear(sp.eye_array(3, format="csr"), backend=backend)


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("W, error, match", [
    (np.eye(3), TypeError, "W must be a scipy.sparse array or matrix"),
    ([[1.0, 0.0]], TypeError, "W must be a scipy.sparse array or matrix"),
    (None, TypeError, "W must be a scipy.sparse array or matrix"),
    (sp.csr_array(np.eye(3) * 1j), TypeError, "W must hold real numbers"),
    (sp.csr_array(np.array([[1.0, np.nan], [0.0, 1.0]])), ValueError, "W: data contains NaN"),
    (sp.coo_array(np.array([[np.inf, 0.0]])), ValueError, "W: data contains NaN or infinity"),
    (sp.csr_array((2, 2)).reshape((4,)), ValueError, "W must be 2-D"),
], ids=["ndarray", "list", "None", "complex", "nan", "inf", "1-D"])
def test_bad_W(W, error, match):
    with pytest.raises(error, match=match):
        spp.SparseLinear(W)


@pytest.mark.parametrize("where", ["W", "bias", "X"])
def test_values_beyond_float32_are_refused_cleanly(where):
    """1e300 is a finite float64 but inf in a float32 layer: a ValueError naming the
    argument, and no numpy "overflow encountered in cast" warning on the way (pytest
    here turns warnings into errors, as a careful user's code may)."""
    huge = np.array([[1e300, 0.0], [0.0, 1.0]])
    W = sp.csr_array(huge if where == "W" else np.eye(2))
    bias = np.array([1e300, 0.0]) if where == "bias" else None
    with pytest.raises(ValueError, match=f"{where}(: data)? has values beyond the range "
                                         f"of float32"):
        layer = spp.SparseLinear(W, bias, dtype="float32")
        layer.forward(huge)


@pytest.mark.parametrize("bias, error, match", [
    (np.zeros(4), ValueError, r"bias must have shape \(3,\), got \(4,\)"),
    (np.zeros((3, 1)), ValueError, r"bias must have shape \(3,\), got \(3, 1\)"),
    (np.zeros(()), ValueError, r"bias must have shape \(3,\)"),
    (np.array([0.0, np.nan, 0.0]), ValueError, "bias contains NaN"),
    (np.array([0.0, np.inf, 0.0]), ValueError, "bias contains NaN"),
    (np.zeros(3, complex), TypeError, "bias must be a real numeric array"),
    (np.array(["a", "b", "c"]), TypeError, "bias must be a real numeric array"),
])
def test_bad_bias(bias, error, match):
    with pytest.raises(error, match=match):
        spp.SparseLinear(sp.random_array((2, 3), density=0.5, rng=0), bias)


@pytest.mark.parametrize("X, error, match", [
    (np.zeros((5, 3)), ValueError, "X has 3 features per sample, the model expects 4"),
    (np.zeros((5, 5)), ValueError, "X has 5 features per sample, the model expects 4"),
    (np.zeros(4), ValueError, "X must be 2-D"),
    (np.zeros((0, 4)), ValueError, "X must hold at least one sample"),
    (np.full((2, 4), np.nan), ValueError, "X contains NaN or infinity"),
    (np.array([[0, 0, 0, np.inf]]), ValueError, "X contains NaN or infinity"),
    (np.zeros((2, 4), complex), TypeError, "X must be real"),
    (np.full((2, 4), "a"), TypeError, "X must be a 2-D numeric array"),
], ids=["few-features", "many-features", "1-D", "empty", "nan", "inf", "complex", "strings"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_X(X, error, match, backend):
    layer = spp.SparseLinear(sp.random_array((4, 3), density=0.5, rng=0, dtype=np.float32))
    layer.backend = backend
    data = layer.data.copy()
    with pytest.raises(error, match=match):
        layer.forward(X)
    assert_array_equal(layer.data, data)
    assert layer.plan.as_dict() == {}


def test_repr_and_sizes():
    W = sp.csr_array(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    layer = spp.SparseLinear(W)
    assert (layer.in_features, layer.out_features, layer.nnz) == (2, 3, 2)
    assert layer.n_weights == 6 and layer.n_active == 2
    assert layer.density == pytest.approx(1 / 3)
    assert "SparseLinear(in=2, out=3, nnz=2" in repr(layer)


def test_engine_is_the_deprecated_name_of_backend(rng):
    layer = spp.SparseLinear(sp.random_array((8, 6), density=0.3, rng=rng))
    with pytest.warns(DeprecationWarning, match="use .backend"):
        layer.engine = "csr"
    assert layer.backend == "sparse"
    with pytest.warns(DeprecationWarning, match="use .backend"):
        assert layer.engine == "csr"
    with pytest.warns(DeprecationWarning, match="use .backend_for"):
        assert layer.engine_for(3) == "csr"
    model = spp.MLP([3, 4, 2], seed=0)
    with pytest.warns(DeprecationWarning, match="use backend="):
        smodel = model.to_sparse(engine="csr")
    assert [l.backend for l in smodel.layers] == ["sparse", "sparse"]


@given(scipy_weights(max_dim=30), seeds)
def test_both_layer_kinds_present_one_face(case, seed):
    """A MaskedLinear and the SparseLinear of its live weights agree on every method a
    caller uses: kept values and positions in one order, CSR arrays, copies with new
    values, parameters, forward."""
    W, dense, _ = case
    rng = np.random.default_rng(seed)
    n_in, n_out = W.shape
    mask = dense != 0
    masked = spp.MaskedLinear(dense, rng.uniform(-1, 1, n_out), mask=mask, dtype=W.dtype)
    sparse = spp.SparseLinear.from_masked(masked)
    for layer in (masked, sparse):
        inputs, outputs = layer.kept_positions()
        assert inputs.dtype == outputs.dtype == np.int64
        # CSR of W.T: by output, then input.
        order = np.lexsort((inputs, outputs))
        assert_array_equal(order, np.arange(inputs.size))
        assert_array_equal(layer.kept_values(), dense[inputs, outputs])
        assert layer.kept_values().dtype == W.dtype
        assert layer.nnz == inputs.size == np.count_nonzero(mask)
        assert_array_equal(layer.to_dense(), dense)
    for a, b in zip(masked.csr_arrays(), sparse.csr_arrays()):
        assert_array_equal(a, b)
        assert a.dtype == b.dtype
    new = rng.uniform(-1, 1, sparse.nnz)
    bias = rng.uniform(-1, 1, n_out)
    copies = [masked.with_values(new, bias), sparse.with_values(new, bias)]
    assert type(copies[0]) is spp.MaskedLinear and type(copies[1]) is spp.SparseLinear
    for copy in copies:
        assert_array_equal(copy.kept_values(), new.astype(W.dtype))
        assert_array_equal(copy.bias, bias.astype(W.dtype))
    assert_array_equal(copies[0].mask, mask)
    assert copies[1].backend == "sparse"  # an "auto" layer's copy is not measured
    X = rng.uniform(-1, 1, (3, n_in)).astype(W.dtype)
    assert_allclose(copies[0].forward(X), copies[1].forward(X), **forward_tol(X, dense, W.dtype))
    # parameters(): flat writable arrays the optimizer updates, with their live masks.
    (w, live), (b, b_live) = masked.parameters()
    assert w.size == n_in * n_out and np.shares_memory(w, masked.weight)
    assert_array_equal(live, mask.ravel())
    assert b_live.all() and b is masked.bias
    (data, live), (b, _) = sparse.parameters()
    assert data is sparse.data and live.all() and b is sparse.bias
    # assign_kept writes the values back in the same order.
    masked.assign_kept(new)
    assert_array_equal(masked.kept_values(), new.astype(W.dtype))
    assert_array_equal(masked.weight[~mask], 0)


@given(scipy_weights(max_dim=30), seeds)
def test_a_masked_layers_sparse_twin_is_kept_until_its_mask_changes(case, seed):
    """sparse_twin() holds the kept weights as they are and shares the bias; keep_twin()
    writes the twin's values back and keeps it: the next twin is the same object with
    its values read afresh (after the weight and bias were assigned anew), until the
    mask changes. A twin from before the change, or from another layer, is refused;
    copies and pickles of the layer hold no twin."""
    W, dense, _ = case
    rng = np.random.default_rng(seed)
    mask = dense != 0
    layer = spp.MaskedLinear(dense, rng.uniform(-1, 1, W.shape[1]), mask=mask,
                             dtype=W.dtype)
    twin = layer.sparse_twin()
    assert type(twin) is spp.SparseLinear and twin.backend == "sparse"
    assert_array_equal(twin.to_dense(), dense.astype(W.dtype))
    assert twin.bias is layer.bias
    new = rng.uniform(-1, 1, twin.nnz).astype(W.dtype)
    twin.data[:] = new
    layer.keep_twin(twin)
    assert_array_equal(layer.kept_values(), new)
    assert_array_equal(layer.weight[~mask], 0)
    layer.weight = rng.uniform(-1, 1, W.shape)
    layer.bias = rng.uniform(-1, 1, W.shape[1])
    again = layer.sparse_twin()
    assert again is twin and again.bias is layer.bias
    assert_array_equal(again.to_dense(), layer.weight)
    # Twin machinery is not part of the layer's state.
    for copy in (pickle.loads(pickle.dumps(layer)), copy_module.deepcopy(layer)):
        assert_array_equal(copy.weight, layer.weight)
        with pytest.raises(ValueError, match="sparse_twin"):
            copy.keep_twin(twin)
        assert copy.sparse_twin() is not twin
    other = spp.MaskedLinear(dense, np.zeros(W.shape[1]), mask=mask, dtype=W.dtype)
    with pytest.raises(ValueError, match="sparse_twin"):
        other.keep_twin(twin)
    flipped = mask.copy()
    flipped.flat[rng.integers(mask.size)] ^= True
    layer.mask = flipped
    with pytest.raises(ValueError, match="sparse_twin"):
        layer.keep_twin(twin)
    fresh = layer.sparse_twin()
    assert fresh is not twin and fresh.nnz == np.count_nonzero(flipped)
    assert_array_equal(fresh.to_dense(), layer.weight)
    layer.keep_twin(fresh)
    assert layer.sparse_twin() is fresh


def test_read_only_arrays_are_served(rng):
    """Arrays that arrive read-only (a memory map, a joblib load) still run the kernels."""
    W = sp.random_array((30, 20), density=0.3, rng=rng, dtype=np.float32)
    csc = sp.csc_array(W)
    arrays = [np.array(csc.indptr, np.int32), np.array(csc.indices, np.int32),
              np.array(csc.data), np.zeros(20, np.float32)]
    for a in arrays:
        a.flags.writeable = False
    layer = spp.SparseLinear.from_csr((30, 20), *arrays, backend="sparse")
    X = rng.normal(size=(5, 30)).astype(np.float32)
    assert_allclose(layer.forward(X), X @ W.toarray(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3, 130])
@pytest.mark.parametrize("backend", ["sparse", "dense", "auto"])
def test_read_only_input_is_served(rng, batch, backend):
    """X read-only (np.load(..., mmap_mode="r")) runs through every layer kind's forward,
    at batch 1 (the gather kernel), below a tile and over two tiles."""
    W = sp.random_array((300, 20), density=0.3, rng=rng, dtype=np.float32)
    bias = rng.normal(size=20).astype(np.float32)
    X = rng.normal(size=(batch, 300)).astype(np.float32)
    X.flags.writeable = False
    layer = spp.SparseLinear(W, bias, backend=backend)
    expected = X @ W.toarray() + bias
    assert_allclose(layer.forward(X), expected, rtol=1e-5, atol=1e-5)
    quantized = spp.QuantizedLinear.from_layer(layer, 8)
    assert_allclose(quantized.forward(X), X @ quantized.weight.toarray() + quantized.bias,
                    rtol=1e-5, atol=1e-5)
    masked = spp.MaskedLinear(W.toarray(), bias)
    assert_allclose(masked.forward(X), expected, rtol=1e-5, atol=1e-5)


def test_choices_for_large_batches_are_measured_on_their_leading_samples(rng, monkeypatch):
    """A batch above MEASURE_SAMPLES is timed on its first MEASURE_SAMPLES samples (both
    paths: feature-major inside a model, sample-major public), the winner is kept for the
    whole batch's bucket, and the answer is the whole batch's."""
    from sparseprune import layers

    monkeypatch.setattr(layers, "MEASURE_SAMPLES", 8)
    W = sp.random_array((30, 20), density=0.4, rng=rng, dtype=np.float64)
    bias = rng.normal(size=20)
    layer = spp.SparseLinear(W, bias, backend="auto")
    seen = []
    for name in ("_sparse_forward", "_dense_forward", "_sparse_forward_sm",
                 "_dense_forward_sm"):
        method = getattr(layer, name)
        # The finite flag of the sample-major contenders is returned, the rest passed on.
        monkeypatch.setattr(layer, name, lambda x, out, *act, m=method, n=name: (
            seen.append((n, x.shape, out.shape)), m(x, out, *act))[1])
    X = rng.normal(size=(37, 30))
    expected = X @ W.toarray() + bias

    assert_allclose(layer.forward(X), expected, rtol=1e-12, atol=1e-12)
    measured, served = seen[:-1], seen[-1]
    assert measured and all(x == (8, 30) and out == (8, 20) for _, x, out in measured)
    assert served[1:] == ((37, 30), (37, 20))
    # The winner holds for the whole batch's bucket and for the measured samples' own.
    assert set(layer.plan.as_dict()["forward"]) == {8, 64}

    seen.clear()
    out = np.empty((20, 37))
    layer.forward_fm(np.ascontiguousarray(X.T), out, IDENTITY)
    assert_allclose(out.T, expected, rtol=1e-12, atol=1e-12)
    measured, served = seen[:-1], seen[-1]
    assert measured and all(x == (30, 8) and out == (20, 8) for _, x, out in measured)
    assert served[1:] == ((30, 37), (20, 37))
    assert set(layer.plan.as_dict()["backend"]) == {8, 64}
