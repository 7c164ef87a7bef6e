"""The measured run of "Beyond one machine" (README): scoring at scale on Dask, and
``sparseprune predict`` on a 2 GB ``.npy`` in bounded memory.

1. Dask: 2 million rows x 1024 features, drawn chunk by chunk on the workers from a
   seeded generator (never whole in any memory), scored by a 1024-1024-1024-10 model
   90%-sparse (random He weights pruned by magnitude: nothing trained, which changes
   nothing for speed) on a LocalCluster of 2 worker processes, one thread each; the
   sparse model (``SparseMLP``) against the same model dense (the masked ``MLP``, its
   pruned weights zeros in BLAS products). Interleaved rounds, a fresh cluster for each
   run so that each worker's peak resident memory is that run's; medians and ranges.
   Drawing the rows alone is timed too: it is part of every run. Then, in each worker
   of one more cluster (``client.run``, both at once, one thread each), the two models'
   ``predict_proba`` on one chunk of rows, the plans measured first: the scoring alone.
2. ``sparseprune predict`` on a ``.npy`` of 2 GiB (524,288 rows x 1024 float32), written
   chunk by chunk through ``np.lib.format.open_memmap``, scored with the sparse model in
   its own process under ``/usr/bin/time -v`` (peak resident memory); deleted after.

Run it on a quiet machine (the rows/s are shared with whatever else runs)::

    python benchmarks/scale_dask.py --out docs/scale/scale_dask.json
    python benchmarks/scale_dask.py --rows 40000 --npy-gib 0.05 --rounds 1   # a smoke run

Not collected by pytest (no ``test_`` prefix).
"""

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import sparseprune as spp

SIZES = (1024, 1024, 1024, 10)
SPARSITY = 0.9


def build_models(seed):
    """(dense MLP, SparseMLP) of one 90%-sparse float32 model."""
    model = spp.MLP(SIZES, dtype="float32", seed=seed)
    spp.prune.magnitude(model, SPARSITY, scope="global")
    return model, model.to_sparse()


def worker_peak_rss(dask_worker=None):
    """This process's peak resident memory, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rows(n_rows, n_features, chunk, seed):
    import dask.array as da

    return da.random.default_rng(seed).standard_normal(
        size=(n_rows, n_features), chunks=(chunk, n_features), dtype=np.float32)


def dask_run(args, dense, sparse):
    from distributed import Client, LocalCluster

    contenders = {"sparse": sparse, "dense": dense, "draw only": None}
    results = {name: {"seconds": [], "peak_rss": []} for name in contenders}
    labels = {}
    for rnd in range(args.rounds):
        for name, model in contenders.items():
            # A fresh cluster per run, so that each worker's peak resident memory is this
            # run's (Client.restart, the other way, now and then waited forever for the
            # workers to come back).
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                X = rows(args.rows, SIZES[0], args.chunk, seed=args.seed)
                small = rows(2 * args.chunk, SIZES[0], args.chunk, seed=args.seed + 1)
                if model is None:
                    small.sum().compute()
                    job = X.sum()
                else:
                    spp.dask.predict(model, small).compute()  # imports, the model, plans
                    job = spp.dask.predict(model, X)
                start = time.perf_counter()
                value = job.compute()
                seconds = time.perf_counter() - start
                peaks = client.run(worker_peak_rss)
            results[name]["seconds"].append(seconds)
            results[name]["peak_rss"].append(max(peaks.values()))
            if model is not None and rnd == 0:
                labels[name] = value
            print(f"round {rnd + 1}, {name}: {seconds:.1f} s, "
                  f"{args.rows / seconds:,.0f} rows/s, peak worker RSS "
                  + ", ".join(f"{p / 2**20:.0f}" for p in peaks.values()) + " MiB",
                  flush=True)
    summary = {}
    for name, r in results.items():
        s = r["seconds"]
        summary[name] = {
            "seconds_median": statistics.median(s), "seconds_min": min(s), "seconds_max": max(s),
            "rows_per_second_median": args.rows / statistics.median(s),
            "peak_rss_per_worker_mib_max": max(r["peak_rss"]) / 2**20,
            "runs": s, "peak_rss_mib": [p / 2**20 for p in r["peak_rss"]],
        }
    summary["labels_agree"] = float(np.mean(labels["sparse"] == labels["dense"]))
    summary["speedup_median"] = (summary["dense"]["seconds_median"]
                                 / summary["sparse"]["seconds_median"])
    return summary


def probe(path, dense, rows, seed, rounds=5):
    """On a worker: {"sparse", "dense": [ms per predict_proba of ``rows`` rows]}, the
    sparse model loaded from ``path`` and the ``dense`` MLP as sent (the first call of
    each, which measures the sparse model's plans, left out)."""
    X = np.random.default_rng(seed).standard_normal((rows, SIZES[0]), dtype=np.float32)
    times = {}
    with spp.dask.task_threads(1):
        for name, model in (("sparse", spp.load(path)), ("dense", dense)):
            model.predict_proba(X)
            times[name] = []
            for _ in range(rounds):
                start = time.perf_counter()
                model.predict_proba(X)
                times[name].append(1e3 * (time.perf_counter() - start))
    return times


def probe_run(args, dense, sparse):
    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="scale-probe-") as tmp:
        path = os.path.join(tmp, "model.npz")
        sparse.save(path)
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            got = client.run(probe, path, dense, args.chunk, args.seed)
    summary = {}
    for name in ("sparse", "dense"):
        ms = [statistics.median(t[name]) for t in got.values()]
        summary[name] = {"ms_per_chunk_per_worker": ms,
                         "rows_per_second_per_worker": [args.chunk / (m / 1e3) for m in ms]}
    print(f"in the workers, {args.chunk} rows, ms per predict_proba: " + ", ".join(
        f"{name} {summary[name]['ms_per_chunk_per_worker']}" for name in summary), flush=True)
    return summary


def write_npy(path, n_rows, n_features, chunk, seed):
    """A float32 .npy of (n_rows, n_features), standard normal, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n_rows, n_features))
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        out[start:stop] = rng.standard_normal((stop - start, n_features), np.float32)
        out.flush()
    del out


def timed_cli(argv):
    """(seconds, peak RSS bytes) of ``sparseprune predict argv`` under /usr/bin/time -v."""
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "sparseprune.app.cli", "predict",
               *argv, "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    print("  " + done.stdout.strip(), flush=True)
    return seconds, peak * 1024


def cli_run(args, sparse, dense):
    n_rows = int(args.npy_gib * 2**30) // (4 * SIZES[0])
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="scale-dask-") as tmp:
        model_path = os.path.join(tmp, "model.npz")
        sparse.save(model_path)
        data = os.path.join(tmp, "x.npy")
        write_npy(data, n_rows, SIZES[0], 8192, args.seed)
        size = os.path.getsize(data)
        print(f"wrote {data}: {size / 2**30:.2f} GiB, {n_rows:,} rows", flush=True)
        runs = {}
        for rnd in range(args.rounds):
            for name, extra in (("labels", []), ("proba", ["--proba"])):
                out = os.path.join(tmp, f"{name}.npy")
                seconds, peak = timed_cli([model_path, data, "--out", out, *extra])
                runs.setdefault(name, []).append((seconds, peak))
                print(f"round {rnd + 1}, predict {name}: {seconds:.1f} s, peak RSS "
                      f"{peak / 2**20:.0f} MiB", flush=True)
                if name == "labels" and rnd == 0:
                    got = np.load(out, mmap_mode="r")
                    X = np.load(data, mmap_mode="r")
                    check = slice(0, n_rows, max(1, n_rows // 2000))
                    agree = float(np.mean(got[check] == dense.predict(np.array(X[check]))))
        summary = {"file_bytes": size, "rows": n_rows, "labels_agree_with_dense_sample": agree}
        for name, r in runs.items():
            seconds = [s for s, _ in r]
            summary[name] = {
                "seconds_median": statistics.median(seconds), "seconds": seconds,
                "rows_per_second_median": n_rows / statistics.median(seconds),
                "peak_rss_mib": [p / 2**20 for _, p in r],
                "peak_rss_mib_max": max(p for _, p in r) / 2**20,
            }
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=8192, help="rows per Dask chunk")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--npy-gib", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=None, help="where the .npy goes (deleted after)")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-probe", action="store_true")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)

    dense, sparse = build_models(args.seed)
    print(f"model {list(SIZES)}, sparsity {sparse.sparsity:.1%}, "
          f"{sparse.nbytes() / 2**20:.2f} MiB sparse", flush=True)
    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                          "python": platform.python_version(), "numpy": np.__version__},
              "args": vars(args)}
    if not args.skip_dask:
        report["dask"] = dask_run(args, dense, sparse)
        d = report["dask"]
        print(f"\nDask, {args.rows:,} rows: sparse {d['sparse']['rows_per_second_median']:,.0f} "
              f"rows/s, dense {d['dense']['rows_per_second_median']:,.0f} rows/s "
              f"({d['speedup_median']:.2f}x); drawing alone "
              f"{d['draw only']['rows_per_second_median']:,.0f} rows/s; labels agree "
              f"{d['labels_agree']:.4%}", flush=True)
    if not args.skip_probe:
        report["probe"] = probe_run(args, dense, sparse)
    if not args.skip_cli:
        report["cli"] = cli_run(args, sparse, dense)
    print(json.dumps(report, indent=1))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
