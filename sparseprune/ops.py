"""Python side of the CSR kernels: allocation, chunking and the choice of kernel.

The kernels in ``kernels/csr.py`` trust their inputs and allocate nothing; these
wrappers own every buffer they hand over. Inputs here have been validated already.
"""

import numba
import numpy as np

from .kernels import csr

INDEX_DTYPE = np.dtype(np.int32)
# Several chunks per thread: prange splits statically, and equal-nnz chunks that are
# smaller than a thread's share let a skewed pattern still balance.
CHUNKS_PER_THREAD = 4


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


def csr_forward(indptr, indices, data, row_bounds, bias, relu, x, out):
    """out (rows, batch) = A @ x + bias (ReLU'd if ``relu``), x (cols, batch).

    Batch 1 runs the serial gather-dot kernel: the work is a few microseconds of
    memory traffic, less than waking a thread pool costs.
    """
    if x.shape[1] == 1:
        csr.csr_matvec(relu, indptr, indices, data, x.reshape(-1), bias, out.reshape(-1))
    else:
        csr.csr_matmul_parallel(relu, indptr, indices, data, row_bounds, x, bias, out)
    return out


def csr_weight_grad(indptr, indices, row_bounds, dz, x, grad_data):
    """grad_data[p] = dz[j] . x[indices[p]] for every stored (j, indices[p])."""
    csr.csr_sddmm_parallel(indptr, indices, row_bounds, dz, x, grad_data, _EMPTY[dz.dtype])
    return grad_data


def csr_gather(perm, data, out):
    """out[q] = data[perm[q]]."""
    csr.csr_gather_parallel(perm, data, out)
    return out


_EMPTY = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}
