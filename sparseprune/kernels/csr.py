"""Numba CSR kernels of the sparse layers.

Conventions
-----------
* A layer weight W is (n_in, n_out) for users. We store CSR of W^T, i.e. shape
  (n_out, n_in): one CSR row per output unit. These are the same three arrays as
  scipy's CSC of W.
* Activations are feature-major: X^T is (n_in, batch), C-contiguous, so every
  inner loop walks a contiguous batch vector (vectorises, prefetches well).
* Arguments: scalars (shape ints, flags), indptr, indices, data, other
  structural arrays (row chunk bounds, permutations), inputs, outputs.
* Kernels trust their inputs (no validation). The caller owns every output and every
  scratch array that outlives the call or grows with the input (packed tiles); a
  kernel allocates only its own few KiB of per-call scratch (the tiled kernels' output
  blocks and work counters), where each allocation in Python costs more than the work
  it serves right after a dense product has evicted the interpreter's caches (5-13 us
  against 0.4-2.5 back to back; one-off timings at 4090a9b). An "optional" array
  (bias, grad_bias) is switched off by passing a length-0 array, so one signature
  serves both cases.
* int32 indptr/indices (the kernels of the last sections also take uint16 indices),
  float32/float64 values. Each kernel has explicit,
  C-contiguous signatures so it compiles once per dtype and is cached on disk.
* Quantized layers (``qcsr_*``) run the same loops: their ``data`` is ``codes``, uint8
  (nnz,), and the value of nonzero p is ``table[codes[p]]``, ``table`` (2**bits,) the
  dequantized values (1 KiB in L1 at 8 bits): the lookup is spread over the batch lanes.
  Batch 1, where it is not, has kernels of its own (``quantized.py``).
* Parallel kernels take `row_bounds` from `csr_row_chunks`: chunks of rows with
  equal nnz. Numba's prange splits its range statically, so equal-nnz chunks are
  what balances the threads; rows alone would not for skewed patterns.
"""
import numpy as np
from numba import int64, prange, types, uint32, uint64
from numba.extending import overload

from ._jit import CONTRACT, REDUCE, inline, jit
from ._vec import (
    QUAD, TILE_BYTES, count_non_finite, dot_group, fetch_add, prefetch, quad_gather,
    quad_load, quad_zero, row_dots, tile_lane, tile_relu, tile_row_fma, tile_splat,
    tile_store, transpose_rows, vec_fma, vec_sum,
)

__all__ = [
    "FEATURE_MAJOR", "INDEX_TYPES", "PACKED", "SAMPLE_MAJOR", "SM_BLOCK_ROWS",
    "csr_dense_sync", "csr_dense_sync_parallel", "csr_gather_parallel", "csr_matmul", "csr_matmul_parallel",
    "csr_matmul_tiles", "csr_matmul_tiles_parallel", "csr_matvec", "csr_matvec_parallel",
    "csr_pack_tiles", "csr_pack_tiles_parallel", "csr_pack_tiles_sm", "csr_pack_tiles_sm_parallel",
    "csr_mask_count", "csr_mask_fill", "csr_row_chunks", "csr_sddmm", "csr_sddmm_parallel",
    "csr_sddmm_tiles",
    "csr_tile_bytes", "csr_transpose_count", "csr_transpose_fill", "qcsr_matmul",
    "qcsr_matmul_parallel", "qcsr_matmul_tiles", "qcsr_matmul_tiles_parallel",
]

# fastmath is CONTRACT (FMAs only) here, except where a dot product must vectorise over
# the batch (SDDMM), which is REDUCE. Reassociation is deliberately off for the batch-1
# gather loop: with it LLVM emits AVX-512 gathers, which are slower than scalar loads
# there (0.84 vs 0.61 ms at 4096^2, 90%).

# Indexing note: Numba wraps negative signed indices (x[-1]), which costs ~15
# instructions per access on a value loaded from `indices`. Casting the loaded
# index to uint32 drops that check; it made the batch-1 kernel 2.5x faster.

def _value(data, table, p):
    """The value of nonzero p: ``data[p]``, or ``table[data[p]]`` when data holds codes.
    Resolved when a kernel compiles (table is None for float layers), so the float
    kernels read ``data[p]`` as if written so."""
    return data[p] if table is None else table[data[p]]


@overload(_value, inline="always")
def _value_typed(data, table, p):
    if isinstance(table, types.NoneType):
        return lambda data, table, p: data[p]
    return lambda data, table, p: table[data[p]]


# --------------------------------------------------------------------------- #
# Structure helpers
# --------------------------------------------------------------------------- #
@jit("void(int32[::1], int32[::1])", fastmath=CONTRACT)
def csr_row_chunks(indptr, row_bounds):
    """Split rows into len(row_bounds)-1 contiguous chunks of ~equal nnz.

    row_bounds[c]..row_bounds[c+1] are the rows of chunk c. Uses ~k * n_threads
    chunks; chunks may be empty for tiny or very skewed matrices, which is fine.
    """
    n_rows = indptr.shape[0] - 1
    n_chunks = row_bounds.shape[0] - 1
    nnz = indptr[n_rows]
    row_bounds[0] = 0
    row = 0
    for c in range(1, n_chunks):
        # 64-bit target so nnz * c cannot overflow int32.
        target = (int64(nnz) * c) // n_chunks
        while row < n_rows and indptr[row] < target:
            row += 1
        row_bounds[c] = row
    row_bounds[n_chunks] = n_rows


@jit("void(int64, int32[::1], int32[::1], int32[::1])", fastmath=CONTRACT)
def csr_transpose_count(n_cols, indptr, indices, indptr_t):
    """First pass of the transpose: indptr_t (n_cols + 1, caller-zeroed not needed)."""
    for i in range(n_cols + 1):
        indptr_t[i] = 0
    nnz = indptr[indptr.shape[0] - 1]
    for p in range(nnz):
        indptr_t[indices[p] + 1] += 1
    for i in range(n_cols):
        indptr_t[i + 1] += indptr_t[i]


@jit("void(int32[::1], int32[::1], int32[::1], int32[::1], int32[::1])",
     fastmath=CONTRACT)
def csr_transpose_fill(indptr, indices, indptr_t, indices_t, perm):
    """Second pass: column indices of the transpose and the value permutation.

    After this, data_t = data[perm] (see csr_gather), so when only the values
    change (every optimiser step) the transpose is refreshed by one gather instead
    of a full re-transpose. Rows are visited in order, so each transposed row comes
    out with sorted indices (canonical CSR).

    indptr_t is used as the per-column write cursor and restored at the end, which
    avoids a scratch allocation; it must not be read concurrently.
    """
    n_rows = indptr.shape[0] - 1
    n_cols = indptr_t.shape[0] - 1
    for j in range(n_rows):
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            q = indptr_t[i]
            indices_t[q] = j
            perm[q] = p
            indptr_t[i] = q + 1
    # Cursors now hold each column's end == the next column's start: shift back.
    for i in range(n_cols, 0, -1):
        indptr_t[i] = indptr_t[i - 1]
    indptr_t[0] = 0


@jit("void(boolean[:, ::1], int32[::1])", fastmath=CONTRACT)
def csr_mask_count(mask, indptr):
    """First pass from a dense mask (in, out) to CSR of its transpose: indptr (out + 1,).

    Walks the mask row by row (contiguously) rather than column by column, which is
    what makes this several times faster than ``np.nonzero(mask.T)``.
    """
    n_in, n_out = mask.shape
    for j in range(n_out + 1):
        indptr[j] = 0
    for i in range(n_in):
        for j in range(n_out):
            if mask[i, j]:
                indptr[j + 1] += 1
    for j in range(n_out):
        indptr[j + 1] += indptr[j]


@jit("void(boolean[:, ::1], {T}[:, ::1], int32[::1], int32[::1], {T}[::1])",
     fastmath=CONTRACT)
def csr_mask_fill(mask, weight, indptr, indices, data):
    """Second pass: the inputs (sorted within each row) and weights of the live entries.

    indptr is used as the per-output write cursor and restored at the end, as in
    ``csr_transpose_fill``; it must not be read concurrently.
    """
    n_in, n_out = mask.shape
    for i in range(n_in):
        for j in range(n_out):
            if mask[i, j]:
                q = indptr[j]
                indices[q] = i
                data[q] = weight[i, j]
                indptr[j] = q + 1
    for j in range(n_out, 0, -1):
        indptr[j] = indptr[j - 1]
    indptr[0] = 0


@jit("void(int32[::1], {T}[::1], {T}[::1])", fastmath=CONTRACT, parallel=True)
def csr_gather_parallel(perm, data, data_t):
    """data_t[q] = data[perm[q]]: refresh transposed values after a weight update."""
    for q in prange(perm.shape[0]):
        data_t[q] = data[uint32(perm[q])]


# --------------------------------------------------------------------------- #
# Forward: Y^T (n_rows, batch) = A X^T + bias[:, None], optional ReLU
# (A = W^T for the forward pass, A = W, i.e. the transpose, for the input grad).
# --------------------------------------------------------------------------- #
@inline()
def _matmul_rows(r0, r1, relu, indptr, indices, data, table, x, bias, out):
    """Rows r0..r1 of out. Loop order: row -> nonzero -> batch lane. Values as
    ``_value`` reads them (``table`` None, or the codes' values).

    Each nonzero streams one whole contiguous X^T row (the hardware prefetcher
    follows it), and the output row (batch lanes, <= a few KiB) stays in L1 for the
    whole row. Nonzeros are unrolled by 4 so each output lane is loaded/stored once
    per four FMAs, with two independent product chains; a plain per-nonzero axpy is
    load/store-bound.

    This kernel serves batches below one register tile (see _tile_rows, which
    takes the rest). Tiling the batch here, straight from X^T, lost: with n_in a power
    of two the tile's rows are 1 KiB apart, map onto a quarter of the cache sets, and
    thrash (7-9x slower serial); and a scratch-array accumulator stays in memory, as
    Numba cannot prove it does not alias x/out (~4x slower). Packed tiles and a
    register tile type (``_vec``) fix both.
    """
    batch = x.shape[1]
    has_bias = bias.shape[0] != 0
    zero = out.dtype.type(0)
    for j in range(r0, r1):
        y = out[j]
        init = bias[j] if has_bias else zero
        for b in range(batch):
            y[b] = init
        p = indptr[j]
        end = indptr[j + 1]
        while p + 4 <= end:
            v0 = _value(data, table, p)
            v1 = _value(data, table, p + 1)
            v2 = _value(data, table, p + 2)
            v3 = _value(data, table, p + 3)
            x0 = x[uint32(indices[p])]
            x1 = x[uint32(indices[p + 1])]
            x2 = x[uint32(indices[p + 2])]
            x3 = x[uint32(indices[p + 3])]
            for b in range(batch):
                y[b] += (v0 * x0[b] + v1 * x1[b]) + (v2 * x2[b] + v3 * x3[b])
            p += 4
        while p < end:
            v0 = _value(data, table, p)
            x0 = x[uint32(indices[p])]
            for b in range(batch):
                y[b] += v0 * x0[b]
            p += 1
        if relu:
            for b in range(batch):
                y[b] = max(y[b], zero)


# --------------------------------------------------------------------------- #
# Forward at larger batches: register tiles over a packed, batch-tiled X^T.
# --------------------------------------------------------------------------- #
# X^T is repacked as xp (n_tiles, n_in, L): tile t holds batch lanes t*L..t*L+L-1 of
# every input row, contiguous, zero-padded past the batch. L = csr_tile_bytes() /
# itemsize (TILE_BYTES per input row: 64 float32 / 32 float64 on AVX-512).


@inline()
def _pack_rows(i0, i1, x, xp):
    """Input rows i0..i1 of xp[t, i, l] = x[i, t * L + l] (L = xp.shape[2]), zero past
    the batch."""
    batch = x.shape[1]
    n_tiles = xp.shape[0]
    lanes = xp.shape[2]
    zero = xp.dtype.type(0)
    for i in range(i0, i1):
        xi = x[i]
        for t in range(n_tiles):
            b0 = t * lanes
            n = min(lanes, batch - b0)
            dst = xp[t, i]
            for k in range(n):
                dst[k] = xi[b0 + k]
            for k in range(n, lanes):
                dst[k] = zero


@jit("int64()", fastmath=CONTRACT)
def csr_tile_bytes():
    """The register tile's width in bytes as this module was compiled: the width to pack
    for. Taken from the compiled (possibly cached) code rather than from _vec at import,
    so that a cache filled on another CPU is still packed for correctly."""
    return TILE_BYTES


@jit("void({T}[:, ::1], {T}[:, :, ::1])", fastmath=CONTRACT)
def csr_pack_tiles(x, xp):
    """Serial packing of x (n_in, batch) into tiles xp (n_tiles, n_in, L)."""
    _pack_rows(0, x.shape[0], x, xp)


@jit("void({T}[:, ::1], {T}[:, :, ::1])", fastmath=CONTRACT, parallel=True)
def csr_pack_tiles_parallel(x, xp):
    """Parallel packing, over blocks of input rows."""
    n_in = x.shape[0]
    n_blocks = min(n_in, 64)
    for c in prange(n_blocks):
        _pack_rows(c * n_in // n_blocks, (c + 1) * n_in // n_blocks, x, xp)


# Batch 1 by quads: each row's nonzeros four at a time, their values loaded as one
# vector, the four x values loaded one by one into another (quad_gather), one vector FMA;
# four quad accumulators in flight. A third fewer loads than a scalar FMA per nonzero
# (index, value, x), and fewer instructions, so more of the weight stream is in flight
# when it comes from memory. 4096^2 at 90%, float32, uint16 indices, in parallel: 281
# against 346 us with the weights in L3, 362-370 against 502-517 us right after a dense
# product has evicted them; serially in L2 (1024^2), 0.27 against 0.36 ns a nonzero.
# A 16-lane hardware gather (vgatherdps) was 5-15% slower than the scalar loop in cache
# and 20% faster from memory; 8- and 16-value vectors built the same way, 0.35-0.39 ns.
#
# From memory the weight stream is also prefetched in software, MATVEC_AHEAD nonzeros
# ahead for the values (8 KiB of float32, one line per 16 nonzeros, a line a pass of the
# quad loop) and twice that for the uint16 indices (8 KiB too): the hardware prefetcher
# stops at every 4 KiB page. On an Intel Xeon (2 cores, 2 MiB L2 each), 4096^2 at 90%,
# right after a dense product, four alternated processes: 478-659 against 582-827 us
# (3.58-4.23x dense against 3.27-3.50x; 512 ahead, 3.48-3.82x), and 3.36-4.10x against
# 3.11-3.32x in three more; with the weights in cache, minima 368-373 against 345-370 us
# (38af28a against its parent, processes alternated as `benchmarks/paired.py --trees`
# runs them). The AMD EPYC of earlier sessions showed no gain from a shorter distance.
MATVEC_AHEAD = 2048


@inline()
def _matvec_rows(r0, r1, relu, indptr, indices, data, x, bias, out):
    """Batch-1 rows r0..r1 of out = A @ x (+ bias)(ReLU), x (n_cols,), by quads; the
    last nonzeros of a row past a whole quad one by one. Row offsets are int64 and the
    gathered index unsigned, so no wraparound code is emitted."""
    has_bias = bias.shape[0] != 0
    zero = out.dtype.type(0)
    last = int64(data.shape[0]) - 1
    for j in range(r0, r1):
        p = int64(indptr[j])
        end = int64(indptr[j + 1])
        a0 = quad_zero(data)
        a1 = quad_zero(data)
        a2 = quad_zero(data)
        a3 = quad_zero(data)
        while p + 4 * QUAD <= end:
            prefetch(data, min(p + MATVEC_AHEAD, last))
            prefetch(indices, min(p + 2 * MATVEC_AHEAD, last))
            a0 = vec_fma(a0, quad_load(data, p), quad_gather(x, indices, p))
            a1 = vec_fma(a1, quad_load(data, p + QUAD), quad_gather(x, indices, p + QUAD))
            a2 = vec_fma(a2, quad_load(data, p + 2 * QUAD),
                         quad_gather(x, indices, p + 2 * QUAD))
            a3 = vec_fma(a3, quad_load(data, p + 3 * QUAD),
                         quad_gather(x, indices, p + 3 * QUAD))
            p += 4 * QUAD
        while p + QUAD <= end:
            a0 = vec_fma(a0, quad_load(data, p), quad_gather(x, indices, p))
            p += QUAD
        s = (vec_sum(a0) + vec_sum(a1)) + (vec_sum(a2) + vec_sum(a3))
        while p < end:
            s += data[p] * x[uint32(indices[p])]
            p += 1
        if has_bias:
            s += bias[j]
        if relu and s < zero:
            s = zero
        out[j] = s


# --------------------------------------------------------------------------- #
# Weight gradient on the pattern (SDDMM) + bias gradient
# grad_data[p] = dY^T[j, :] . X^T[indices[p], :],  grad_bias[j] = sum(dY^T[j, :])
# --------------------------------------------------------------------------- #
@inline(REDUCE)
def _sddmm_rows(r0, r1, indptr, indices, dy, x, grad_data, grad_bias):
    """Rows r0..r1. Four nonzeros at a time share each dY lane load; the dot
    products vectorise over the batch thanks to fastmath reassoc. The bias
    gradient rides along because dY^T[j] is already in cache."""
    batch = x.shape[1]
    has_bias = grad_bias.shape[0] != 0
    zero = dy.dtype.type(0)
    for j in range(r0, r1):
        g = dy[j]
        if has_bias:
            s = zero
            for b in range(batch):
                s += g[b]
            grad_bias[j] = s
        p = indptr[j]
        end = indptr[j + 1]
        while p + 4 <= end:
            x0 = x[uint32(indices[p])]
            x1 = x[uint32(indices[p + 1])]
            x2 = x[uint32(indices[p + 2])]
            x3 = x[uint32(indices[p + 3])]
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            for b in range(batch):
                gb = g[b]
                s0 += gb * x0[b]
                s1 += gb * x1[b]
                s2 += gb * x2[b]
                s3 += gb * x3[b]
            grad_data[p] = s0
            grad_data[p + 1] = s1
            grad_data[p + 2] = s2
            grad_data[p + 3] = s3
            p += 4
        while p < end:
            x0 = x[uint32(indices[p])]
            s0 = zero
            for b in range(batch):
                s0 += g[b] * x0[b]
            grad_data[p] = s0
            p += 1


@jit("void(int32[::1], int32[::1], {T}[:, ::1], {T}[:, ::1], {T}[::1], {T}[::1])",
     fastmath=REDUCE)
def csr_sddmm(indptr, indices, dy, x, grad_data, grad_bias):
    """Serial SDDMM (+ bias grad); dy is dY^T (n_rows, batch), x is X^T (n_cols, batch)."""
    _sddmm_rows(0, indptr.shape[0] - 1, indptr, indices, dy, x, grad_data, grad_bias)


@jit("void(int32[::1], int32[::1], int32[::1], {T}[:, ::1], {T}[:, ::1], {T}[::1], "
     "{T}[::1])", fastmath=REDUCE, parallel=True)
def csr_sddmm_parallel(indptr, indices, row_bounds, dy, x, grad_data, grad_bias):
    """Parallel over nnz-balanced row chunks; each nonzero is written by one thread."""
    for c in prange(row_bounds.shape[0] - 1):
        _sddmm_rows(row_bounds[c], row_bounds[c + 1], indptr, indices, dy, x,
                    grad_data, grad_bias)


# The sampled weight gradient by tiles of lanes. The kernels above stream each nonzero's
# whole X^T row (1 KiB at batch 256) from wherever it is: at 2048 inputs X^T is 2 MiB,
# the core's whole L2, and the rows come from L3. Here a dot product takes up to
# ops.SDDMM_GROUP tiles of lanes at once (the whole batch at 256 float32 samples), the
# row's dY tiles held in registers, and the rows of X^T read are those of one column
# panel (panels.csr_sddmm_panels) or, without panels, of as few tiles as stay in L2
# (ops.SDDMM_ROW_BYTES). Four nonzeros' products are summed together
# (``_vec.tile_row_dots*``): a third of the shuffles of four separate sums. X^T and dY^T
# are read in place when the batch is whole tiles, else packed. 2048^2, 90%, batch 256,
# float32, 2 cores, Intel Xeon, one-epoch fits of the benchmark's network alternating
# with csr_sddmm_parallel: 4.1 against 7.8 ms a call (median of 10 fits each; at
# e3d6467). The kernels alone (`benchmarks/tune.py sddmm`) on an AMD EPYC with AVX2
# (128-byte tiles), batch 256: 4096^2 over panels 14.4 ms, by rows of tiles 18.6,
# csr_sddmm_parallel 20.4; 2048^2 (no panels at 128-byte tiles) 5.8 against 5.9. On an
# AMD EPYC with AVX-512 an earlier blocking by lanes alone (one tile at a time, a pass
# over the gradient per tile) lost (docs/performance.md).
@jit("void(int32[::1], int32[::1], int32[::1], int64, int64, {T}[::1], int64, int64, "
     "{T}[::1], int64, int64, {T}[::1])", fastmath=CONTRACT, parallel=True)
def csr_sddmm_tiles(indptr, indices, row_bounds, n_tiles, group, dy, dy_row, dy_tile, x,
                    x_row, x_tile, grad_data):
    """grad_data[p] = dY^T[j] . X^T[indices[p]] by tiles of lanes, up to ``group`` tiles
    at a time (``_vec.dot_group``), in parallel over nnz-balanced row chunks. dy and x
    are flat: lane tile t of row r starts at ``r * row + t * tile`` (their ``_row`` and
    ``_tile`` steps); ``n_tiles`` tiles of TILE_BYTES, zero past the batch in x or dy."""
    for c in prange(row_bounds.shape[0] - 1):
        t = int64(0)
        while t < n_tiles:
            g = dot_group(group, n_tiles - t)
            for j in range(row_bounds[c], row_bounds[c + 1]):
                row_dots(g, dy, j * dy_row + t * dy_tile, dy_tile, indices, x, t * x_tile,
                         x_tile, x_row, indptr[j], indptr[j + 1], 0, grad_data, t > 0)
            t += g


# --------------------------------------------------------------------------- #
# Forward from sample-major X to sample-major out, and narrow indices.
# --------------------------------------------------------------------------- #
# `indices` is int32 or uint16 ({I}) here: uint16 serves layers of at most 65,536
# inputs, 6 bytes a nonzero with its value instead of 8 (see ops.narrow_indices). At
# 4096^2, 90%, batch 1: 0.35 against 0.36-0.38 ms when the matrix stays in L3, 0.48-0.68
# against 0.57-0.72 ms right after a dense product has evicted it; at 70%, batch 256
# (40 MB of int32 CSR, more than L3): 30-32 against 32-55 ms (benchmarks/test_bench_sparse.py,
# groups `forward ...`).
#
# Static chunks, as in the kernels above. Claiming chunks dynamically from an atomic
# counter was measured and did not pay: within +-5% of static at 4096^2 (batch 1 and 256)
# and 1024^2 (batch 64), quiet or right after a dense NumPy product
# (benchmarks/test_bench_sparse.py, groups `forward ...`).
# A spinning OpenBLAS worker time-slices with both of our threads, it does not slow one
# of them more than the other; what helps is keeping it from spinning
# (OPENBLAS_THREAD_TIMEOUT, read once when NumPy loads OpenBLAS).
INDEX_TYPES = ("int32", "uint16")


# Sample-major output: a row's finished tile is a column of out (batch, n_rows), 64
# lanes 4 * n_rows bytes apart. Stored lane by lane, those 64 lines share a few cache
# sets at power-of-two widths and each is touched again for every row: 17.8 against 14.9
# ms feature-major (4096^2, 90%, batch 256; benchmark group
# `forward 4096x4096-s0.9-b256-float32`). So SM_BLOCK_ROWS rows'
# tiles are first stored into the work item's block of ``buf`` (L1), then written out as
# whole 64-byte pieces of out's rows.
SM_BLOCK_ROWS = 16


@inline()
def _tile_rows(t, r0, r1, relu, out_sm, indptr, indices, data, table, xp, bias, blk, out):
    """Rows r0..r1 of output tile t into ``out``: feature-major (n_rows, batch), or
    sample-major (batch, n_rows) if ``out_sm``, through the block ``blk``
    (SM_BLOCK_ROWS, lanes), the work item's own. Values as ``_value`` reads them.

    The row's L output lanes live in two register tiles (even and odd nonzeros: two
    independent FMA chains) for the whole row and are stored once. A tile of xp
    (n_in * TILE_BYTES, 1 MiB at n_in = 4096) is shared by every row of the chunk, so
    it is read from L2/L3 instead of the whole X^T streaming from L3 per nonzero, and
    being packed, its rows are contiguous: no cache-set thrash at power-of-two batch
    strides. A row is one ``tile_row_fma`` loop: against the Numba loop it replaces
    (which also prefetched the xp rows of the nonzeros 8 ahead), SparseLinear.forward
    at 1024^2, 90%, took 0.237-0.238 against 0.256-0.261 ms at batch 64 and 0.77
    against 0.83-0.87 at batch 256 (3516afe against its parent, alternated processes as
    ``benchmarks/paired.py --trees`` runs them)."""
    n_in = xp.shape[1]
    lanes = xp.shape[2]
    batch = out.shape[0] if out_sm else out.shape[1]
    has_bias = bias.shape[0] != 0
    zero = out.dtype.type(0)
    b0 = t * lanes
    base = int64(t) * n_in
    m = min(lanes, batch - b0)
    j0 = r0  # first row of the current output block (sample-major only)
    for j in range(r0, r1):
        a0 = tile_row_fma(tile_splat(bias[j] if has_bias else zero), indices, data, table,
                          xp, base * lanes, indptr[j], indptr[j + 1], 0)
        if relu:
            a0 = tile_relu(a0)
        if out_sm:
            tile_store(blk, int64(j - j0) * lanes, a0)
            # Blocks end on multiples of SM_BLOCK_ROWS: whole cache lines of out are written.
            if (j + 1) % SM_BLOCK_ROWS == 0 or j + 1 == r1:
                # A constant trip count for whole blocks: with a runtime one LLVM
                # vectorizes this copy into scatters, 1.7x slower
                # (benchmarks/test_bench_sparse.py, groups `forward ...`).
                n = j + 1 - j0
                if n == SM_BLOCK_ROWS:
                    for k in range(m):
                        for jj in range(SM_BLOCK_ROWS):
                            out[b0 + k, j0 + jj] = blk[jj, k]
                else:
                    for k in range(m):
                        for jj in range(n):
                            out[b0 + k, j0 + jj] = blk[jj, k]
                j0 = j + 1
        elif m == lanes:
            tile_store(out, int64(j) * batch + b0, a0)
        else:
            for k in range(m):
                out[j, b0 + k] = tile_lane(a0, k)


@inline()
def _tile_items(xp, row_bounds, group):
    """How many work items the parallel tiled kernels have: (groups of ``group`` tiles)
    x (row chunks). Checks the tile width first: a kernel cached on another machine may
    carry another width than the caller packed for, and would read and write past rows."""
    if xp.shape[2] * xp.itemsize != TILE_BYTES:
        raise ValueError("packed tiles do not match the kernel's compiled tile width")
    return (xp.shape[0] + group - 1) // group * (row_bounds.shape[0] - 1)


@inline()
def _tile_item(k, relu, out_sm, indptr, indices, data, table, row_bounds, group, xp, bias, blk,
               out):
    """Work item k: tiles g*group..(g+1)*group over the row chunk c, with g, c =
    divmod(k, n_chunks), through the block blk (SM_BLOCK_ROWS, lanes) of the thread
    running it."""
    n_chunks = row_bounds.shape[0] - 1
    g = k // n_chunks
    c = k - g * n_chunks
    for t in range(g * group, min(g * group + group, xp.shape[0])):
        _tile_rows(t, row_bounds[c], row_bounds[c + 1], relu, out_sm, indptr, indices, data,
                   table, xp, bias, blk, out)


@jit("void(boolean, boolean, int32[::1], {I}[::1], {T}[::1], {T}[:, :, ::1], {T}[::1], "
     "{T}[:, ::1])", fastmath=CONTRACT, I=INDEX_TYPES)
def csr_matmul_tiles(relu, out_sm, indptr, indices, data, xp, bias, out):
    """Serial csr_matmul_tiles_parallel, for small layers."""
    if xp.shape[2] * xp.itemsize != TILE_BYTES:
        raise ValueError("packed tiles do not match the kernel's compiled tile width")
    blk = np.empty((SM_BLOCK_ROWS, xp.shape[2]), xp.dtype)
    for t in range(xp.shape[0]):
        _tile_rows(t, 0, indptr.shape[0] - 1, relu, out_sm, indptr, indices, data, None, xp,
                   bias, blk, out)


@jit("void(boolean, boolean, int32[::1], {I}[::1], uint8[::1], {T}[::1], {T}[:, :, ::1], "
     "{T}[::1], {T}[:, ::1])", fastmath=CONTRACT, I=INDEX_TYPES)
def qcsr_matmul_tiles(relu, out_sm, indptr, indices, codes, table, xp, bias, out):
    """csr_matmul_tiles of a quantized layer: value p is table[codes[p]]."""
    if xp.shape[2] * xp.itemsize != TILE_BYTES:
        raise ValueError("packed tiles do not match the kernel's compiled tile width")
    blk = np.empty((SM_BLOCK_ROWS, xp.shape[2]), xp.dtype)
    for t in range(xp.shape[0]):
        _tile_rows(t, 0, indptr.shape[0] - 1, relu, out_sm, indptr, indices, codes, table, xp,
                   bias, blk, out)


# Packing from sample-major x (batch, n_in), as users hold X: xp[t, i, l] = x[t*L + l, i].
# A transpose of each tile's samples, by square blocks of one vector's lanes (16 x 16
# float32) transposed in registers (``_vec.transpose_rows``, which inference's
# feature-major copy shares): every load and store a whole 64-byte vector. Element
# by element, writing each xp row one lane at a time, 64 x 1024 float32 took 59-63 us;
# by blocks 19-20 (serial). Through SparseLinear.forward, 1024^2 at 90%, batch 64: 268
# against 296 us; 4096^2, batch 256: 11.6 against 12.3 ms (benchmark groups `public
# ...`). Columns and samples past the last whole block go element by element.
# The finiteness check rides along: the blocks add up 0 * x over the values they
# loaded (NaN if any is inf or NaN), the rest counts v - v != 0; the caller raises. No
# second pass over X from memory.
# Inputs per parallel packing item.
_PACK_ITEM_COLS = 512


@inline()
def _pack_sm_block(t, i0, i1, x, xp):
    """Inputs i0..i1 of tile t, from sample-major x, zero past the batch; returns the
    non-finite count (a block with non-finite values counts once)."""
    lanes = xp.shape[2]
    zero = xp.dtype.type(0)
    b0 = t * lanes
    m = min(lanes, x.shape[0] - b0)
    tile = xp[t]
    bad = transpose_rows(x, b0, m, i0, i1, tile)
    for i in range(i0, i1):
        for k in range(m, lanes):
            tile[i, k] = zero
    return bad


@jit("int64({T}[:, ::1], {T}[:, :, ::1])", fastmath=CONTRACT)
def csr_pack_tiles_sm(x, xp):
    """Serial packing of sample-major x (batch, n_in) into tiles xp (n_tiles, n_in, L),
    zero past the batch. Returns how many values of x are not finite."""
    bad = 0
    for t in range(xp.shape[0]):
        bad += _pack_sm_block(t, 0, x.shape[1], x, xp)
    return bad


@jit("int64({T}[:, ::1], {T}[:, :, ::1])", fastmath=CONTRACT, parallel=True)
def csr_pack_tiles_sm_parallel(x, xp):
    """Parallel csr_pack_tiles_sm, over (tile, block of inputs)."""
    n_in = x.shape[1]
    n_blocks = (n_in + _PACK_ITEM_COLS - 1) // _PACK_ITEM_COLS
    bad = 0
    for c in prange(xp.shape[0] * n_blocks):
        t = c // n_blocks
        i0 = (c - t * n_blocks) * _PACK_ITEM_COLS
        bad += _pack_sm_block(t, i0, min(i0 + _PACK_ITEM_COLS, n_in), x, xp)
    return bad


# --------------------------------------------------------------------------- #
# The parallel tiled kernels: packing and the product in one parallel region.
# --------------------------------------------------------------------------- #
# Packing x and running the product as two parallel regions wakes the thread pool
# twice a call, and with OMP_WAIT_POLICY=passive each wake-up costs 15-35 us (an empty
# region after a pause, Intel Xeon). Here the threads first claim packing items from an
# atomic counter (so a thread that wakes late finds them taken, and no one waits for
# it), wait until every claimed item is packed, and run their share of the product.
# Waiting only for claimed items cannot deadlock: a claimed item belongs to a thread
# that is running, even when the team is one thread running every share in turn.
# SparseLinear.forward(X) right after X @ W + b, packing inside against packing as a
# region of its own, alternated in one process (at 4090a9b): 0.93-0.94 of the time per
# pair at 1024^2, 90%, batch 64 (two runs of 1,500 pairs); 0.96-0.99 at batch 32 and
# 256 and at 512^2. (Both sides then still paid one more region, see _region_state:
# without it, the kernel alone, 1024^2, batch 64, 0.94-0.95 of the time per pair, at
# de37231.) Keeping the workers spinning between regions instead (GOMP_SPINCOUNT) was
# measured too: a forward 10% faster, but a dense product run right after it 10-40%
# slower, the pair no faster (at 4090a9b).
#
# The product's items are split statically, as prange would: a thread runs one run of
# consecutive items, and so reads its groups' packed x once for all the rows. Each work
# item runs one group of tiles over one row chunk, and consecutive items take the same
# group's chunks; chunk by chunk over every tile, a thread streamed the whole packed x
# once per chunk (at 1024^2, batch 4096, 16 MiB of it eight times: 3x the time per
# sample of batch 64). The caller picks ``group`` (ops: every tile up to a few MiB of
# packed x; beyond, groups of about 2 MiB).

#: ``x_layout`` of the parallel tiled kernels: ``xp`` holds x packed already (``x`` is
#: not read); x is sample-major (batch, n_in), packed by transposes; x is feature-major
#: (n_in, batch), packed by copies.
PACKED, SAMPLE_MAJOR, FEATURE_MAJOR = 0, 1, 2
# Bytes of x per packing item: 256 inputs of a 64-lane float32 tile.
_PACK_ITEM_BYTES = 1 << 16


@inline()
def _pack_items(x_layout, x, xp):
    """How many packing items x has (0 if PACKED), and the inputs in each."""
    if x_layout == PACKED:
        return 0, 1
    n_in = xp.shape[1]
    if x_layout == SAMPLE_MAJOR:
        cols = max(1, _PACK_ITEM_BYTES // (xp.shape[2] * xp.itemsize))
        return xp.shape[0] * ((n_in + cols - 1) // cols), cols
    rows = max(1, _PACK_ITEM_BYTES // (x.shape[1] * x.itemsize))
    return (n_in + rows - 1) // rows, rows


@inline()
def _pack_item(c, x_layout, width, x, xp):
    """Packing item c of ``width`` inputs; returns how many non-finite blocks it saw (a
    sample-major x; 0 otherwise)."""
    n_in = xp.shape[1]
    if x_layout == SAMPLE_MAJOR:
        per_tile = (n_in + width - 1) // width
        t = c // per_tile
        i0 = (c - t * per_tile) * width
        return _pack_sm_block(t, i0, min(i0 + width, n_in), x, xp)
    _pack_rows(c * width, min(c * width + width, n_in), x, xp)
    return 0


@inline()
def _region_state(xp, row_bounds, group, n_workers):
    """What one call of a parallel tiled kernel holds: how many product items it has,
    its two work counters zeroed, and an output block (SM_BLOCK_ROWS, lanes) per share.
    The counters are not np.zeros: in a parallel kernel Numba makes that a parallel loop
    of its own, one more wake-up of the pool (20 us a call: TSC stamps in the kernel, at
    de37231)."""
    n_items = _tile_items(xp, row_bounds, group)
    counters = np.empty(2, np.int64)
    counters[0] = 0
    counters[1] = 0
    blocks = np.empty((n_workers, SM_BLOCK_ROWS, xp.shape[2]), xp.dtype)
    return n_items, counters, blocks


@inline()
def _tiles_worker(w, n_workers, counters, n_items, relu, out_sm, indptr, indices, data, table,
                  row_bounds, group, x_layout, x, xp, bias, blk, out):
    """Worker w of n_workers: packing items claimed from counters[0] (counters[1] counts
    the packed ones) until none is left, the wait for the others' claimed items, then
    its run of the n_items product items. Returns the packing's non-finite count."""
    n_pack, width = _pack_items(x_layout, x, xp)
    bad = 0
    c = fetch_add(counters, 0, int64(1))
    while c < n_pack:
        bad += _pack_item(c, x_layout, width, x, xp)
        fetch_add(counters, 1, int64(1))
        c = fetch_add(counters, 0, int64(1))
    while fetch_add(counters, 1, int64(0)) < n_pack:
        pass
    for k in range(w * n_items // n_workers, (w + 1) * n_items // n_workers):
        _tile_item(k, relu, out_sm, indptr, indices, data, table, row_bounds, group, xp, bias,
                   blk, out)
    return bad


@jit("int64(boolean, boolean, int32[::1], {I}[::1], {T}[::1], int32[::1], int64, int64, "
     "int64, {T}[:, ::1], {T}[:, :, ::1], {T}[::1], {T}[:, ::1])",
     fastmath=CONTRACT, parallel=True, I=INDEX_TYPES)
def csr_matmul_tiles_parallel(relu, out_sm, indptr, indices, data, row_bounds, group,
                              n_workers, x_layout, x, xp, bias, out):
    """out = A @ x (+ bias)(ReLU) through packed tiles xp (n_tiles, n_in, lanes), in
    parallel over the nnz-balanced row chunks of row_bounds and groups of ``group``
    tiles, packing x into xp first in the same region unless ``x_layout`` is PACKED
    (x is then any 2-d array). n_workers: how many shares to split the work into, the
    threads to run (any count is correct: a thread may run several shares in turn).
    ``out`` is (n_rows, batch), or (batch, n_rows) if ``out_sm``. xp.shape[2] *
    itemsize must be csr_tile_bytes(). Returns how many blocks of a sample-major x were
    not finite."""
    n_items, counters, blocks = _region_state(xp, row_bounds, group, n_workers)
    bad = 0
    for w in prange(n_workers):
        bad += _tiles_worker(w, n_workers, counters, n_items, relu, out_sm, indptr, indices,
                             data, None, row_bounds, group, x_layout, x, xp, bias, blocks[w],
                             out)
    return bad


@jit("int64(boolean, boolean, int32[::1], {I}[::1], uint8[::1], {T}[::1], int32[::1], int64, "
     "int64, int64, {T}[:, ::1], {T}[:, :, ::1], {T}[::1], {T}[:, ::1])", fastmath=CONTRACT,
     parallel=True, I=INDEX_TYPES)
def qcsr_matmul_tiles_parallel(relu, out_sm, indptr, indices, codes, table, row_bounds, group,
                               n_workers, x_layout, x, xp, bias, out):
    """csr_matmul_tiles_parallel of a quantized layer: value p is table[codes[p]]."""
    n_items, counters, blocks = _region_state(xp, row_bounds, group, n_workers)
    bad = 0
    for w in prange(n_workers):
        bad += _tiles_worker(w, n_workers, counters, n_items, relu, out_sm, indptr, indices,
                             codes, table, row_bounds, group, x_layout, x, xp, bias, blocks[w],
                             out)
    return bad


# The batch-1 kernels check x on the way, as packing does for batches: the public path
# after a dense NumPy product paid 16-18 us for np.isfinite(x).all() on 4,096 values
# with its caches cold.
@jit("int64(boolean, int32[::1], {I}[::1], {T}[::1], {T}[::1], {T}[::1], {T}[::1])",
     fastmath=CONTRACT, I=INDEX_TYPES)
def csr_matvec(relu, indptr, indices, data, x, bias, out):
    """out = A @ x (+ bias)(ReLU) for one sample x (n_cols,) (sample-major and
    feature-major are the same memory at batch 1), either index type. Returns how many
    values of x are not finite (out is garbage then)."""
    bad = count_non_finite(x)
    _matvec_rows(0, indptr.shape[0] - 1, relu, indptr, indices, data, x, bias, out)
    return bad


@jit("int64(boolean, int32[::1], {I}[::1], {T}[::1], int32[::1], {T}[::1], {T}[::1], "
     "{T}[::1])", fastmath=CONTRACT, parallel=True, I=INDEX_TYPES)
def csr_matvec_parallel(relu, indptr, indices, data, row_bounds, x, bias, out):
    """csr_matvec over the row chunks of row_bounds, in parallel."""
    bad = count_non_finite(x)
    for c in prange(row_bounds.shape[0] - 1):
        _matvec_rows(row_bounds[c], row_bounds[c + 1], relu, indptr, indices, data, x,
                     bias, out)
    return bad


@jit("void(boolean, int32[::1], {I}[::1], {T}[::1], {T}[:, ::1], {T}[::1], {T}[:, ::1])",
     fastmath=CONTRACT, I=INDEX_TYPES)
def csr_matmul(relu, indptr, indices, data, x, bias, out):
    """csr_matmul (feature-major x (n_cols, batch), batches below a tile) for either
    index type."""
    _matmul_rows(0, indptr.shape[0] - 1, relu, indptr, indices, data, None, x, bias, out)


@jit("void(boolean, int32[::1], {I}[::1], {T}[::1], int32[::1], {T}[:, ::1], {T}[::1], "
     "{T}[:, ::1])", fastmath=CONTRACT, parallel=True, I=INDEX_TYPES)
def csr_matmul_parallel(relu, indptr, indices, data, row_bounds, x, bias, out):
    """csr_matmul_parallel for either index type."""
    for c in prange(row_bounds.shape[0] - 1):
        _matmul_rows(row_bounds[c], row_bounds[c + 1], relu, indptr, indices, data, None, x,
                     bias, out)


@jit("void(boolean, int32[::1], {I}[::1], uint8[::1], {T}[::1], {T}[:, ::1], {T}[::1], "
     "{T}[:, ::1])", fastmath=CONTRACT, I=INDEX_TYPES)
def qcsr_matmul(relu, indptr, indices, codes, table, x, bias, out):
    """csr_matmul of a quantized layer: value p is table[codes[p]]."""
    _matmul_rows(0, indptr.shape[0] - 1, relu, indptr, indices, codes, table, x, bias, out)


@jit("void(boolean, int32[::1], {I}[::1], uint8[::1], {T}[::1], int32[::1], {T}[:, ::1], "
     "{T}[::1], {T}[:, ::1])", fastmath=CONTRACT, parallel=True, I=INDEX_TYPES)
def qcsr_matmul_parallel(relu, indptr, indices, codes, table, row_bounds, x, bias, out):
    """csr_matmul_parallel of a quantized layer: value p is table[codes[p]]."""
    for c in prange(row_bounds.shape[0] - 1):
        _matmul_rows(row_bounds[c], row_bounds[c + 1], relu, indptr, indices, codes, table,
                     x, bias, out)


# --------------------------------------------------------------------------- #
# The dense copy of a layer that runs a dense backend
# --------------------------------------------------------------------------- #
# A SparseLinear's dense copy is brought up to date with the values before each use, as
# ``data`` is the layer's own array and may be written in place. Values are compared as
# bit patterns, so the check is exact (a NaN rewritten is no change; -0.0 over 0.0 is
# one), SYNC_BLOCK at a time across row boundaries (an OR of XORs, which vectorizes; a
# store on the way would keep it scalar; blocks rather than rows, so that short rows
# still fill the vectors). Only a block that changed is walked value by value, and only
# changed values touch the dense matrix. Unchanged, 0.17-0.29 ns a value: 0.28 ms at
# 4096^2, 90%, 3 ms at 60% (10 million values), against 0.6-0.75 ns for NumPy's
# array_equal on the same arrays (at 18ec17c).
SYNC_BLOCK = 1024


@inline()
def _dense_sync_rows(r0, r1, indptr, indices, bits, seen, dense):
    """Rows r0..r1 of csr_dense_sync. Offsets are unsigned, so no wraparound code keeps
    the comparison from vectorizing (it ran 7x slower with it)."""
    none = bits.dtype.type(0)
    j = r0
    end = uint64(indptr[r1])
    q = uint64(indptr[r0])
    while q < end:
        q1 = min(q + uint64(SYNC_BLOCK), end)
        diff = none
        for p in range(q, q1):
            diff |= bits[p] ^ seen[p]
        if diff != none:
            for p in range(q, q1):
                while indptr[j + 1] <= p:
                    j += 1
                v = bits[p]
                if v != seen[p]:
                    dense[j, uint32(indices[p])] = v
                    seen[p] = v
        q = q1


@jit("void(int32[::1], {I}[::1], {B}[::1], {B}[::1], {B}[:, ::1])", fastmath=CONTRACT,
     I=INDEX_TYPES, B=("uint32", "uint64"))
def csr_dense_sync(indptr, indices, bits, seen, dense):
    """Bring ``dense`` (n_rows, n_cols), the CSR matrix as a dense array, up to date with
    its values: wherever ``bits[p]`` (nnz,), the value of nonzero p as an
    unsigned bit pattern, differs from ``seen[p]`` (its pattern when dense was last
    written), write it to both. Every argument in the values' unsigned type of their
    width (uint32 for float32, uint64 for float64)."""
    _dense_sync_rows(0, indptr.shape[0] - 1, indptr, indices, bits, seen, dense)


@jit("void(int32[::1], {I}[::1], int32[::1], {B}[::1], {B}[::1], {B}[:, ::1])",
     fastmath=CONTRACT, parallel=True, I=INDEX_TYPES, B=("uint32", "uint64"))
def csr_dense_sync_parallel(indptr, indices, row_bounds, bits, seen, dense):
    """csr_dense_sync over the row chunks of row_bounds, in parallel."""
    for c in prange(row_bounds.shape[0] - 1):
        _dense_sync_rows(row_bounds[c], row_bounds[c + 1], indptr, indices, bits, seen,
                         dense)
