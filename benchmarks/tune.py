"""The measurements behind the kernels' tuning constants, to re-run on another machine.

    python benchmarks/tune.py panels --shape 4096 4096 --sparsity 0.9 --batch 256 \\
        --widths 0 128 256 512 --block-nnz auto 65536
    python benchmarks/tune.py pack --shape 4096 4096 --batch 64
    python benchmarks/tune.py sddmm --shape 2048 2048 --batch 256
    python benchmarks/tune.py layout --shape 2048 2048

Each subcommand checks every setting it compares against NumPy, then times them in
turn, call by call, ``--rounds`` times (after a few untimed rounds), and prints each
one's median and quartiles and its time over the first setting's, taken per round
(the settings of a round share the state of a noisy host):

- ``panels``: ``SparseLinear.forward(X)``'s path (``ops.csr_forward_sm``; ``--layout
  fm``: ``ops.csr_forward`` on feature-major x) over column panels of each width (0: no
  panels, the tiled kernel; ``auto``: ``ops.panel_layout``'s choice, from
  ``PANEL_BYTES``, ``PANEL_MIN_NNZ``, ``PANELS_FROM_BYTES`` and ``PANELS_FROM_INPUTS``)
  and row blocks of each size (``auto``: ``PANEL_BLOCK_NNZ``, balanced; a number:
  blocks cut in order). Each width runs its layout whatever the batch: the forward's
  own rule (``PANELS_FROM_BATCH_BYTES``) is what this measures.
- ``pack``: the same path with X packed on one thread or on all
  (``PACK_PARALLEL_BYTES``; it applies where X is packed before the kernel: layers with
  panels and serial products).
- ``sddmm``: the sampled weight gradient (``ops.csr_weight_grad``) over the forward's
  panels, by rows of tiles (``SDDMM_ROW_BYTES``), and untiled (``csr_sddmm_parallel``).
- ``layout``: a masked layer's kept values between its dense weight and CSR order
  (``ops.csr_values_from_dense`` / ``csr_values_into_dense``, what a sparse fit does at
  its start and end) against NumPy's fancy indexing.

The forward settings each come right after an untimed dense product ``X @ W + b``, as
in a program that also runs NumPy linear algebra (``--quiet``: without it).
"""

import sparseprune as spp  # noqa: F401, I001 - before NumPy (see paired.py)

import argparse
import itertools
import time

import numpy as np
from paired import add_case_arguments, feature_major, layer_case

from sparseprune import ops
from sparseprune.kernels import csr

WARMUP = 3


def alternate(settings, rounds, before=None):
    """Seconds (rounds,) of each of ``settings`` (name -> callable), called in turn, each
    right after ``before()`` (untimed) if given, after WARMUP untimed rounds."""
    times = {name: np.empty(rounds) for name in settings}
    for r in range(-WARMUP, rounds):
        for name, fn in settings.items():
            if before is not None:
                before()
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
            if r >= 0:
                times[name][r] = t
    return times


def report(times, unit=1e3, unit_name="ms"):
    """One line per setting: median (quartiles) and, per round, time / the first's."""
    first = next(iter(times.values()))
    for name, t in times.items():
        q1, m, q3 = np.percentile(t, [25, 50, 75]) * unit
        r1, rm, r3 = np.percentile(t / first, [25, 50, 75])
        print(f"{name:28s} {m:9.3f} {unit_name} ({q1:.3f}-{q3:.3f})   "
              f"x first: {rm:.3f} ({r1:.3f}-{r3:.3f})")


def _dense(W, b, X):
    """The dense product ``X @ W + b``, W C-contiguous, as a callable."""
    Wd = np.ascontiguousarray(W)
    return lambda: X @ Wd + b


def _check(got, expected):
    tol = 1e-4 if expected.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())


def _csr(layer, n_in):
    """The forward's arrays: indptr, the kernels' narrow indices, data, row chunks."""
    indptr, indices, data = layer.csr_arrays()
    return indptr, indices, ops.narrow_indices(indices, n_in), data, ops.row_chunks(indptr)


def _forward(args, indptr, indices, data, bounds, bias, X, xt, panels):
    """The forward on this layout: out (batch, out) for sm, (out, batch) for fm."""
    if args.layout == "fm":
        out = ops.aligned_empty((indptr.size - 1, xt.shape[1]), xt.dtype)
        return out, lambda: ops.csr_forward(indptr, indices, data, bounds, bias, False, xt,
                                            out, panels=panels)
    out = np.empty((X.shape[0], indptr.size - 1), X.dtype)
    return out, lambda: ops.csr_forward_sm(indptr, indices, data, bounds, bias, False, X, out,
                                           panels=panels)


def panels(args):
    W, b, X, layer = layer_case(args.shape, args.sparsity, args.batch, args.dtype, args.seed)
    indptr, wide, indices, data, bounds = _csr(layer, W.shape[0])
    xt = feature_major(X)
    expected = X @ W + b
    settings = {}
    for width, block in itertools.product(args.widths, args.block_nnz):
        if width == "0":
            if block != "auto":
                continue
            layout, name = None, "no panels"
        else:
            w = None if width == "auto" else int(width)
            nnz = None if block == "auto" else int(block)
            layout = ops.panel_layout(indptr, wide, W.shape[0], width=w, block_nnz=nnz)
            if layout is None:
                print(f"width {width}: ops.panel_layout chose no panels")
                continue
            name = (f"width {layout.width} ({width}), {layout.blocks.size - 1} blocks"
                    f" ({block})")
        out, fn = _forward(args, indptr, indices, data, bounds, b, X, xt,
                           None if layout is None else (lambda layout=layout: layout))
        fn()
        _check(out.T if args.layout == "fm" else out, expected)
        settings[name] = fn
    return settings, _dense(W, b, X)


def pack(args):
    W, b, X, layer = layer_case(args.shape, args.sparsity, args.batch, args.dtype, args.seed)
    expected = X @ W + b

    def packed(n_bytes):
        def fn():
            saved = ops.PACK_PARALLEL_BYTES
            ops.PACK_PARALLEL_BYTES = n_bytes
            try:
                return layer.forward(X)
            finally:
                ops.PACK_PARALLEL_BYTES = saved
        return fn

    settings = {f"pack from {ops.PACK_PARALLEL_BYTES} B (default)": lambda: layer.forward(X),
                "pack on one thread": packed(1 << 62), "pack on all threads": packed(0)}
    for fn in settings.values():
        _check(fn(), expected)
    return settings, _dense(W, b, X)


def sddmm(args):
    W, _, X, layer = layer_case(args.shape, args.sparsity, args.batch, args.dtype, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    indptr, wide, _, _, bounds = _csr(layer, W.shape[0])
    x = feature_major(X)
    dz = feature_major(rng.standard_normal((args.batch, W.shape[1])).astype(args.dtype))
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    expected = (dz @ x.T)[rows, wide]
    grad = np.empty(wide.size, X.dtype)
    layout = ops.panel_layout(indptr, wide, W.shape[0])
    settings = {}
    if layout is not None:
        settings[f"panels of {layout.width}"] = lambda: ops.csr_weight_grad(
            indptr, wide, bounds, dz, x, grad, panels=lambda: layout)
    settings["rows of tiles"] = lambda: ops.csr_weight_grad(indptr, wide, bounds, dz, x, grad)
    settings["untiled"] = lambda: csr.csr_sddmm_parallel(indptr, wide, bounds, dz, x, grad,
                                                          np.empty(0, X.dtype))
    for fn in settings.values():
        grad[...] = np.nan
        fn()
        _check(grad, expected)
    return settings, None


def layout(args):
    W, _, _, layer = layer_case(args.shape, args.sparsity, 1, args.dtype, args.seed)
    indptr, wide, _, data, _ = _csr(layer, W.shape[0])
    indptr_t, indices_t, perm = ops.csr_transpose(W.shape[0], indptr, wide)
    transposed = (indptr_t, indices_t, perm, ops.row_chunks(indptr_t))
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    flat = wide.astype(np.int64) * W.shape[1] + rows
    values = np.empty_like(data)
    target = np.zeros_like(W)

    def write_flat():
        target.ravel()[flat] = data

    def write_pairs():
        target[wide, rows] = data

    settings = {
        "read: kernel": lambda: ops.csr_values_from_dense(transposed, W, values),
        "read: flat fancy index": lambda: np.take(W.ravel(), flat, out=values),
        "write: kernel": lambda: ops.csr_values_into_dense(transposed, data, target),
        "write: flat fancy index": write_flat,
        "write: (in, out) fancy index": write_pairs,
    }
    for name, fn in settings.items():
        values[...] = np.nan
        target[...] = 0
        fn()
        read = name.startswith("read")
        _check(values if read else target, data if read else W)
    return settings, None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["panels", "pack", "sddmm", "layout"])
    add_case_arguments(parser)
    parser.add_argument("--widths", nargs="+", default=["0", "auto", "128", "256", "512"],
                        help="panels: column panel widths; 0 no panels, auto the default")
    parser.add_argument("--block-nnz", nargs="+", default=["auto"],
                        help="panels: nonzeros a row block; auto the default")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--quiet", action="store_true",
                        help="no dense product before each forward call")
    args = parser.parse_args(argv)
    settings, dense = {"panels": panels, "pack": pack, "sddmm": sddmm, "layout": layout}[
        args.what](args)
    times = alternate(settings, args.rounds, None if args.quiet else dense)
    report(times)
    return times


if __name__ == "__main__":
    main()
