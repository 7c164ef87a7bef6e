"""Hypothesis strategies shared by the tests.

Kernel cases are small arrays drawn element by element (so hypothesis finds zeros, ties
and signs at the boundaries); model cases draw only sizes and a seed, the arrays come
from numpy's generator (large enough to be realistic, still fast).
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = (np.float32, np.float64)

dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)
# Batch 1 and a single row are the edge cases the kernels must get right.
dims = st.integers(1, 7)


def floats(dtype, bound=10.0):
    """Finite floats in [-bound, bound] representable in ``dtype``.

    Subnormals are left out: they carry fewer significant bits, so relative tolerances
    mean nothing there, and no real weight or activation lives at 1e-40.
    """
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return st.floats(-bound, bound, width=width, allow_nan=False, allow_infinity=False,
                     allow_subnormal=False)


def matrices(dtype, shape, bound=10.0):
    """C-contiguous arrays of ``shape`` and ``dtype`` with finite entries."""
    return hnp.arrays(np.dtype(dtype), shape, elements=floats(dtype, bound))


@st.composite
def logits_and_labels(draw, bound=30.0):
    """(z (classes, batch), y (batch,) int64 labels, dtype); classes may be 1."""
    dtype = draw(dtypes)
    n_classes, batch = draw(dims), draw(dims)
    z = draw(matrices(dtype, (n_classes, batch), bound))
    y = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, n_classes - 1)))
    return z, y, dtype


@st.composite
def mlp_sizes(draw, max_depth=3, max_width=6, min_classes=2):
    """Layer widths [in, hidden..., classes]; two entries means no hidden layer."""
    depth = draw(st.integers(1, max_depth))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth, max_size=depth))
    n_classes = draw(st.integers(min_classes, max_width))
    return [*widths, n_classes]


# Sparsities a user could ask for: the ends, round fractions and arbitrary floats.
sparsities = st.one_of(
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 0.99]),
    st.floats(0.0, 1.0, exclude_max=True, allow_nan=False),
)


# -- sparse cases ---------------------------------------------------------------------
#
# Sparse cases draw their structure element by element (shape, density, which rows and
# columns are forced empty, how many stored values are explicit zeros, the batch), and
# take the pattern and values from a drawn seed: a 40 x 40 pattern and a 300-sample
# batch drawn entry by entry would make every example slow and shrink badly.

# Batch 1 runs the batch-1 kernels; from one register tile of lanes on (64 float32,
# 32 float64 on AVX-512; half that without) the tiled kernel runs, so the tile edges of
# both dtypes and multi-tile batches with a partial last tile are drawn on purpose.
batches = st.one_of(st.sampled_from([1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 129,
                                     300]), st.integers(1, 300))
# The ends (no stored value at all, every entry stored) and anything in between.
densities = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0), st.floats(0.1, 0.9))
# Mostly small, sometimes more rows than the kernels make chunks (4 per thread). Zero
# rows or columns are drawn separately (see sparse_patterns), a case in five or so.
sparse_dims = st.one_of(st.integers(1, 6), st.integers(7, 40))
SCIPY_FORMATS = ("csr", "csc", "coo")


def _values(rng, n, dtype, zeros):
    """``n`` values of ``dtype`` in [-2, 2], a fraction ``zeros`` of them exactly 0
    (explicit zeros: stored, so they are weights like any other)."""
    values = rng.uniform(-2.0, 2.0, n)
    values[rng.random(n) < zeros] = 0.0
    return values.astype(dtype)


@st.composite
def sparse_patterns(draw, dims=sparse_dims, zero_dims=True):
    """(pattern bool (n_rows, n_cols), rng): a random pattern at a drawn density, with
    a few rows and columns forced empty, and the seeded generator that made it. With
    ``zero_dims``, about one case in five has no rows or no columns."""
    n_rows, n_cols = draw(dims), draw(dims)
    if zero_dims:
        n_rows, n_cols = draw(st.sampled_from([(0, n_cols), (n_rows, 0)] + [(n_rows, n_cols)] * 8))
    density = draw(densities)
    rng = np.random.default_rng(draw(seeds))
    pattern = rng.random((n_rows, n_cols)) < density
    if n_rows:
        pattern[sorted(draw(st.sets(st.integers(0, n_rows - 1), max_size=3)))] = False
    if n_cols:
        pattern[:, sorted(draw(st.sets(st.integers(0, n_cols - 1), max_size=3)))] = False
    return pattern, rng


@st.composite
def csr_cases(draw, zero_dims=True):
    """(A, dtype): A a canonical ``scipy.sparse.csr_array`` (n_rows, n_cols) of
    float32 or float64 with int32 indices; 0 to 40 rows and columns, zero nonzeros, empty
    rows and columns, full density and explicit zeros all occur."""
    import scipy.sparse as sp

    dtype = draw(dtypes)
    pattern, rng = draw(sparse_patterns(zero_dims=zero_dims))
    rows, cols = np.nonzero(pattern)  # row-major: sorted within each row
    indptr = np.zeros(pattern.shape[0] + 1, np.int32)
    np.cumsum(pattern.sum(axis=1), out=indptr[1:])
    data = _values(rng, rows.size, dtype, draw(st.sampled_from([0.0, 0.0, 0.3])))
    A = sp.csr_array((data, cols.astype(np.int32), indptr), shape=pattern.shape)
    return A, np.dtype(dtype)


def csr_arrays(A):
    """(indptr, indices, data) of a CSR array as the kernels take them: int32 and
    C-contiguous."""
    return (np.ascontiguousarray(A.indptr, np.int32), np.ascontiguousarray(A.indices, np.int32),
            np.ascontiguousarray(A.data))


@st.composite
def scipy_weights(draw, max_dim=9, dtypes=dtypes):
    """(W, dense, nnz): W a scipy.sparse weight (in, out) as a user may hand it over, in
    any of csr/csc/coo, as a sparse array or an spmatrix; ``dense`` its float64 value
    (in, out); ``nnz`` the number of distinct stored positions (explicit zeros included).

    CSR and CSC may come with unsorted indices; COO with unsorted and duplicate entries
    (each duplicate a pair of exact halves, so their sum is exactly the weight).
    """
    import scipy.sparse as sp

    dtype = draw(dtypes)
    pattern, rng = draw(sparse_patterns(dims=st.integers(1, max_dim), zero_dims=False))
    rows, cols = np.nonzero(pattern)
    data = _values(rng, rows.size, dtype, draw(st.sampled_from([0.0, 0.3])))
    dense = np.zeros(pattern.shape)
    dense[rows, cols] = data
    fmt = draw(st.sampled_from(SCIPY_FORMATS))
    container = draw(st.sampled_from(["array", "matrix"]))
    messy = draw(st.booleans())
    if fmt == "coo":
        if messy:
            dup = rng.random(rows.size) < 0.5
            rows, cols = np.concatenate([rows, rows[dup]]), np.concatenate([cols, cols[dup]])
            data = np.concatenate([data, data[dup]])
            data[np.flatnonzero(dup)] *= 0.5
            data[rows.size - dup.sum():] *= 0.5
            order = rng.permutation(rows.size)
            rows, cols, data = rows[order], cols[order], data[order]
        W = getattr(sp, f"coo_{container}")((data, (rows, cols)), shape=pattern.shape)
    else:
        canonical = getattr(sp, f"{fmt}_array")(
            (data, (rows, cols)), shape=pattern.shape).astype(dtype)
        indptr, indices, values = canonical.indptr, canonical.indices.copy(), canonical.data.copy()
        if messy:  # reverse every row (CSR) or column (CSC) of indices
            for start, end in zip(indptr[:-1], indptr[1:]):
                indices[start:end] = indices[start:end][::-1].copy()
                values[start:end] = values[start:end][::-1].copy()
        W = getattr(sp, f"{fmt}_{container}")((values, indices, indptr), shape=pattern.shape)
    assert W.dtype == dtype
    return W, dense, int(pattern.sum())
