"""Kernels that move values from one layout into another, unchanged.

- ``take_fm``: the rows ``idx`` of a sample-major array (n, features) into a
  feature-major batch (features, len(idx)), training's mini-batch. Taking the batch's
  columns of a feature-major copy instead reads the whole copy for every batch (at 256
  columns picked from 2,048, nearly every cache line holds one of them); the rows are an
  eighth of it.
- ``transpose_fm``: all of a sample-major array into a feature-major one, the copy
  inference makes of its input: 256 x 4096 float32 in 0.98 ms against 3.0 for numpy's
  ``xt[...] = X.T``, 4096 x 1024 in 11.9 against 29.8 (both far from the memory's speed:
  rows a power of two apart share cache sets; blocking samples by 256 changed nothing).
"""

from numba import prange, uint64

from ._jit import CONTRACT, inline, jit

__all__ = ["take_fm", "take_fm_parallel", "transpose_fm", "transpose_fm_parallel"]

# take_fm copies 64 features of every sample, then the next 64: the 64 rows of ``out``
# being written (a cache line each per 16 float32 samples) stay in L1 while the samples'
# 256-byte row segments stream past. 2,048 x 2,048 float32, 256 samples: 0.58 ms, against
# 0.64 with 16 features and 1.1 with all 2,048 at a time, and 1.7 for numpy's
# ``X[idx].T`` copied. Parallel items are 256 features.
_TAKE_COLS = 64
_TAKE_FEATURES = 256


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
    n_blocks = (n_features + _TAKE_FEATURES - 1) // _TAKE_FEATURES
    for c in prange(n_blocks):
        i0 = c * _TAKE_FEATURES
        _take_block(i0, min(i0 + _TAKE_FEATURES, n_features), x, idx, out)


@inline()
def _transpose_block(i0, i1, x, out):
    """Features i0..i1 of out[i, k] = x[k, i], 64 features at a time as in take_fm."""
    for c0 in range(i0, i1, _TAKE_COLS):
        c1 = min(c0 + _TAKE_COLS, i1)
        for k in range(x.shape[0]):
            row = x[k]
            for i in range(c0, c1):
                out[i, k] = row[i]


@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT)
def transpose_fm(x, out):
    """out (features, n) = x.T for sample-major x (n, features)."""
    _transpose_block(0, x.shape[1], x, out)


@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True)
def transpose_fm_parallel(x, out):
    """transpose_fm in parallel over blocks of features."""
    n_features = x.shape[1]
    n_blocks = (n_features + _TAKE_FEATURES - 1) // _TAKE_FEATURES
    for c in prange(n_blocks):
        i0 = c * _TAKE_FEATURES
        _transpose_block(i0, min(i0 + _TAKE_FEATURES, n_features), x, out)
