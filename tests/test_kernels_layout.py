"""The layout kernels against NumPy: training's batches taken from a sample-major X,
inference's feature-major copy of it, and a masked layer's kept weights between its dense
weight and CSR order."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import sparseprune as spp
from sparseprune.kernels.layout import (take_fm, take_fm_parallel, transpose_fm,
                                        transpose_fm_parallel)
from sparseprune.ops import (csr_transpose, csr_values_from_dense, csr_values_into_dense,
                             row_chunks)
from sparseprune.passes import to_feature_major
from sparseprune.train import FitOptions, fit_fm, fit_sm
from strategies import dtypes, seeds, sparse_patterns


@given(dtypes, st.integers(1, 40), st.integers(1, 600), st.integers(1, 70), seeds,
       st.booleans())
def test_take_fm_is_the_rows_transposed(dtype, n, n_features, batch, seed, parallel):
    # Feature counts cross the kernel's 64-feature and 256-feature blocks; rows may repeat
    # (the kernel does not need a permutation) and a batch may be one sample.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(dtype)
    idx = rng.integers(0, n, batch)
    out = np.full((n_features, batch), np.nan, dtype)
    (take_fm_parallel if parallel else take_fm)(X, idx, out)
    assert_array_equal(out, X[idx].T)


@given(dtypes, st.integers(1, 70), st.integers(1, 600), seeds, st.booleans())
def test_transpose_fm_is_the_transpose(dtype, n, n_features, seed, parallel):
    X = np.random.default_rng(seed).standard_normal((n, n_features)).astype(dtype)
    out = np.full((n_features, n), np.nan, dtype)
    (transpose_fm_parallel if parallel else transpose_fm)(X, out)
    assert_array_equal(out, X.T)


@given(sparse_patterns(), dtypes, st.sampled_from([np.int32, np.uint16]), seeds)
def test_kept_values_move_between_dense_and_csr_order(case, dtype, index_dtype, seed):
    """Both ways against NumPy's fancy index over W.T's nonzeros (CSR-of-W.T order), on
    patterns with empty rows and columns, no nonzeros, no rows or no columns; int32 and
    uint16 column indices of the transposed pattern."""
    pattern, _ = case  # (in, out)
    rng = np.random.default_rng(seed)
    n_in, n_out = pattern.shape
    outputs, inputs = np.nonzero(pattern.T)  # by output, then input
    indptr = np.zeros(n_out + 1, np.int32)
    np.cumsum(pattern.sum(axis=0), out=indptr[1:])
    indptr_t, indices_t, perm = csr_transpose(n_in, indptr, inputs.astype(np.int32))
    transposed = (indptr_t, indices_t.astype(index_dtype), perm, row_chunks(indptr_t))
    weight = rng.standard_normal(pattern.shape).astype(dtype)
    data = np.full(inputs.size, np.nan, dtype)
    csr_values_from_dense(transposed, weight, data)
    assert_array_equal(data, weight[inputs, outputs])
    new = rng.standard_normal(inputs.size).astype(dtype)
    expected = weight.copy()
    expected[inputs, outputs] = new
    csr_values_into_dense(transposed, new, weight)
    assert_array_equal(weight, expected)  # the entries off the pattern left as they were


@pytest.mark.parametrize("layout", ["C", "F", "strided", "read-only", "int"])
@pytest.mark.parametrize("shape", [(1, 5), (300, 70), (2000, 300)])
def test_feature_major_copy_of_any_layout(layout, shape):
    """The kernel takes C-contiguous writable input (2000 x 300 float32 goes parallel),
    numpy the rest; either way the copy is X.T in the model's dtype, aligned, new."""
    X = np.random.default_rng(0).standard_normal((2 * shape[0], shape[1])).astype(np.float32)
    X = {"C": X[: shape[0]], "F": np.asfortranarray(X[: shape[0]]), "strided": X[::2],
         "read-only": X[: shape[0]].copy(), "int": np.round(X[: shape[0]] * 9).astype(int)
         }[layout]
    if layout == "read-only":
        X.flags.writeable = False
    xt = to_feature_major(X, shape[1], np.float32)
    assert xt.dtype == np.float32 and xt.flags.c_contiguous and xt.shape == shape[::-1]
    assert_array_equal(xt, X.T.astype(np.float32))
    assert not np.shares_memory(xt, X)


def _train(take_from, backend, dtype, batch_size):
    rng = np.random.default_rng(5)
    # 300 features by 512 float64 samples is over a MiB: batches taken in parallel.
    X = rng.standard_normal((600, 300)).astype(dtype)
    y = rng.integers(0, 4, 600)
    model = spp.MLP([300, 24, 4], seed=1, dtype=dtype)
    spp.prune.magnitude(model, 0.7)
    options = FitOptions.from_kwargs("test", epochs=2, lr=0.05, batch_size=batch_size,
                                     progress=False, seed=2, backend=backend)
    targets = model.targets(y, 600)
    if take_from == "rows":
        history = fit_sm(model, model.sample_major(X), targets, None, options)
    else:
        history = fit_fm(model, model.feature_major(X), targets, None, options)
    return model, history


@pytest.mark.parametrize("backend", ["dense", "sparse"])
@pytest.mark.parametrize("dtype, batch_size", [(np.float32, 64), (np.float64, 512)])
def test_batches_from_rows_train_exactly_as_batches_from_columns(backend, dtype, batch_size):
    a, ha = _train("rows", backend, dtype, batch_size)
    b, hb = _train("columns", backend, dtype, batch_size)
    assert ha.history == hb.history
    for la, lb in zip(a.layers, b.layers):
        assert_array_equal(la.weight, lb.weight)
        assert_array_equal(la.bias, lb.bias)
