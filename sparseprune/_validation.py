"""Checks at the public boundary. Everything a kernel receives has passed through here.

Every message names the argument, says what was expected and what was found.
"""

import numbers
import operator

import numpy as np
import scipy.sparse as sp

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype, name="dtype"):
    """Return ``dtype`` as float32 or float64; anything else is a TypeError."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {resolved}")
    return resolved


def check_int(value, name, minimum=None):
    """Return ``value`` as an int (bool refused), at least ``minimum`` if given."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        value = operator.index(value)
    except TypeError as exc:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from exc
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(value, name, low=None, high=None, low_open=False, high_open=False):
    """Return ``value`` as a finite float within the given bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


#: Precisions a quantized layer stores: one uint8 code per value, at least 2 bits.
QUANTIZED_BITS = range(2, 9)


def check_quantized_bits(value, name="bits"):
    """``value`` as an int in 2..8: the bits of a quantized layer's codes."""
    value = check_int(value, name)
    if value not in QUANTIZED_BITS:
        raise ValueError(f"{name} must be an integer from 2 to 8 (codes are stored one per "
                         f"byte), got {value}")
    return value


def check_sparsity(value, name="sparsity"):
    """A sparsity is a fraction in [0, 1): pruning every weight leaves no network."""
    return check_real(value, name, low=0.0, high=1.0, high_open=True)


def check_choice(value, name, choices):
    """Return ``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {expected}, got {value!r}")
    return value


def to_finite_float(a, dtype, name, order="K"):
    """``a`` converted to the float ``dtype`` (a copy only if needed), all finite.

    Values beyond the dtype's range get a ValueError, not numpy's overflow warning and
    an infinity.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.asarray(a).astype(dtype, order=order, copy=False)
    if not np.isfinite(converted).all():
        if np.isfinite(np.asarray(a, dtype=np.float64)).all():
            raise ValueError(f"{name} has values beyond the range of {np.dtype(dtype)}")
        raise ValueError(f"{name} contains NaN or infinity; remove or impute them first")
    return converted


def to_real_array(a, name, kind):
    """``a`` as an ndarray of real numbers (or bools), as given otherwise; a TypeError
    naming ``name`` and ``kind`` (what it must be) for input numpy cannot convert, that is
    not numeric, or complex (casting would drop the imaginary part)."""
    # An ndarray of real numbers or bools, the common case, passes without np.issubdtype,
    # whose cost shows at batch 1 (the same kinds as the test below).
    if type(a) is np.ndarray and a.dtype.kind in "fiub":
        return a
    try:
        a = np.asarray(a)
    except Exception as exc:  # ragged lists and other objects numpy refuses
        raise TypeError(f"{name} must be {kind}, could not convert: {exc}") from exc
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"{name} must be {kind}, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {a.dtype}")
    return a


def check_features(X, n_features, dtype, name="X", finite=True):
    """Return X as a finite 2-D array (n_samples, n_features) of ``dtype``.

    Any numeric input is converted (a copy only when needed); non-contiguous input is
    fine. At least one sample is required. ``finite=False`` leaves the finiteness check
    to a caller whose kernel makes it on the way (it must call again with
    ``finite=True`` for the message when the kernel finds a NaN or infinity).
    """
    X = to_real_array(X, name, "a 2-D numeric array")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {X.shape}")
    if X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features per sample, the model expects {n_features}"
        )
    if not finite:
        if X.dtype == dtype:
            return X
        with np.errstate(over="ignore", invalid="ignore"):
            return X.astype(dtype, copy=False)
    return to_finite_float(X, dtype, name)


def writable(a):
    """``a``, or a copy of it if it is read-only (a memory map opened so, a joblib-loaded
    array): the kernels' signatures take writable arrays."""
    return a if a.flags.writeable else a.copy()


def check_feature_layout(shape, dtype, n_features, name="X"):
    """Check what can be checked of a 2-D input before its values are read (a file's
    header, a dask array's metadata): numeric real ``dtype``, ``shape`` (n_samples,
    n_features) with the model's feature count. ``n_samples`` may be unknown (NaN)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == bool):
        raise TypeError(f"{name} must be a 2-D numeric array, got dtype {dtype}")
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {dtype}")
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(shape)}")
    if shape[1] != n_features:
        raise ValueError(
            f"{name} has {shape[1]} features per sample, the model expects {n_features}"
        )


def check_finite_rows(X, name="X", first_row=0):
    """Raise a ValueError naming the first row of X (n_samples, n_features) that holds
    NaN or an infinity, counted from ``first_row`` (X's place in a larger array; None
    counts within X). For input scored in blocks, where "X contains NaN" would leave
    the user to search millions of rows."""
    if X.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad)) + (first_row or 0)
        raise ValueError(f"{name} row {row} contains NaN or infinity; "
                         "remove or impute it first")


def check_labels(y, n_samples, n_classes, name="y"):
    """Return y as an int64 vector (n_samples,) of class labels in [0, n_classes).

    Integer arrays are taken as they are; float arrays only if every value is integral.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} labels, X has {n_samples} samples")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise ValueError(f"{name} must hold integer class labels, got non-integral values")
    elif not np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"{name} must hold labels in [0, {n_classes}), "
            f"got values in [{y.min():g}, {y.max():g}]"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


def check_matrix(a, shape, dtype, name, finite=True):
    """Return ``a`` as a C-contiguous array of exactly ``shape`` and ``dtype``."""
    a = np.asarray(a)
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")
    if dtype == np.dtype(bool):
        if a.dtype != bool:
            raise TypeError(f"{name} must be a bool array, got dtype {a.dtype}")
    elif not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if finite and dtype != np.dtype(bool):
        return to_finite_float(a, dtype, name, order="C")
    return np.ascontiguousarray(a, dtype=dtype)


def check_code_points(a, name):
    """``a`` itself, if it is not a unicode array or holds only valid code points (at
    most 0x10FFFF, no surrogates): NumPy stores any 32-bit value in a ``<U`` array, and
    Python fails on the invalid ones only when a string is made of them."""
    if a.dtype.kind == "U" and a.size:
        points = np.ascontiguousarray(a).view(np.uint32)
        if ((points > 0x10FFFF) | ((points >= 0xD800) & (points <= 0xDFFF))).any():
            raise ValueError(f"{name} holds characters that are not valid Unicode code "
                             "points")
    return a


INDEX_DTYPE = np.dtype(np.int32)
# Kernels index with int32: every dimension and nnz must fit.
MAX_INDEX = np.iinfo(np.int32).max


def check_csr(shape, indptr, indices, data, dtype, name):
    """Full O(nnz) check of CSR arrays that come from outside (a file, a user).

    shape: (n_rows, n_cols); indptr: (n_rows + 1,) non-decreasing from 0 to nnz;
    indices: (nnz,) in [0, n_cols), strictly increasing within each row (canonical: sorted,
    no duplicates); data: (nnz,) finite. Returns (indptr int32, indices int32, data of
    ``dtype``), C-contiguous, copied only where a conversion was needed.
    """
    n_rows, n_cols = shape
    if not (0 <= n_rows <= MAX_INDEX and 0 <= n_cols <= MAX_INDEX):
        raise ValueError(f"{name}: shape {tuple(shape)} must have dimensions in [0, {MAX_INDEX}]")
    arrays = {"indptr": indptr, "indices": indices, "data": data}
    for key, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.ndim != 1:
            raise ValueError(f"{name}: {key} must be a 1-D array, got {getattr(a, 'shape', a)!r}")
    for key in ("indptr", "indices"):
        a = arrays[key]
        if not np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            raise ValueError(f"{name}: {key} must hold integers, got dtype {a.dtype}")
        if a.size and (a.max() > MAX_INDEX or a.min() < -MAX_INDEX):
            raise ValueError(f"{name}: {key} holds values beyond the int32 index range")
    # Every check below runs on signed int64: differences of unsigned arrays wrap around.
    indptr = indptr.astype(np.int64)
    indices = indices.astype(np.int64)
    if not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"{name}: data must hold floats, got dtype {data.dtype}")
    if indptr.size != n_rows + 1:
        raise ValueError(f"{name}: index pointer size {indptr.size} should be {n_rows + 1}")
    nnz = indices.size
    if data.size != nnz:
        raise ValueError(f"{name}: data has {data.size} entries, indices {nnz}")
    if nnz > MAX_INDEX:
        raise ValueError(f"{name}: {nnz} nonzeros exceed the int32 index range")
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(
            f"{name}: indptr must run from 0 to nnz={nnz}, got {indptr[0]} to {indptr[-1]}"
        )
    steps = np.diff(indptr)
    if (steps < 0).any():
        raise ValueError(f"{name}: indptr must be a non-decreasing sequence")
    if nnz and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(
            f"{name}: column indices must lie in [0, {n_cols}), "
            f"got values in [{indices.min()}, {indices.max()}]"
        )
    # Within a row indices must increase; where a new row starts they may drop.
    rises = np.diff(indices) > 0
    starts = indptr[1:-1]
    rises[starts[(starts > 0) & (starts < nnz)] - 1] = True
    if not rises.all():
        raise ValueError(f"{name}: column indices must be sorted and unique within each row")
    data = to_finite_float(data, dtype, f"{name}: data", order="C")
    return (
        np.ascontiguousarray(indptr, dtype=INDEX_DTYPE),
        np.ascontiguousarray(indices, dtype=INDEX_DTYPE),
        data,
    )


def check_sparse_weight(W, dtype=None, name="W"):
    """A scipy.sparse array or matrix W (in, out) as canonical CSC arrays.

    CSC of W (in, out) is CSR of W.T (out, in): each output's inputs, one row each.
    Duplicates are summed and indices sorted (scipy's canonical form); explicit zeros are
    kept, as live weights. Returns (shape, indptr int32 (out + 1,), indices int32 (nnz,),
    data (nnz,) of ``dtype``: W's own float dtype by default, float32 for other dtypes).
    """
    if not sp.issparse(W):
        raise TypeError(
            f"{name} must be a scipy.sparse array or matrix of shape (in, out), got "
            f"{type(W).__name__}; wrap a dense array in scipy.sparse.csc_array(...)"
        )
    if W.ndim != 2:
        raise ValueError(f"{name} must be 2-D (in, out), got shape {W.shape}")
    if dtype is None:
        dtype = W.dtype if W.dtype in FLOAT_DTYPES else np.float32
    dtype = check_dtype(dtype)
    if not (np.issubdtype(W.dtype, np.floating) or np.issubdtype(W.dtype, np.integer)
            or W.dtype == bool):
        raise TypeError(f"{name} must hold real numbers, got dtype {W.dtype}")
    csc = sp.csc_array(W, copy=True)
    csc.sum_duplicates()
    n_in, n_out = csc.shape
    data = to_finite_float(csc.data, dtype, f"{name}: data")
    # CSC arrays are CSR arrays of the transpose: rows are outputs, columns inputs.
    indptr, indices, data = check_csr((n_out, n_in), csc.indptr, csc.indices, data, dtype, name)
    return (n_in, n_out), indptr, indices, data
