"""Register tiles for Numba kernels: explicit LLVM vector values.

A ``Tile`` is an LLVM ``<lanes x float>`` (or ``double``) value. Numba keeps it in an
SSA register like any scalar, and LLVM splits it into the target's native vectors
(four zmm registers on AVX-512; four ymm on AVX2, where tiles are 128 bytes), so a
tile of output lanes stays in registers across a whole CSR row, which Numba cannot be
made to do with a scratch array (it cannot prove the scratch does not alias the inputs).

Everything is generic LLVM IR: no target intrinsics, so it lowers on any CPU.
The tile width is chosen at import from the host CPU, ``TILE_BYTES`` bytes, and
compiled into the kernels as a constant. A kernel loaded from a cache filled on
another CPU keeps the width it was compiled with, so callers pack for the width the
compiled code reports (``csr.csr_tile_bytes``), never for this module's.

The intrinsics take an array and a *flat element offset* into its buffer, and do no
bounds checks: kernels trust their inputs. Three helpers built on them serve kernels of
more than one module: ``transpose_rows`` (tile packing in ``csr``, ``transpose_fm`` in
``layout``), ``count_non_finite`` (the batch-1 kernels of ``csr`` and ``quantized``) and
``row_dots`` (the sampled weight gradient of ``csr`` and ``panels``).

Numba's on-disk cache keys a kernel on its own module's source, not on this one: after
editing this file, delete the ``__pycache__`` of ``kernels/`` (as for ``_jit.py``).
"""
from llvmlite import binding as llvm
from llvmlite import ir
from numba import int64
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from ._jit import inline


def _tile_bytes():
    # 256 B is four zmm registers: two such accumulators (eight zmm) keep two FMA
    # chains in flight. With 16 vector registers (AVX2 and older) 128 B avoids spills.
    try:
        feats = llvm.get_host_cpu_features()
        return 256 if feats.get("avx512f", False) else 128
    except Exception:  # pragma: no cover - exotic hosts
        return 128


TILE_BYTES = _tile_bytes()


class TileType(types.Type):
    """A register tile of ``lanes`` values of ``dtype``."""

    def __init__(self, dtype, lanes):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"Tile({dtype} x {lanes})")


@register_model(TileType)
class _TileModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elt = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elt, fe_type.lanes))


def _tile_type(dtype):
    return TileType(dtype, TILE_BYTES // (dtype.bitwidth // 8))


_I32 = ir.IntType(32)
# Lets LLVM fuse a multiply and an add into an FMA (as fastmath "contract" does).
_CONTRACT = ("contract",)


def _data_ptr(context, builder, arrty, arr):
    """The pointer to the first element of the array ``arr`` (of Numba type arrty)."""
    return cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data


def _elem_ptr(context, builder, arrty, arr, offty, off):
    return builder.gep(_data_ptr(context, builder, arrty, arr),
                       [context.cast(builder, off, offty, types.intp)])


def _blocks(builder, prefix, names):
    """New basic blocks named ``prefix.name`` for each of the space-separated ``names``."""
    return [builder.append_basic_block(f"{prefix}.{name}") for name in names.split()]


def _loop(builder, start, stop, step, emit):
    """Emit ``for p in range(start, stop, step): emit(p)`` (int64 p; ``stop - start`` a
    multiple of ``step``); returns p's value once the loop is done."""
    entry = builder.block
    head, body, done = _blocks(builder, "loop", "head body done")
    builder.branch(head)
    builder.position_at_end(head)
    p = builder.phi(start.type)
    p.add_incoming(start, entry)
    builder.cbranch(builder.icmp_signed("<", p, stop), body, done)
    builder.position_at_end(body)
    emit(p)
    p.add_incoming(builder.add(p, ir.Constant(start.type, step)), builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return p


def _splat(builder, vty, scalar):
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, scalar, _I32(0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, vty.count),
                                                        [0] * vty.count))


@intrinsic
def tile_load(typingctx, arr, off):
    """The tile at arr's flat element offset ``off`` (unaligned load)."""
    if not isinstance(arr, types.Array) or not isinstance(off, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        vty = context.get_value_type(sig.return_type)
        return builder.load(builder.bitcast(p, vty.as_pointer()),
                            align=arr.dtype.bitwidth // 8)

    return _tile_type(arr.dtype)(arr, off), codegen


@intrinsic
def tile_store(typingctx, arr, off, tile):
    """Store ``tile`` at arr's flat element offset ``off`` (unaligned store)."""
    if not isinstance(tile, TileType) or tile.dtype != arr.dtype:
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        vty = context.get_value_type(sig.args[2])
        builder.store(args[2], builder.bitcast(p, vty.as_pointer()),
                      align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.void(arr, off, tile), codegen


@intrinsic
def tile_splat(typingctx, s):
    """A tile with every lane equal to the float ``s``."""
    if not isinstance(s, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.get_value_type(sig.return_type), args[0])

    return _tile_type(s)(s), codegen


@intrinsic
def tile_add(typingctx, a, b):
    """Lane-wise a + b."""
    if not isinstance(a, TileType) or a != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def tile_relu(typingctx, a):
    """Lane-wise max(a, 0) as Python's max(a, 0) does it: NaN stays NaN."""
    if not isinstance(a, TileType):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(context.get_value_type(sig.args[0]), None)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])

    return a(a), codegen


@intrinsic
def tile_lane(typingctx, a, i):
    """Lane ``i`` of the tile, as a scalar (for partial stores)."""
    if not isinstance(a, TileType) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0],
                                       context.cast(builder, args[1], sig.args[1], types.int32))

    return a.dtype(a, i), codegen


@intrinsic
def tile_row_fma(typingctx, acc, indices, values, table, xp, x_off, p0, p1, shift):
    """acc + the sum over p0 <= p < p1 of value(p + shift) * (the tile of xp at flat offset
    ``x_off + indices[p] * lanes``): one CSR row segment against packed tiles, as one
    loop. value(q) is ``values[q]``, or ``table[values[q]]`` with a table (uint8 codes).
    ``indices`` non-negative integers (read as unsigned).

    Written as LLVM IR rather than a Numba loop: Numba's version of this loop spent 30
    instructions a nonzero on wraparound checks, 64-bit index products and reloads of
    spilled values, where this one is the index load, the value broadcast, a shift and
    the tile's FMAs (with X in L1, 1.7 against 3.2 ns a nonzero and 64-lane tile,
    serial). Two accumulators, even and odd nonzeros, keep two FMA chains in flight."""
    if (not isinstance(acc, TileType) or not isinstance(indices, types.Array)
            or not isinstance(values, types.Array) or not isinstance(xp, types.Array)
            or xp.dtype != acc.dtype):
        return None
    has_table = not isinstance(table, (types.NoneType, types.Omitted))

    def codegen(context, builder, sig, args):
        acc0, ia, va, ta, xa, xo, q0, q1, sh = args
        vty = acc0.type
        i64 = ir.IntType(64)
        ip = _data_ptr(context, builder, sig.args[1], ia)
        vp = _data_ptr(context, builder, sig.args[2], va)
        tp = _data_ptr(context, builder, sig.args[3], ta) if has_table else None
        xb = builder.gep(_data_ptr(context, builder, sig.args[4], xa),
                         [context.cast(builder, xo, sig.args[5], types.int64)])
        q0, q1, sh = (context.cast(builder, v, t, types.int64)
                      for v, t in zip((q0, q1, sh), sig.args[6:9]))
        q2 = builder.sub(q1, builder.and_(builder.sub(q1, q0), ir.Constant(i64, 1)))

        def term(p):
            i = builder.zext(builder.load(builder.gep(ip, [p])), i64)
            v = builder.load(builder.gep(vp, [builder.add(p, sh)]))
            if has_table:
                v = builder.load(builder.gep(tp, [builder.zext(v, i64)]))
            row = builder.gep(xb, [builder.mul(i, ir.Constant(i64, vty.count))])
            x = builder.load(builder.bitcast(row, vty.as_pointer()), align=xp.dtype.bitwidth // 8)
            return builder.fmul(_splat(builder, vty, v), x, flags=_CONTRACT)

        entry = builder.block
        head, body, tail, odd, done = _blocks(builder, "row", "head body tail odd done")
        builder.branch(head)
        builder.position_at_end(head)
        p = builder.phi(i64)
        a0 = builder.phi(vty)
        a1 = builder.phi(vty)
        p.add_incoming(q0, entry)
        a0.add_incoming(acc0, entry)
        a1.add_incoming(ir.Constant(vty, None), entry)
        builder.cbranch(builder.icmp_signed("<", p, q2), body, tail)
        builder.position_at_end(body)
        n0 = builder.fadd(a0, term(p), flags=_CONTRACT)
        n1 = builder.fadd(a1, term(builder.add(p, ir.Constant(i64, 1))), flags=_CONTRACT)
        p.add_incoming(builder.add(p, ir.Constant(i64, 2)), body)
        a0.add_incoming(n0, body)
        a1.add_incoming(n1, body)
        builder.branch(head)
        builder.position_at_end(tail)
        builder.cbranch(builder.icmp_signed("<", p, q1), odd, done)
        builder.position_at_end(odd)
        last = builder.fadd(a0, term(p), flags=_CONTRACT)
        builder.branch(done)
        builder.position_at_end(done)
        total = builder.phi(vty)
        total.add_incoming(a0, tail)
        total.add_incoming(last, odd)
        return builder.fadd(total, a1)

    return acc(acc, indices, values, table, xp, x_off, p0, p1, shift), codegen


def _shuffle(builder, a, b, lanes):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(lanes)),
                                                    list(lanes)))


def _halve(builder, v, m):
    """The vector ``v`` summed down to ``m`` lanes, its halves added in turn."""
    n = v.type.count
    while n > m:
        h = n // 2
        v = builder.fadd(_shuffle(builder, v, v, range(h)), _shuffle(builder, v, v, range(h, n)),
                         flags=_CONTRACT)
        n = h
    return v


def _quad_sums(builder, r, m):
    """Four vectors of ``m`` lanes (m a multiple of 4) summed each: a quad of the four
    sums. Pairs of vectors are folded into one (half of each), then the pair of pairs
    (a quarter of each), then each quarter within itself: 2 + 1 + log2(m / 4) adds for
    the four, where four separate sums take 4 log2(m)."""
    h, q = m // 2, m // 4
    low = [*range(h), *range(m, m + h)]
    high = [*range(h, m), *range(m + h, 2 * m)]
    a, b = (builder.fadd(_shuffle(builder, u, v, low), _shuffle(builder, u, v, high),
                         flags=_CONTRACT) for u, v in ((r[0], r[1]), (r[2], r[3])))
    low = [*range(q), *range(h, h + q), *range(m, m + q), *range(m + h, m + h + q)]
    c = builder.fadd(_shuffle(builder, a, b, low), _shuffle(builder, a, b, [i + q for i in low]),
                     flags=_CONTRACT)
    width = q
    while width > 1:
        s = width // 2
        c = builder.fadd(c, _shuffle(builder, c, c, [i + s if i % q < s else i
                                                     for i in range(m)]), flags=_CONTRACT)
        width = s
    return _shuffle(builder, c, c, [0, q, 2 * q, 3 * q])


def _row_dots(group):
    """The intrinsic ``tile_row_dots{group}`` (see its docstring)."""

    @intrinsic
    def row_dots(typingctx, g, g_off, g_step, indices, x, x_off, x_step, x_row, p0, p1, shift,
                 out, accumulate):
        if (not isinstance(g, types.Array) or not isinstance(x, types.Array)
                or not isinstance(out, types.Array) or not isinstance(indices, types.Array)
                or g.dtype != x.dtype or out.dtype != x.dtype):
            return None
        tile = _tile_type(x.dtype)

        def codegen(context, builder, sig, args):
            ga, go, gs, ia, xa, xo, xs, xr, q0, q1, sh, oa, acc = args
            vty = context.get_value_type(tile)
            m = vty.count // 4
            i64 = ir.IntType(64)
            go, gs, xo, xs, xr, q0, q1, sh = (
                context.cast(builder, v, t, types.int64)
                for v, t in zip((go, gs, xo, xs, xr, q0, q1, sh),
                                (sig.args[1], sig.args[2], sig.args[5], sig.args[6],
                                 sig.args[7], sig.args[8], sig.args[9], sig.args[10])))
            align = x.dtype.bitwidth // 8

            def load(base, off):
                return builder.load(builder.bitcast(builder.gep(base, [off]), vty.as_pointer()),
                                    align=align)

            gp = _data_ptr(context, builder, sig.args[0], ga)
            g_tiles = [load(gp, builder.add(go, builder.mul(gs, ir.Constant(i64, k))))
                   for k in range(group)]
            ip = _data_ptr(context, builder, sig.args[3], ia)
            xb = builder.gep(_data_ptr(context, builder, sig.args[4], xa), [xo])
            op = builder.gep(_data_ptr(context, builder, sig.args[11], oa), [sh])
            q4 = builder.sub(q1, builder.and_(builder.sub(q1, q0), ir.Constant(i64, 3)))

            def partial(p):
                i = builder.zext(builder.load(builder.gep(ip, [p])), i64)
                row = builder.mul(i, xr)
                total = None
                for k in range(group):
                    off = builder.add(row, builder.mul(xs, ir.Constant(i64, k)))
                    term = builder.fmul(g_tiles[k], load(xb, off), flags=_CONTRACT)
                    total = term if total is None else builder.fadd(total, term,
                                                                    flags=_CONTRACT)
                return _halve(builder, total, m)

            def put(ptr, value):
                ptr = builder.bitcast(ptr, value.type.as_pointer())
                before = builder.load(ptr, align=align)
                builder.store(builder.select(acc, builder.fadd(before, value), value), ptr,
                              align=align)

            def quad(p):
                put(builder.gep(op, [p]), _quad_sums(
                    builder, [partial(builder.add(p, ir.Constant(i64, k))) for k in range(4)], m))

            def single(p):
                put(builder.gep(op, [p]), _halve(builder, partial(p), 1))

            _loop(builder, _loop(builder, q0, q4, 4, quad), q1, 1, single)
            return context.get_dummy_value()

        return types.void(g, g_off, g_step, indices, x, x_off, x_step, x_row, p0, p1, shift,
                          out, accumulate), codegen

    row_dots.__doc__ = f"""out[p + shift] = (out[p + shift] if accumulate else 0) + the dot
    product of {group} tile(s) of ``g`` with {group} tile(s) of ``x``, for each
    p0 <= p < p1: one CSR row segment of the sampled weight gradient.

    Tile k of g is at g's flat offset ``g_off + k * g_step``; tile k of nonzero p's x row
    at ``x_off + indices[p] * x_row + k * x_step`` (``indices`` non-negative integers,
    read as unsigned). The g tiles stay in registers ({group} x 4 vectors); each
    nonzero's products are summed down to one vector, and four nonzeros' vectors are
    summed together (``_quad_sums``) into a quad stored at once. The order of the sums
    is fixed: the result does not depend on how the rows are shared among threads."""
    return row_dots


#: The sampled weight gradient's dot products over 1, 2 or 4 tiles of lanes at once.
tile_row_dots1, tile_row_dots2, tile_row_dots4 = (_row_dots(g) for g in (1, 2, 4))


@inline()
def row_dots(group, g, g_off, g_step, indices, x, x_off, x_step, x_row, p0, p1, shift, out,
             accumulate):
    """``tile_row_dots{group}`` for ``group`` 1, 2 or 4."""
    if group == 4:
        tile_row_dots4(g, g_off, g_step, indices, x, x_off, x_step, x_row, p0, p1, shift, out,
                       accumulate)
    elif group == 2:
        tile_row_dots2(g, g_off, g_step, indices, x, x_off, x_step, x_row, p0, p1, shift, out,
                       accumulate)
    else:
        tile_row_dots1(g, g_off, g_step, indices, x, x_off, x_step, x_row, p0, p1, shift, out,
                       accumulate)


@inline()
def dot_group(group, n_tiles):
    """The tiles ``row_dots`` takes next, with ``n_tiles`` left: 4, 2 or 1, at most
    ``group``."""
    if group >= 4 and n_tiles >= 4:
        return 4
    if group >= 2 and n_tiles >= 2:
        return 2
    return 1


@intrinsic
def prefetch(typingctx, arr, off):
    """Hint a read of arr's element at flat offset ``off`` into all cache levels."""
    if not isinstance(arr, types.Array) or not isinstance(off, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # (address, rw=read, locality=3 (keep in all levels), cache type=data)
        builder.call(fn, [builder.bitcast(p, i8p), _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()

    return types.void(arr, off), codegen


@intrinsic
def fetch_add(typingctx, arr, off, val):
    """Atomically add ``val`` to the int64 ``arr[off]`` and return its value before: an
    LLVM ``atomicrmw add``, sequentially consistent (Numba has no atomics built in).
    Adding 0 is an atomic read, which LLVM does not hoist out of a waiting loop."""
    if (not isinstance(arr, types.Array) or arr.dtype != types.int64
            or not isinstance(off, types.Integer) or val != types.int64):
        return None

    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.atomic_rmw("add", p, args[2], "seq_cst")

    return types.int64(arr, off, val), codegen


# --------------------------------------------------------------------------- #
# Short vectors: VEC_BYTES (one zmm register on AVX-512; LLVM splits it elsewhere) for
# ``vec_transpose``, and quads of four values for the batch-1 product, whose x values
# are loaded one by one into a quad (``quad_gather``): four scalar loads and inserts,
# which on this machine (AMD EPYC, AVX-512) beat both scalar FMAs and a hardware gather
# (see csr._matvec_rows).
# --------------------------------------------------------------------------- #
VEC_BYTES = 64
#: Lanes of a quad.
QUAD = 4


def _vec_type(dtype):
    return TileType(dtype, VEC_BYTES // (dtype.bitwidth // 8))


def _zeros(lanes, what):
    """An intrinsic ``zeros(like)``: a vector of ``lanes(dtype)`` zeros of the array
    ``like``'s dtype."""

    @intrinsic
    def zeros(typingctx, like):
        if not isinstance(like, types.Array):
            return None

        def codegen(context, builder, sig, args):
            return ir.Constant(context.get_value_type(sig.return_type), None)

        return TileType(like.dtype, lanes(like.dtype))(like), codegen

    zeros.__doc__ = f"{what} of zeros of the array ``like``'s dtype."
    return zeros


vec_zero = _zeros(lambda dtype: _vec_type(dtype).lanes, "A VEC_BYTES vector")
quad_zero = _zeros(lambda dtype: QUAD, "A quad")


@intrinsic
def quad_load(typingctx, arr, off):
    """arr's four elements from flat offset ``off`` as a quad (unaligned load)."""
    if not isinstance(arr, types.Array) or not isinstance(off, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.return_type)
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(builder.bitcast(p, vty.as_pointer()), align=arr.dtype.bitwidth // 8)

    return TileType(arr.dtype, QUAD)(arr, off), codegen


@intrinsic
def quad_gather(typingctx, x, idx, off):
    """The quad x[idx[off]], ..., x[idx[off + 3]]: four scalar loads inserted into one
    vector. ``idx`` holds non-negative integers (read as unsigned: no wraparound)."""
    if (not isinstance(x, types.Array) or not isinstance(idx, types.Array)
            or not isinstance(idx.dtype, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.return_type)
        ity = context.get_value_type(sig.args[1].dtype)
        ip = _elem_ptr(context, builder, sig.args[1], args[1], sig.args[2], args[2])
        iv = builder.load(builder.bitcast(ip, ir.VectorType(ity, QUAD).as_pointer()),
                          align=ity.width // 8)
        base = _data_ptr(context, builder, sig.args[0], args[0])
        quad = ir.Constant(vty, ir.Undefined)
        for k in range(QUAD):
            i = builder.extract_element(iv, _I32(k))
            if ity.width < 64:
                i = builder.zext(i, ir.IntType(64))
            quad = builder.insert_element(quad, builder.load(builder.gep(base, [i])), _I32(k))
        return quad

    return TileType(x.dtype, QUAD)(x, idx, off), codegen


@intrinsic
def vec_fma(typingctx, acc, a, b):
    """acc + a * b lane-wise (an FMA where the target has one)."""
    if not isinstance(acc, TileType) or acc != a or acc != b:
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], builder.fmul(args[1], args[2], flags=_CONTRACT),
                            flags=_CONTRACT)

    return acc(acc, a, b), codegen


@intrinsic
def vec_sum(typingctx, a):
    """The sum of the lanes, as a scalar: halves added pairwise (a fixed order)."""
    if not isinstance(a, TileType):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        count = sig.args[0].lanes
        while count > 1:
            half = count // 2
            lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, half),
                                                          list(range(half))))
            hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, half),
                                                          list(range(half, count))))
            v = builder.fadd(lo, hi)
            count = half
        return builder.extract_element(v, _I32(0))

    return a.dtype(a), codegen


@intrinsic
def vec_transpose(typingctx, x, x_off, x_stride, out, out_off, out_stride):
    """Transpose a square block of as many rows as a vector has lanes (16 float32, 8
    float64): rows r of x at flat offsets x_off + r * x_stride become rows of out at
    out_off + c * out_stride, out[c][r] = x[r][c]. Returns the block's ``0 * x`` summed
    over its rows: a vector of zeros, NaN in the lanes of a column holding an inf or a
    NaN (the finiteness check, for the loads it already made).

    In registers: each of log2(lanes) rounds swaps one bit of the row number with the
    same bit of the column number, pairing rows that differ in that bit through one
    two-input shuffle each, so the block is read and written a whole vector at a time."""
    if (not isinstance(x, types.Array) or not isinstance(out, types.Array)
            or x.dtype != out.dtype):
        return None
    vtype = _vec_type(x.dtype)

    def codegen(context, builder, sig, args):
        xa, xo, xs, oa, oo, os_ = args
        vty = context.get_value_type(vtype)
        count = vty.count
        align = x.dtype.bitwidth // 8

        def pointer(arrty, arr, offty, off, strty, stride, r):
            idx = builder.add(context.cast(builder, off, offty, types.intp),
                              builder.mul(context.cast(builder, stride, strty, types.intp),
                                          ir.Constant(ir.IntType(64), r)))
            p = _elem_ptr(context, builder, arrty, arr, types.intp, idx)
            return builder.bitcast(p, vty.as_pointer())

        rows = [builder.load(pointer(sig.args[0], xa, sig.args[1], xo, sig.args[2], xs, r),
                             align=align) for r in range(count)]
        zero = ir.Constant(vty, None)
        check = zero
        for v in rows:
            check = builder.fadd(check, builder.fmul(v, zero))
        bit = 1
        while bit < count:
            low = ir.Constant(ir.VectorType(_I32, count),
                              [c if c & bit == 0 else count + c - bit for c in range(count)])
            high = ir.Constant(ir.VectorType(_I32, count),
                               [c + bit if c & bit == 0 else count + c for c in range(count)])
            for r in range(count):
                if r & bit == 0:
                    a, b = rows[r], rows[r + bit]
                    rows[r] = builder.shuffle_vector(a, b, low)
                    rows[r + bit] = builder.shuffle_vector(a, b, high)
            bit *= 2
        for c in range(count):
            builder.store(rows[c], pointer(sig.args[3], oa, sig.args[4], oo, sig.args[5], os_, c),
                          align=align)
        return check

    return vtype(x, x_off, x_stride, out, out_off, out_stride), codegen


@intrinsic
def quad_codes(typingctx, codes, off, zero):
    """The quad codes[off:off + 4] - zero, codes uint8 converted to the float ``zero``'s
    type (a quantized layer's codes, offset by the code of the value nearest 0)."""
    if (not isinstance(codes, types.Array) or codes.dtype != types.uint8
            or not isinstance(zero, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(sig.return_type)
        p = _elem_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        raw = builder.load(builder.bitcast(p, ir.VectorType(ir.IntType(8), QUAD).as_pointer()),
                           align=1)
        return builder.fsub(builder.uitofp(raw, vty), _splat(builder, vty, args[2]))

    return TileType(zero, QUAD)(codes, off, zero), codegen


@inline()
def count_non_finite(x):
    """How many values of x (n,) are inf or NaN (v - v is NaN for them, 0 otherwise): the
    batch-1 kernels (float and quantized) check their one sample with it on the way."""
    zero = x.dtype.type(0)
    bad = 0
    for i in range(x.shape[0]):
        v = x[i]
        bad += (v - v) != zero
    return bad


@inline()
def transpose_rows(x, first, n, i0, i1, out):
    """out[i, k] = x[first + k, i] for samples k < n and features i0 <= i < i1, x
    (samples, features) and out (features, at least n) C-contiguous: by square blocks
    transposed in registers (``vec_transpose``), the features and samples past the last
    whole block value by value. Returns how many of the copied values are inf or NaN (a
    block holding any counts once). Inference's feature-major copy of X and the tiled
    kernel's packing of it (a tile is the transpose of ``lanes`` samples) share it."""
    n_features = x.shape[1]
    width = out.shape[1]
    square = VEC_BYTES // x.itemsize
    zero = x.dtype.type(0)
    n_blocks = n - n % square
    i_blocks = i1 - (i1 - i0) % square
    check = vec_zero(x)
    for k0 in range(0, n_blocks, square):
        for c0 in range(i0, i_blocks, square):
            check = tile_add(check, vec_transpose(
                x, int64(first + k0) * n_features + c0, n_features, out,
                int64(c0) * width + k0, width))
    bad = 0 if vec_sum(check) == zero else 1
    for k in range(n_blocks):
        for i in range(i_blocks, i1):
            v = x[first + k, i]
            bad += (v - v) != zero
            out[i, k] = v
    for k in range(n_blocks, n):
        for i in range(i0, i1):
            v = x[first + k, i]
            bad += (v - v) != zero
            out[i, k] = v
    return bad
