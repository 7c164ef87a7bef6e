"""Python side of the CSR kernels: allocation, chunking and the choice of kernel.

The kernels in ``kernels/csr.py`` trust their inputs and allocate nothing; these
wrappers own every buffer they hand over. Inputs here have been validated already.
"""

import math
import operator
import os
import threading
from typing import NamedTuple

import numba
import numpy as np

from ._validation import INDEX_DTYPE
from .kernels import csr
from .kernels import layout as layout_kernels
from .kernels import panels as panel_kernels

__all__ = ["EMPTY", "NARROW_MAX_COLS", "TILE_LANES", "aligned_empty", "csr_forward",
           "csr_forward_sm", "csr_gather", "csr_transpose", "csr_values_from_dense",
           "csr_values_into_dense", "csr_weight_grad", "dense_sync",
           "leading_columns", "masked_to_csr", "narrow_indices", "pack_tiles", "pack_tiles_sm",
           "l2_cache_bytes", "panel_block_bounds", "panel_layout", "row_chunks"]

# Batch lanes of a register tile per dtype, as the tiled kernel was compiled (see
# csr.csr_tile_bytes): 64 float32 / 32 float64 with AVX-512, half that without.
TILE_LANES = {np.dtype(t): csr.csr_tile_bytes() // np.dtype(t).itemsize
              for t in (np.float32, np.float64)}
# Several chunks per thread: prange splits statically, and equal-nnz chunks that are
# smaller than a thread's share let a skewed pattern still balance.
CHUNKS_PER_THREAD = 4
# Below this many nonzeros a batch-1 product is done before a thread pool wakes up.
# SparseLinear.forward at batch 1 right after a dense product, serial against parallel:
# 1024^2 at 90% (105k nonzeros) 33 against 71-73 us, at 70% (314k) 84 against 100-105,
# at 50% (525k) 137 against 137-138; 4096 x 1024 at 80% (838k) 341-355 against 236-243.
PARALLEL_MATVEC_NNZ = 1 << 19
# From this many values on, csr_gather (a layer's transposed values refreshed after a
# step) copies them in parallel.
PARALLEL_GATHER_NNZ = 1 << 16
# From this many values on, dense_sync compares them in parallel: serially it reads
# about 6 values a nanosecond in cache, and waking the threads costs some 45 us.
PARALLEL_SYNC_NNZ = 1 << 19
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


def csr_values_from_dense(transposed, weight, data):
    """Fill ``data`` (nnz,), in CSR-of-``W.T`` order, with the entries of ``weight`` (in,
    out), C-contiguous, on the pattern; ``transposed`` = (indptr_t, indices_t, perm,
    row_bounds_t): the pattern as CSR of W, ``perm`` as ``csr_transpose`` gives it, and
    row chunks of it."""
    indptr_t, indices_t, perm, bounds_t = transposed
    layout_kernels.dense_to_csr_values(indptr_t, indices_t, perm, bounds_t, weight, data)
    return data


def csr_values_into_dense(transposed, data, weight):
    """Write ``data`` (nnz,), in CSR-of-``W.T`` order, into its entries of ``weight`` (in,
    out), C-contiguous; its other entries are left as they are. ``transposed`` as for
    ``csr_values_from_dense``."""
    indptr_t, indices_t, perm, bounds_t = transposed
    layout_kernels.csr_values_to_dense(indptr_t, indices_t, perm, bounds_t, data, weight)
    return weight


def masked_to_csr(weight, mask):
    """CSR of ``W.T`` (out, in) from a dense weight (in, out) and its bool mask (in, out),
    both C-contiguous: (indptr int32 (out + 1,), indices int32 (nnz,), data (nnz,) of
    the weight's dtype), rows holding each output's live inputs in increasing order."""
    indptr = np.empty(mask.shape[1] + 1, INDEX_DTYPE)
    csr.csr_mask_count(mask, indptr)
    nnz = int(indptr[-1])
    indices = np.empty(nnz, INDEX_DTYPE)
    data = np.empty(nnz, weight.dtype)
    csr.csr_mask_fill(mask, weight, indptr, indices, data)
    return indptr, indices, data


def _serial(nnz, batch):
    """Whether a batched kernel over ``nnz`` nonzeros and ``batch`` lanes is done on one
    thread before a parallel region would have woken up (see PARALLEL_WORK)."""
    return nnz * (PER_NONZERO_WORK + batch) < PARALLEL_WORK


# From one full tile of batch lanes on (64 float32 / 32 float64 with AVX-512), the
# register-tile kernel runs on x packed into tiles: 4096^2 at 90%, float32, batch 256,
# 11.2 ms against 19.0 for the row kernel; at 70%, 33.5 against 51.4. Below one tile
# its padded lanes cost more than they save (1024^2, 90%: 0.46 against 0.38 ms at
# batch 32), so the row kernel keeps those.

# Packed tiles are scratch, reused from call to call: a fresh 4 MiB array every call
# costs its page faults (13.4 against 10.7 ms at 4096^2, 90%, batch 256). One buffer
# per calling thread, so forwards from several Python threads never share one; it
# grows to the largest x seen, up to SCRATCH_BYTES (larger ones are allocated per call).
SCRATCH_BYTES = 1 << 26
# Views of the scratch buffers kept for reuse, per thread (see _scratch).
SCRATCH_VIEWS = 64
# Packing is a copy: on one thread below 256 KiB of x, where waking the pool costs more
# than it saves. It applies where x is packed before the kernel (layers with panels,
# serial products, the model's feature-major copies); the parallel tiled kernel packs
# inside its own region (csr.csr_matmul_tiles_parallel). Packing alone, caches warm (AMD
# EPYC): 256 KiB, 33 us serial against 64 parallel; 4 MiB, 511 against 305. But in
# SparseLinear.forward(X) the parallel kernel wakes the pool anyway, right after, and
# after a dense product has evicted X and the scratch buffer the copy waits on L3 (Intel
# Xeon, at 25b92fe, when every forward packed first: forward(X) with the packing parallel
# against serial, medians of 600 alternated calls): 64 x 1024 (256 KiB) 0.95 after a
# dense product, 0.97 without; 128 x 1024, 0.91 and 0.94; 64 x 512 (128 KiB), 1.04 and
# 0.96. Paired dense / forward(X) at 1024^2, 90%, batch 64: 3.37x and 3.31x against
# 3.16x and 3.12x (two runs of 1,000 pairs). `benchmarks/tune.py pack` re-measures it.
PACK_PARALLEL_BYTES = 1 << 18
# The parallel tiled kernel runs every tile of a row chunk before the next chunk while the
# packed x is at most TILE_GROUPS_FROM_BYTES (4096 inputs at batch 256: 4 MiB), and
# groups of tiles of about TILE_GROUP_BYTES beyond, each group over every chunk (see
# csr.csr_matmul_tiles_parallel).
TILE_GROUPS_FROM_BYTES = 1 << 22
TILE_GROUP_BYTES = 1 << 21
ALIGN_BYTES = 1 << 14
_SCRATCH = threading.local()


def aligned_empty(shape, dtype, align=64):
    """np.empty whose data starts on a cache line. Activations are allocated so: an x of
    exactly one tile of lanes is then used in place, with no tile load straddling two
    lines (numpy itself aligns to 16 bytes, and packing such an x costs 30-40% at
    1024^2, batch 64). Below ALIGN_BYTES it is plain np.empty: aligning costs a few
    microseconds, and arrays that small are cheaper packed than aligned."""
    dtype = np.dtype(dtype)
    if np.ndim(shape) == 0:
        shape = (operator.index(shape),)
    shape = tuple(map(operator.index, shape))
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < ALIGN_BYTES:
        return np.empty(shape, dtype)
    return _aligned_bytes(nbytes, align).view(dtype).reshape(shape)


def leading_columns(x, n):
    """The first ``n`` columns (samples) of feature-major x (features, batch): x itself
    if it has no more, else a new C-contiguous copy laid out as activations are."""
    if x.shape[1] <= n:
        return x
    part = aligned_empty((x.shape[0], n), x.dtype)
    part[...] = x[:, :n]
    return part


def pack_tiles(x, lanes, slot="x"):
    """x (n_in, batch) packed as (n_tiles, n_in, lanes) tiles for the tiled kernels,
    zero-padded past the batch: a view of x itself when it is exactly one aligned tile,
    else this thread's scratch buffer ``slot`` (valid until its next use)."""
    if _one_tile(x, lanes):
        return x.reshape(1, x.shape[0], lanes)
    xp = _tiles_scratch(x.shape[0], x.shape[1], lanes, x.dtype, slot)
    if x.nbytes < PACK_PARALLEL_BYTES:
        csr.csr_pack_tiles(x, xp)
    else:
        csr.csr_pack_tiles_parallel(x, xp)
    return xp


def _one_tile(x, lanes):
    """Whether feature-major x (n_in, batch) is already packed: one tile, aligned."""
    return x.shape[1] == lanes and x.ctypes.data % 64 == 0


def _tiles_scratch(n_in, batch, lanes, dtype, slot="x"):
    """This thread's scratch buffer ``slot`` shaped for the tiles of ``batch`` samples."""
    return _scratch((-(-batch // lanes), n_in, lanes), dtype, slot)


def _scratch(shape, dtype, slot="x"):
    """A 64-byte aligned empty array of ``shape``: this thread's reusable buffer ``slot``
    (packed x, or the panel kernel's accumulators) when it fits in SCRATCH_BYTES, else a
    new one. Its contents are stale.

    The views handed out are kept per (slot, shape, dtype) while the buffer lasts: a
    forward right after a dense product finds them with one lookup, where slicing,
    viewing and reshaping the buffer again took some 13 us with the interpreter's
    caches evicted (one-off timings at 4090a9b)."""
    views = getattr(_SCRATCH, "views", None)
    if views is None:
        views = _SCRATCH.views = {}
    key = (slot, shape, dtype)
    view = views.get(key)
    if view is not None:
        return view
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = getattr(_SCRATCH, slot, None)
    if buf is None or buf.nbytes < nbytes:
        buf = _aligned_bytes(nbytes)
        if nbytes > SCRATCH_BYTES:
            return buf[:nbytes].view(dtype).reshape(shape)
        setattr(_SCRATCH, slot, buf)
        # Views of the old buffer would keep it alive.
        for k in [k for k in views if k[0] == slot]:
            del views[k]
    if len(views) >= SCRATCH_VIEWS:
        views.clear()
    view = views[key] = buf[:nbytes].view(dtype).reshape(shape)
    return view


def _aligned_bytes(nbytes, align=64):
    """A uint8 buffer of ``nbytes`` whose data starts on an ``align``-byte boundary."""
    buf = np.empty(nbytes + align, np.uint8)
    start = -buf.ctypes.data % align
    return buf[start : start + nbytes]


def csr_weight_grad(indptr, indices, row_bounds, dz, x, grad_data, panels=None):
    """grad_data[p] = dz[j] . x[indices[p]] for every stored (j, indices[p]): dz (out,
    batch) and x (in, batch) feature-major, C-contiguous; ``panels`` as for
    :func:`csr_forward` (None, or a callable giving the pattern's panel layout)."""
    batch = x.shape[1]
    if _serial(indices.size, batch):
        csr.csr_sddmm(indptr, indices, dz, x, grad_data, EMPTY[dz.dtype])
    elif batch < TILE_LANES[x.dtype]:
        csr.csr_sddmm_parallel(indptr, indices, row_bounds, dz, x, grad_data,
                               EMPTY[dz.dtype])
    else:
        _sddmm_tiled(indptr, indices, row_bounds, dz, x, grad_data, panels)
    return grad_data


# The sampled weight gradient by tiles of lanes (csr.csr_sddmm_tiles,
# panels.csr_sddmm_panels) from one whole tile of lanes on. Without panels, a group of
# tiles takes at most SDDMM_ROW_BYTES of X^T's lanes (so they stay in L2): 512 inputs
# at 4 float32 tiles, 1,024 at 2, 2,048 at one.
SDDMM_ROW_BYTES = 1 << 19
# Most tiles a dot product takes at once, by the tile width the kernels were compiled
# with: their dY tiles stay in registers (16 of AVX-512's 32 vector registers, 8 of
# AVX2's 16).
SDDMM_GROUP = 4 if csr.csr_tile_bytes() == 256 else 2


def _sddmm_tiled(indptr, indices, row_bounds, dz, x, grad_data, panels):
    lanes = TILE_LANES[x.dtype]
    n_in, batch = x.shape
    n_tiles = -(-batch // lanes)
    if batch % lanes == 0:
        # Whole tiles: x and dz are read in place, tile t of row r at r * batch + t * lanes.
        xs, x_row, x_tile = x.reshape(-1), batch, lanes
        ds, dz_row, dz_tile = dz.reshape(-1), batch, lanes
    else:
        # Packed, zero past the batch (in x; dz's padding is multiplied by those zeros).
        xs, x_row, x_tile = pack_tiles(x, lanes).reshape(-1), lanes, n_in * lanes
        ds = pack_tiles(dz, lanes, slot="dz").reshape(-1)
        dz_row, dz_tile = lanes, dz.shape[0] * lanes
    layout = None if panels is None else panels()
    if layout is not None and layout.offsets.dtype.name in panel_kernels.SDDMM_OFFSET_TYPES:
        panel_kernels.csr_sddmm_panels(
            layout.blocks, layout.vptr, layout.vsrc, layout.offsets, layout.n_panels,
            layout.width, n_tiles, min(SDDMM_GROUP, n_tiles), ds, dz_row, dz_tile, xs, x_row,
            x_tile, grad_data)
    else:
        group = max(1, min(SDDMM_GROUP, SDDMM_ROW_BYTES // max(1, n_in * lanes * x.itemsize)))
        csr.csr_sddmm_tiles(indptr, indices, row_bounds, n_tiles, group, ds, dz_row, dz_tile,
                            xs, x_row, x_tile, grad_data)


def csr_gather(perm, data, out):
    """out[q] = data[perm[q]]."""
    if perm.size < PARALLEL_GATHER_NNZ:
        np.take(data, perm, out=out)
    else:
        csr.csr_gather_parallel(perm, data, out)
    return out


def dense_sync(indptr, indices, row_bounds, data, seen, dense):
    """Bring ``dense`` (rows, cols), a dense copy of the CSR matrix (indptr, indices,
    data), up to date with ``data`` (nnz,): each value whose bits differ from ``seen``
    (nnz,; the values when dense was last written) is written to ``dense`` and ``seen``.
    Exact (bits, not float comparison); reads data and seen once. seen and dense of
    data's dtype, C-contiguous; zeros for both make the copy from scratch."""
    unsigned = np.dtype(f"u{data.itemsize}")
    bits, seen, dense = data.view(unsigned), seen.view(unsigned), dense.view(unsigned)
    if data.size < PARALLEL_SYNC_NNZ:
        csr.csr_dense_sync(indptr, indices, bits, seen, dense)
    else:
        csr.csr_dense_sync_parallel(indptr, indices, row_bounds, bits, seen, dense)


# A length-0 bias or bias-gradient array tells a kernel there is none, per dtype.
EMPTY = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


# --------------------------------------------------------------------------- #
# The forward from sample-major X to sample-major out, and narrow indices (issue 10).
# New functions only; the callers above are untouched.
# --------------------------------------------------------------------------- #
#: Widest layer (inputs) whose column indices fit in uint16.
NARROW_MAX_COLS = 1 << 16
# From half a register tile of samples on, X is packed into tiles straight from its
# rows; below, it is transposed and the row kernel runs (its output transposed back).
# Tiles half empty still win at 1024^2 and batch 32 (0.30 against 0.40-0.46 ms for the
# transposing path); a quarter full they lose at 4096^2 and batch 16 (2.9 against 2.3
# ms). Scratch bench_targets.py, 90% sparsity, float32.
SM_TILE_FRACTION = 2


def narrow_indices(indices, n_cols):
    """The column indices as the forward kernels read them best: uint16 when every index
    fits (n_cols <= 65,536: 6 bytes a nonzero with its value instead of 8), else the
    int32 array itself. A copy; the int32 array stays the layer's canonical one."""
    if n_cols <= NARROW_MAX_COLS:
        return indices.astype(np.uint16)
    return indices


def csr_forward(indptr, indices, data, row_bounds, bias, relu, x, out, table=None,
                panels=None):
    """out (rows, batch) = A @ x + bias (ReLU'd if ``relu``) for feature-major x (cols,
    batch), ``indices`` int32 or uint16 (see narrow_indices): the gather kernel at batch
    1, the row kernel below a register tile of lanes, the tiled kernel from one on,
    serial or over the row chunks by the amount of work.

    With ``table`` (2**bits,) ``data`` holds uint8 codes, nonzero p standing for
    ``table[data[p]]`` (a quantized layer; its batch 1 is ``quantized_ops``'). ``panels``:
    None, or a callable giving the layer's :func:`panel_layout` (see ``_tiled``)."""
    batch = x.shape[1]
    values = (data,) if table is None else (data, table)
    if batch == 1 and table is None:
        _matvec(indptr, indices, data, row_bounds, bias, relu, x.reshape(-1), out.reshape(-1))
    elif batch >= TILE_LANES[x.dtype]:
        _tiled(indptr, indices, values, row_bounds, bias, relu, x, False, False, out, panels)
    elif _serial(indices.size, batch):
        (csr.csr_matmul if table is None else csr.qcsr_matmul)(
            relu, indptr, indices, *values, x, bias, out)
    else:
        (csr.csr_matmul_parallel if table is None else csr.qcsr_matmul_parallel)(
            relu, indptr, indices, *values, row_bounds, x, bias, out)
    return out


def csr_forward_sm(indptr, indices, data, row_bounds, bias, relu, X, out,
                   out_sample_major=True, table=None, panels=None):
    """X @ A.T + bias (ReLU'd if ``relu``) for sample-major X (batch, cols) of bias's
    dtype: what ``SparseLinear.forward`` computes, without the transposes at its edges.
    out is C-contiguous, (batch, rows), or (rows, batch) with ``out_sample_major=False``
    (a model's first layer, feeding feature-major layers). ``indices`` int32 or uint16;
    ``data``, ``table`` and ``panels`` as :func:`csr_forward` takes them (batch 1 of a
    quantized layer is ``quantized_ops``').

    Returns whether X was all finite (if not, out holds garbage and the caller raises):
    the check rides along with the packing, no separate pass over X.

    Batch 1 is the gather-dot kernel on X's one row (sample- and feature-major are the
    same memory). From half a tile of samples on (SM_TILE_FRACTION), X is packed into
    register tiles straight from its rows and the tiled kernel writes out's columns.
    Smaller batches are transposed, run through the row kernel and transposed back.
    X in any layout: a Fortran-ordered X (a transposed feature-major array) is packed
    as feature-major; other non-C-contiguous X is copied first (one more pass).
    """
    batch = X.shape[0]
    if batch == 1:
        xv = np.ascontiguousarray(X).reshape(-1)
        if table is None:
            return _matvec(indptr, indices, data, row_bounds, bias, relu, xv, out.reshape(-1))
        csr_forward(indptr, indices, data, row_bounds, bias, relu,
                    xv.reshape(-1, 1), out.reshape(-1, 1), table)
        return bool(np.isfinite(xv).all())
    lanes = TILE_LANES[X.dtype]
    if batch * SM_TILE_FRACTION < lanes:
        xt = np.ascontiguousarray(X.T)
        if not out_sample_major:
            csr_forward(indptr, indices, data, row_bounds, bias, relu, xt, out, table)
        else:
            yt = np.empty((out.shape[1], batch), out.dtype)
            csr_forward(indptr, indices, data, row_bounds, bias, relu, xt, yt, table)
            out[...] = yt.T
        return bool(np.isfinite(xt).all())
    values = (data,) if table is None else (data, table)
    if not X.flags.c_contiguous and X.T.flags.c_contiguous:
        _tiled(indptr, indices, values, row_bounds, bias, relu, X.T, False, out_sample_major,
               out, panels)
        return bool(np.isfinite(X).all())
    bad = _tiled(indptr, indices, values, row_bounds, bias, relu, np.ascontiguousarray(X),
                 True, out_sample_major, out, panels)
    return bad == 0


def _matvec(indptr, indices, data, row_bounds, bias, relu, x, out):
    """out (rows,) = A @ x + bias (ReLU'd if ``relu``) for one sample x (cols,), serial or
    over the row chunks by the number of nonzeros; whether x was all finite (the kernel
    checks it on the way)."""
    if indices.size >= PARALLEL_MATVEC_NNZ:
        bad = csr.csr_matvec_parallel(relu, indptr, indices, data, row_bounds, x, bias, out)
    else:
        bad = csr.csr_matvec(relu, indptr, indices, data, x, bias, out)
    return bad == 0


def pack_tiles_sm(X, lanes):
    """C-contiguous sample-major X (batch, n_in) packed as (n_tiles, n_in, lanes) tiles,
    zero-padded past the batch, into this thread's scratch buffer (valid until its next
    call), and whether X was all finite: the check rides along with the packing. Other
    layouts are :func:`csr_forward_sm`'s to route (a Fortran-ordered X is a feature-major
    x, packed by :func:`pack_tiles`)."""
    xp = _tiles_scratch(X.shape[1], X.shape[0], lanes, X.dtype)
    if X.nbytes < PACK_PARALLEL_BYTES:
        return xp, csr.csr_pack_tiles_sm(X, xp) == 0
    return xp, csr.csr_pack_tiles_sm_parallel(X, xp) == 0


def _tiled(indptr, indices, values, row_bounds, bias, relu, x, x_sm, out_sm, out,
           panels=None):
    """The register-tile kernel on x: sample-major (batch, n_in) if ``x_sm``, else
    feature-major (n_in, batch), C-contiguous either way; ``values`` (data,) or, for a
    quantized layer, (codes, table). Serial, or over (group of tiles, row chunk) work
    items with x packed in the same parallel region, or (``panels``: None, or a callable
    giving the layer's :func:`panel_layout`, built once by the layer) the panel kernel
    on x packed first. Returns how many blocks of a sample-major x held values that are
    not finite (0 for a feature-major x, which is not checked)."""
    lanes = TILE_LANES[x.dtype]
    n_in, batch = (x.shape[1], x.shape[0]) if x_sm else x.shape
    serial = _serial(indices.size, batch)
    # Panels pay from PANELS_FROM_BYTES of packed x per tile, else (narrow tiles) from
    # PANELS_FROM_BATCH_BYTES of the whole batch's.
    wide = (n_in * lanes * x.itemsize >= PANELS_FROM_BYTES
            or n_in * batch * x.itemsize >= PANELS_FROM_BATCH_BYTES)
    layout = None if serial or panels is None or not wide else panels()
    if serial or layout is not None:
        if x_sm:
            xp, finite = pack_tiles_sm(x, lanes)
            bad = 0 if finite else 1
        else:
            xp, bad = pack_tiles(x, lanes), 0
    elif not x_sm and _one_tile(x, lanes):
        xp, x_layout = x.reshape(1, n_in, lanes), csr.PACKED
    else:
        xp = _tiles_scratch(n_in, batch, lanes, x.dtype)
        x_layout = csr.SAMPLE_MAJOR if x_sm else csr.FEATURE_MAJOR
    tile_bytes = n_in * lanes * x.itemsize
    group = (xp.shape[0] if xp.nbytes <= TILE_GROUPS_FROM_BYTES
             else max(1, TILE_GROUP_BYTES // tile_bytes))
    if layout is not None:
        _paneled(layout, values, bias, relu, xp, group, out_sm, out)
        return bad
    quantized = len(values) == 2
    if serial:
        (csr.qcsr_matmul_tiles if quantized else csr.csr_matmul_tiles)(
            relu, out_sm, indptr, indices, *values, xp, bias, out)
        return bad
    # NUMBA_NUM_THREADS, not numba.get_num_threads(): 13 us a call right after a dense
    # product (one-off timing at 4090a9b), and any count of shares is correct.
    return (csr.qcsr_matmul_tiles_parallel if quantized else csr.csr_matmul_tiles_parallel)(
        relu, out_sm, indptr, indices, *values, row_bounds, group,
        numba.config.NUMBA_NUM_THREADS, x_layout, x, xp, bias, out)


# --------------------------------------------------------------------------- #
# Column panels (kernels/panels.py): the tiled forward of layers with many inputs.
# --------------------------------------------------------------------------- #
# From 512 KiB of packed X per tile (2,048 inputs with 256-byte tiles) the panels pay
# at every batch: 4096^2 at 90%, float32, batch 256, in the model's layout 8.4-8.7
# against 12.1-13.4 ms; 2048^2, 2.3 against 3.7; at 1,024 inputs (256 KiB a tile, in L2
# anyway) they lose, 0.24-0.31 against 0.19-0.30 ms at batch 64 (AMD EPYC, AVX-512).
PANELS_FROM_BYTES = 1 << 19
# With 128-byte tiles (AVX2) a tile of 2,048 inputs is 256 KiB, and there the panels
# pay once the whole batch's packed X reaches 2 MiB (`benchmarks/tune.py panels`; AMD
# EPYC with AVX2, 512 KiB of L2, 2048^2 at 90%, float32, time with panels over without,
# median of paired calls): forward(X) right after a dense product 0.89 at batch 256,
# 0.99 at 128, 1.09-1.19 at 64; model layout, quiet, 0.93 at 256. The weight gradient
# over the panels: 0.85 at 256, 0.96 at 64, so a layout, once made, serves it at every
# batch. Below 2,048 inputs they lose (1024^2: 1.07 at 256, 1.4 at 64), and 4096^2 at
# batch 64 (1 MiB) is even with or without (1.01).
PANELS_FROM_INPUTS = 2048
PANELS_FROM_BATCH_BYTES = 1 << 21
# Packed X per panel: 64 KiB (256 inputs), in L2 with the block's weights and
# accumulators, as long as a row has PANEL_MIN_NNZ nonzeros a panel on average; fewer,
# and the per-segment work (its bounds, the accumulator tile's load and store)
# outweighs the reuse: fewer, wider panels. Half that (128 inputs) where rows are long
# enough for twice PANEL_MIN_NNZ there. 4096^2, batch 256, model layout, medians
# (`benchmarks/tune.py panels --layout fm --quiet`): at 90% (26 nonzeros per 256
# inputs) 8.4-8.7 ms at 256 inputs, 9.6-9.8 at 128, 9.1-9.4 at 512; at 70%, 19.2-19.4
# at 128 against 20.8-20.9.
PANEL_BYTES = 1 << 16
PANEL_MIN_NNZ = 16


def l2_cache_bytes(base="/sys/devices/system/cpu/cpu0/cache", default=1 << 19):
    """The L2 cache one thread of CPU 0 has in bytes, as Linux reports it under ``base``
    (sysfs: an ``index*`` directory per cache, with its ``level``, ``size`` ("2048K")
    and ``shared_cpu_list`` ("0-1,4"): an L2 shared by hyperthreads or a core cluster is
    divided among them); ``default`` (512 KiB) where it is not reported."""
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            with open(os.path.join(base, entry, "level")) as f:
                if f.read().strip() != "2":
                    continue
            with open(os.path.join(base, entry, "size")) as f:
                size = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
            sharing = 1
            shared = os.path.join(base, entry, "shared_cpu_list")
            if os.path.exists(shared):
                with open(shared) as f:
                    spans = [span.split("-") for span in f.read().strip().split(",") if span]
                sharing = max(1, sum(int(span[-1]) - int(span[0]) + 1 for span in spans))
            return int(size.rstrip("KM")) * scale // sharing
    except (OSError, ValueError):
        pass
    return default


# Row blocks. A block runs its panels one by one with its rows' output tiles carried in
# per-thread accumulators, and each block reads the whole packed X once: 4 MiB at 4,096
# inputs and batch 256, more than an L2, so from L3. Fewer, larger blocks read it fewer
# times, as long as a block's weights (5 to 6 bytes a nonzero) and accumulators stay in
# L2 through its tiles: about an eighth of the L2 in nonzeros (2^16 with 512 KiB, where
# it was tuned: 5-15% faster than 2^14 at 4096^2). And the blocks come in a multiple of
# the thread count: prange splits work items statically, and 7 blocks on 2 threads left
# one thread idle for a seventh of the time. On an Intel Xeon with 2 MiB of L2, batch
# 256, SparseLinear.forward(X) right after X @ W + b, time against the 2^16-nonzero
# blocks cut in order, paired calls (median and quartiles of 40-100 pairs,
# `benchmarks/tune.py panels --widths auto --block-nnz auto 65536`): 4096^2 at 90%, 8
# blocks against 26, 0.94 (0.92-0.95); at
# 70%, 20 against 78, 0.83 (0.81-0.84); at 60%, 26 against 104, 0.82 (0.80-0.84); 2048^2
# at 90%, 4 against 7, 0.89 (0.84-1.07).
PANEL_BLOCK_NNZ = max(1 << 14, l2_cache_bytes() // 8)
PANEL_BLOCK_ROWS = 512


class Panels(NamedTuple):
    """The panel layout of a layer (see kernels/panels.py): row ``blocks`` (n_blocks +
    1,), ``vptr`` and ``vsrc`` per virtual row, the column ``offsets`` within their panel
    in panel order (uint8 for panels of up to 256 columns, else uint16 or int32),
    ``n_panels`` panels of ``width`` columns and the most rows of a block, ``max_rows``."""

    blocks: np.ndarray
    vptr: np.ndarray
    vsrc: np.ndarray
    offsets: np.ndarray
    n_panels: int
    width: int
    max_rows: int


def _greedy_blocks(indptr, block_nnz, block_rows):
    """Row bounds of blocks cut in order, each as large as block_nnz and block_rows allow."""
    bounds = np.empty(indptr.size, INDEX_DTYPE)
    n_blocks = panel_kernels.panel_blocks(indptr, block_nnz, block_rows, bounds)
    return bounds[: n_blocks + 1].copy()


def panel_block_bounds(indptr, block_rows=PANEL_BLOCK_ROWS):
    """Row bounds (n_blocks + 1,) int32 of the panel kernel's row blocks: balanced by
    nonzeros, about PANEL_BLOCK_NNZ nonzeros and ``block_rows`` rows each, in a multiple
    of Numba's thread count where there are rows enough. A pattern whose balanced blocks
    would outgrow twice ``block_rows`` rows (rows of very unequal lengths; the rows of a
    block size the accumulators) is cut in order instead, at most ``block_rows`` rows a
    block."""
    n_rows = indptr.size - 1
    if n_rows == 0:
        return np.zeros(1, INDEX_DTYPE)
    threads = numba.config.NUMBA_NUM_THREADS
    n_blocks = max(-(-int(indptr[-1]) // PANEL_BLOCK_NNZ), -(-n_rows // block_rows), 1)
    n_blocks = min(-(-n_blocks // threads) * threads, n_rows)
    bounds = np.empty(n_blocks + 1, INDEX_DTYPE)
    csr.csr_row_chunks(indptr, bounds)
    bounds = np.unique(bounds)  # skewed rows can leave a chunk empty
    if np.diff(bounds).max() <= 2 * block_rows:
        return bounds
    return _greedy_blocks(indptr, -(-int(indptr[-1]) // n_blocks), block_rows)


def panel_layout(indptr, indices, n_cols, width=None, block_nnz=None,
                 block_rows=PANEL_BLOCK_ROWS):
    """The panel layout of the CSR (indptr, indices) with ``n_cols`` columns, in panels of
    ``width`` columns and row blocks of at most ``block_nnz`` nonzeros (unless a row
    has more) and ``block_rows`` rows. Without ``width``, chosen here, or None where
    panels would not pay: fewer than PANELS_FROM_BYTES of packed X per tile and fewer
    than PANELS_FROM_INPUTS columns, or too few nonzeros per row for two panels of
    PANEL_MIN_NNZ. A forward takes the layout at the batches where it pays (``_tiled``). Without ``block_nnz``, blocks of
    about PANEL_BLOCK_NNZ nonzeros in a multiple of Numba's thread count, nnz-balanced
    (``panel_block_bounds``). Built in one pass; a column offset per nonzero (a byte for
    panels of up to 256 columns, as the chosen ones are) and 8 bytes per row and panel."""
    n_rows = indptr.size - 1
    if width is None:
        tile_bytes = csr.csr_tile_bytes()
        if n_rows == 0 or (n_cols * tile_bytes < PANELS_FROM_BYTES
                           and n_cols < PANELS_FROM_INPUTS):
            return None
        per_row = int(indptr[-1]) // n_rows
        n_panels = min(-(-n_cols * tile_bytes // PANEL_BYTES), per_row // PANEL_MIN_NNZ)
        n_panels = max(n_panels, min(-(-n_cols * tile_bytes // (PANEL_BYTES // 2)),
                                     per_row // (2 * PANEL_MIN_NNZ)))
        if n_panels < 2:
            return None
        width = -(-n_cols // n_panels)
    n_panels = max(1, -(-n_cols // width))
    if n_rows * n_panels >= 1 << 31:
        return None
    blocks = (panel_block_bounds(indptr, block_rows) if block_nnz is None
              else _greedy_blocks(indptr, block_nnz, block_rows))
    n_blocks = blocks.size - 1
    vptr = np.empty(n_rows * n_panels + 1, INDEX_DTYPE)
    vsrc = np.empty(n_rows * n_panels, INDEX_DTYPE)
    offsets = np.empty(indices.size, np.uint8 if width <= 1 << 8
                       else np.uint16 if width <= 1 << 16 else INDEX_DTYPE)
    panel_kernels.panel_fill(indptr, indices, blocks, n_panels, width,
                             np.empty(n_rows, INDEX_DTYPE), vptr, vsrc, offsets)
    max_rows = int(np.diff(blocks).max()) if n_blocks else 0
    return Panels(blocks, vptr, vsrc, offsets, n_panels, width, max_rows)


def _paneled(panels, values, bias, relu, xp, group, out_sm, out):
    """The panel kernel on packed xp: ``values`` (data,) or (codes, table)."""
    acc = _scratch((numba.config.NUMBA_NUM_THREADS, group, panels.max_rows, xp.shape[2]),
                   xp.dtype, slot="acc")
    kernel = (panel_kernels.qcsr_matmul_panels if len(values) == 2
              else panel_kernels.csr_matmul_panels)
    kernel(relu, out_sm, panels.blocks, panels.vptr, panels.vsrc, panels.offsets, *values,
           panels.n_panels, panels.width, group, xp, bias, acc, out)
