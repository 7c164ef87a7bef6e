"""The tiled forward over column panels, for layers with many inputs, and the weight
gradient over the same panels (``csr_sddmm_panels``, at the end).

The tiled kernel (``csr.csr_matmul_tiles*``) reads, for every nonzero, one row of the
packed tile of X: 256 bytes from anywhere in ``n_in * 256`` bytes. From 2,048 inputs on
(512 KiB a tile) that no longer stays in a core's L2 next to the weights, and the
kernel waits on L3. Here the columns are cut into panels of ``width`` inputs (32 or 64
KiB of packed X each, see ``ops.panel_layout``), the rows into blocks, and a block runs
panel by panel: the X panel a block reads stays in L2, and each row's output tiles are
carried from panel to panel in a per-thread accumulator block.

The layout (``panel_fill``) keeps the layer's CSR as it is and adds, per block, panel
and row (a "virtual row" v, ordered so): ``vptr`` (the segment's bounds in the new
order), ``offsets`` (the column indices in that order, less their panel's first column:
a byte each for panels of up to 256 inputs; the kernel streams them) and ``vsrc``
(where the segment starts in the layer's own ``data``). The values are read in
place, never copied: a layer whose values change (training, a user writing them) needs
nothing refreshed.

Virtual row of (block b with rows r0..r1, panel k, row j) is
``r0 * n_panels + k * (r1 - r0) + (j - r0)``.
"""
from numba import get_thread_id, int64, prange

from ._jit import CONTRACT, inline, jit
from ._vec import (
    VEC_BYTES, dot_group, prefetch, row_dots, tile_load, tile_relu, tile_row_fma, tile_splat,
    tile_store, vec_transpose,
)
from .csr import INDEX_TYPES

__all__ = ["SDDMM_OFFSET_TYPES", "panel_blocks", "panel_fill", "csr_matmul_panels",
           "csr_sddmm_panels", "qcsr_matmul_panels"]

# Column offsets within a panel: a byte for panels of up to 256 inputs (the usual ones).
OFFSET_TYPES = ("uint8", "uint16", "int32")
# The weight gradient's panels: int32 offsets (panels wider than 65,536 inputs) take the
# row kernel instead, rather than two more signatures to compile.
SDDMM_OFFSET_TYPES = ("uint8", "uint16")
# Virtual rows ahead whose values are prefetched, on a panel's first tile: a segment's
# values sit one CSR row apart from the last one's, a stride the hardware prefetcher
# does not follow. 4096^2 at 90%, batch 256, model layout, one run: 9.7-10.0 ms with it
# (2 to 8 ahead alike), 10.6-10.9 without. Copying the values into panel order once
# would save 1 ms more, but a copy goes stale when the values change (training, a user
# writing them), and refreshing it every call (a gather) cost 2.2-3.1 ms.
_AHEAD = 8


@jit("int64(int32[::1], int64, int64, int32[::1])", fastmath=CONTRACT)
def panel_blocks(indptr, max_nnz, max_rows, bounds):
    """Cut the rows into blocks of at most ``max_nnz`` nonzeros (a row longer than that is
    a block of its own) and ``max_rows`` rows; bounds[0..n] receives their row bounds
    (bounds: (n_rows + 1,) at least). Returns the number of blocks n."""
    n_rows = indptr.shape[0] - 1
    n = 0
    bounds[0] = 0
    r0 = 0
    for j in range(n_rows):
        if j > r0 and (indptr[j + 1] - indptr[r0] > max_nnz or j - r0 >= max_rows):
            n += 1
            bounds[n] = j
            r0 = j
    if n_rows > 0:
        n += 1
        bounds[n] = n_rows
    return n


@jit("void(int32[::1], {I}[::1], int32[::1], int64, int64, int32[::1], int32[::1], "
     "int32[::1], {O}[::1])", fastmath=CONTRACT, I=INDEX_TYPES, O=OFFSET_TYPES)
def panel_fill(indptr, indices, blocks, n_panels, width, cursor, vptr, vsrc, offsets):
    """The panel layout of a CSR with sorted column indices: panel k holds columns
    k * width .. (k + 1) * width (the last one the rest, so n_panels * width must cover
    every column). Fills vptr (n_rows * n_panels + 1,), vsrc (n_rows * n_panels,) and
    offsets (nnz,), each column less its panel's first, as the module describes; cursor
    (n_rows,) is scratch."""
    v = 0
    vptr[0] = 0
    for b in range(blocks.shape[0] - 1):
        r0 = blocks[b]
        r1 = blocks[b + 1]
        for j in range(r0, r1):
            cursor[j] = indptr[j]
        for k in range(n_panels):
            lo = int64(k) * width
            hi = lo + width if k + 1 < n_panels else int64(1) << 62
            for j in range(r0, r1):
                s = cursor[j]
                e = s
                end = indptr[j + 1]
                q = vptr[v]
                while e < end and indices[e] < hi:
                    offsets[q] = indices[e] - lo
                    q += 1
                    e += 1
                vsrc[v] = s
                vptr[v + 1] = q
                cursor[j] = e
                v += 1


@inline()
def _store_sm(acc, a_off, n, m, b0, r0, out):
    """out[b0 + l, r0 + i] = acc[a_off + i * lanes + l] for rows i < n and lanes l < m: a
    block of finished tiles (n rows of lanes) written into out's columns, by square
    register transposes, the rest value by value."""
    lanes = acc.shape[3]
    n_rows = out.shape[1]
    square = VEC_BYTES // acc.itemsize
    ni = n - n % square
    ml = m - m % square
    flat = acc.reshape(-1)
    for i0 in range(0, ni, square):
        for l0 in range(0, ml, square):
            vec_transpose(flat, a_off + int64(i0) * lanes + l0, lanes, out,
                          int64(b0 + l0) * n_rows + r0 + i0, n_rows)
    for i in range(n):
        lo = ml if i < ni else 0
        for l in range(lo, m):
            out[b0 + l, r0 + i] = flat[a_off + int64(i) * lanes + l]


@inline()
def _panel_item(k, relu, out_sm, blocks, vptr, vsrc, offsets, values, table, n_panels,
                width, group, xp, bias, acc, out):
    """Work item k: tiles g * group .. (g + 1) * group over block b (g, b = divmod(k,
    n_blocks)), panel by panel, carrying each row's output tiles in this thread's
    accumulator block acc[thread] (group, max_rows, lanes)."""
    n_blocks = blocks.shape[0] - 1
    n_tiles = xp.shape[0]
    n_in = xp.shape[1]
    lanes = xp.shape[2]
    batch = out.shape[0] if out_sm else out.shape[1]
    max_rows = acc.shape[2]
    has_bias = bias.shape[0] != 0
    zero = xp.dtype.type(0)
    g = k // n_blocks
    b = k - g * n_blocks
    t0 = g * group
    t1 = min(t0 + group, n_tiles)
    r0 = blocks[b]
    r1 = blocks[b + 1]
    nr = r1 - r0
    n_virtual = vsrc.shape[0]
    step = 64 // values.itemsize
    slot = int64(get_thread_id()) * acc.shape[1]
    flat = acc.reshape(-1)
    for kk in range(n_panels):
        last = kk == n_panels - 1
        for t in range(t0, t1):
            base = (int64(t) * n_in + int64(kk) * width) * lanes
            a_base = (slot + (t - t0)) * max_rows * lanes
            b0 = t * lanes
            m = min(lanes, batch - b0)
            for j in range(r0, r1):
                v = int64(r0) * n_panels + kk * nr + (j - r0)
                if t == t0:
                    va = min(v + _AHEAD, n_virtual - 1)
                    q = vsrc[va]
                    e = q + (vptr[va + 1] - vptr[va])
                    while q < e:
                        prefetch(values, q)
                        q += step
                o = a_base + int64(j - r0) * lanes
                if kk == 0:
                    a = tile_splat(bias[j] if has_bias else zero)
                else:
                    a = tile_load(flat, o)
                a = tile_row_fma(a, offsets, values, table, xp, base, vptr[v], vptr[v + 1],
                                 int64(vsrc[v]) - vptr[v])
                if last and relu:
                    a = tile_relu(a)
                if last and not out_sm and m == lanes:
                    tile_store(out, int64(j) * batch + b0, a)
                else:
                    tile_store(flat, o, a)
            if last:
                if out_sm:
                    _store_sm(acc, a_base, nr, m, b0, r0, out)
                elif m < lanes:
                    for j in range(r0, r1):
                        o = a_base + int64(j - r0) * lanes
                        for l in range(m):
                            out[j, b0 + l] = flat[o + l]


@jit("void(boolean, boolean, int32[::1], int32[::1], int32[::1], {O}[::1], {T}[::1], int64, "
     "int64, int64, {T}[:, :, ::1], {T}[::1], {T}[:, :, :, ::1], {T}[:, ::1])",
     fastmath=CONTRACT, parallel=True, O=OFFSET_TYPES)
def csr_matmul_panels(relu, out_sm, blocks, vptr, vsrc, offsets, data, n_panels, width, group,
                      xp, bias, acc, out):
    """out = A @ x (+ bias)(ReLU) from packed tiles xp (csr.csr_pack_tiles*), over the
    panel layout of A (panel_fill, panels of ``width`` columns), in parallel over (group
    of ``group`` tiles, block) work items. ``out`` is (n_rows, batch), or (batch, n_rows)
    if ``out_sm``; acc is scratch (n_threads, group, max rows of a block, lanes),
    n_threads at least Numba's thread count."""
    for k in prange((xp.shape[0] + group - 1) // group * (blocks.shape[0] - 1)):
        _panel_item(k, relu, out_sm, blocks, vptr, vsrc, offsets, data, None, n_panels,
                    width, group, xp, bias, acc, out)


@jit("void(boolean, boolean, int32[::1], int32[::1], int32[::1], {O}[::1], uint8[::1], "
     "{T}[::1], int64, int64, int64, {T}[:, :, ::1], {T}[::1], {T}[:, :, :, ::1], "
     "{T}[:, ::1])", fastmath=CONTRACT, parallel=True, O=OFFSET_TYPES)
def qcsr_matmul_panels(relu, out_sm, blocks, vptr, vsrc, offsets, codes, table, n_panels,
                       width, group, xp, bias, acc, out):
    """csr_matmul_panels of a quantized layer: value p is table[codes[p]]."""
    for k in prange((xp.shape[0] + group - 1) // group * (blocks.shape[0] - 1)):
        _panel_item(k, relu, out_sm, blocks, vptr, vsrc, offsets, codes, table, n_panels,
                    width, group, xp, bias, acc, out)


@jit("void(int32[::1], int32[::1], int32[::1], {O}[::1], int64, int64, int64, int64, "
     "{T}[::1], int64, int64, {T}[::1], int64, int64, {T}[::1])", fastmath=CONTRACT,
     parallel=True, O=SDDMM_OFFSET_TYPES)
def csr_sddmm_panels(blocks, vptr, vsrc, offsets, n_panels, width, n_tiles, group, dy,
                     dy_row, dy_tile, x, x_row, x_tile, grad_data):
    """The sampled weight gradient (``csr.csr_sddmm_tiles``, whose arguments from ``n_tiles``
    on these are) over the panel layout of the pattern, in parallel over its row blocks:
    a block runs panel by panel, so the rows of X^T it reads are one panel's (``width``
    rows of ``group`` tiles each, 256 KiB at 256 inputs and 4 float32 tiles), kept in
    L2. Each segment's gradients land at its place in ``grad_data`` (``vsrc``)."""
    for b in prange(blocks.shape[0] - 1):
        r0 = blocks[b]
        r1 = blocks[b + 1]
        t = int64(0)
        while t < n_tiles:
            g = dot_group(group, n_tiles - t)
            for k in range(n_panels):
                x_off = int64(k) * width * x_row + t * x_tile
                v0 = int64(r0) * n_panels + int64(k) * (r1 - r0) - r0
                for j in range(r0, r1):
                    p0 = vptr[v0 + j]
                    p1 = vptr[v0 + j + 1]
                    if p0 < p1:
                        row_dots(g, dy, j * dy_row + t * dy_tile, dy_tile, offsets, x, x_off,
                                 x_tile, x_row, p0, p1, int64(vsrc[v0 + j]) - p0, grad_data,
                                 t > 0)
            t += g
