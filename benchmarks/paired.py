"""Paired ratios of the public path outside pytest, in one process or in processes that
alternate between code trees (a change against the code before it).

    python benchmarks/paired.py --shape 1024 1024 --sparsity 0.9 --batch 64 --pairs 1000
    git worktree add --detach ../before HEAD~1
    python benchmarks/paired.py --shape 1024 1024 --batch 64 --trees ../before . --rounds 4

Each timed ``SparseLinear.forward(X)`` on sample-major X comes right after a timed call
of the dense contender, ``X @ W + b`` with W C-contiguous, as in a program that also
runs NumPy linear algebra; the ratio dense / sparse is taken per pair of calls and its
median and quartiles printed, as the ``public ...`` groups of ``test_bench_sparse.py``
do (the two calls of a pair share the state of a noisy host; two medians taken a
minute apart do not). ``--layout fm`` times ``forward_fm`` on a feature-major x (the
layout inside a model) instead.

With ``--trees``, each round runs one process per tree, in turn, with that tree first
on ``sys.path`` (each imports its own sparseprune; they share this interpreter's
packages), and the run ends with each tree's median over its rounds. A tree whose
kernels were never compiled compiles them in its first process (minutes): run one round
first, or count it out. The case is drawn from ``--seed`` alike in every process.
"""

import sparseprune as spp  # noqa: I001 - before NumPy, as a user's program should (README)

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp

from sparseprune.kernels.dense import IDENTITY
from sparseprune.ops import aligned_empty


def layer_case(shape, sparsity, batch, dtype, seed):
    """W (in, out) dense with ``sparsity`` of its entries zero, a bias (out,), X (batch,
    in) and the SparseLinear of W (backend "sparse"), drawn as test_bench_sparse.py
    draws its cases."""
    rng = np.random.default_rng(seed)
    n_in, n_out = shape
    mask = rng.random((n_in, n_out)) >= sparsity
    W = (rng.standard_normal((n_in, n_out)) * mask).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    X = rng.standard_normal((batch, n_in)).astype(dtype)
    return W, b, X, spp.SparseLinear(sp.csc_array(W), b, backend="sparse")


def feature_major(X):
    """X.T, C-contiguous and cache-line aligned, as a model holds its activations."""
    xt = aligned_empty(X.T.shape, X.dtype)
    xt[...] = X.T
    return xt


def paired_seconds(first, second, pairs, warmup=5):
    """Call ``first()`` then ``second()``, back to back, ``pairs`` times after ``warmup``
    untimed pairs; their durations in seconds, two arrays (pairs,)."""
    for _ in range(warmup):
        first()
        second()
    t_first = np.empty(pairs)
    t_second = np.empty(pairs)
    clock = time.perf_counter
    for i in range(pairs):
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        t_first[i] = t1 - t0
        t_second[i] = t2 - t1
    return t_first, t_second


def summary(t_dense, t_sparse):
    """Medians (ms) of both sides and the paired ratio dense / sparse: median, q1, q3."""
    q1, median, q3 = np.percentile(t_dense / t_sparse, [25, 50, 75])
    return {"dense_ms": 1e3 * float(np.median(t_dense)),
            "sparse_ms": 1e3 * float(np.median(t_sparse)),
            "ratio": float(median), "q1": float(q1), "q3": float(q3), "pairs": len(t_dense)}


def measure(args):
    W, b, X, layer = layer_case(args.shape, args.sparsity, args.batch, args.dtype, args.seed)
    Wd = np.ascontiguousarray(W)
    expected = X @ Wd + b
    if args.layout == "fm":
        xt = feature_major(X)
        out = aligned_empty((W.shape[1], args.batch), X.dtype)
        sparse = lambda: layer.forward_fm(xt, out, IDENTITY)  # noqa: E731
        got = sparse().T
    else:
        sparse = lambda: layer.forward(X)  # noqa: E731
        got = sparse()
    tol = 1e-4 if X.dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())
    result = summary(*paired_seconds(lambda: X @ Wd + b, sparse, args.pairs))
    result["sparseprune"] = os.path.dirname(os.path.dirname(os.path.abspath(spp.__file__)))
    return result


def line(result):
    return (f"dense {result['dense_ms']:8.3f} ms  sparse {result['sparse_ms']:8.3f} ms  "
            f"dense / sparse {result['ratio']:.2f}x ({result['q1']:.2f}-{result['q3']:.2f}, "
            f"{result['pairs']} pairs)")


def alternate(args, argv):
    """Rounds of one child process per tree; each tree's results and median ratio."""
    results = {tree: [] for tree in args.trees}
    child = [a for a in argv if a not in args.trees and a != "--trees"]
    for r in range(args.rounds):
        for tree in args.trees:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [os.path.abspath(tree)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
            done = subprocess.run([sys.executable, os.path.abspath(__file__), *child, "--json"],
                                  env=env, check=True, capture_output=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if os.path.realpath(result["sparseprune"]) != os.path.realpath(tree):
                raise RuntimeError(f"tree {tree!r} imported sparseprune from "
                                   f"{result['sparseprune']!r}")
            results[tree].append(result)
            print(f"round {r}  {tree:30s} {line(result)}", flush=True)
    for tree, rs in results.items():
        ratios = [x["ratio"] for x in rs]
        print(f"{tree:30s} median of {len(rs)} rounds: {np.median(ratios):.2f}x "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
    return results


def add_case_arguments(parser):
    """The case's options, shared with tune.py: a layer's shape, sparsity, batch, dtype,
    input layout and seed."""
    parser.add_argument("--shape", type=int, nargs=2, default=[4096, 4096],
                        metavar=("IN", "OUT"))
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--layout", choices=["sm", "fm"], default="sm",
                        help="sm: sample-major X, the public path (default); fm: "
                             "feature-major x, the layout inside a model")
    parser.add_argument("--seed", type=int, default=0)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_case_arguments(parser)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--trees", nargs="+", help="code trees to alternate, by process")
    parser.add_argument("--rounds", type=int, default=4, help="with --trees")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.trees:
        return alternate(args, argv)
    result = measure(args)
    print(json.dumps(result) if args.json else line(result))
    return result


if __name__ == "__main__":
    main()
