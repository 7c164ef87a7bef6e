"""The issue-10 forward paths (``ops.csr_forward_sm``, ``ops.csr_forward``)
against NumPy: sample-major X packed straight into register tiles (or transposed, at
small batches; in the parallel kernel's own region), sample-major output through the
kernel's row blocks, uint16 column indices.

As in test_sparse_kernels, A (n_rows, n_cols) is a layer's weight transposed, and every
output buffer starts as NaN so that an entry a kernel forgets shows up.
"""

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from helpers import KERNEL_PATHS, in_threads, kernel_path, sm_reference, sm_scale, tol
from sparseprune import ops
from sparseprune.kernels import csr
from strategies import batches, csr_arrays, csr_cases, seeds

INDEX_DTYPES = (np.int32, np.uint16)
# Layouts of X the wrapper takes: C-contiguous (packed as is), Fortran-ordered (a
# transposed feature-major array, packed as feature-major), strided (copied first).
LAYOUTS = ("C", "F", "strided")


def sample_major(rng, batch, n_cols, dtype, layout):
    """X (batch, n_cols) of ``dtype`` in [-2, 2], laid out as ``layout`` says."""
    if layout == "C":
        return rng.uniform(-2.0, 2.0, (batch, n_cols)).astype(dtype)
    if layout == "F":
        return np.asfortranarray(rng.uniform(-2.0, 2.0, (batch, n_cols)).astype(dtype))
    return rng.uniform(-2.0, 2.0, (batch, 2 * n_cols)).astype(dtype)[:, ::2]


def indices_as(indices, index_dtype):
    if index_dtype == np.uint16:
        return indices.astype(np.uint16)
    return indices


def bias_for(rng, n_rows, dtype, with_bias):
    return rng.uniform(-2.0, 2.0, n_rows).astype(dtype) if with_bias else ops.EMPTY[dtype]


@given(csr_cases(), batches, st.booleans(), st.booleans(), seeds,
       st.sampled_from(KERNEL_PATHS), st.sampled_from(INDEX_DTYPES), st.sampled_from(LAYOUTS),
       st.booleans())
def test_forward_sm(case, batch, with_bias, relu, seed, path, index_dtype, layout,
                    out_sample_major):
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_rows, n_cols = A.shape
    indptr, indices, data = csr_arrays(A)
    X = sample_major(rng, batch, n_cols, dtype, layout)
    bias = bias_for(rng, n_rows, dtype, with_bias)
    shape = (batch, n_rows) if out_sample_major else (n_rows, batch)
    out = np.full(shape, np.nan, dtype)

    with kernel_path(path):
        finite = ops.csr_forward_sm(indptr, indices_as(indices, index_dtype), data,
                                    ops.row_chunks(indptr), bias, relu, X, out,
                                    out_sample_major=out_sample_major)

    assert finite is True
    if not out_sample_major:
        out = out.T
    expected = sm_reference(A, X, bias if with_bias else np.zeros(n_rows), relu)
    assert_allclose(out, expected, **tol(dtype, scale=sm_scale(A, X)))
    # An output without stored weights is exactly its bias (or 0), ReLU'd.
    empty = np.diff(indptr) == 0
    assert_array_equal(out[:, empty], expected[:, empty])
    assert_array_equal(data, A.data)


@given(csr_cases(), batches, st.booleans(), st.booleans(), seeds,
       st.sampled_from(KERNEL_PATHS), st.sampled_from(INDEX_DTYPES))
def test_forward_narrow(case, batch, with_bias, relu, seed, path, index_dtype):
    """The feature-major forward for either index type: as csr_forward."""
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_rows, n_cols = A.shape
    indptr, indices, data = csr_arrays(A)
    x = rng.uniform(-2.0, 2.0, (n_cols, batch)).astype(dtype)
    bias = bias_for(rng, n_rows, dtype, with_bias)
    out = np.full((n_rows, batch), np.nan, dtype)

    with kernel_path(path):
        result = ops.csr_forward(indptr, indices_as(indices, index_dtype), data,
                                         ops.row_chunks(indptr), bias, relu, x, out)

    assert result is out
    expected = sm_reference(A, x.T, bias if with_bias else np.zeros(n_rows), relu).T
    assert_allclose(out, expected, **tol(dtype, scale=sm_scale(A, x.T)))


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "codes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_forward_sm_at_tile_and_block_edges(dtype, path, quantized):
    """Below and at half a tile (the transposing path, then tiles), exactly one tile,
    partial last tiles, many tiles; more rows than one 16-row output block, chunks whose
    bounds fall inside blocks; packing on one thread and on the
    pool; scratch full of stale NaN from before. Float values, and codes read through a
    table (a quantized layer's, the same loops)."""
    rng = np.random.default_rng(0)
    lanes = ops.TILE_LANES[np.dtype(dtype)]
    A = sp.random(83, 50, density=0.3, format="csr", random_state=1, dtype=np.float64)
    A = A.astype(dtype)
    indptr, indices, data = csr_arrays(A)
    table = None
    if quantized:
        table = rng.uniform(-1, 1, 256).astype(dtype)
        data = rng.integers(0, 256, indices.size).astype(np.uint8)
        A = sp.csr_array((table[data], indices, indptr), shape=A.shape)
    bias = rng.uniform(-1, 1, 83).astype(dtype)
    # 83 rows in 5 chunks: bounds fall inside the 16-row output blocks.
    bounds = np.array([0, 7, 16, 40, 41, 83], np.int32)
    for batch in (2, lanes // 2 - 1, lanes // 2, lanes - 1, lanes, lanes + 1, 5 * lanes + 3):
        X = rng.uniform(-2, 2, (batch, 50)).astype(dtype)
        # Tile groups: none (every tile of a chunk in one work item), one tile per item,
        # four (a partial last group at 5 tiles and more).
        for relu, pack_parallel_bytes, group_tiles in ((False, 1 << 62, None), (True, 0, 1),
                                                       (False, 0, 4)):
            for out_sample_major in (True, False):
                ops._scratch((1 << 16,), np.uint8)[...] = 255  # stale bytes: NaN in both dtypes
                out = np.full((batch, 83) if out_sample_major else (83, batch), np.nan, dtype)
                with kernel_path(path), pytest.MonkeyPatch.context() as patch:
                    patch.setattr(ops, "PACK_PARALLEL_BYTES", pack_parallel_bytes)
                    if group_tiles is not None:
                        patch.setattr(ops, "TILE_GROUPS_FROM_BYTES", 0)
                        patch.setattr(ops, "TILE_GROUP_BYTES", group_tiles * 50 * lanes
                                      * np.dtype(dtype).itemsize)
                    assert ops.csr_forward_sm(indptr, indices, data, bounds, bias, relu, X, out,
                                              out_sample_major=out_sample_major, table=table)
                got = out if out_sample_major else out.T
                assert_allclose(got, sm_reference(A, X, bias, relu), **tol(dtype, scale=60.0))


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "codes"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_tiled_kernel_packs_in_its_region_for_any_share_count(dtype, quantized):
    """The parallel tiled kernel packs x in its own parallel region, items claimed from
    a counter, then runs its shares of the product. From sample-major x (packing items
    inside a tile: 600 inputs), feature-major x (items of input rows across 3 tiles) and
    x packed already: the same output, bit for bit, whether the work is cut into 1, 2,
    3 or 7 shares and whether Numba runs 1 thread or all (a thread then runs several
    shares in turn; none waits for an item no running thread holds). A NaN in
    sample-major x is counted."""
    rng = np.random.default_rng(5)
    lanes = ops.TILE_LANES[np.dtype(dtype)]
    n_rows, n_in, batch = 70, 600, 2 * lanes + 5
    A = sp.random(n_rows, n_in, density=0.05, format="csr", random_state=2,
                  dtype=np.float64).astype(dtype)
    empty = [0, 17, 40, 41, n_rows - 1]  # rows without weights, at chunk edges and inside
    A = sp.csr_array(A.multiply(np.isin(np.arange(n_rows), empty, invert=True)[:, None]))
    A.eliminate_zeros()
    assert (np.diff(A.indptr)[empty] == 0).all()
    A.data[:3] = 0.0  # explicit zeros: stored weights like any other
    indptr, indices, data = csr_arrays(A)
    values, kernel = (data,), csr.csr_matmul_tiles_parallel
    if quantized:
        table = rng.uniform(-1, 1, 256).astype(dtype)
        codes = rng.integers(0, 256, indices.size).astype(np.uint8)
        A = sp.csr_array((table[codes], indices, indptr), shape=A.shape)
        values, kernel = (codes, table), csr.qcsr_matmul_tiles_parallel
    bias = rng.uniform(-1, 1, n_rows).astype(dtype)
    X = rng.uniform(-2, 2, (batch, n_in)).astype(dtype)
    expected = sm_reference(A, X, bias, True)
    bounds = ops.row_chunks(indptr)
    n_tiles = -(-batch // lanes)
    cases = {
        csr.SAMPLE_MAJOR: X,
        csr.FEATURE_MAJOR: np.ascontiguousarray(X.T),
        csr.PACKED: None,
    }
    first = None
    for layout, x in cases.items():
        for n_workers in (1, 2, 3, 7):
            for threads in (1, numba.config.NUMBA_NUM_THREADS):
                xp = np.full((n_tiles, n_in, lanes), np.nan, dtype)
                if layout == csr.PACKED:
                    xp[...] = ops.pack_tiles(np.ascontiguousarray(X.T), lanes)
                    x = xp[0]
                out = np.full((batch, n_rows), np.nan, dtype)
                before = numba.get_num_threads()
                numba.set_num_threads(threads)
                try:
                    bad = kernel(True, True, indptr, indices, *values, bounds, 1, n_workers,
                                 layout, x, xp, bias, out)
                finally:
                    numba.set_num_threads(before)
                assert bad == 0
                assert_allclose(out, expected, **tol(dtype, scale=60.0))
                if first is None:
                    first = out
                assert_array_equal(out, first)
    X[batch - 1, n_in - 1] = np.nan
    xp = np.empty((n_tiles, n_in, lanes), dtype)
    out = np.empty((batch, n_rows), dtype)
    assert kernel(True, True, indptr, indices, *values, bounds, 1, 2, csr.SAMPLE_MAJOR, X, xp,
                  bias, out) > 0


def rows_of_lengths(rng, lengths, n_cols, dtype):
    """A CSR array (len(lengths), n_cols) of ``dtype`` whose row j holds lengths[j]
    values in [-1, 1] at distinct random columns."""
    indptr = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate([np.sort(rng.choice(n_cols, n, replace=False))
                              for n in lengths]).astype(np.int32)
    data = rng.uniform(-1.0, 1.0, indices.size).astype(dtype)
    return sp.csr_array((data, indices, indptr), shape=(len(lengths), n_cols))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_batch_one_every_row_length(dtype, path, index_dtype):
    """The batch-1 kernels (four quads of nonzeros a turn, then quads, then single
    nonzeros) against NumPy: rows of every length from none to three turns and a bit, in
    a shuffled order, over 3,000 columns (indices past one byte), with and without bias
    and ReLU."""
    rng = np.random.default_rng(7)
    lengths = rng.permutation(np.arange(3 * 16 + 8))
    A = rows_of_lengths(rng, lengths, 3000, dtype)
    indptr, indices, data = csr_arrays(A)
    x = rng.uniform(-2.0, 2.0, (3000, 1)).astype(dtype)
    for with_bias, relu in ((False, False), (True, False), (True, True)):
        bias = bias_for(rng, A.shape[0], np.dtype(dtype), with_bias)
        expected = sm_reference(A, x.T, bias if with_bias else np.zeros(A.shape[0]), relu).T
        out = np.full((A.shape[0], 1), np.nan, dtype)
        with kernel_path(path):
            ops.csr_forward(indptr, indices_as(indices, index_dtype), data,
                            ops.row_chunks(indptr), bias, relu, x, out)
        assert_allclose(out, expected, **tol(dtype, scale=sm_scale(A, x.T)))
        assert_array_equal(out[lengths == 0], expected[lengths == 0])


@pytest.mark.parametrize("batch", [1, 2, 64, 130])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_forward_sm_reports_non_finite_input(batch, layout):
    """The finiteness check rides along with the packing: NaN or inf anywhere in X, on
    either packing path of the serial kernels and in the parallel kernel's own region,
    makes the call return False."""
    A = sp.csr_array(np.ones((3, 40), np.float32))
    indptr, indices, data = csr_arrays(A)
    rng = np.random.default_rng(3)
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((0, 0), (batch - 1, 39), (batch // 2, 17)):
            for pack_parallel_bytes, path in ((1 << 62, "serial"), (0, "serial"),
                                              (0, "parallel")):
                X = sample_major(rng, batch, 40, np.float32, layout)
                X[where] = bad
                out = np.empty((batch, 3), np.float32)
                with kernel_path(path), pytest.MonkeyPatch.context() as patch:
                    patch.setattr(ops, "PACK_PARALLEL_BYTES", pack_parallel_bytes)
                    assert ops.csr_forward_sm(indptr, indices, data, ops.row_chunks(indptr),
                                              ops.EMPTY[np.dtype(np.float32)], False, X,
                                              out) is False


def test_narrow_indices():
    indices = np.array([0, 5, 65535], np.int32)
    narrow = ops.narrow_indices(indices, 1 << 16)
    assert narrow.dtype == np.uint16
    assert_array_equal(narrow, indices)
    assert ops.narrow_indices(indices, (1 << 16) + 1) is indices


@pytest.mark.parametrize("batch", [1, 2, 70])
def test_uint16_indices_at_the_top_of_their_range(batch):
    """Columns 32767, 32768 (int16's sign bit) and 65535 are read as such, not
    sign-extended, in the batch-1 and the tiled kernels, serial and parallel."""
    n_cols = 1 << 16
    cols = np.array([0, 1, 32767, 32768, 65534, 65535])
    rows = np.array([0, 0, 1, 1, 2, 2])
    A = sp.csr_array((np.arange(1.0, 7.0, dtype=np.float32), (rows, cols)),
                     shape=(3, n_cols))
    indptr, indices, data = csr_arrays(A)
    narrow = ops.narrow_indices(indices, n_cols)
    assert narrow.dtype == np.uint16
    X = np.random.default_rng(4).uniform(-2, 2, (batch, n_cols)).astype(np.float32)
    for path in KERNEL_PATHS:
        out = np.full((batch, 3), np.nan, np.float32)
        with kernel_path(path):
            assert ops.csr_forward_sm(indptr, narrow, data, ops.row_chunks(indptr),
                                      ops.EMPTY[np.dtype(np.float32)], False, X, out)
        assert_allclose(out, sm_reference(A, X, np.zeros(3), False), rtol=1e-6, atol=1e-5)


def test_forward_sm_from_several_python_threads():
    """Forwards from several Python threads at once: each call has its own output
    blocks, each thread its own packing scratch."""
    rng = np.random.default_rng(5)
    A = sp.random(300, 200, density=0.2, format="csr", random_state=6, dtype=np.float32)
    indptr, indices, data = csr_arrays(A)
    bounds = ops.row_chunks(indptr)
    bias = rng.uniform(-1, 1, 300).astype(np.float32)
    inputs = [rng.uniform(-2, 2, (batch, 200)).astype(np.float32)
              for batch in (1, 3, 64, 100, 257, 1, 64, 130)]

    def run(X):
        for _ in range(20):
            out = np.full((X.shape[0], 300), np.nan, np.float32)
            with kernel_path("parallel"):
                assert ops.csr_forward_sm(indptr, indices, data, bounds, bias, True, X, out)
            assert_allclose(out, sm_reference(A, X, bias, True), **tol(np.float32, 60.0))

    in_threads(run, [(X,) for X in inputs])


def test_tiled_kernels_refuse_tiles_of_another_width():
    lanes = ops.TILE_LANES[np.dtype(np.float32)]
    A = sp.random(8, 6, density=0.5, format="csr", random_state=0, dtype=np.float32)
    indptr, indices, data = csr_arrays(A)
    xp = np.zeros((1, 6, lanes // 2), np.float32)
    out = np.empty((lanes // 2, 8), np.float32)
    with pytest.raises(ValueError, match="tile width"):
        csr.csr_matmul_tiles_parallel(False, True, indptr, indices, data,
                                      np.array([0, 8], np.int32), 1, 2, csr.PACKED, xp[0],
                                      xp, ops.EMPTY[np.dtype(np.float32)], out)
    with pytest.raises(ValueError, match="tile width"):
        csr.qcsr_matmul_tiles_parallel(False, True, indptr, indices,
                                       np.zeros(indices.size, np.uint8),
                                       np.zeros(256, np.float32), np.array([0, 8], np.int32),
                                       1, 2, csr.PACKED, xp[0], xp,
                                       ops.EMPTY[np.dtype(np.float32)], out)
    with pytest.raises(ValueError, match="tile width"):
        csr.csr_matmul_tiles(False, True, indptr, indices, data, xp,
                             ops.EMPTY[np.dtype(np.float32)], out)
