"""Python side of the quantized CSR kernels (``kernels/quantized.py``): the index dtype,
the dequantization table, packing, chunking and the kernel by size.

As in ``ops``, the kernels trust their inputs and allocate nothing; these wrappers own
every buffer they hand over, and their inputs have been validated already.
"""

import math
import threading

import numba
import numpy as np

from ._validation import INDEX_DTYPE
from .kernels import csr, quantized

__all__ = ["NARROW_INDEX_LIMIT", "TILE_LANES", "dequantization_table", "index_dtype",
           "qcsr_forward", "row_chunks"]

#: Layers with at most this many inputs hold their column indices as uint16.
NARROW_INDEX_LIMIT = 1 << 16
# Batch lanes of a register tile per dtype, as the tiled kernel was compiled.
TILE_LANES = {np.dtype(t): quantized.qcsr_tile_bytes() // np.dtype(t).itemsize
              for t in (np.float32, np.float64)}
# Several chunks per thread, as ``ops``: prange splits statically.
CHUNKS_PER_THREAD = 4
# Batch 1: below this many nonzeros one thread finishes before the pool wakes up. The
# gather loop costs about 0.37 ns a nonzero serially against 0.55 for the float one, so
# the crossover sits higher than ops' 65,536 (measured: see quantized_matvec_crossover in
# benchmarks/quantized_digits.py).
PARALLEL_MATVEC_NNZ = 1 << 17
# Batches: the row and tile loops are the float kernels' with a table lookup per nonzero,
# so ops' model of their serial time holds (nnz * (24 + batch) units of ~0.05 ns; a
# parallel region costs some 45 us to wake).
PARALLEL_WORK = 1 << 21
PER_NONZERO_WORK = 24


def index_dtype(n_cols):
    """uint16 for at most NARROW_INDEX_LIMIT columns (two bytes a nonzero), else int32."""
    return np.dtype(np.uint16) if n_cols <= NARROW_INDEX_LIMIT else INDEX_DTYPE


def dequantization_table(bits, offset, step, dtype):
    """The 2**bits values ``offset + step * c`` (computed in float64, as
    ``mdl.dequantize``, then rounded once to ``dtype``) that codes c stand for."""
    codes = np.arange(1 << bits, dtype=np.float64)
    return np.ascontiguousarray(float(offset) + float(step) * codes, dtype=dtype)


def row_chunks(indptr):
    """Row bounds (n_chunks + 1,) int32 of nnz-balanced chunks for the parallel kernels."""
    n_rows = indptr.size - 1
    n_chunks = max(1, min(n_rows, CHUNKS_PER_THREAD * numba.config.NUMBA_NUM_THREADS))
    bounds = np.empty(n_chunks + 1, INDEX_DTYPE)
    csr.csr_row_chunks(indptr, bounds)
    return bounds


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
        if indices.size >= PARALLEL_MATVEC_NNZ:
            quantized.qcsr_matvec_parallel(relu, indptr, indices, codes, step, offset,
                                           row_bounds, xv, bias, yv)
        else:
            quantized.qcsr_matvec(relu, indptr, indices, codes, step, offset, xv, bias, yv)
    elif indices.size * (PER_NONZERO_WORK + batch) < PARALLEL_WORK:
        quantized.qcsr_matmul(relu, indptr, indices, codes, table, x, bias, out)
    elif batch >= TILE_LANES[x.dtype]:
        quantized.qcsr_matmul_tiles_parallel(relu, indptr, indices, codes, table, row_bounds,
                                             _tiles(x), bias, out)
    else:
        quantized.qcsr_matmul_parallel(relu, indptr, indices, codes, table, row_bounds, x,
                                       bias, out)
    return out


# Packed tiles are scratch, one reusable buffer per calling thread (as in ops: a fresh
# buffer per call costs its page faults), up to SCRATCH_BYTES; packing runs on one
# thread below PACK_PARALLEL_BYTES of x, where waking the pool costs more than it saves.
SCRATCH_BYTES = 1 << 26
PACK_PARALLEL_BYTES = 1 << 20
_SCRATCH = threading.local()


def _tiles(x):
    """x (n_in, batch) packed as (n_tiles, n_in, lanes) tiles, zero-padded past the
    batch: a view of x itself when it is exactly one aligned tile."""
    lanes = TILE_LANES[x.dtype]
    n_in, batch = x.shape
    if batch == lanes and x.ctypes.data % 64 == 0:
        return x.reshape(1, n_in, lanes)
    shape = (-(-batch // lanes), n_in, lanes)
    nbytes = math.prod(shape) * x.itemsize
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        raw = np.empty(nbytes + 64, np.uint8)
        start = -raw.ctypes.data % 64
        buf = raw[start : start + nbytes]
        if nbytes <= SCRATCH_BYTES:
            _SCRATCH.buf = buf
    xp = buf[:nbytes].view(x.dtype).reshape(shape)
    if x.nbytes < PACK_PARALLEL_BYTES:
        csr.csr_pack_tiles(x, xp)
    else:
        csr.csr_pack_tiles_parallel(x, xp)
    return xp
