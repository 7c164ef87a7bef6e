"""Format version 2: a model as compact bytes, its mask close to its entropy and its
values at b bits. This module turns arrays into bytes and back (``io`` writes and reads
the files); every byte read is checked before anything is built from it.

Layout (integers little-endian; ``varint``: LEB128, at most 9 bytes)::

    magic       4 bytes   b"\\x93SPP"
    version     u8        2
    crc32       u32       of every byte after this field
    dtype       u8        4 (float32) or 8 (float64)
    sizes       varint n (>= 2), then n varints: the layer widths
    activation  varint length + ASCII name
    loss        varint length + ASCII name
    classes     varint length + ASCII NumPy type ("" for none: "<i8", "<f8", "|b1",
                "<U5", ...), then varint count and count * itemsize bytes
    per layer, inputs n_in = sizes[i], outputs n_out = sizes[i + 1]:
      bits      u8        0: float values; 2..8: codes of that many bits
      nnz       varint    kept weights
      offset    f32       } quantized layers only: value = offset + step * code
      step      f32       }
      mask      u8 complement (0 or 1), varint Golomb parameter m, varint bits of the
                unary run, varint length, bytes: ``coding.encode_positions`` of the kept
                positions j * n_in + i (output j, input i: CSR of W.T, row by row)
      values    u8 method (0 raw, 1 zlib, 2 lzma), varint count (nnz + n_out), varint
                length, bytes: the nnz kept values, then the n_out biases. Quantized:
                their codes, "raw" packed at b bits (``coding.pack_codes``), else
                compressed one per byte. Float: the values in the file's dtype,
                little-endian, raw or compressed.

The writer stores each value stream the smallest of the three ways. Nothing may follow
the last layer. Counts are sent twice where a reader could otherwise not tell a count
that disagrees from padding (the unary run's length, the values' count): whatever
disagrees is refused. The checksum catches corruption that keeps the counts consistent.
"""

import re
import struct
import zlib

import numpy as np

from ._validation import MAX_INDEX, check_code_points, check_csr, to_finite_float
from .coding import (
    STREAM_METHODS, Reader, compress, decode_positions, decompress,
    encode_positions, pack_codes, unpack_codes, varint, within_inflation,
)

__all__ = ["MAGIC", "VERSION", "decode", "encode"]

MAGIC = b"\x93SPP"
VERSION = 2
_DTYPE_CODES = {4: np.dtype("<f4"), 8: np.dtype("<f8")}
# NumPy types a classes array may have: bool, ints, floats, unicode strings.
_CLASS_TYPE = re.compile(r"^(\|b1|[<|][iu][1248]|<f[48]|<U[1-9][0-9]{0,3})$")


# -- writing -------------------------------------------------------------------------------

def _smallest(candidates):
    """(method index, bytes) of the shortest of ``candidates``, (bytes, decoded size)
    per method, among those a reader accepts (within MAX_INFLATION)."""
    allowed = [(len(data), i, data) for i, (data, raw_size) in enumerate(candidates)
               if within_inflation(raw_size, len(data))]
    _, i, data = min(allowed)
    return i, data


def _value_stream(layer, dtype):
    """u8 method, varint length, bytes of a layer's values (see the module docstring)."""
    if "codes" in layer:
        codes = np.concatenate([layer["codes"], layer["bias_codes"]]).astype(np.uint8)
        raw, packed = codes.tobytes(), pack_codes(codes, layer["bits"])
    else:
        values = np.concatenate([layer["data"], layer["bias"]])
        raw = packed = values.astype(dtype.newbyteorder("<")).tobytes()
    candidates = [(packed, len(packed))]
    candidates += [(compress(raw, method), len(raw)) for method in STREAM_METHODS[1:]]
    method, data = _smallest(candidates)
    count = int(layer["indptr"][-1]) + layer["indptr"].size - 1
    return bytes([method]) + varint(int(count)) + varint(len(data)) + data


def _classes(classes):
    if classes is None:
        return varint(0)
    classes = np.asarray(classes)
    classes = np.ascontiguousarray(classes, classes.dtype.newbyteorder("<"))
    # What a reader refuses is not written: the save fails instead of the load.
    if not _CLASS_TYPE.match(classes.dtype.str):
        raise ValueError(f"classes of type {classes.dtype} cannot be saved in format "
                         f"version {VERSION} (bool, integers, float32/float64 or strings "
                         "of at most 9999 characters); save with version=1")
    name = classes.dtype.str.encode("ascii")
    return varint(len(name)) + name + varint(classes.size) + classes.tobytes()


def encode(dtype, sizes, layers, head):
    """The bytes of a model: ``dtype`` float32/float64, ``sizes`` the widths, ``layers``
    per layer a dict of CSR-of-``W.T`` arrays ``indptr``, ``indices`` and either float
    ``data`` and ``bias`` or uint8 ``codes`` and ``bias_codes`` with ``bits``, ``offset``
    and ``step``; ``head`` {"activation", "loss", "classes"}."""
    dtype = np.dtype(dtype)
    body = bytearray([dtype.itemsize])
    body += varint(len(sizes)) + b"".join(varint(int(s)) for s in sizes)
    for key in ("activation", "loss"):
        name = head[key].encode("ascii")
        body += varint(len(name)) + name
    body += _classes(head.get("classes"))
    for (n_in, n_out), layer in zip(zip(sizes[:-1], sizes[1:]), layers):
        indptr, indices = layer["indptr"], layer["indices"]
        nnz = int(indptr[-1])
        rows = np.repeat(np.arange(n_out, dtype=np.int64), np.diff(indptr))
        positions = rows * n_in + indices.astype(np.int64)
        body += bytes([layer.get("bits", 0)]) + varint(nnz)
        if "codes" in layer:
            body += struct.pack("<ff", layer["offset"], layer["step"])
        complement, m, unary, mask = encode_positions(positions, n_in * n_out)
        body += bytes([complement]) + varint(m) + varint(unary) + varint(len(mask)) + mask
        body += _value_stream(layer, dtype)
    return MAGIC + bytes([VERSION]) + struct.pack("<I", zlib.crc32(body)) + bytes(body)


# -- reading -------------------------------------------------------------------------------

def _read_classes(reader):
    name = reader.string("classes type", limit=8)
    if not name:
        return None
    if not _CLASS_TYPE.match(name):
        raise ValueError(f"classes: type {name!r} is not a number or string type")
    dtype = np.dtype(name)
    count = reader.varint("classes count", MAX_INDEX)
    raw = reader.take(count * dtype.itemsize, "classes")
    classes = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
    return check_code_points(classes, "classes")


def _read_stream(reader, what, count):
    """(method name, bytes) of a value stream of ``count`` values."""
    method = reader.u8(f"{what} method")
    if method >= len(STREAM_METHODS):
        raise ValueError(f"{what}: method {method} is not one of 0 (raw), 1 (zlib), 2 (lzma)")
    claimed = reader.varint(f"{what} count", 2 * MAX_INDEX)
    if claimed != count:
        raise ValueError(f"{what}: {claimed} values, expected {count} (nnz + outputs)")
    return STREAM_METHODS[method], reader.take(reader.varint(f"{what} length", MAX_INDEX),
                                               what)


def _read_layer(reader, n_in, n_out, itemsize, name):
    """A layer's fields, its streams still coded, every count checked against the bytes
    that should hold it before anything is decoded (so that a short hostile file cannot
    make the reader allocate much more than its own size)."""
    bits = reader.u8(f"{name}: bits")
    if bits != 0 and not 2 <= bits <= 8:
        raise ValueError(f"{name}: bits must be 0 (float values) or 2..8, got {bits}")
    n = n_in * n_out
    nnz = reader.varint(f"{name}: nnz", min(n, MAX_INDEX))
    layer = {"bits": bits, "nnz": nnz}
    if bits:
        layer["offset"] = reader.f32(f"{name}: offset")
        layer["step"] = reader.f32(f"{name}: step")
    complement = reader.u8(f"{name}: mask complement flag")
    if complement > 1:
        raise ValueError(f"{name}: mask complement flag must be 0 or 1, got {complement}")
    m = reader.varint(f"{name}: mask Golomb parameter", max(n, 1))
    unary = reader.varint(f"{name}: mask unary run", 8 * MAX_INDEX)
    mask = reader.take(reader.varint(f"{name}: mask length", MAX_INDEX), f"{name}: mask")
    layer["mask"] = (bool(complement), m, unary, mask)
    count = nnz + n_out
    method, stored = _read_stream(reader, f"{name}: values", count)
    if bits and method == "raw":
        size = -(-count * bits // 8)  # codes packed at b bits
    else:
        size = count * (itemsize if not bits else 1)
    if method == "raw" and len(stored) != size:
        raise ValueError(f"{name}: values: {len(stored)} bytes for {count} values, expected "
                         f"{size}")
    if method != "raw" and not within_inflation(size, len(stored)):
        raise ValueError(f"{name}: values: {len(stored)} {method} bytes cannot hold {count} "
                         f"values")
    layer["values"] = (method, stored, size)
    return layer


def _decode_layer(layer, n_in, n_out, dtype, name):
    """The arrays of one layer, checked as ``io`` checks a version-1 file's."""
    nnz, bits = layer["nnz"], layer["bits"]
    complement, m, unary, mask = layer["mask"]
    try:
        positions = decode_positions(complement, m, unary, mask, n_in * n_out, nnz)
    except ValueError as exc:
        raise ValueError(f"{name}: mask: {exc}") from None
    rows, indices = np.divmod(positions, n_in)
    indptr = np.zeros(n_out + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_out), out=indptr[1:])
    method, stored, size = layer["values"]
    try:
        raw = decompress(stored, method, size)
        if bits:
            count = nnz + n_out
            if method == "raw":
                codes = unpack_codes(raw, count, bits)
            else:
                codes = np.frombuffer(raw, np.uint8)
                if count and int(codes.max()) >= 1 << bits:
                    raise ValueError(f"a code above {(1 << bits) - 1}, the largest of "
                                     f"{bits} bits")
            values = codes
        else:
            values = np.frombuffer(raw, _DTYPE_CODES[dtype.itemsize]).astype(dtype)
    except ValueError as exc:
        raise ValueError(f"{name}: values: {exc}") from None
    placeholder = np.zeros(nnz, dtype)
    indptr, indices, _ = check_csr((n_out, n_in), indptr, indices, placeholder, dtype, name)
    if not bits:
        data = to_finite_float(values[:nnz], dtype, f"{name}: data", order="C")
        bias = to_finite_float(values[nnz:], dtype, f"{name} bias", order="C")
        return {"indptr": indptr, "indices": indices, "data": data, "bias": bias}
    offset, step = layer["offset"], layer["step"]
    if not (np.isfinite(offset) and np.isfinite(step)) or step < 0:
        raise ValueError(f"{name}: the quantizer's offset {offset} and step {step} must be "
                         f"finite, the step >= 0")
    return {"indptr": indptr, "indices": indices, "codes": np.ascontiguousarray(values[:nnz]),
            "bias_codes": np.ascontiguousarray(values[nnz:]), "bits": bits,
            "offset": offset, "step": step}


def decode(raw, name, activations, losses):
    """(dtype, sizes, layers, head) from the bytes of a version-2 file; ``name`` starts
    every error message; ``activations`` and ``losses``: the names a model may have.

    Layers are dicts as :func:`encode` takes them (indptr and indices int32). The
    checksum is verified first, then every count is checked against the bytes that
    should hold it before anything is decoded, then every array as a version-1 file's.
    """
    if len(raw) < 9 or raw[:4] != MAGIC:
        raise ValueError(f"{name}: not a sparseprune compact file")
    if raw[4] != VERSION:
        raise ValueError(f"{name}: format version {raw[4]}, this reader knows version "
                         f"{VERSION} of compact files")
    if struct.unpack("<I", raw[5:9])[0] != zlib.crc32(raw[9:]):
        raise ValueError(f"{name}: checksum mismatch: the file is corrupt or truncated")
    reader = Reader(raw[9:])
    try:
        itemsize = reader.u8("dtype")
        if itemsize not in _DTYPE_CODES:
            raise ValueError(f"dtype must be 4 (float32) or 8 (float64), got {itemsize}")
        dtype = np.dtype(f"float{8 * itemsize}")
        n_sizes = reader.varint("number of sizes", reader.remaining())
        if n_sizes < 2:
            raise ValueError(f"sizes must be at least two integers, got {n_sizes}")
        sizes = [reader.varint(f"sizes[{i}]", MAX_INDEX) for i in range(n_sizes)]
        if min(sizes) < 1:
            raise ValueError(f"layer sizes {sizes} are out of range")
        head = {"activation": reader.string("activation"), "loss": reader.string("loss")}
        for key, known in (("activation", activations), ("loss", losses)):
            if head[key] not in known:
                raise ValueError(f"{key} must be one of {sorted(known)}, got {head[key]!r}")
        head["classes"] = _read_classes(reader)
        shapes = list(zip(sizes[:-1], sizes[1:]))
        coded = [_read_layer(reader, n_in, n_out, itemsize, f"layer {i}")
                 for i, (n_in, n_out) in enumerate(shapes)]
        if reader.remaining():
            raise ValueError(f"{reader.remaining()} bytes after the last layer")
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    layers = [_decode_layer(layer, n_in, n_out, dtype, f"{name}: layer {i}")
              for i, (layer, (n_in, n_out)) in enumerate(zip(coded, shapes))]
    return dtype, sizes, layers, head
