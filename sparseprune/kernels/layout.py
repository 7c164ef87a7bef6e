"""Kernels that move values from one layout into another, unchanged.

- ``take_fm``: the rows ``idx`` of a sample-major array (n, features) into a
  feature-major batch (features, len(idx)), training's mini-batch. Taking the batch's
  columns of a feature-major copy instead reads the whole copy for every batch (at 256
  columns picked from 2,048, nearly every cache line holds one of them); the rows are an
  eighth of it.
- ``transpose_fm``: all of a sample-major array into a feature-major one, the copy
  inference makes of its input.
"""

from numba import prange, uint64

from ._jit import CONTRACT, inline, jit

__all__ = ["take_fm", "take_fm_parallel", "transpose_fm", "transpose_fm_parallel"]

# take_fm copies 64 features of every sample, then the next 64: the 64 rows of ``out``
# being written (a cache line each per 16 float32 samples) stay in L1 while the samples'
# 256-byte row segments stream past. 2,048 x 2,048 float32, 256 samples: 0.58 ms, against
# 0.64 with 16 features and 1.1 with all 2,048 at a time, and 1.7 for numpy's
# ``X[idx].T`` copied. (transpose_fm's order below, eight samples at a time, was faster
# serially there, 0.44 against 0.53 ms, but slower at 64 samples of 4,096 features: 0.18
# against 0.14 ms in parallel.)
_TAKE_COLS = 64
# Features per parallel item of both kernels.
_FEATURES = 256


@inline()
def _take_block(i0, i1, x, idx, out):
    """Features i0..i1 of out[i, k] = x[idx[k], i]."""
    for c0 in range(i0, i1, _TAKE_COLS):
        c1 = min(c0 + _TAKE_COLS, i1)
        for k in range(idx.shape[0]):
            row = x[uint64(idx[k])]
            for i in range(c0, c1):
                out[i, k] = row[i]


@jit("void({T}[:, ::1], int64[::1], {T}[:, ::1])", fastmath=CONTRACT)
def take_fm(x, idx, out):
    """out (features, b) = x[idx].T for sample-major x (n, features) and idx (b,) of
    valid row numbers (not checked)."""
    _take_block(0, x.shape[1], x, idx, out)


@jit("void({T}[:, ::1], int64[::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True)
def take_fm_parallel(x, idx, out):
    """take_fm in parallel over blocks of features."""
    n_features = x.shape[1]
    n_blocks = (n_features + _FEATURES - 1) // _FEATURES
    for c in prange(n_blocks):
        i0 = c * _FEATURES
        _take_block(i0, min(i0 + _FEATURES, n_features), x, idx, out)


# transpose_fm writes eight samples of one output row at a time, feature after feature,
# reading those eight rows of x across. Writing one sample's column instead (a value in
# each of many output rows, as take_fm does) keeps a partly written line in every row,
# and when the rows are a power of two apart those lines share a cache set and are
# evicted and fetched again value by value. Eight rows of x are eight lines of one set
# at most (8 ways), kept while 16 features are read out of each. Float32, 2 cores,
# against the column order: 4096 x 1024, 2.2 against 9.5 ms; 16384 x 1024, 12.4 against
# 43.2; 2000 x 1000, 1.5 against 2.2; 256 x 4096, 0.55 against 0.68 (numpy's
# ``xt[...] = X.T``: 29.8 ms at 4096 x 1024). 16 and 32 samples at a time were slower
# (3.4 and 6.4 ms at 4096 x 1024).
_SAMPLES = 8


@inline()
def _transpose_block(i0, i1, x, out):
    """Features i0..i1 of out[i, k] = x[k, i]."""
    n = x.shape[0]
    for k0 in range(0, n, _SAMPLES):
        k1 = min(k0 + _SAMPLES, n)
        for i in range(i0, i1):
            dst = out[i]
            for k in range(k0, k1):
                dst[k] = x[k, i]


@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT)
def transpose_fm(x, out):
    """out (features, n) = x.T for sample-major x (n, features)."""
    _transpose_block(0, x.shape[1], x, out)


@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True)
def transpose_fm_parallel(x, out):
    """transpose_fm in parallel over blocks of features."""
    n_features = x.shape[1]
    n_blocks = (n_features + _FEATURES - 1) // _FEATURES
    for c in prange(n_blocks):
        i0 = c * _FEATURES
        _transpose_block(i0, min(i0 + _FEATURES, n_features), x, out)
