"""Kernels that move values from one layout into another, unchanged.

- ``take_fm``: the rows ``idx`` of a sample-major array (n, features) into a
  feature-major batch (features, len(idx)), training's mini-batch. Taking the batch's
  columns of a feature-major copy instead reads the whole copy for every batch (at 256
  columns picked from 2,048, nearly every cache line holds one of them); the rows are an
  eighth of it.
- ``transpose_fm``: all of a sample-major array into a feature-major one, the copy
  inference makes of its input.
- ``dense_to_csr_values`` and ``csr_values_to_dense``: a masked layer's kept weights
  between its dense weight (in, out) and their CSR-of-``W.T`` order, what the sparse
  training backend reads at the start of a fit and writes back at its end.
"""

from numba import prange, uint64

from ._jit import CONTRACT, inline, jit
from ._vec import transpose_rows

__all__ = ["csr_values_to_dense", "dense_to_csr_values", "take_fm", "take_fm_parallel",
           "transpose_fm", "transpose_fm_parallel"]

# take_fm writes eight samples of one output row at a time, feature after feature,
# reading those eight rows of x across. Writing one sample's column instead (a value in
# each of many output rows) keeps a partly written line in every row, and when the rows
# are a power of two apart (a batch of 1,024 samples) those lines share a cache set and
# are evicted and fetched again value by value. Eight rows of x are eight lines of one
# set at most (8 ways), kept while 16 features are read out of each. Against the
# column order, float32, 2 cores: 1,024 of 8,192 rows of 2,048 features, 1.6 against
# 4.8 ms; 256 of them, 0.29 against 0.33; 64 or fewer, the same. 16 and 32 samples at a
# time were slower.
_SAMPLES = 8
# Features per parallel item.
_FEATURES = 256


@inline()
def _block(i0, i1, x, idx, out):
    """Features i0..i1 of out[i, k] = x[idx[k], i]."""
    n = out.shape[1]
    for k0 in range(0, n, _SAMPLES):
        k1 = min(k0 + _SAMPLES, n)
        for i in range(i0, i1):
            dst = out[i]
            for k in range(k0, k1):
                dst[k] = x[uint64(idx[k]), i]


@jit("void({T}[:, ::1], int64[::1], {T}[:, ::1])", fastmath=CONTRACT)
def take_fm(x, idx, out):
    """out (features, b) = x[idx].T for sample-major x (n, features) and idx (b,) of
    valid row numbers (not checked)."""
    _block(0, x.shape[1], x, idx, out)


@jit("void({T}[:, ::1], int64[::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True)
def take_fm_parallel(x, idx, out):
    """take_fm in parallel over blocks of features."""
    n_features = x.shape[1]
    for c in prange((n_features + _FEATURES - 1) // _FEATURES):
        i0 = c * _FEATURES
        _block(i0, min(i0 + _FEATURES, n_features), x, idx, out)


# transpose_fm moves square blocks of one vector's lanes (16 x 16 float32), transposed
# in registers (``_vec.transpose_rows``, which tile packing shares): every load and
# store a whole 64-byte vector, each line of x and of out touched once. Against the
# eight-sample order above, float32, 2 cores: 4096 x 1024 in 1.06 against 1.97-2.01
# ms; 16384 x 1024, 7.4-7.8 against 11.9-12.1; 2000 x 1000, 0.21-0.23 against
# 0.86-0.91; 256 x 4096, 0.22 against 0.41; serial 64 x 1024, 16 against 34 us.
@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT)
def transpose_fm(x, out):
    """out (features, n) = x.T for sample-major x (n, features)."""
    transpose_rows(x, 0, x.shape[0], 0, x.shape[1], out)


@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True)
def transpose_fm_parallel(x, out):
    """transpose_fm in parallel over blocks of features."""
    n_features = x.shape[1]
    for c in prange((n_features + _FEATURES - 1) // _FEATURES):
        i0 = c * _FEATURES
        transpose_rows(x, 0, x.shape[0], i0, min(i0 + _FEATURES, n_features), out)


# The kept weights sit in CSR-of-W.T order, output by output: walked that way, W (in,
# out) is read down its columns, one 8 KiB-apart line per value at 2,048 outputs. The
# transposed pattern (CSR of W, input by input) walks W along its rows instead, and a
# permutation puts each value at its place in the CSR-of-W.T array (1.6 MB at 2048^2,
# 90%: in L2 and L3). 2048^2, 90%, float32, 2 cores: 0.9-1.1 ms each way, against 2.5-3.1
# (read) and 4.7-5.1 (write) output by output, and 6.4-7.2 and 10.1-10.7 for NumPy's
# flat fancy index (`benchmarks/tune.py layout`; output by output at bfc68a6).
@jit("void(int32[::1], {I}[::1], int32[::1], int32[::1], {T}[:, ::1], {T}[::1])",
     fastmath=CONTRACT, parallel=True, I=("int32", "uint16"))
def dense_to_csr_values(indptr_t, indices_t, perm, row_bounds_t, weight, data):
    """data[perm[q]] = weight[i, indices_t[q]] for every q of row i of the transposed
    pattern (indptr_t (in + 1,), indices_t (nnz,): CSR of W (in, out)); ``perm`` (nnz,)
    maps it to CSR-of-``W.T`` order; in parallel over ``row_bounds_t``'s chunks."""
    for c in prange(row_bounds_t.shape[0] - 1):
        for i in range(row_bounds_t[c], row_bounds_t[c + 1]):
            row = weight[i]
            for q in range(indptr_t[i], indptr_t[i + 1]):
                data[uint64(perm[q])] = row[uint64(indices_t[q])]


@jit("void(int32[::1], {I}[::1], int32[::1], int32[::1], {T}[::1], {T}[:, ::1])",
     fastmath=CONTRACT, parallel=True, I=("int32", "uint16"))
def csr_values_to_dense(indptr_t, indices_t, perm, row_bounds_t, data, weight):
    """The converse of ``dense_to_csr_values``: weight[i, indices_t[q]] = data[perm[q]];
    the rest of ``weight`` is left as it is."""
    for c in prange(row_bounds_t.shape[0] - 1):
        for i in range(row_bounds_t[c], row_bounds_t[c + 1]):
            row = weight[i]
            for q in range(indptr_t[i], indptr_t[i + 1]):
                row[uint64(indices_t[q])] = data[uint64(perm[q])]
