"""The column-panel forward (``kernels/panels.py``, ``ops.panel_layout``) against NumPy.

Panels pay from 2,048 inputs on; here small layouts (panels of a few columns, blocks of
a few rows) run the same kernels on small cases, as hypothesis draws them: zero
nonzeros, empty rows, rows longer than a block, every batch from one tile lane to many
tiles, both dtypes and index types, codes read through a table. Every output buffer
starts as NaN, so an entry a kernel forgets shows up.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from helpers import in_threads, kernel_path, sm_reference, sm_scale, tol
from sparseprune import QuantizedLinear, SparseLinear, ops
from sparseprune.kernels import panels as panel_kernels
from sparseprune.kernels.csr import csr_tile_bytes
from strategies import batches, csr_arrays, csr_cases, seeds

INDEX_DTYPES = (np.int32, np.uint16)


def check_layout(layout, indptr, indices, n_cols, width):
    """Every virtual row is the part of its CSR row inside its panel, in order, and the
    virtual rows cover every nonzero once."""
    blocks, vptr, vsrc, offsets = layout.blocks, layout.vptr, layout.vsrc, layout.offsets
    n_rows = indptr.size - 1
    n_panels = layout.n_panels
    assert n_panels == max(1, -(-n_cols // width))
    assert blocks[0] == 0 and blocks[-1] == n_rows and (np.diff(blocks) > 0).all()
    assert layout.max_rows == (np.diff(blocks).max() if n_rows else 0)
    assert vptr[0] == 0 and vptr[-1] == indices.size and (np.diff(vptr) >= 0).all()
    seen = np.zeros(indices.size, int)
    for b in range(blocks.size - 1):
        r0, r1 = blocks[b], blocks[b + 1]
        for k in range(n_panels):
            for j in range(r0, r1):
                v = r0 * n_panels + k * (r1 - r0) + (j - r0)
                n = vptr[v + 1] - vptr[v]
                src = np.arange(vsrc[v], vsrc[v] + n)
                assert (src >= indptr[j]).all() and (src < indptr[j + 1]).all()
                cols = offsets[vptr[v]:vptr[v + 1]].astype(np.int64) + k * width
                assert_array_equal(cols, indices[src])
                cols = indices[indptr[j]:indptr[j + 1]]
                in_panel = (cols >= k * width) & ((cols < (k + 1) * width) | (k == n_panels - 1))
                assert n == in_panel.sum()
                seen[src] += 1
    assert (seen == 1).all()


layouts = st.tuples(st.integers(1, 9), st.integers(1, 40), st.integers(1, 12))


@given(csr_cases(), layouts, st.sampled_from(INDEX_DTYPES))
def test_panel_layout(case, layout_sizes, index_dtype):
    A, _ = case
    width, block_nnz, block_rows = layout_sizes
    indptr, indices, _ = csr_arrays(A)
    indices = indices.astype(index_dtype)
    layout = ops.panel_layout(indptr, indices, A.shape[1], width, block_nnz, block_rows)
    assert layout.offsets.dtype == np.uint8 and layout.width == width
    check_layout(layout, indptr, indices, A.shape[1], width)
    # Blocks: at most block_rows rows, and block_nnz nonzeros unless one row has more.
    sizes = np.diff(layout.blocks)
    assert (sizes <= block_rows).all()
    nnz = indptr[layout.blocks[1:]] - indptr[layout.blocks[:-1]]
    assert ((nnz <= block_nnz) | (sizes == 1)).all()


@given(csr_cases(), st.integers(1, 60), st.integers(1, 12), st.integers(1, 4))
def test_default_blocks_cover_the_rows(case, block_nnz, block_rows, threads):
    """Without block_nnz: blocks in order, none empty, of at most twice block_rows rows
    (balanced ones) and the layout over them whole, whatever the rows' lengths."""
    A, _ = case
    indptr, indices, _ = csr_arrays(A)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "PANEL_BLOCK_NNZ", block_nnz)
        patch.setattr(ops.numba.config, "NUMBA_NUM_THREADS", threads)
        blocks = ops.panel_block_bounds(indptr, block_rows)
        layout = ops.panel_layout(indptr, indices, A.shape[1], 3, None, block_rows)
    assert_array_equal(layout.blocks, blocks)
    check_layout(layout, indptr, indices, A.shape[1], 3)
    assert (np.diff(blocks) <= 2 * block_rows).all()


@given(st.integers(1, 300), st.integers(1, 9), st.integers(1, 500), st.integers(1, 64),
       st.integers(1, 8))
def test_default_blocks_come_in_a_multiple_of_the_threads(n_rows, per_row, block_nnz,
                                                           block_rows, threads):
    """Rows of equal length: as many blocks as the nonzeros and rows ask for, rounded up
    to a multiple of the thread count (unless there are fewer rows), their row counts
    one apart at most."""
    indptr = np.arange(n_rows + 1, dtype=np.int32) * per_row
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops, "PANEL_BLOCK_NNZ", block_nnz)
        patch.setattr(ops.numba.config, "NUMBA_NUM_THREADS", threads)
        blocks = ops.panel_block_bounds(indptr, block_rows)
    wanted = max(-(-n_rows * per_row // block_nnz), -(-n_rows // block_rows))
    assert blocks.size - 1 == min(-(-wanted // threads) * threads, n_rows)
    sizes = np.diff(blocks)
    assert blocks[0] == 0 and blocks[-1] == n_rows
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("n_cols, width, offset_dtype", [
    (1000, 300, np.uint16), (70_000, 35_000, np.uint16), (70_000, 70_000, np.int32)])
def test_wide_panels_take_wider_offsets(n_cols, width, offset_dtype):
    """Panels wider than 256 columns hold their offsets in uint16, wider than 65,536 in
    int32; the forward through them is exact all the same."""
    rng = np.random.default_rng(11)
    A = sp.random(40, n_cols, density=min(1.0, 600 / n_cols), format="csr", random_state=12,
                  dtype=np.float64).astype(np.float32)
    indptr, indices, data = csr_arrays(A)
    layout = ops.panel_layout(indptr, indices, n_cols, width, 500, 7)
    assert layout.offsets.dtype == offset_dtype
    check_layout(layout, indptr, indices, n_cols, width)
    X = rng.uniform(-1, 1, (40, n_cols)).astype(np.float32)
    out = np.full((40, 40), np.nan, np.float32)
    with kernel_path("parallel"):
        assert ops.csr_forward_sm(indptr, indices, data, ops.row_chunks(indptr),
                                  ops.EMPTY[np.dtype(np.float32)], False, X, out,
                                  panels=lambda: layout)
    assert_allclose(out, sm_reference(A, X, np.zeros(40), False),
                    **tol(np.float32, scale=sm_scale(A, X)))


@given(csr_cases(), batches, layouts, st.booleans(), st.booleans(), seeds,
       st.sampled_from(INDEX_DTYPES), st.booleans(), st.booleans(), st.sampled_from([0, 1, 3]))
def test_panel_forward(case, batch, layout_sizes, with_bias, relu, seed, index_dtype,
                       out_sample_major, quantized, group_tiles):
    """csr_forward_sm through the panel kernel, float values or codes through a table,
    every tile in one work item or groups of one or three tiles."""
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_rows, n_cols = A.shape
    indptr, indices, data = csr_arrays(A)
    indices = indices.astype(index_dtype)
    table = None
    if quantized:
        table = rng.uniform(-1, 1, 256).astype(dtype)
        data = rng.integers(0, 256, indices.size).astype(np.uint8)
        A = sp.csr_array((table[data], indices.astype(np.int32), indptr), shape=A.shape)
    layout = ops.panel_layout(indptr, indices, n_cols, *layout_sizes)
    X = rng.uniform(-2.0, 2.0, (batch, n_cols)).astype(dtype)
    bias = rng.uniform(-2, 2, n_rows).astype(dtype) if with_bias else ops.EMPTY[np.dtype(dtype)]
    out = np.full((batch, n_rows) if out_sample_major else (n_rows, batch), np.nan, dtype)
    ops._scratch((1 << 16,), np.uint8, slot="acc")[...] = 255  # stale NaN accumulators
    lanes = ops.TILE_LANES[np.dtype(dtype)]

    with kernel_path("parallel"), pytest.MonkeyPatch.context() as patch:
        if group_tiles:
            patch.setattr(ops, "TILE_GROUPS_FROM_BYTES", 0)
            patch.setattr(ops, "TILE_GROUP_BYTES",
                          group_tiles * max(n_cols, 1) * lanes * np.dtype(dtype).itemsize)
        finite = ops.csr_forward_sm(indptr, indices, data, ops.row_chunks(indptr), bias, relu,
                                    X, out, out_sample_major=out_sample_major, table=table,
                                    panels=lambda: layout)

    assert finite is True
    got = out if out_sample_major else out.T
    expected = sm_reference(A, X, bias if with_bias else np.zeros(n_rows), relu)
    assert_allclose(got, expected, **tol(dtype, scale=sm_scale(A, X)))
    empty = np.diff(indptr) == 0
    assert_array_equal(got[:, empty], expected[:, empty])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_feature_major_panels_non_contiguous_and_partial_tiles(dtype):
    """csr_forward (feature-major, a model's layers) through panels: partial last tiles,
    and sample-major X given as a transposed or strided view."""
    rng = np.random.default_rng(1)
    A = sp.random(70, 45, density=0.4, format="csr", random_state=2, dtype=np.float64)
    A = A.astype(dtype)
    indptr, indices, data = csr_arrays(A)
    layout = ops.panel_layout(indptr, indices, 45, 7, 30, 9)
    bias = rng.uniform(-1, 1, 70).astype(dtype)
    lanes = ops.TILE_LANES[np.dtype(dtype)]
    for batch in (lanes // 2, lanes, lanes + 1, 3 * lanes - 5):
        x = rng.uniform(-2, 2, (45, batch)).astype(dtype)
        out = np.full((70, batch), np.nan, dtype)
        with kernel_path("parallel"):
            ops.csr_forward(indptr, indices, data, ops.row_chunks(indptr), bias, True, x, out,
                            panels=lambda: layout)
        assert_allclose(out.T, sm_reference(A, x.T, bias, True), **tol(dtype, scale=60.0))
        for X in (np.asfortranarray(x.T), rng.uniform(-2, 2, (batch, 90)).astype(dtype)[:, ::2]):
            out = np.full((batch, 70), np.nan, dtype)
            with kernel_path("parallel"):
                assert ops.csr_forward_sm(indptr, indices, data, ops.row_chunks(indptr), bias,
                                          False, X, out, panels=lambda: layout)
            assert_allclose(out, sm_reference(A, X, bias, False), **tol(dtype, scale=60.0))


# Inputs enough for panels at the package's own settings, by the tile width the kernels
# were compiled for: 2,100 with 256-byte tiles (AVX-512), 4,148 with 128-byte ones (AVX2).
WIDE = ops.PANELS_FROM_BYTES // csr_tile_bytes() + 52


def wide_layer(dtype=np.float32, n_in=WIDE, n_out=300, density=0.05, seed=3):
    """A layer wide enough for panels at the package's own settings."""
    W = sp.random(n_in, n_out, density=density, format="csc", random_state=seed,
                  dtype=np.float64).astype(dtype)
    bias = np.random.default_rng(seed).uniform(-1, 1, n_out)
    return W, SparseLinear(W, bias, backend="sparse")


def test_wide_layers_take_panels_and_see_new_values():
    """A layer of WIDE inputs runs the panel kernel at a tile of samples and more; the
    values are read in place, so writing them (as an optimizer does) is seen at once."""
    W, layer = wide_layer()
    layout = layer._panels()
    assert layout is not None and layout.n_panels >= 2
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, (200, WIDE)).astype(np.float32)
    W64 = W.toarray().astype(np.float64)
    assert_allclose(layer.forward(X), X @ W64 + layer.bias, rtol=1e-5, atol=1e-4)
    layer.data[:] = rng.uniform(-1, 1, layer.nnz).astype(np.float32)
    assert_allclose(layer.forward(X), X @ layer.weight.toarray() + layer.bias, rtol=1e-5,
                    atol=1e-4)
    assert layer._panels() is layout
    # Narrow layers never build one.
    assert SparseLinear(sp.random(500, 40, density=0.5, format="csc"))._panels() is None


def test_quantized_wide_layer_takes_panels():
    W, layer = wide_layer(seed=5)
    q = QuantizedLinear.from_layer(layer, bits=8)
    X = np.random.default_rng(6).uniform(-1, 1, (130, WIDE)).astype(np.float32)
    expected = X.astype(np.float64) @ q.weight.toarray() + q.bias
    assert q._panels() is not None
    assert_allclose(q.forward(X), expected, rtol=1e-5, atol=1e-4)


def test_panels_from_several_python_threads():
    """Eight Python threads on one fresh wide layer at once (the first calls race to build
    its layout): every result equals the single-threaded one."""
    W, layer = wide_layer(seed=7)
    _, fresh = wide_layer(seed=7)
    rng = np.random.default_rng(8)
    inputs = [rng.uniform(-1, 1, (batch, WIDE)).astype(np.float32)
              for batch in (64, 100, 257, 64, 130, 65, 200, 128)]
    expected = [fresh.forward(X) for X in inputs]

    def run(X, want):
        for _ in range(5):
            assert_array_equal(layer.forward(X), want)

    in_threads(run, list(zip(inputs, expected)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_narrow_tiles_take_panels_from_two_mib_of_batch(monkeypatch, dtype):
    """Where a tile of packed x is under PANELS_FROM_BYTES (2,048 inputs with 128-byte
    tiles; here forced on every host), a layer of PANELS_FROM_INPUTS inputs still has a
    layout: the forward takes it once the whole batch's packed x reaches
    PANELS_FROM_BATCH_BYTES and the tiled kernel below that, the weight gradient at any
    batch; each against NumPy."""
    monkeypatch.setattr(ops, "PANELS_FROM_BYTES", 1 << 62)
    ran = []

    def recording(name, kernel):
        def run(*args):
            ran.append(name)
            return kernel(*args)
        return run

    for name in ("csr_matmul_panels", "csr_sddmm_panels"):
        monkeypatch.setattr(panel_kernels, name, recording(name, getattr(panel_kernels, name)))
    n_in = ops.PANELS_FROM_INPUTS
    W = sp.random(n_in, 40, density=0.1, format="csc", random_state=11,
                  dtype=np.float64).astype(dtype)
    layer = SparseLinear(W, backend="sparse")
    rng = np.random.default_rng(12)
    W64 = W.toarray().astype(np.float64)
    full = ops.PANELS_FROM_BATCH_BYTES // (n_in * np.dtype(dtype).itemsize)
    for batch, paneled in ((full, True), (full - 1, False), (70, False)):
        ran.clear()
        X = rng.uniform(-1, 1, (batch, n_in)).astype(dtype)
        with kernel_path("parallel"):  # a small case, on the path of a large one
            out = layer.forward(X)
        assert_allclose(out, X @ W64 + layer.bias, **tol(dtype, scale=60.0))
        assert ran == (["csr_matmul_panels"] if paneled else [])
        ran.clear()
        dz = rng.uniform(-1, 1, (40, batch)).astype(dtype)
        grad = np.full(layer.nnz, np.nan, dtype)
        with kernel_path("parallel"):
            layer.backward_fm(np.ascontiguousarray(X.T), dz, grad)
        indptr, indices, _ = layer.csr_arrays()
        rows = np.repeat(np.arange(40), np.diff(indptr))
        expected = (dz.astype(np.float64) @ X.astype(np.float64))[rows, indices]
        assert_allclose(grad, expected, **tol(dtype, scale=60.0))
        assert ran == ["csr_sddmm_panels"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_gradient_of_a_layer_with_many_outputs_takes_panels(dtype):
    """backward_fm's dx = W @ dz runs on the transposed pattern, whose columns are the
    layer's WIDE outputs: through panels from a tile of samples on, against NumPy, and
    after the values change in place."""
    W = sp.random(300, WIDE, density=0.05, format="csc", random_state=9,
                  dtype=np.float64).astype(dtype)
    layer = SparseLinear(W, backend="sparse")
    rng = np.random.default_rng(10)
    for step in range(2):
        for batch in (64, 100):
            x = rng.uniform(-1, 1, (300, batch)).astype(dtype)
            dz = rng.uniform(-1, 1, (WIDE, batch)).astype(dtype)
            grad = np.empty(layer.nnz, dtype)
            dx = np.full((300, batch), np.nan, dtype)
            layer.backward_fm(x, dz, grad, dx)
            expected = layer.weight.toarray().astype(np.float64) @ dz.astype(np.float64)
            assert_allclose(dx, expected, **tol(dtype, scale=60.0))
        layer.data[:] = rng.uniform(-1, 1, layer.nnz).astype(dtype)
    assert layer._transposed_panels() is not None
    assert layer._transposed()[1].dtype == np.uint16


@pytest.mark.parametrize("caches, expected", [
    ({"index0": ("1", "48K", "0"), "index1": ("1", "32K", "0"), "index2": ("2", "2048K", "0"),
      "index3": ("3", "107520K", "0-1")}, 2 << 20),
    ({"index2": ("2", "1M", None), "index0": ("1", "32K", None)}, 1 << 20),
    ({"index2": ("2", "1M", "0,8")}, 1 << 19),
    ({"index2": ("2", "4096K", "0-3,16-19")}, 1 << 19),
    ({"index0": ("1", "32K", "0")}, "default"),
    ({"index2": ("2", "big", "0")}, "default"),
    (None, "default")])
def test_l2_cache_size_is_read_from_sysfs(tmp_path, caches, expected):
    """The L2 size that sizes the panel blocks: the level-2 entry of sysfs's cache
    directories, in K or M, divided among the CPUs that share it; the default where
    there is none, or none readable."""
    if caches is not None:
        for name, (level, size, shared) in caches.items():
            (tmp_path / name).mkdir()
            (tmp_path / name / "level").write_text(level + "\n")
            (tmp_path / name / "size").write_text(size + "\n")
            if shared is not None:
                (tmp_path / name / "shared_cpu_list").write_text(shared + "\n")
    base = tmp_path if caches is not None else tmp_path / "missing"
    got = ops.l2_cache_bytes(str(base), default=12345)
    assert got == (12345 if expected == "default" else expected)
