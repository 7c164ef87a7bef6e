"""Numba kernels of the quantized sparse layers: CSR of W^T whose values are b-bit codes.

Conventions are ``csr.py``'s (CSR of W^T, one row per output unit; feature-major
activations; trusted inputs, caller-allocated outputs; arguments: scalars, indptr,
indices, data, other structural arrays, inputs, outputs), with two differences:

* ``data`` is ``codes``, uint8 (nnz,): value ``p`` is ``offset + step * codes[p]``, the
  uniform quantizer ``mdl.quantize`` counts (2 <= b <= 8 bits, one per byte in memory).
  No float weight array exists: the kernels dequantize in registers.
* ``indices`` are ``{I}``, int32 or uint16 (layers of at most 65,536 inputs), so that a
  nonzero costs 3 bytes (uint16 index + code) against float32 CSR's 6 (uint16 index +
  float32 value).

Two ways to dequantize, each where it measured faster (4096^2 at 90%, float32, 2 cores;
``benchmarks/test_bench_sparse.py``, groups ``quantized`` and ``quantized-public``):

* Batch 1 (``qcsr_matvec*``) sums ``sum_i (c_i - z) x_i`` and ``sum_i x_i`` over the
  row, z the code of the value nearest 0, and returns ``step * (sum (c - z) x) + base *
  (sum x) + bias``, ``base = offset + step * z``. With reassociation allowed,
  LLVM vectorizes the row as 16-lane gathers of x (dword indices, straight from the
  uint16 ones) and converts 16 codes at a time: 0.61 ms serial against 0.84 ms for a
  scalar loop reading a table of values (two gathers a lane when vectorized: 0.63 ms
  parallel against 0.38).
* Batches (``qcsr_matmul*``) read the value from ``table`` (2^b entries, the dequantized
  values; 1 KiB in L1 at 8 bits) once per nonzero and run the float kernels' loops: the
  lookup is spread over the batch lanes. Keeping ``sum x`` beside ``sum c x`` instead
  costs a second accumulator row per output: 3.4 against 2.3 ms at batch 32.

``table[c]`` is ``offset + step * c`` rounded once to the dtype: exactly the values
``QuantizedLinear.kept_values()`` returns and ``mdl.description_length`` evaluates,
which the batched kernels multiply by; batch 1 sums the same quantizer another way, so
it agrees with them to rounding.
"""
from numba import int64, prange, uint32

from ._jit import CONTRACT, REDUCE, inline, jit
from ._vec import (
    TILE_BYTES, prefetch, tile_add, tile_fma, tile_lane, tile_load, tile_relu, tile_splat,
    tile_store,
)

__all__ = [
    "INDEX_TYPES", "qcsr_matmul", "qcsr_matmul_parallel", "qcsr_matmul_tiles_parallel",
    "qcsr_matvec", "qcsr_matvec_parallel", "qcsr_tile_bytes",
]

# Index types of the kernels: int32, or uint16 for layers of at most 65,536 inputs.
INDEX_TYPES = ("int32", "uint16")


# --------------------------------------------------------------------------- #
# Batch 1: two sums per row, vectorized over the row's nonzeros.
# --------------------------------------------------------------------------- #
@inline(REDUCE)
def _qmatvec_rows(r0, r1, relu, indptr, indices, codes, step, base, zero, x, bias, out):
    """Rows r0..r1 of out = step * ((C - zero) x) + base * (P x) + bias, P the pattern.

    ``zero`` is the code nearest the value 0 and ``base = offset + step * zero`` its
    value, so both sums stay of the size of the weights: with the plain codes, ``step *
    (C x)`` and ``offset * (P x)`` are large and cancel, and float32 lost up to 6e-5 of
    |X||W| against the table path on weights with outliers.

    The loop is left plain on purpose: LLVM turns it into gathers (see the module
    docstring); unrolling it by hand into scalar accumulators, as ``csr`` does for its
    float rows, stops that. The uint32 cast drops Numba's negative-index wraparound.
    """
    t = out.dtype.type
    for j in range(r0, r1):
        p0 = indptr[j]
        n = indptr[j + 1] - p0
        cj = codes[p0:p0 + n]
        ij = indices[p0:p0 + n]
        a = t(0)
        s = t(0)
        for k in range(n):
            xk = x[uint32(ij[k])]
            a += (t(cj[k]) - zero) * xk
            s += xk
        v = step * a + base * s + bias[j]
        if relu and v < t(0):
            v = t(0)
        out[j] = v


@jit("void(boolean, int32[::1], {I}[::1], uint8[::1], {T}, {T}, {T}, {T}[::1], {T}[::1], "
     "{T}[::1])", fastmath=REDUCE, I=INDEX_TYPES)
def qcsr_matvec(relu, indptr, indices, codes, step, base, zero, x, bias, out):
    """Serial batch-1 forward: x is X^T[:, 0] (n_cols,), out (n_rows,); a code c stands
    for ``base + step * (c - zero)``."""
    _qmatvec_rows(0, indptr.shape[0] - 1, relu, indptr, indices, codes, step, base, zero,
                  x, bias, out)


@jit("void(boolean, int32[::1], {I}[::1], uint8[::1], {T}, {T}, {T}, int32[::1], {T}[::1], "
     "{T}[::1], {T}[::1])", fastmath=REDUCE, parallel=True, I=INDEX_TYPES)
def qcsr_matvec_parallel(relu, indptr, indices, codes, step, base, zero, row_bounds, x,
                         bias, out):
    """Parallel batch-1 forward over nnz-balanced row chunks (``csr.csr_row_chunks``)."""
    for c in prange(row_bounds.shape[0] - 1):
        _qmatvec_rows(row_bounds[c], row_bounds[c + 1], relu, indptr, indices, codes, step,
                      base, zero, x, bias, out)


# --------------------------------------------------------------------------- #
# Batches below one register tile: the float row kernel's loop, values from the table.
# --------------------------------------------------------------------------- #
@inline()
def _qmatmul_rows(r0, r1, relu, indptr, indices, codes, table, x, bias, out):
    """Rows r0..r1 of out. Loop order row -> nonzero -> batch lane, four nonzeros at a
    time (see ``csr._matmul_rows``: each output lane loaded and stored once per four)."""
    batch = x.shape[1]
    zero = out.dtype.type(0)
    for j in range(r0, r1):
        y = out[j]
        init = bias[j]
        for b in range(batch):
            y[b] = init
        p = indptr[j]
        end = indptr[j + 1]
        while p + 4 <= end:
            v0 = table[codes[p]]
            v1 = table[codes[p + 1]]
            v2 = table[codes[p + 2]]
            v3 = table[codes[p + 3]]
            x0 = x[uint32(indices[p])]
            x1 = x[uint32(indices[p + 1])]
            x2 = x[uint32(indices[p + 2])]
            x3 = x[uint32(indices[p + 3])]
            for b in range(batch):
                y[b] += (v0 * x0[b] + v1 * x1[b]) + (v2 * x2[b] + v3 * x3[b])
            p += 4
        while p < end:
            v0 = table[codes[p]]
            x0 = x[uint32(indices[p])]
            for b in range(batch):
                y[b] += v0 * x0[b]
            p += 1
        if relu:
            for b in range(batch):
                y[b] = max(y[b], zero)


@jit("void(boolean, int32[::1], {I}[::1], uint8[::1], {T}[::1], {T}[:, ::1], {T}[::1], "
     "{T}[:, ::1])", fastmath=CONTRACT, I=INDEX_TYPES)
def qcsr_matmul(relu, indptr, indices, codes, table, x, bias, out):
    """Serial out = dequantized(A) @ x + bias (ReLU'd if ``relu``); x (n_cols, batch)."""
    _qmatmul_rows(0, indptr.shape[0] - 1, relu, indptr, indices, codes, table, x, bias, out)


@jit("void(boolean, int32[::1], {I}[::1], uint8[::1], {T}[::1], int32[::1], {T}[:, ::1], "
     "{T}[::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True, I=INDEX_TYPES)
def qcsr_matmul_parallel(relu, indptr, indices, codes, table, row_bounds, x, bias, out):
    """Parallel over nnz-balanced row chunks; each thread owns whole output rows."""
    for c in prange(row_bounds.shape[0] - 1):
        _qmatmul_rows(row_bounds[c], row_bounds[c + 1], relu, indptr, indices, codes, table,
                      x, bias, out)


# --------------------------------------------------------------------------- #
# From one register tile of lanes on: packed tiles of x (``csr.csr_pack_tiles``).
# --------------------------------------------------------------------------- #
_TILE_LINES = max(1, TILE_BYTES // 64)  # cache lines per tile row
_PF = 8  # prefetch distance in nonzeros, as csr's tiled kernel


@jit("int64()", fastmath=CONTRACT)
def qcsr_tile_bytes():
    """The register tile's width in bytes as this module was compiled: the width to pack
    for (a cache filled on another CPU keeps its own)."""
    return TILE_BYTES


@inline()
def _qmatmul_tile_rows(r0, r1, relu, indptr, indices, codes, table, xp, bias, out):
    """Rows r0..r1 of out, one batch tile at a time: ``csr._matmul_tile_rows`` with the
    value of each nonzero read from ``table``."""
    n_tiles = xp.shape[0]
    n_in = xp.shape[1]
    lanes = xp.shape[2]
    line = lanes // _TILE_LINES
    batch = out.shape[1]
    zero = out.dtype.type(0)
    pf_limit = indptr[indptr.shape[0] - 1] - _PF - 1
    for t in range(n_tiles):
        b0 = t * lanes
        base = int64(t) * n_in
        full = b0 + lanes <= batch
        for j in range(r0, r1):
            a0 = tile_splat(bias[j])
            a1 = tile_splat(zero)
            p = indptr[j]
            end = indptr[j + 1]
            pend = min(end, pf_limit)
            while p + 2 <= pend:
                q0 = (base + uint32(indices[p + _PF])) * lanes
                q1 = (base + uint32(indices[p + _PF + 1])) * lanes
                for k in range(_TILE_LINES):
                    prefetch(xp, q0 + k * line)
                    prefetch(xp, q1 + k * line)
                a0 = tile_fma(a0, table[codes[p]],
                              tile_load(xp, (base + uint32(indices[p])) * lanes))
                a1 = tile_fma(a1, table[codes[p + 1]],
                              tile_load(xp, (base + uint32(indices[p + 1])) * lanes))
                p += 2
            while p + 2 <= end:
                a0 = tile_fma(a0, table[codes[p]],
                              tile_load(xp, (base + uint32(indices[p])) * lanes))
                a1 = tile_fma(a1, table[codes[p + 1]],
                              tile_load(xp, (base + uint32(indices[p + 1])) * lanes))
                p += 2
            if p < end:
                a0 = tile_fma(a0, table[codes[p]],
                              tile_load(xp, (base + uint32(indices[p])) * lanes))
            a0 = tile_add(a0, a1)
            if relu:
                a0 = tile_relu(a0)
            if full:
                tile_store(out, int64(j) * batch + b0, a0)
            else:
                for k in range(batch - b0):
                    out[j, b0 + k] = tile_lane(a0, k)


@jit("void(boolean, int32[::1], {I}[::1], uint8[::1], {T}[::1], int32[::1], {T}[:, :, ::1], "
     "{T}[::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True, I=INDEX_TYPES)
def qcsr_matmul_tiles_parallel(relu, indptr, indices, codes, table, row_bounds, xp, bias,
                               out):
    """out = dequantized(A) @ x + bias (ReLU'd if ``relu``) from the packed tiles xp
    (n_tiles, n_cols, lanes) of x; xp.shape[2] * itemsize must be ``qcsr_tile_bytes()``."""
    # As in csr: a kernel cached on another machine may carry another tile width than the
    # caller packed for, and would then read and write past rows.
    if xp.shape[2] * xp.itemsize != TILE_BYTES:
        raise ValueError("packed tiles do not match the kernel's compiled tile width")
    for c in prange(row_bounds.shape[0] - 1):
        _qmatmul_tile_rows(row_bounds[c], row_bounds[c + 1], relu, indptr, indices, codes,
                           table, xp, bias, out)
