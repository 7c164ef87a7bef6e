"""Numba kernels of the quantized sparse layers at batch 1: CSR of W^T whose values are
b-bit codes. Batches run ``csr.py``'s loops with a table of values (``qcsr_matmul*``).

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
  (sum x) + bias``, ``base = offset + step * z``. It takes the row four nonzeros at a
  time, as ``csr``'s float rows do: four codes converted and offset in one vector, the
  four x values loaded one by one into another. Kernel layout, parallel: 264 against
  364-383 us for LLVM's own vectorization of the plain loop (16-lane gathers of x), and
  through ``forward(X)`` right after a dense product 374-438 against 461-482 us; a
  scalar loop reading a table of values was slower still (0.84 against 0.61 ms serial).
* Batches (``csr.qcsr_matmul*``) read the value from ``table`` (2^b entries, the
  dequantized values; 1 KiB in L1 at 8 bits) once per nonzero in the float kernels'
  loops: the lookup is spread over the batch lanes. Keeping ``sum x`` beside ``sum c x``
  instead costs a second accumulator row per output: 3.4 against 2.3 ms at batch 32.

``table[c]`` is ``offset + step * c`` rounded once to the dtype: exactly the values
``QuantizedLinear.kept_values()`` returns and ``mdl.description_length`` evaluates,
which the batched kernels multiply by; batch 1 sums the same quantizer another way, so
it agrees with them to rounding.
"""
from numba import int64, prange, uint32

from ._jit import REDUCE, inline, jit
from ._vec import (
    QUAD, count_non_finite, quad_codes, quad_gather, quad_zero, tile_add, vec_fma, vec_sum,
)

__all__ = ["INDEX_TYPES", "qcsr_matvec", "qcsr_matvec_parallel"]

# Index types of the kernels: int32, or uint16 for layers of at most 65,536 inputs.
INDEX_TYPES = ("int32", "uint16")


@inline(REDUCE)
def _qmatvec_rows(r0, r1, relu, indptr, indices, codes, step, base, zero, x, bias, out):
    """Rows r0..r1 of out = step * ((C - zero) x) + base * (P x) + bias, P the pattern.

    ``zero`` is the code nearest the value 0 and ``base = offset + step * zero`` its
    value, so both sums stay of the size of the weights: with the plain codes, ``step *
    (C x)`` and ``offset * (P x)`` are large and cancel, and float32 lost up to 6e-5 of
    |X||W| against the table path on weights with outliers.

    By quads, as csr's float rows: four codes at a time converted and offset in one
    vector (``quad_codes``), the four x values loaded one by one into another, two quad
    accumulators for each sum; the last nonzeros past a whole quad one by one.
    """
    t = out.dtype.type
    for j in range(r0, r1):
        p = int64(indptr[j])
        end = int64(indptr[j + 1])
        a0 = quad_zero(x)
        a1 = quad_zero(x)
        s0 = quad_zero(x)
        s1 = quad_zero(x)
        while p + 2 * QUAD <= end:
            x0 = quad_gather(x, indices, p)
            x1 = quad_gather(x, indices, p + QUAD)
            a0 = vec_fma(a0, quad_codes(codes, p, zero), x0)
            a1 = vec_fma(a1, quad_codes(codes, p + QUAD, zero), x1)
            s0 = tile_add(s0, x0)
            s1 = tile_add(s1, x1)
            p += 2 * QUAD
        if p + QUAD <= end:
            x0 = quad_gather(x, indices, p)
            a0 = vec_fma(a0, quad_codes(codes, p, zero), x0)
            s0 = tile_add(s0, x0)
            p += QUAD
        a = vec_sum(a0) + vec_sum(a1)
        s = vec_sum(s0) + vec_sum(s1)
        while p < end:
            xk = x[uint32(indices[p])]
            a += (t(codes[p]) - zero) * xk
            s += xk
            p += 1
        v = step * a + base * s + bias[j]
        if relu and v < t(0):
            v = t(0)
        out[j] = v


@jit("int64(boolean, int32[::1], {I}[::1], uint8[::1], {T}, {T}, {T}, {T}[::1], {T}[::1], "
     "{T}[::1])", fastmath=REDUCE, I=INDEX_TYPES)
def qcsr_matvec(relu, indptr, indices, codes, step, base, zero, x, bias, out):
    """Serial batch-1 forward: x is X^T[:, 0] (n_cols,), out (n_rows,); a code c stands
    for ``base + step * (c - zero)``. Returns how many values of x are not finite (out is
    garbage then), as csr's batch-1 kernels do."""
    bad = count_non_finite(x)
    _qmatvec_rows(0, indptr.shape[0] - 1, relu, indptr, indices, codes, step, base, zero,
                  x, bias, out)
    return bad


@jit("int64(boolean, int32[::1], {I}[::1], uint8[::1], {T}, {T}, {T}, int32[::1], {T}[::1], "
     "{T}[::1], {T}[::1])", fastmath=REDUCE, parallel=True, I=INDEX_TYPES)
def qcsr_matvec_parallel(relu, indptr, indices, codes, step, base, zero, row_bounds, x,
                         bias, out):
    """Parallel batch-1 forward over nnz-balanced row chunks (``csr.csr_row_chunks``)."""
    bad = count_non_finite(x)
    for c in prange(row_bounds.shape[0] - 1):
        _qmatvec_rows(row_bounds[c], row_bounds[c + 1], relu, indptr, indices, codes, step,
                      base, zero, x, bias, out)
    return bad
