"""The ``sparseprune`` command line: ``sparseprune demo``, ``sparseprune profile`` and
``sparseprune predict``."""

import argparse
import json
import os
import sys
import time

from ..model import load
from . import demo as story
from . import predict as scoring
from . import profile as prof
from .plots import profile_figures
from .tables import Table, kib

__all__ = ["main"]


def demo(args):
    """The notebook's story end to end; writes the report to ``args.out``."""
    result, artifacts = story.run(args.data, quick=args.quick, seed=args.seed,
                                  progress=not args.no_progress)
    _, written = story.write(result, artifacts, args.out)
    print("\nwrote " + ", ".join(written))
    return 0


def _shape(text):
    try:
        n_in, n_out = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is INxOUT, e.g. 1024x256, got {text!r}") from None
    if n_in < 1 or n_out < 1:
        raise argparse.ArgumentTypeError(f"shape sides must be positive, got {text!r}")
    return n_in, n_out


def profile(args):
    """Time dense NumPy, sparseprune CSR, scipy.sparse and sparseprune's 8-bit quantized
    layers against sparsity and batch."""
    quick = prof.QUICK if args.quick else {}
    shapes = args.shapes or quick.get("shapes", prof.SHAPES)
    sparsities = args.sparsity or quick.get("sparsities", prof.SPARSITIES)
    budget = args.budget if args.budget is not None else quick.get("budget", prof.BUDGET)
    model = None
    if args.model is not None:
        try:
            model = load(args.model)
        except (OSError, ValueError) as exc:
            print(f"sparseprune profile: {exc}", file=sys.stderr)
            return 2
        dtype = args.dtype or str(model.dtype)
        print(f"model: {args.model}, sizes {list(model.sizes)}, sparsity {model.sparsity:.1%}")
    else:
        dtype = args.dtype or "float32"
        print("synthetic layers: " + ", ".join(f"{i}x{o}" for i, o in shapes))
    print(f"{dtype}, batches {sorted(set(args.batch))}, {budget:g} s per contender and case; "
          f"times are medians of interleaved repetitions; layout: {args.layout}\n")
    started = time.perf_counter()
    try:
        result = prof.run(shapes=shapes, sparsities=sparsities, batches=args.batch,
                          dtype=dtype, budget=budget, model=model, seed=args.seed,
                          progress=not args.no_progress, layout=args.layout)
    except ValueError as exc:
        print(f"sparseprune profile: {exc}", file=sys.stderr)
        return 2
    rows = [[r["case"], f"{r['sparsity']:.2%}", r["batch"], r["nnz"],
             f"{r['dense_s'] * 1e3:.3f}", f"{r['sparse_s'] * 1e3:.3f}",
             f"{r['scipy_s'] * 1e3:.3f}", f"{r['quantized_s'] * 1e3:.3f}",
             f"{r['speedup']:.2f}x", f"{r['speedup_scipy']:.2f}x",
             f"{r['speedup_quantized']:.2f}x", f"{r['gflops']:.2f}", kib(r["dense_bytes"]),
             kib(r["sparse_bytes"]), kib(r["quantized_bytes"]), kib(r["entropy_bound_bytes"])]
            for r in result["rows"]]
    bits = prof.QUANTIZED_BITS
    print(Table(("case", "sparsity", "batch", "nnz", "dense ms", "csr ms", "scipy ms",
                 f"q{bits} ms", "vs dense", "vs scipy", f"q{bits} vs csr", "GFLOP/s",
                 "dense KiB", "csr KiB", f"q{bits} KiB", "bound KiB"),
                tuple(rows)).text())
    print("\ncrossover: lowest measured sparsity at which CSR beats dense")
    batches = sorted({r["batch"] for r in result["rows"]})
    print(Table(("case", *(f"batch {b}" for b in batches)),
                tuple([case] + ["never" if by_batch.get(str(b)) is None
                                else f"{round(100 * by_batch[str(b)], 2):g}%" for b in batches]
                      for case, by_batch in result["crossover_by_case"].items())).text())

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "profile.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
    written = [path]
    try:
        written += profile_figures(result, args.out)
    except ImportError as exc:
        print(f"\nno plots: {exc}")
    print("\nwrote " + ", ".join(written))
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def predict(args):
    """Score a file with a saved model, in chunks, here or on Dask; atomic output."""
    try:
        result = scoring.run(args.model, args.input, args.out, proba=args.proba,
                             batch_size=args.batch_size, scheduler=args.scheduler,
                             workers=args.workers, progress=not args.no_progress)
    except (ImportError, OSError, TypeError, ValueError) as exc:
        print(f"sparseprune predict: {exc}", file=sys.stderr)
        return 2
    shape = "x".join(map(str, result.shape))
    print(f"wrote {result.out}: {shape} {result.dtype}, {result.rows} rows in "
          f"{result.seconds:.1f} s ({result.rows / max(result.seconds, 1e-9):,.0f} rows/s, "
          f"{result.where})")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="sparseprune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="the pruning story end to end, on toy or real data")
    p.add_argument("--data", choices=["blobs", "digits"], default="blobs",
                   help="the notebook's Gaussian blobs (default) or scikit-learn's digits")
    p.add_argument("--quick", action="store_true", help="a fifth of the epochs")
    p.add_argument("--out", default="sparseprune-demo", metavar="DIR",
                   help="where the report, plots, results.json and model.npz go "
                        "(default ./sparseprune-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=demo)

    p = commands.add_parser("profile", help="speed and memory of CSR against dense, by sparsity")
    p.add_argument("model", nargs="?", metavar="MODEL.npz",
                   help="a saved SparseMLP: profile its layers and the whole model "
                        "(default: synthetic layers)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64, 256], metavar="N")
    p.add_argument("--sparsity", type=float, nargs="+", metavar="S",
                   help="sparsity grid (default 0 0.5 0.7 0.8 0.9 0.95 0.98 0.99)")
    p.add_argument("--shapes", type=_shape, nargs="+", metavar="INxOUT",
                   help="synthetic layer shapes (default 1024x1024 4096x4096 4096x1024)")
    p.add_argument("--quick", action="store_true",
                   help="512x512 and 1024x256, six sparsities, 0.2 s per contender: "
                        "well under a minute")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="time spent repeating each contender per case (default 1, quick 0.2)")
    p.add_argument("--dtype", choices=["float32", "float64"],
                   help="default float32, or the model's own dtype")
    p.add_argument("--layout", choices=["public", "kernel"], default="public",
                   help="time SparseLinear.forward(X) as users call it, alternating with "
                        "dense NumPy (public, the default), or the kernel on feature-major "
                        "input, quiet (kernel)")
    p.add_argument("--out", default="sparseprune-profile", metavar="DIR",
                   help="where profile.json and the plots go (default ./sparseprune-profile)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=profile)

    p = commands.add_parser("predict", help="score a file with a saved model, in chunks, "
                                            "here or on a Dask cluster")
    p.add_argument("model", metavar="MODEL.npz", help="a model saved by SparseMLP.save")
    p.add_argument("input", metavar="INPUT",
                   help=".npy (memory-mapped), .npz (the array X, or the only one) or .csv "
                        "(numbers, one sample a line, an optional header line)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help=".npy or .csv; written to a temporary file and renamed at the end")
    p.add_argument("--proba", action="store_true",
                   help="class probabilities instead of predicted labels")
    p.add_argument("--batch-size", type=int, default=scoring.BATCH_SIZE, metavar="N",
                   help=f"rows per chunk (default {scoring.BATCH_SIZE}); memory is bounded "
                        "by a chunk's worth")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="score on the Dask cluster at ADDRESS (e.g. tcp://10.0.0.5:8786)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="score on a new local Dask cluster of N processes, one thread each")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=predict)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
