"""The CSR operations (``sparseprune.ops``) against SciPy and NumPy.

A CSR matrix A (n_rows, n_cols) here is a layer's weight transposed: rows are outputs,
columns inputs, activations feature-major (features, batch). Every output buffer starts
as NaN, so an entry a kernel forgets to write shows up.
"""

import contextlib

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from helpers import KERNEL_PATHS, kernel_path, tol
from sparseprune import SparseLinear, ops
from strategies import batches, csr_arrays, csr_cases, seeds


def feature_major(rng, n, batch, dtype):
    """A C-contiguous (n, batch) array of ``dtype`` with entries in [-2, 2]."""
    return rng.uniform(-2.0, 2.0, (n, batch)).astype(dtype)


def abs_product(a, b):
    """max |a| @ |b|: the size of the summed terms of a @ b, for the tolerances."""
    return (np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))).max(initial=0.0)


def stored_rows(indptr):
    """The row of every stored entry (nnz,)."""
    return np.repeat(np.arange(indptr.size - 1), np.diff(indptr))


@given(csr_cases(), batches, st.booleans(), st.booleans(), seeds, st.sampled_from(KERNEL_PATHS))
def test_csr_forward(case, batch, with_bias, relu, seed, path):
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_rows, n_cols = A.shape
    indptr, indices, data = csr_arrays(A)
    x = feature_major(rng, n_cols, batch, dtype)
    bias = rng.uniform(-2.0, 2.0, n_rows).astype(dtype) if with_bias else ops.EMPTY[dtype]
    out = np.full((n_rows, batch), np.nan, dtype)

    with kernel_path(path):
        result = ops.csr_forward(indptr, indices, data, ops.row_chunks(indptr), bias, relu,
                                 x, out)

    assert result is out
    b = bias.astype(np.float64) if with_bias else np.zeros(n_rows)
    expected = A.astype(np.float64) @ x.astype(np.float64) + b[:, None]
    if relu:
        expected = np.maximum(expected, 0.0)
    # Each output sums at most n_cols products of terms up to 2 in size.
    scale = (abs(A).astype(np.float64) @ np.abs(x.astype(np.float64))).max(initial=0.0) + 2.0
    assert_allclose(out, expected, **tol(dtype, scale=scale))
    # A row without stored weights is exactly its bias (or 0), ReLU'd.
    empty = np.diff(indptr) == 0
    assert_array_equal(out[empty], expected[empty])
    if relu:
        assert (out >= 0).all()
    # The inputs are read only.
    assert_array_equal(data, A.data)
    assert_array_equal(indptr, A.indptr)


@given(csr_cases(), batches, seeds, st.sampled_from(KERNEL_PATHS))
def test_csr_weight_grad_is_the_sampled_product(case, batch, seed, path):
    """grad_data[p] == (dz @ x.T)[j, indices[p]] for every stored (j, indices[p]): the
    user's (x @ dz.T) (in, out) sampled at the pattern."""
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_rows, n_cols = A.shape
    indptr, indices, _ = csr_arrays(A)
    x = feature_major(rng, n_cols, batch, dtype)
    dz = feature_major(rng, n_rows, batch, dtype)
    grad_data = np.full(indices.size, np.nan, dtype)

    with kernel_path(path):
        result = ops.csr_weight_grad(indptr, indices, ops.row_chunks(indptr), dz, x,
                                     grad_data)

    assert result is grad_data
    full = x.astype(np.float64) @ dz.astype(np.float64).T  # (in, out) = (n_cols, n_rows)
    expected = full[indices, stored_rows(indptr)]
    assert_allclose(grad_data, expected, **tol(dtype, scale=abs_product(x, dz.T)))


@given(csr_cases(), st.booleans())
def test_csr_transpose_matches_scipy(case, distinct_values):
    """The transpose's pattern is scipy's CSC of A, and data[perm] its values in that
    order. With distinct values the permutation itself is pinned down."""
    A, dtype = case
    indptr, indices, data = csr_arrays(A)
    if distinct_values:
        data = np.arange(1, data.size + 1, dtype=dtype)
        A = sp.csr_array((data, indices, indptr), shape=A.shape)

    indptr_t, indices_t, perm = ops.csr_transpose(A.shape[1], indptr, indices)

    expected = A.tocsc()  # CSC of A is CSR of A.T: the same three arrays
    assert expected.has_sorted_indices
    for got in (indptr_t, indices_t, perm):
        assert got.dtype == np.int32 and got.flags.c_contiguous
    assert_array_equal(indptr_t, expected.indptr)
    assert_array_equal(indices_t, expected.indices)
    assert_array_equal(np.sort(perm), np.arange(data.size))
    assert_array_equal(data[perm], expected.data)
    # The inputs are read only (the fill pass borrows indptr_t as its cursor, not these).
    assert_array_equal(indptr, A.indptr)
    assert_array_equal(indices, A.indices)


@given(csr_cases(), seeds)
def test_masked_to_csr_matches_scipy(case, seed):
    """From a dense weight (in, out) and its mask, A's own three arrays back (A being
    CSR of W.T): explicit zeros under the mask kept, and the weights outside it, set to
    noise here so that a leaked one shows, left out."""
    A, dtype = case
    indptr, indices, data = csr_arrays(A)
    rows = stored_rows(indptr)
    mask = np.zeros(A.shape[::-1], bool)
    mask[indices, rows] = True
    weight = np.random.default_rng(seed).uniform(5.0, 6.0, mask.shape).astype(dtype)
    weight[indices, rows] = data

    got = ops.masked_to_csr(weight, mask)

    assert [a.dtype for a in got] == [np.int32, np.int32, dtype]
    for a, b in zip(got, (indptr, indices, data)):
        assert_array_equal(a, b)


@given(csr_cases(), seeds, st.sampled_from(KERNEL_PATHS))
def test_csr_gather(case, seed, path):
    A, dtype = case
    rng = np.random.default_rng(seed)
    data = A.data.astype(dtype)
    perm = rng.permutation(data.size).astype(np.int32)
    out = np.full_like(data, np.nan)
    with kernel_path(path):
        assert ops.csr_gather(perm, data, out) is out
    assert_array_equal(out, data[perm])


def bits(a):
    """The bit patterns of a float array, so that equality is exact (-0.0 is not 0.0)."""
    return a.view(f"u{a.itemsize}")


def check_dense_sync(indptr, indices, data, shape, rng, fraction):
    """dense_sync from zeros makes the dense matrix; after a ``fraction`` of the values
    changes in place (among them -0.0 over 0.0, and values kept equal), it is the new
    matrix, entry for entry and bit for bit; ``seen`` follows the values."""
    dense = np.zeros(shape, data.dtype)  # entries outside the pattern stay zero
    seen = np.zeros_like(data)
    chunks = ops.row_chunks(indptr)
    for _ in range(2):
        ops.dense_sync(indptr, indices, chunks, data, seen, dense)
        # Assigned, not summed as scipy's toarray does: 0.0 + -0.0 would lose the sign.
        expected = np.zeros(shape, data.dtype)
        expected[stored_rows(indptr), indices] = data
        assert_array_equal(bits(dense), bits(expected))
        assert_array_equal(bits(seen), bits(data))
        changed = rng.random(data.size) < fraction
        data[changed] = rng.uniform(-2.0, 2.0, changed.sum()).astype(data.dtype)
        data[changed & (rng.random(data.size) < 0.2)] = -0.0


@given(csr_cases(), st.booleans(), st.sampled_from([0.0, 0.01, 0.5, 1.0]), seeds,
       st.sampled_from(KERNEL_PATHS))
def test_dense_sync(case, narrow, fraction, seed, path):
    """The dense copy of a dense-backend layer, kept up to date with values written in
    place: every index type, empty rows, zero nonzeros, both dtypes."""
    A, _ = case
    indptr, indices, data = csr_arrays(A)
    if narrow:
        indices = ops.narrow_indices(indices, A.shape[1])
    with kernel_path(path):
        check_dense_sync(indptr, indices, data, A.shape, np.random.default_rng(seed),
                         fraction)


@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_sync_across_blocks(path, dtype, rng):
    """Values are compared a block of csr.SYNC_BLOCK at a time across rows: a few
    changes scattered over many blocks, long and empty rows between them, land in their
    own rows."""
    pattern = rng.random((300, 200)) < 0.3
    pattern[rng.random(300) < 0.2] = False
    pattern[7] = True
    A = sp.csr_array(pattern.astype(dtype))
    indptr, indices, data = csr_arrays(A)
    data[:] = rng.uniform(-2.0, 2.0, data.size)
    with kernel_path(path):
        check_dense_sync(indptr, indices, data, A.shape, rng, 5.0 / data.size)


@given(csr_cases())
def test_row_chunks_cover_every_row_in_order(case):
    A, _ = case
    indptr, _, _ = csr_arrays(A)
    bounds = ops.row_chunks(indptr)
    assert bounds.dtype == np.int32 and bounds.ndim == 1 and bounds.size >= 2
    # Chunk c is rows bounds[c]:bounds[c + 1]: from row 0 to the last, without a gap or
    # an overlap, so every row is in exactly one chunk and the chunks are in row order.
    assert bounds[0] == 0 and bounds[-1] == A.shape[0]
    assert (np.diff(bounds) >= 0).all()


def test_row_chunks_of_a_skewed_pattern():
    """All weights in the last row, then in the first: still every row, in order."""
    for counts in ([0] * 50 + [1000], [1000] + [0] * 50, [3] * 7):
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        bounds = ops.row_chunks(indptr)
        assert bounds[0] == 0 and bounds[-1] == len(counts)
        assert (np.diff(bounds) >= 0).all()


# -- the layer's backward: weight gradient and the transposed product -------------------


@given(csr_cases(), batches, seeds, st.sampled_from(KERNEL_PATHS))
def test_sparse_linear_backward(case, batch, seed, path):
    """SparseLinear.backward_fm on W = A.T (in, out): grad_data is (x @ dz.T) at the
    stored positions, dx == W @ dz; after the values change (an optimizer step) dx uses
    the new values, not a stale copy of the transpose."""
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_out, n_in = A.shape
    layer = SparseLinear(A.T)  # a csc_array (in, out) on A's three arrays
    indptr, indices, data = layer.csr_arrays()
    assert_array_equal(indptr, A.indptr)
    assert_array_equal(indices, A.indices)
    x = feature_major(rng, n_in, batch, dtype)
    dz = feature_major(rng, n_out, batch, dtype)

    for _ in range(2):
        grad_data = np.full(layer.nnz, np.nan, dtype)
        dx = np.full((n_in, batch), np.nan, dtype)
        with kernel_path(path):
            assert layer.backward_fm(x, dz, grad_data, dx) is grad_data

        W = layer.weight.astype(np.float64)
        full = x.astype(np.float64) @ dz.astype(np.float64).T
        assert_allclose(grad_data, full[indices, stored_rows(indptr)],
                        **tol(dtype, scale=abs_product(x, dz.T)))
        scale = (abs(W) @ np.abs(dz.astype(np.float64))).max(initial=0.0) + 1.0
        assert_allclose(dx, W @ dz.astype(np.float64), **tol(dtype, scale=scale))
        # Inputs without a stored weight get an exact zero gradient.
        assert_array_equal(dx[np.diff(W.tocsr().indptr) == 0], 0.0)
        # The values change in place, as the optimizer changes them.
        layer.data[:] = rng.uniform(-2.0, 2.0, layer.nnz).astype(dtype)

    # Without dx, only the weight gradient is computed.
    grad_data = np.full(layer.nnz, np.nan, dtype)
    layer.backward_fm(x, dz, grad_data)
    assert np.isfinite(grad_data).all()


@given(csr_cases(), st.sampled_from([(1, 0), (2, 0), (3, 0), (5, 0), (1, 1), (2, 17),
                                     (3, -7)]), st.integers(1, 4), seeds, st.booleans())
def test_tiled_weight_gradient_by_rows_and_by_panels(case, tiles, group, seed, one_thread):
    """The sampled weight gradient by tiles of lanes against the float64 product at the
    stored positions: whole tiles read in place and partial ones packed, groups of one
    to four tiles (three as two and one, five as four and one), the row kernel and the
    panel kernel with panels one column wide to wider than the layer (uint8 and uint16
    column offsets; int32 ones take the row kernel). Row and panel kernels sum each
    product in one order: bit for bit equal, on one thread or all."""
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_out, n_in = A.shape
    lanes = ops.TILE_LANES[np.dtype(dtype)]
    batch = tiles[0] * lanes + tiles[1]
    x = ops.aligned_empty((n_in, batch), dtype)
    x[...] = feature_major(rng, n_in, batch, dtype)
    dz = feature_major(rng, n_out, batch, dtype)
    indptr, indices = A.indptr, A.indices
    bounds = ops.row_chunks(indptr)
    expected = (x.astype(np.float64) @ dz.astype(np.float64).T)[indices, stored_rows(indptr)]
    tolerance = tol(dtype, scale=abs_product(x, dz.T))
    row_bytes = group * max(1, n_in) * lanes * np.dtype(dtype).itemsize
    threads = numba.get_num_threads()
    results = []
    try:
        if one_thread:
            numba.set_num_threads(1)
        for width in (None, 1, 3, 7, 300, 70_000):
            layout = None if width is None else ops.panel_layout(indptr, indices, n_in, width)
            grad = np.full(indices.size, np.nan, dtype)
            with kernel_path("parallel"), patched(ops, SDDMM_ROW_BYTES=row_bytes,
                                                  SDDMM_GROUP=group):
                ops.csr_weight_grad(indptr, indices, bounds, dz, x, grad,
                                    panels=None if layout is None else lambda lay=layout: lay)
            assert_allclose(grad, expected, **tolerance)
            results.append(grad)
    finally:
        numba.set_num_threads(threads)
    for grad in results[1:]:
        assert_array_equal(grad, results[0])


@contextlib.contextmanager
def patched(module, **values):
    """The module's names set to ``values`` for the duration."""
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def _reference_forward(A, x, bias, relu):
    expected = A.astype(np.float64) @ x.astype(np.float64) + bias.astype(np.float64)[:, None]
    return np.maximum(expected, 0.0) if relu else expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_forward_at_tile_edges_with_a_reused_scratch(dtype):
    """The register-tile kernel: exactly one tile (aligned x, used in place, and
    misaligned x, packed), partial last tiles, and a scratch buffer full of NaN from
    before (none of it may reach the output)."""
    rng = np.random.default_rng(0)
    lanes = ops.TILE_LANES[np.dtype(dtype)]
    A = sp.random(70, 50, density=0.3, format="csr", random_state=1, dtype=np.float64)
    A = A.astype(dtype)
    indptr, indices, data = csr_arrays(A)
    bias = rng.uniform(-1, 1, 70).astype(dtype)
    bounds = ops.row_chunks(indptr)
    for batch in (5 * lanes + 3, lanes, lanes + 1, 2 * lanes - 1, lanes):
        for aligned in (True, False):
            buf = ops._aligned_bytes((50 * batch + 1) * np.dtype(dtype).itemsize)
            start = 0 if aligned else np.dtype(dtype).itemsize
            x = buf[start : start + 50 * batch * np.dtype(dtype).itemsize].view(dtype)
            x = x.reshape(50, batch)
            x[...] = rng.uniform(-2, 2, (50, batch))
            # One tile of aligned x is used in place; anything else is packed.
            assert np.shares_memory(ops.pack_tiles(x, lanes), x) == (aligned and batch == lanes)
            # Packing on one thread (small x) and on the pool (large x).
            for relu, pack_parallel_bytes in ((False, 1 << 62), (True, 0)):
                ops._SCRATCH.x[...] = 255  # stale bytes: NaN in either dtype
                out = np.full((70, batch), np.nan, dtype)
                with kernel_path("parallel"), pytest.MonkeyPatch.context() as patch:
                    patch.setattr(ops, "PACK_PARALLEL_BYTES", pack_parallel_bytes)
                    ops.csr_forward(indptr, indices, data, bounds, bias, relu, x, out)
                assert_allclose(out, _reference_forward(A, x, bias, relu),
                                **tol(dtype, scale=60.0))


def test_tiled_forward_beyond_the_scratch_limit(monkeypatch):
    """Tiles larger than SCRATCH_BYTES are packed into a buffer of their own, which is
    not kept."""
    monkeypatch.setattr(ops, "SCRATCH_BYTES", 1024)
    monkeypatch.setattr(ops, "_SCRATCH", __import__("threading").local())
    rng = np.random.default_rng(2)
    A = sp.random(40, 30, density=0.5, format="csr", random_state=3, dtype=np.float32)
    indptr, indices, data = csr_arrays(A)
    x = rng.uniform(-2, 2, (30, 200)).astype(np.float32)
    out = np.empty((40, 200), np.float32)
    with kernel_path("parallel"):
        ops.csr_forward(indptr, indices, data, ops.row_chunks(indptr),
                        ops.EMPTY[np.dtype(np.float32)], False, x, out)
    assert_allclose(out, _reference_forward(A, x, np.zeros(40), False), **tol(np.float32, 60.0))
    assert getattr(ops._SCRATCH, "x", None) is None
    assert not getattr(ops._SCRATCH, "views", {})


def test_scratch_views_are_reused_and_follow_their_buffer(monkeypatch):
    """A scratch view of a (slot, shape, dtype) asked for again is the same array, until
    the slot's buffer grows: then views come from the new buffer (the old one is let
    go). Slots never share memory, and the kept views are bounded."""
    monkeypatch.setattr(ops, "_SCRATCH", __import__("threading").local())
    small = ops._scratch((4, 8), np.float32)
    assert ops._scratch((4, 8), np.float32) is small
    assert small.ctypes.data % 64 == 0 and small.shape == (4, 8)
    large = ops._scratch((64, 8), np.float64)
    again = ops._scratch((4, 8), np.float32)
    assert again is not small and np.shares_memory(again, large)
    acc = ops._scratch((4, 8), np.float32, slot="acc")
    assert not np.shares_memory(acc, again)
    monkeypatch.setattr(ops, "SCRATCH_VIEWS", 3)
    for n in range(1, 8):
        assert ops._scratch((n,), np.float32).shape == (n,)
        assert len(ops._SCRATCH.views) <= 3


def test_tiled_relu_lets_nan_through():
    """ReLU in every kernel is max(z, 0) with NaN kept, so a NaN input shows up."""
    A = sp.csr_array(np.ones((3, 2), np.float32))
    indptr, indices, data = csr_arrays(A)
    for batch in (1, 2, 64, 130):
        x = np.zeros((2, batch), np.float32)
        x[0, -1] = np.nan
        x[1, 0] = -1.0
        for path in KERNEL_PATHS:
            out = np.empty((3, batch), np.float32)
            with kernel_path(path):
                ops.csr_forward(indptr, indices, data, ops.row_chunks(indptr),
                                ops.EMPTY[np.dtype(np.float32)], True, x, out)
            assert np.isnan(out[:, -1]).all()
            if batch > 1:
                assert (out[:, 0] == 0).all() and (out[:, 1:-1] == 0).all()


@pytest.mark.parametrize("shape", [7, (3, 5), (1024, 64), (64, 300), 1 << 15])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_empty(shape, dtype):
    a = ops.aligned_empty(shape, dtype)
    assert a.shape == ((shape,) if isinstance(shape, int) else shape)
    assert a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    if a.nbytes >= ops.ALIGN_BYTES:
        assert a.ctypes.data % 64 == 0
    a[...] = 1.0  # the whole extent is writable memory of its own
    assert a.sum() == a.size
