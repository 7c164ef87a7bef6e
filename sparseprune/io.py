"""Files: a sparse model's arrays, written atomically, read without pickle and fully
validated. This module works on arrays only; the model builds itself from them
(``SparseMLP.save``, ``SparseMLP.load``). Two formats, told apart by their first bytes:

- version 1, an ``.npz`` of float CSR arrays (below);
- version 2, compact bytes (``compact.py``): the mask Golomb coded, close to its entropy,
  and the values as b-bit codes (quantized layers) or floats, each stream stored the
  smallest way; written for quantized models, and for float ones on request.

Format version 1. Keys:

- ``format`` the string "sparseprune", ``version`` int64 (1,), ``dtype`` the string
  "float32" or "float64", ``sizes`` int64 (n_layers + 1,) the layer widths;
- per layer ``i``: ``layer{i}_indptr`` (out + 1,), ``layer{i}_indices`` (nnz,) and
  ``layer{i}_data`` (nnz,), the CSC arrays of the weight (in, out) (the CSR arrays of its
  transpose), and ``layer{i}_bias`` (out,). Index arrays are stored in the smallest
  unsigned integer type that holds them;
- optionally (files of 0.1 have none: ReLU, softmax, no labels): ``activation`` and
  ``loss``, strings naming the model's activation and head, and ``classes`` (k,), its
  class labels (numbers or strings).

Everything read is validated before any kernel sees it; a corrupt or hostile file gets a
``ValueError`` that says what is wrong.
"""

import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import compact
from ._validation import FLOAT_DTYPES, check_code_points, check_csr, check_matrix
from .coding import within_inflation
from .activations import ACTIVATIONS
from .heads import HEADS

__all__ = ["FORMAT", "VERSION", "VERSIONS", "read_arrays", "write_arrays"]

FORMAT = "sparseprune"
#: The .npz format's version (in its ``version`` key).
VERSION = 1
#: Every version this module writes and reads.
VERSIONS = (1, compact.VERSION)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _smallest_uint(a):
    """``a`` (non-negative integers) in the smallest unsigned dtype that holds its max."""
    top = int(a.max()) if a.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if top <= np.iinfo(dtype).max:
            return a.astype(dtype)


def write_arrays(path, dtype, sizes, layers, head=None, version=None):
    """Write a model's arrays to ``path`` atomically; returns ``path``.

    dtype: float32 or float64; sizes: the layer widths; layers: per layer a dict of the
    CSR arrays of ``W.T``, ``indptr`` and ``indices``, and either float ``data`` and
    ``bias`` or, for a quantized layer, uint8 ``codes`` and ``bias_codes`` with
    ``bits``, ``offset`` and ``step``; head: optionally {"activation": name, "loss":
    name, "classes": None or a 1-D array}. ``version`` 1 writes the .npz (float layers
    only), 2 the compact format; by default 2 if any layer holds codes, else 1. The file
    appears complete or not at all: it is written
    to a temporary file in the same directory and renamed over ``path``, so a failed save
    leaves an existing file as it was.
    """
    quantized = any("codes" in layer for layer in layers)
    if version is None:
        version = compact.VERSION if quantized else VERSION
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if version == compact.VERSION:
        head = head or {"activation": "relu", "loss": "softmax", "classes": None}
        data = compact.encode(dtype, sizes, layers, head)
        return _atomic_write(path, lambda f: f.write(data))
    if quantized:
        raise ValueError("version 1 files hold float values; a quantized model is saved "
                         "as version 2")
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array([VERSION], np.int64),
        "dtype": np.array(str(np.dtype(dtype))),
        "sizes": np.array(sizes, np.int64),
    }
    for i, layer in enumerate(layers):
        arrays[f"layer{i}_indptr"] = _smallest_uint(layer["indptr"])
        arrays[f"layer{i}_indices"] = _smallest_uint(layer["indices"])
        arrays[f"layer{i}_data"] = layer["data"]
        arrays[f"layer{i}_bias"] = layer["bias"]
    if head is not None:
        arrays["activation"] = np.array(head["activation"])
        arrays["loss"] = np.array(head["loss"])
        if head.get("classes") is not None:
            arrays["classes"] = np.asarray(head["classes"])
    return _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _atomic_write(path, write):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over
    ``path``; returns ``path`` (a str)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sparseprune-", suffix=".tmp", dir=directory)
    try:
        # mkstemp makes the file private (0600); a saved model gets the usual mode.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def _expected_keys(n_layers):
    keys = {"format", "version", "dtype", "sizes"}
    for i in range(n_layers):
        keys |= {f"layer{i}_{k}" for k in ("indptr", "indices", "data", "bias")}
    return keys


OPTIONAL_KEYS = {"activation", "loss", "classes"}


def _read(npz, key, path):
    """Array ``key`` of the archive, after checking that its ``.npy`` header promises
    no more data than the member holds (a forged header would make numpy allocate
    whatever it claims) and no Python objects."""
    try:
        info = npz.zip.getinfo(f"{key}.npy")
        with npz.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
        if dtype.hasobject:
            raise ValueError("it holds Python objects")
        if math.prod(shape) * dtype.itemsize > info.file_size:
            raise ValueError(f"its header claims shape {shape} of {dtype}, more than it holds")
        value = npz[key]
    except (KeyError, ValueError, OSError, EOFError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: array {key!r} cannot be read: {_brief(exc)}") from exc
    return value


def _brief(exc, limit=300):
    """An exception's message cut to ``limit`` characters: zipfile quotes whole corrupt
    headers (kilobytes of escaped bytes), which no one reads."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "... (cut)"


def _listing(keys, limit=8):
    keys = sorted(keys)
    return repr(keys[:limit])[:-1] + (f", ... ({len(keys)} in all)]" if len(keys) > limit else "]")


def _read_scalar_str(npz, key, path):
    value = _read(npz, key, path)
    if value.shape != () or value.dtype.kind != "U":
        raise ValueError(f"{path}: {key!r} must be a string, got {value.dtype} {value.shape}")
    return str(value)


def _read_header(npz, path):
    fmt = _read_scalar_str(npz, "format", path)
    if fmt != FORMAT:
        raise ValueError(f"{path}: not a sparseprune model (format {fmt!r})")
    version = _read(npz, "version", path)
    if version.shape != (1,) or version.dtype.kind not in "iu":
        raise ValueError(f"{path}: 'version' must be one integer")
    if int(version[0]) != VERSION:
        raise ValueError(f"{path}: format version {int(version[0])} in an .npz; this "
                         f"sparseprune reads version {VERSION} .npz files and version "
                         f"{compact.VERSION} compact files")
    dtype = _read_scalar_str(npz, "dtype", path)
    if dtype not in {str(d) for d in FLOAT_DTYPES}:
        raise ValueError(f"{path}: dtype must be float32 or float64, got {dtype!r}")
    sizes = _read(npz, "sizes", path)
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or sizes.size < 2:
        raise ValueError(f"{path}: 'sizes' must be at least two integers, got {sizes!r}")
    if (sizes < 1).any() or (sizes > np.iinfo(np.int32).max).any():
        raise ValueError(f"{path}: layer sizes {sizes.tolist()} are out of range")
    return np.dtype(dtype), [int(s) for s in sizes]


def _read_head(npz, keys, path):
    """{"activation", "loss", "classes"} of the file; 0.1's defaults where absent."""
    head = {"activation": "relu", "loss": "softmax", "classes": None}
    for key, known in (("activation", ACTIVATIONS), ("loss", HEADS)):
        if key in keys:
            value = _read_scalar_str(npz, key, path)
            if value not in known:
                raise ValueError(f"{path}: {key} must be one of {sorted(known)}, got {value!r}")
            head[key] = value
    if "classes" in keys:
        classes = _read(npz, "classes", path)
        if classes.ndim != 1 or classes.dtype.kind not in "biufU":
            raise ValueError(f"{path}: 'classes' must be a 1-D array of numbers or strings, "
                             f"got {classes.dtype} of shape {classes.shape}")
        head["classes"] = check_code_points(classes, f"{path}: 'classes'")
    return head


def read_arrays(path):
    """Read and fully validate a model file of either version.

    Returns (dtype, sizes, layers, head) with layers a list of dicts as
    :func:`write_arrays` takes them (indptr and indices int32), every array checked:
    shapes consistent across layers, indices in range, indptr monotone, values finite,
    codes within their bits; and head the model's {"activation", "loss", "classes"}
    (names checked; the model checks the rest).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(len(compact.MAGIC))
            if raw == compact.MAGIC:
                raw += f.read()
    except OSError as exc:
        raise ValueError(f"{path}: not a readable .npz file: {_brief(exc)}") from exc
    if raw[: len(compact.MAGIC)] != compact.MAGIC:
        return _read_npz(path)
    dtype, sizes, layers, head = compact.decode(raw, str(path), ACTIVATIONS, HEADS)
    try:
        HEADS[head["loss"]].check_outputs(sizes[-1])
    except ValueError as exc:
        raise ValueError(f"{path}: layer sizes {sizes} do not fit the {head['loss']} "
                         f"head: {exc}") from None
    return dtype, sizes, layers, head


def _read_npz(path):
    """(dtype, sizes, layers, head) of a version-1 file, every array validated."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable .npz file: {_brief(exc)}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        if hasattr(npz, "close"):
            npz.close()
        raise ValueError(f"{path}: not an .npz archive")
    with npz:
        for info in npz.zip.infolist():
            # A member claiming more than deflate can give is a forgery (a zip bomb),
            # refused before it is inflated.
            if not within_inflation(info.file_size, info.compress_size):
                raise ValueError(f"{path}: member {info.filename!r} claims an impossible size")
        keys = set(npz.files)
        missing = _expected_keys(0) - keys
        if missing:
            raise ValueError(f"{path}: not a sparseprune model: arrays missing {_listing(missing)}")
        dtype, sizes = _read_header(npz, path)
        expected = _expected_keys(len(sizes) - 1)
        if not expected <= keys <= expected | OPTIONAL_KEYS:
            raise ValueError(f"{path}: arrays missing {_listing(expected - keys)}, "
                             f"unexpected {_listing(keys - expected - OPTIONAL_KEYS)}")
        head = _read_head(npz, keys, path)
        try:
            HEADS[head["loss"]].check_outputs(sizes[-1])
        except ValueError as exc:
            raise ValueError(f"{path}: layer sizes {sizes} do not fit the {head['loss']} "
                             f"head: {exc}") from None
        layers = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            name = f"{path}: layer {i}"
            indptr, indices, data = (
                _read(npz, f"layer{i}_{k}", path) for k in ("indptr", "indices", "data")
            )
            if data.dtype != dtype:
                raise ValueError(f"{name}: data must be {dtype}, got {data.dtype}")
            indptr, indices, data = check_csr((n_out, n_in), indptr, indices, data, dtype, name)
            bias = _read(npz, f"layer{i}_bias", path)
            if bias.dtype != dtype:
                raise ValueError(f"{name} bias must be {dtype}, got {bias.dtype}")
            bias = check_matrix(bias, (n_out,), dtype, f"{name} bias")
            layers.append({"indptr": indptr, "indices": indices, "data": data, "bias": bias})
    return dtype, sizes, layers, head
