"""Python side of the CSR kernels: allocation, chunking and the choice of kernel.

The kernels in ``kernels/csr.py`` trust their inputs and allocate nothing; these
wrappers own every buffer they hand over. Inputs here have been validated already.
"""

import numba
import numpy as np

from ._validation import INDEX_DTYPE
from .kernels import csr
# Several chunks per thread: prange splits statically, and equal-nnz chunks that are
# smaller than a thread's share let a skewed pattern still balance.
CHUNKS_PER_THREAD = 4
# Below this many nonzeros a batch-1 product is done before a thread pool wakes up.
PARALLEL_MATVEC_NNZ = 1 << 16
# Waking Numba's passively waiting OpenMP threads costs some 45 us a parallel region
# here, so below about 90 us of work one thread finishes first. A batched kernel's serial
# time is close to nnz * (24 + batch) units of ~0.05 ns: a fixed part per nonzero (its
# index and value, the row bookkeeping) worth about 24 batch lanes, then one unit per
# lane. Measured on 10x128 to 1024x1024 layers at batch 2-256; see _serial.
PARALLEL_WORK = 1 << 21
PER_NONZERO_WORK = 24


def row_chunks(indptr):
    """Row bounds (n_chunks + 1,) int32 of nnz-balanced chunks for the parallel kernels."""
    n_rows = indptr.size - 1
    n_chunks = max(1, min(n_rows, CHUNKS_PER_THREAD * numba.config.NUMBA_NUM_THREADS))
    bounds = np.empty(n_chunks + 1, INDEX_DTYPE)
    csr.csr_row_chunks(indptr, bounds)
    return bounds


def csr_transpose(n_cols, indptr, indices):
    """The pattern of the transpose: (indptr_t (n_cols + 1,), indices_t (nnz,),
    perm (nnz,)) with ``data_t = data[perm]``; two passes, count then fill."""
    indptr_t = np.empty(n_cols + 1, INDEX_DTYPE)
    csr.csr_transpose_count(n_cols, indptr, indices, indptr_t)
    indices_t = np.empty(indices.size, INDEX_DTYPE)
    perm = np.empty(indices.size, INDEX_DTYPE)
    csr.csr_transpose_fill(indptr, indices, indptr_t, indices_t, perm)
    return indptr_t, indices_t, perm


def _serial(nnz, batch):
    """Whether a batched kernel over ``nnz`` nonzeros and ``batch`` lanes is done on one
    thread before a parallel region would have woken up (see PARALLEL_WORK)."""
    return nnz * (PER_NONZERO_WORK + batch) < PARALLEL_WORK


def csr_forward(indptr, indices, data, row_bounds, bias, relu, x, out):
    """out (rows, batch) = A @ x + bias (ReLU'd if ``relu``), x (cols, batch).

    Batch 1 runs the gather-dot kernel, on one thread unless the matrix is big enough
    to pay for waking the pool (about 0.6 ns a nonzero serially: at 4096^2 and 90%
    sparsity, 0.95 ms serial, 0.58 ms parallel). Larger batches run the batched kernel,
    serially when the work is small (a 128x10 output layer, say).
    """
    if x.shape[1] == 1:
        xv, yv = x.reshape(-1), out.reshape(-1)
        if indices.size >= PARALLEL_MATVEC_NNZ:
            csr.csr_matvec_parallel(relu, indptr, indices, data, row_bounds, xv, bias, yv)
        else:
            csr.csr_matvec(relu, indptr, indices, data, xv, bias, yv)
    elif _serial(indices.size, x.shape[1]):
        csr.csr_matmul(relu, indptr, indices, data, x, bias, out)
    else:
        csr.csr_matmul_parallel(relu, indptr, indices, data, row_bounds, x, bias, out)
    return out


def csr_weight_grad(indptr, indices, row_bounds, dz, x, grad_data):
    """grad_data[p] = dz[j] . x[indices[p]] for every stored (j, indices[p])."""
    if _serial(indices.size, x.shape[1]):
        csr.csr_sddmm(indptr, indices, dz, x, grad_data, EMPTY[dz.dtype])
    else:
        csr.csr_sddmm_parallel(indptr, indices, row_bounds, dz, x, grad_data,
                               EMPTY[dz.dtype])
    return grad_data


def csr_gather(perm, data, out):
    """out[q] = data[perm[q]]."""
    if perm.size < PARALLEL_MATVEC_NNZ:
        np.take(data, perm, out=out)
    else:
        csr.csr_gather_parallel(perm, data, out)
    return out


# A length-0 bias or bias-gradient array tells a kernel there is none, per dtype.
EMPTY = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}
