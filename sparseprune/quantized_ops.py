"""Python side of the quantized CSR kernels: the index dtype, the dequantization table,
and batch 1 (``kernels/quantized.py``); larger batches run ``ops``' float CSR paths with
the table (``kernels/csr.py``'s ``qcsr_*``: the same loops, a value looked up per
nonzero).

As in ``ops``, the kernels trust their inputs and allocate nothing; these wrappers own
every buffer they hand over, and their inputs have been validated already.
"""

import numpy as np

from ._validation import INDEX_DTYPE
from .kernels import quantized
from .ops import NARROW_MAX_COLS, csr_forward, csr_forward_sm

__all__ = ["dequantization_table", "index_dtype", "qcsr_forward", "qcsr_forward_sm"]

# Batch 1: below this many nonzeros one thread finishes before the pool wakes up.
# QuantizedLinear.forward (8 bits) at batch 1 right after a dense product, serial against
# parallel: 1024^2 at 90% (105k nonzeros) 38 against 96-98 us, at 80% (209k) 62 against
# 94, at 70% (314k) 126-130 against 97-106; 4096 x 1024 at 80% (838k) 260-263 against
# 205-217. Lower than ops' threshold: two sums a nonzero keep the serial loop longer.
PARALLEL_MATVEC_NNZ = 1 << 18


def index_dtype(n_cols):
    """uint16 for at most ``ops.NARROW_MAX_COLS`` columns (two bytes a nonzero), else
    int32."""
    return np.dtype(np.uint16) if n_cols <= NARROW_MAX_COLS else INDEX_DTYPE


def dequantization_table(bits, offset, step, dtype):
    """The 2**bits values ``offset + step * c`` (computed in float64, as
    ``mdl.dequantize``, then rounded once to ``dtype``) that codes c stand for."""
    codes = np.arange(1 << bits, dtype=np.float64)
    return np.ascontiguousarray(float(offset) + float(step) * codes, dtype=dtype)


def _centre(step, offset, top):
    """(zero, base) of x's dtype for the batch-1 kernels: the code nearest the value 0
    (within 0..top) and its value, ``offset + step * zero``."""
    t = type(step)
    zero = 0.0 if step == 0 else min(max(round(-float(offset) / float(step)), 0), top)
    return t(zero), t(float(offset) + float(step) * zero)


def qcsr_forward(indptr, indices, codes, table, step, offset, row_bounds, bias, relu, x,
                 out, panels=None):
    """out (rows, batch) = dequantized(A) @ x + bias (ReLU'd if ``relu``), x (cols, batch).

    indptr int32 (rows + 1,); indices int32 or uint16 (nnz,); codes uint8 (nnz,); table
    (2**bits,) the dequantized values; step and offset scalars of x's dtype; bias (rows,).
    Batch 1 runs the two-sum gather kernel; larger batches the float kernels' paths
    (:func:`sparseprune.ops.csr_forward`) with the table, and ``panels`` as it takes them.
    """
    if x.shape[1] > 1:
        return csr_forward(indptr, indices, codes, row_bounds, bias, relu, x, out, table,
                           panels)
    _qmatvec(indptr, indices, codes, table, step, offset, row_bounds, bias, relu,
             x.reshape(-1), out.reshape(-1))
    return out


def _qmatvec(indptr, indices, codes, table, step, offset, row_bounds, bias, relu, x, out):
    """out (rows,) for one sample x (cols,), serial or over the row chunks by the number
    of nonzeros; whether x was all finite (the kernel checks it on the way)."""
    zero, base = _centre(step, offset, table.size - 1)
    if indices.size >= PARALLEL_MATVEC_NNZ:
        bad = quantized.qcsr_matvec_parallel(relu, indptr, indices, codes, step, base, zero,
                                             row_bounds, x, bias, out)
    else:
        bad = quantized.qcsr_matvec(relu, indptr, indices, codes, step, base, zero, x, bias,
                                    out)
    return bad == 0


def qcsr_forward_sm(indptr, indices, codes, table, step, offset, row_bounds, bias, relu, X,
                    out, panels=None):
    """:func:`qcsr_forward` from sample-major X (batch, cols) into the C-contiguous out
    (batch, rows): what ``QuantizedLinear.forward`` computes. Returns whether X was all
    finite (if not, out holds garbage and the caller raises).

    Batch 1 reads X's one row; larger batches go as
    :func:`sparseprune.ops.csr_forward_sm` takes sample-major X to sample-major out.
    """
    if X.shape[0] > 1:
        return csr_forward_sm(indptr, indices, codes, row_bounds, bias, relu, X, out,
                              table=table, panels=panels)
    return _qmatvec(indptr, indices, codes, table, step, offset, row_bounds, bias, relu,
                    np.ascontiguousarray(X).reshape(-1), out.reshape(-1))
