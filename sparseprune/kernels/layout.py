"""Kernels that move values from one layout into another, unchanged.

- ``take_fm``: the rows ``idx`` of a sample-major array (n, features) into a
  feature-major batch (features, len(idx)), training's mini-batch. Taking the batch's
  columns of a feature-major copy instead reads the whole copy for every batch (at 256
  columns picked from 2,048, nearly every cache line holds one of them); the rows are an
  eighth of it.
- ``transpose_fm``: all of a sample-major array into a feature-major one, the copy
  inference makes of its input.
"""

from numba import prange, types, uint64
from numba.extending import overload

from ._jit import CONTRACT, inline, jit

__all__ = ["take_fm", "take_fm_parallel", "transpose_fm", "transpose_fm_parallel"]

# Both write eight samples of one output row at a time, feature after feature, reading
# those eight rows of x across. Writing one sample's column instead (a value in each of
# many output rows) keeps a partly written line in every row, and when the rows are a
# power of two apart (a batch of 1,024 samples, a chunk of 4,096) those lines share a
# cache set and are evicted and fetched again value by value. Eight rows of x are eight
# lines of one set at most (8 ways), kept while 16 features are read out of each.
# Float32, 2 cores, against the column order: transpose 4096 x 1024, 2.2 against 9.5
# ms; 16384 x 1024, 12.4 against 43.2; 2000 x 1000, 1.5 against 2.2; 256 x 4096, 0.55
# against 0.68 (numpy's ``xt[...] = X.T``: 29.8 ms at 4096 x 1024); take 1,024 of 8,192
# rows of 2,048 features, 1.6 against 4.8 ms; 256 of them, 0.29 against 0.33; 64 or
# fewer, the same. 16 and 32 samples at a time were slower (3.4 and 6.4 ms at 4096 x
# 1024).
_SAMPLES = 8
# Features per parallel item.
_FEATURES = 256


def _sample(idx, k):
    """The row of x that output column k takes: ``idx[k]``, or k itself (a transpose)."""
    return k if idx is None else idx[k]


@overload(_sample, inline="always")
def _sample_typed(idx, k):
    if isinstance(idx, types.NoneType):
        return lambda idx, k: k
    return lambda idx, k: idx[k]


@inline()
def _block(i0, i1, x, idx, out):
    """Features i0..i1 of out[i, k] = x[_sample(idx, k), i]."""
    n = out.shape[1]
    for k0 in range(0, n, _SAMPLES):
        k1 = min(k0 + _SAMPLES, n)
        for i in range(i0, i1):
            dst = out[i]
            for k in range(k0, k1):
                dst[k] = x[uint64(_sample(idx, k)), i]


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


@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT)
def transpose_fm(x, out):
    """out (features, n) = x.T for sample-major x (n, features)."""
    _block(0, x.shape[1], x, None, out)


@jit("void({T}[:, ::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True)
def transpose_fm_parallel(x, out):
    """transpose_fm in parallel over blocks of features."""
    n_features = x.shape[1]
    for c in prange((n_features + _FEATURES - 1) // _FEATURES):
        i0 = c * _FEATURES
        _block(i0, min(i0 + _FEATURES, n_features), x, None, out)
