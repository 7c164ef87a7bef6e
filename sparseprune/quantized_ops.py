"""Python side of the quantized CSR kernels (``kernels/quantized.py``): the index dtype,
the dequantization table and the kernel by size (packing and row chunks are ``ops``').

As in ``ops``, the kernels trust their inputs and allocate nothing; these wrappers own
every buffer they hand over, and their inputs have been validated already.
"""

import numpy as np

from ._validation import INDEX_DTYPE
from .kernels import quantized
from .ops import NARROW_MAX_COLS, pack_tiles, pack_tiles_sm

__all__ = ["TILE_LANES", "dequantization_table", "index_dtype", "qcsr_forward",
           "qcsr_forward_sm"]

# Batch lanes of a register tile per dtype, as the tiled kernel was compiled.
TILE_LANES = {np.dtype(t): quantized.qcsr_tile_bytes() // np.dtype(t).itemsize
              for t in (np.float32, np.float64)}
# Batch 1: below this many nonzeros one thread finishes before the pool wakes up. The
# gather loop costs about 0.37 ns a nonzero serially against 0.55 for the float one, so
# the crossover sits higher than ops' 65,536 (measured: the batch-1 kernel serial
# against parallel by nonzeros, ``benchmarks/quantized_digits.py --timing``).
PARALLEL_MATVEC_NNZ = 1 << 17
# Batches: the row and tile loops are the float kernels' with a table lookup per nonzero,
# so ops' model of their serial time holds (nnz * (24 + batch) units of ~0.05 ns; a
# parallel region costs some 45 us to wake).
PARALLEL_WORK = 1 << 21
PER_NONZERO_WORK = 24


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
                 out):
    """out (rows, batch) = dequantized(A) @ x + bias (ReLU'd if ``relu``), x (cols, batch).

    indptr int32 (rows + 1,); indices int32 or uint16 (nnz,); codes uint8 (nnz,); table
    (2**bits,) the dequantized values; step and offset scalars of x's dtype; bias (rows,).
    Batch 1 runs the two-sum gather kernel; larger batches the table kernels, serially
    when the work is small, tiled from one register tile of lanes on.
    """
    batch = x.shape[1]
    if batch == 1:
        xv, yv = x.reshape(-1), out.reshape(-1)
        zero, base = _centre(step, offset, table.size - 1)
        if indices.size >= PARALLEL_MATVEC_NNZ:
            quantized.qcsr_matvec_parallel(relu, indptr, indices, codes, step, base, zero,
                                           row_bounds, xv, bias, yv)
        else:
            quantized.qcsr_matvec(relu, indptr, indices, codes, step, base, zero, xv, bias,
                                  yv)
    elif indices.size * (PER_NONZERO_WORK + batch) < PARALLEL_WORK:
        quantized.qcsr_matmul(relu, indptr, indices, codes, table, x, bias, out)
    elif batch >= TILE_LANES[x.dtype]:
        quantized.qcsr_matmul_tiles_parallel(relu, indptr, indices, codes, table, row_bounds,
                                             pack_tiles(x, TILE_LANES[x.dtype]), bias, out)
    else:
        quantized.qcsr_matmul_parallel(relu, indptr, indices, codes, table, row_bounds, x,
                                       bias, out)
    return out


def qcsr_forward_sm(indptr, indices, codes, table, step, offset, row_bounds, bias, relu, X,
                    out):
    """:func:`qcsr_forward` from sample-major X (batch, cols) into out (rows, batch):
    what ``QuantizedLinear.forward`` computes, out's transpose its answer. Returns
    whether X was all finite (if not, out holds garbage and the caller raises).

    Where the tiled kernel runs, X is packed into its tiles straight from its rows (the
    check riding along); elsewhere it is transposed once. Batch 1 reads X's one row.
    """
    batch = X.shape[0]
    lanes = TILE_LANES[X.dtype]
    if batch == 1:
        xv = np.ascontiguousarray(X).reshape(-1, 1)
        qcsr_forward(indptr, indices, codes, table, step, offset, row_bounds, bias, relu, xv,
                     out)
        return bool(np.isfinite(xv).all())
    if batch >= lanes and indices.size * (PER_NONZERO_WORK + batch) >= PARALLEL_WORK:
        xp, finite = pack_tiles_sm(X, lanes)
        quantized.qcsr_matmul_tiles_parallel(relu, indptr, indices, codes, table, row_bounds,
                                             xp, bias, out)
        return finite
    xt = np.ascontiguousarray(X.T)
    qcsr_forward(indptr, indices, codes, table, step, offset, row_bounds, bias, relu, xt, out)
    return bool(np.isfinite(xt).all())
