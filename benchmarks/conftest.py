"""Benchmark grid, seeded data, warm-up and thread settings.

Run the benchmarks (a table per group, contenders side by side)::

    .venv/bin/python -m pytest benchmarks --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=min,median,max,rounds

Under ``make test`` (``--benchmark-disable``) every benchmark runs its function once, as
a smoke test; each test also checks, outside the timed call, that its contender computes
the same numbers as the other one, so no benchmark can time a wrong kernel.

Threads: the dense path is parallel only inside BLAS (the matrix products, through
``numpy.matmul(..., out=...)``); the Numba kernels here are serial. Both contenders call
the same BLAS, numpy's, with its default number of threads (one per core), unless
``SPARSEPRUNE_BENCH_BLAS_THREADS`` is set: then BLAS is limited to that many threads for
the whole session. The thread counts in use are recorded in every benchmark's
``extra_info``, with the environment variables that tune OpenBLAS (``OPENBLAS_CORETYPE``,
``OPENBLAS_L2_SIZE``, ``OPENBLAS_NUM_THREADS``, ...) that are set; they act on both
contenders alike.

On a shared machine, set ``SPARSEPRUNE_BENCH_BLAS_THREADS=1``: a multithreaded BLAS call
waits for its slowest thread, and a thread that another process has pushed off its core
costs whole scheduler slices (milliseconds), so the groups with matrix products swing by
up to 100x from run to run. The contenders run one after the other, not interleaved, so
such noise does not cancel; read ``min`` next to ``median``.

Paired ratios. Where a contender alternates with the dense one (``measure(after=...,
pair="dense")``: the ``public ...`` groups), the untimed dense call before each timed
call is timed too, and the run ends with a table of ``dense / contender`` per pair of
calls (median and quartiles over the rounds), also kept in ``extra_info["vs_dense"]``.
The two calls of a pair are microseconds apart, so a slow spell of the shared host that
lasts seconds or minutes (seen here: everything 1.5-2x slower for minutes) slows both
and cancels in the ratio, where the ratio of two rows' medians, measured one after the
other, takes it whole.
"""

import os
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

SEED = 20240617
# Timed calls of a contender that alternates with another call (``measure(after=...)``),
# after WARMUP_ROUNDS untimed ones.
ALTERNATING_ROUNDS = 60
WARMUP_ROUNDS = 1
# Paired ratios of this session (see the module's docstring): (group, test, pair, median,
# q1, q3, pairs), printed at the end of the run.
PAIRED = []

# Environment variables that change how fast BLAS is; recorded with every result.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class MLPCase:
    """One training step's shape: layer widths, batch size and dtype."""

    name: str
    sizes: tuple
    batch: int
    dtype: str

    @property
    def id(self):
        return f"{self.name}-b{self.batch}-{np.dtype(self.dtype).name}"


# Digits-like networks at mini-batch 64 and at the full training set (1347 of the 1797
# digits), a wide network, and one float64 case.
MLP_CASES = [
    MLPCase("digits", (64, 256, 128, 10), 64, "float32"),
    MLPCase("digits", (64, 256, 128, 10), 1347, "float32"),
    MLPCase("digits", (64, 256, 128, 10), 1347, "float64"),
    MLPCase("wide", (1024, 1024, 1024, 10), 256, "float32"),
]

# Fraction of weights pruned. The dense path does the same work at any sparsity; a
# partial mask just makes the masking visible in the numbers being compared.
SPARSITY = 0.5


@dataclass(frozen=True)
class LayerCase:
    """One hidden layer (in -> out) at a batch size."""

    n_in: int
    n_out: int
    batch: int
    dtype: str

    @property
    def id(self):
        return f"{self.n_in}x{self.n_out}-b{self.batch}-{np.dtype(self.dtype).name}"


# Hidden layers of the MLP cases whose input is a ReLU output too, so that backward runs
# in full (the first layer's input gradient is never needed): digits' 256 -> 128 at both
# batch sizes and both dtypes, and the wide network's 1024 -> 1024.
LAYER_CASES = [
    LayerCase(256, 128, 64, "float32"),
    LayerCase(256, 128, 1347, "float32"),
    LayerCase(256, 128, 1347, "float64"),
    LayerCase(1024, 1024, 256, "float32"),
]

# Output layers: (classes, batch, dtype).
OUTPUT_CASES = [(10, 64, "float32"), (10, 1347, "float32"), (10, 1347, "float64"),
                (10, 256, "float32")]

# Weight matrices for the optimizer update: (in, out, dtype), each shape once.
WEIGHT_CASES = sorted({(c.n_in, c.n_out, c.dtype) for c in LAYER_CASES})

CONTENDERS = ["numpy", "sparseprune"]


@dataclass(frozen=True)
class SparseCase:
    """One sparse layer (in, out) at a sparsity and batch size."""

    shape: tuple
    sparsity: float
    batch: int
    dtype: str = "float32"

    @property
    def id(self):
        return (f"{self.shape[0]}x{self.shape[1]}-s{self.sparsity:g}-b{self.batch}-"
                f"{np.dtype(self.dtype).name}")


@dataclass(frozen=True)
class EpochCase:
    """One training epoch of a pruned MLP."""

    sizes: tuple
    sparsity: float
    batch: int
    samples: int
    dtype: str = "float32"

    @property
    def id(self):
        return (f"{'-'.join(map(str, self.sizes))}-s{self.sparsity:g}-b{self.batch}-"
                f"n{self.samples}-{np.dtype(self.dtype).name}")


# The payoff grid: layer shapes x sparsity x batch, float32, float64 on a subset.
# SPARSEPRUNE_BENCH=quick picks a grid that finishes in minutes; the default is the full
# one. The sparse engine's targets (README) are rows of both.
SHAPES = [(1024, 1024), (4096, 4096), (4096, 1024)]
SPARSITIES = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
BATCHES = [1, 64, 256]


def _sparse_grid():
    if os.environ.get("SPARSEPRUNE_BENCH", "full") == "quick":
        cases = [SparseCase(shape, s, b) for shape in [(1024, 1024), (4096, 4096)]
                 for s in (0.7, 0.9) for b in (1, 64, 256)]
        return cases + [SparseCase((1024, 1024), 0.9, 64, "float64")]
    cases = [SparseCase(shape, s, b) for shape in SHAPES for s in SPARSITIES for b in BATCHES]
    return cases + [SparseCase((1024, 1024), s, b, "float64")
                    for s in (0.0, 0.9, 0.99) for b in BATCHES]


SPARSE_CASES = _sparse_grid()
# Backward and whole training steps: the grid's 90% rows and the crossover region.
BACKWARD_CASES = [c for c in SPARSE_CASES if c.sparsity in (0.7, 0.9) and c.dtype == "float32"]
EPOCH_CASES = [EpochCase((2048, 2048, 2048, 10), 0.9, 256, 2048)]
# Dynamic sparse training: 100 steps of 256, the one update they hold included.
DYNAMIC_CASES = [EpochCase((2048, 2048, 2048, 10), 0.9, 256, 25600)]
# Whole-model inference of pruned MLPs: digits-sized and wide.
MODEL_CASES = [EpochCase(sizes, 0.9, batch, 0) for sizes in [(64, 256, 128, 10),
                                                           (1024, 1024, 1024, 10)]
               for batch in (1, 64, 256)]
# The public path's floors (issue 10): SparseLinear.forward(X) as users call it, each call
# right after a dense NumPy product.
PUBLIC_CASES = [SparseCase((4096, 4096), 0.9, 256), SparseCase((4096, 4096), 0.9, 1),
                SparseCase((1024, 1024), 0.9, 64), SparseCase((4096, 4096), 0.7, 256),
                SparseCase((4096, 4096), 0.6, 256)]
PUBLIC_MODEL_CASES = [EpochCase((4096, 4096, 4096, 10), 0.9, 256, 0)]
THREADS_CASES = [SparseCase((4096, 4096), 0.9, 1), SparseCase((4096, 4096), 0.9, 64),
                 SparseCase((4096, 4096), 0.9, 256)]
# Quantized layers against the float CSR layer: the cases (4096^2 at 90%, batch
# 1 and 256), the batches between, a smaller layer, the crossover region, float64, and
# 8192^2 at batch 1: a layer whose float CSR (40 MB) outgrows the 32 MiB L3 here, while
# 4096^2's (10 MB) stays in it, and batch 1 is then bound by gathers, not by bytes.
QUANTIZED_CASES = [SparseCase((4096, 4096), 0.9, b) for b in (1, 64, 256)] + [
    SparseCase((8192, 8192), 0.9, 1),
    SparseCase((1024, 1024), 0.9, 1), SparseCase((1024, 1024), 0.9, 64),
    SparseCase((4096, 4096), 0.7, 256), SparseCase((1024, 1024), 0.9, 64, "float64")]
# Small stand-ins for the smoke run of ``make test`` (--benchmark-disable).
SMOKE = {
    "sparse_case": [SparseCase((96, 80), 0.9, 7), SparseCase((96, 80), 0.7, 1)],
    "backward_case": [SparseCase((96, 80), 0.9, 7)],
    "epoch_case": [EpochCase((64, 48, 32, 10), 0.9, 16, 40)],
    "dynamic_case": [EpochCase((64, 48, 32, 10), 0.9, 16, 64)],
    "model_case": [EpochCase((64, 48, 32, 10), 0.9, 5, 0)],
    "threads_case": [SparseCase((96, 80), 0.9, 7)],
    "public_case": [SparseCase((96, 80), 0.9, 7), SparseCase((96, 80), 0.9, 1)],
    "public_model_case": [EpochCase((64, 48, 32, 10), 0.9, 5, 0)],
    "quantized_case": [SparseCase((96, 80), 0.9, 1), SparseCase((96, 80), 0.7, 70),
                       SparseCase((96, 80), 0.9, 7, "float64")],
}

# Each test names the grid it runs on by its arguments; ids read like the group names.
GRID = {
    "mlp_case": (MLP_CASES, lambda c: c.id),
    "layer_case": (LAYER_CASES, lambda c: c.id),
    "output_case": (OUTPUT_CASES, lambda c: f"{c[0]}x{c[1]}-{c[2]}"),
    "weight_case": (WEIGHT_CASES, lambda c: f"{c[0]}x{c[1]}-{c[2]}"),
    "contender": (CONTENDERS, str),
    "sparse_case": (SPARSE_CASES, lambda c: c.id),
    "backward_case": (BACKWARD_CASES, lambda c: c.id),
    "epoch_case": (EPOCH_CASES, lambda c: c.id),
    "dynamic_case": (DYNAMIC_CASES, lambda c: c.id),
    "model_case": (MODEL_CASES, lambda c: c.id.rsplit("-n", 1)[0]),
    "threads_case": (THREADS_CASES, lambda c: c.id),
    "public_case": (PUBLIC_CASES, lambda c: c.id),
    "public_model_case": (PUBLIC_MODEL_CASES, lambda c: c.id.rsplit("-n", 1)[0]),
    "quantized_case": (QUANTIZED_CASES, lambda c: c.id),
    "sparse_contender": (["dense", "dense-masked", "scipy", "csr", "csr-edge"], str),
    "model_contender": (["dense", "dense-masked", "scipy", "csr"], str),
    "backward_contender": (["dense", "sparse"], str),
    "public_contender": (["dense", "scipy", "csr"], str),
    "public_model_contender": (["dense", "csr"], str),
    "dynamic_contender": (["dense-masked", "rigl-sparse"], str),
    "threads_contender": (["pair", "single-threaded-blas", "dense-alone", "csr-alone"], str),
    "quantized_contender": (["csr", "q8", "q4"], str),
}


def pytest_generate_tests(metafunc):
    smoke = metafunc.config.getoption("benchmark_disable")
    for name, (values, ids) in GRID.items():
        if name in metafunc.fixturenames:
            if smoke and name in SMOKE:
                values = SMOKE[name]
            metafunc.parametrize(name, values, ids=[ids(v) for v in values])


def _blas_threads():
    """{library file: threads} of every BLAS loaded (numpy's; scipy's if loaded too)."""
    return {os.path.basename(p["filepath"]): p["num_threads"]
            for p in threadpool_info() if p["user_api"] == "blas"}


@pytest.fixture(scope="session", autouse=True)
def blas_threads():
    """Limit BLAS to ``SPARSEPRUNE_BENCH_BLAS_THREADS`` threads if set; yield the count."""
    limit = os.environ.get("SPARSEPRUNE_BENCH_BLAS_THREADS")
    if limit is None:
        yield _blas_threads()
        return
    with threadpool_limits(limits=int(limit), user_api="blas"):
        yield _blas_threads()


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


@pytest.fixture
def sparsity():
    return SPARSITY


def peak_bytes(fn):
    """Peak bytes allocated during one call of ``fn`` (NumPy reports its buffers to
    tracemalloc), above what was allocated before it: measured, not computed."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def measure(benchmark, blas_threads):
    """``measure(fn, group, after=None, pair=None, **info)``: warm up, then time ``fn()``
    in ``group``; with ``after``, every timed call of ``fn`` comes right after an untimed
    call of ``after()`` (a dense NumPy product, say: what a program that alternates them
    sees), ``ALTERNATING_ROUNDS`` of them. ``pair`` names the contender that ``after``
    is (``"dense"``): its calls are timed too, for the paired ratios (module docstring).

    The kernels are compiled ahead of time and cached on disk, so the warm-up call is
    not a compile: it touches the buffers, the weights and BLAS's thread pool once so
    that the first measured round is not the slow one. ``info`` (shapes, batch, dtype,
    bytes) goes to ``extra_info`` with the BLAS thread count and environment.
    """

    def run(fn, group, after=None, pair=None, **info):
        benchmark.group = group
        benchmark.extra_info.update(info)
        benchmark.extra_info["blas_threads"] = blas_threads
        benchmark.extra_info["blas_env"] = {
            k: os.environ[k] for k in BLAS_ENV if k in os.environ
        }
        if not benchmark.disabled:
            fn()
            benchmark.extra_info["peak_bytes"] = peak_bytes(fn)
        after_seconds = []
        if after is None:
            result = benchmark(fn)
        else:
            def setup():
                start = time.perf_counter()
                after()  # its result is not setup's: pedantic would take it for arguments
                after_seconds.append(time.perf_counter() - start)

            result = benchmark.pedantic(fn, setup=setup, rounds=ALTERNATING_ROUNDS,
                                        warmup_rounds=WARMUP_ROUNDS)
        if not benchmark.disabled and pair is not None:
            # setup ran before the warm-up call too; the rest pair with the timed calls.
            ratios = np.array(after_seconds[WARMUP_ROUNDS:]) / np.array(benchmark.stats.stats.data)
            q1, median, q3 = np.percentile(ratios, [25, 50, 75])
            benchmark.extra_info[f"vs_{pair}"] = {"median": median, "q1": q1, "q3": q3,
                                                  "pairs": int(ratios.size)}
            PAIRED.append((group, benchmark.name, pair, median, q1, q3, ratios.size))
        if not benchmark.disabled and "flop" in info:
            median = benchmark.stats.stats.median
            benchmark.extra_info["gflops"] = info["flop"] / median / 1e9
        return result

    return run


def pytest_terminal_summary(terminalreporter):
    """After pytest-benchmark's tables: the paired ratios, one line per contender."""
    if not PAIRED:
        return
    terminalreporter.section("paired ratios (the other call / this call, per pair of calls)")
    for group, name, pair, median, q1, q3, n in PAIRED:
        terminalreporter.write_line(
            f"{name:60s} {pair} / this: {median:6.2f}x  (quartiles {q1:.2f}-{q3:.2f}, "
            f"{n} pairs)  [{group}]")
