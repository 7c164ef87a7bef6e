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
  (sum x) + bias``, ``base = offset + step * z``. With reassociation allowed,
  LLVM vectorizes the row as 16-lane gathers of x (dword indices, straight from the
  uint16 ones) and converts 16 codes at a time: 0.61 ms serial against 0.84 ms for a
  scalar loop reading a table of values (two gathers a lane when vectorized: 0.63 ms
  parallel against 0.38).
* Batches (``csr.qcsr_matmul*``) read the value from ``table`` (2^b entries, the
  dequantized values; 1 KiB in L1 at 8 bits) once per nonzero in the float kernels'
  loops: the lookup is spread over the batch lanes. Keeping ``sum x`` beside ``sum c x``
  instead costs a second accumulator row per output: 3.4 against 2.3 ms at batch 32.

``table[c]`` is ``offset + step * c`` rounded once to the dtype: exactly the values
``QuantizedLinear.kept_values()`` returns and ``mdl.description_length`` evaluates,
which the batched kernels multiply by; batch 1 sums the same quantizer another way, so
it agrees with them to rounding.
"""
from numba import prange, uint32

from ._jit import REDUCE, inline, jit

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
