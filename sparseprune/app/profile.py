"""Speed and memory against sparsity: the numbers behind ``sparseprune profile``.

Four contenders on each case (a layer shape, a sparsity, a batch size):

- ``dense``: NumPy, ``X @ W + b`` with W dense C-contiguous and X (batch, in) sample-major,
  the baseline;
- ``sparse``: sparseprune's CSR kernels, as a user calls them by default (the "public"
  layout: ``SparseLinear(backend="sparse").forward(X)`` on the same sample-major X,
  timed in alternation with the dense contender and no pause between, as in a program
  that also runs NumPy linear algebra), or in the layout inside a model ("kernel":
  ``forward_fm`` on feature-major input (in, batch), with a pause after each dense
  repetition so that OpenBLAS's idle threads are gone);
- ``scipy``: ``X @ W_csr + b`` with W a ``scipy.sparse.csr_array``;
- ``quantized``: the same pruned weights as 8-bit codes, ``QuantizedLinear.forward(X)``
  in the public layout and ``forward_fm`` in the kernel one (its own weights: within
  half a quantizer step of the others).

The pure pieces (entropy bound, byte counts, crossover, the report) are apart from the
measuring, so they can be tested without a clock.
"""

import os
import platform
import sys

import numba
import numpy as np
import scipy
import scipy.sparse as sp
from threadpoolctl import threadpool_info
from tqdm.auto import tqdm

from .._tuning import measure as tuning_measure
from .._validation import check_choice, check_dtype
from ..kernels.dense import IDENTITY, RELU
from ..layers import QuantizedLinear, SparseLinear
from ..mdl import log2_binomial

__all__ = ["BATCHES", "BUDGET", "CONTENDERS", "LAYOUTS", "QUANTIZED_BITS", "QUICK",
           "SETTLE_SECONDS", "SHAPES",
           "SPARSITIES", "byte_counts", "crossover", "crossover_by_case", "machine_info",
           "make_row", "measure", "model_cases", "report", "run", "synthetic_cases"]

SHAPES = ((1024, 1024), (4096, 4096), (4096, 1024))
SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
BATCHES = (1, 64, 256)
# Seconds of repetitions per contender and case (at least three rounds in any case).
BUDGET = 1.0
QUICK = {"shapes": ((512, 512), (1024, 256)),
         "sparsities": (0.0, 0.5, 0.8, 0.9, 0.95, 0.99), "budget": 0.2}
# Pause after each repetition of the BLAS contender. OpenBLAS's workers spin for about
# 2**28 cycles after a call and took a core from the CSR kernel timed next (35 ms
# instead of 18 ms at 4096^2, 90%, batch 256); a 0.1 s pause gave it its solo time back.
SETTLE_SECONDS = 0.1
LAYOUTS = ("public", "kernel")
CONTENDERS = ("dense", "sparse", "scipy", "quantized")
#: The quantized contender's precision.
QUANTIZED_BITS = 8


# -- pure logic --------------------------------------------------------------------------

def byte_counts(shape, itemsize, nnz, sparse_bytes):
    """Bytes of one layer's weight (in, out) stored three ways.

    Returns a dict: ``dense_bytes`` (the dense array), ``sparse_bytes`` (given: what the
    sparse layer holds, ``SparseLinear.nbytes()``), ``mask_entropy_bytes`` (which of the
    weights survive, ``nnz`` of them, at the entropy bound) and ``entropy_bound_bytes``
    (that plus the surviving values at ``itemsize`` bytes each).
    """
    n = int(shape[0]) * int(shape[1])
    k = int(nnz)
    mask = log2_binomial(n, k) / 8
    return {
        "dense_bytes": n * int(itemsize),
        "sparse_bytes": int(sparse_bytes),
        "mask_entropy_bytes": mask,
        "entropy_bound_bytes": mask + k * int(itemsize),
    }


def crossover(rows):
    """{batch (str): sparsity or None}: per batch size, the lowest measured sparsity at
    which CSR beats dense (speedup > 1) in any case, None if it never does."""
    result = {}
    for by_batch in crossover_by_case(rows).values():
        for batch, sparsity in by_batch.items():
            best = result.get(batch)
            if sparsity is not None and (best is None or sparsity < best):
                result[batch] = sparsity
            else:
                result.setdefault(batch, None)
    return result


def crossover_by_case(rows):
    """{case: {batch (str): sparsity or None}}: per case and batch size, the lowest
    measured sparsity at which CSR beats dense (speedup > 1), None if it never does.

    The lowest winning sparsity, not the first after which CSR always wins: measured
    speedups need not rise monotonically with sparsity.
    """
    result = {}
    for row in rows:
        cases = result.setdefault(row["case"], {})
        batch = str(row["batch"])
        best = cases.get(batch)
        if row["speedup"] > 1 and (best is None or row["sparsity"] < best):
            cases[batch] = row["sparsity"]
        else:
            cases.setdefault(batch, None)
    return result


def make_row(case, shape, sparsity, batch, dtype, times, nbytes, nnz):
    """One case's record. ``times``: {contender: seconds}; ``nbytes``: from
    :func:`byte_counts` with ``quantized_bytes`` (the quantized layers' ``nbytes()``),
    summed over layers for a whole model."""
    dtype = np.dtype(dtype)
    dense_s, sparse_s, scipy_s, quantized_s = (float(times[c]) for c in CONTENDERS)
    return {
        "case": case,
        "shape": [int(shape[0]), int(shape[1])],
        "sparsity": float(sparsity),
        "batch": int(batch),
        "dtype": str(dtype),
        "itemsize": int(dtype.itemsize),
        "dense_s": dense_s,
        "sparse_s": sparse_s,
        "scipy_s": scipy_s,
        "quantized_s": quantized_s,
        "speedup": dense_s / sparse_s,
        "speedup_scipy": scipy_s / sparse_s,
        "speedup_quantized": sparse_s / quantized_s,
        **{key: nbytes[key] for key in
           ("dense_bytes", "sparse_bytes", "quantized_bytes", "mask_entropy_bytes",
            "entropy_bound_bytes")},
        "nnz": int(nnz),
        "gflops": 2 * int(nnz) * int(batch) / sparse_s / 1e9,
    }


def machine_info():
    """Where the numbers were measured: CPUs, platform, versions, BLAS and its threads."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "numba_threads": int(numba.config.NUMBA_NUM_THREADS),
        "blas": [{k: v for k, v in pool.items() if isinstance(v, (str, int, float))}
                 for pool in threadpool_info()],
    }


def report(rows, machine):
    """The ``profile.json`` document: machine, rows, crossover (per batch size, over all
    cases) and crossover_by_case."""
    return {"machine": machine, "rows": list(rows), "crossover": crossover(rows),
            "crossover_by_case": crossover_by_case(rows)}


# -- measuring ---------------------------------------------------------------------------

def measure(calls, budget, pause=True):
    """{name: median seconds per call} of ``calls`` ({name: callable}), interleaved
    (the package's one timing helper); with ``pause``, a pause after each BLAS repetition
    so that its idle threads do not slow the contender timed next (tiny budgets, in
    tests, get tiny pauses)."""
    return tuning_measure(calls, budget, statistic="median", pause_after=("dense",),
                          pause=min(SETTLE_SECONDS, budget) if pause else 0.0)


def _largest(values, k):
    """Positions of the ``k`` entries of largest |value| (magnitude pruning), sorted."""
    if k >= values.size:
        return np.arange(values.size)
    return np.sort(np.argpartition(np.abs(values), values.size - k)[values.size - k:])


def _keep_largest(rows, cols, values, k):
    """The ``k`` entries of largest |value|, in their old order."""
    keep = _largest(values, k)
    return rows[keep], cols[keep], values[keep]


class _Layer:
    """One layer prepared four ways: dense (in, out), sparseprune CSR, scipy CSR, and
    sparseprune quantized to QUANTIZED_BITS."""

    def __init__(self, shape, rows, cols, values, bias, dtype):
        coo = sp.coo_array((values.astype(dtype), (rows, cols)), shape=shape)
        self.shape = tuple(shape)
        self.bias = bias.astype(dtype)
        self.sparse = SparseLinear(coo, self.bias, dtype=dtype, backend="sparse")
        self.quantized = QuantizedLinear.from_layer(self.sparse, QUANTIZED_BITS)
        self.scipy = sp.csr_array(coo)
        self.dense = np.ascontiguousarray(self.sparse.to_dense())
        self.nnz = self.sparse.nnz
        self.nbytes = byte_counts(shape, np.dtype(dtype).itemsize, self.sparse.nnz,
                                  self.sparse.nbytes())
        self.nbytes["quantized_bytes"] = self.quantized.nbytes()


def _chain(layers, X, layout="public"):
    """{contender: callable} running ``layers`` in sequence (ReLU between) on X (batch,
    in); dense and scipy return (batch, out), sparse and quantized too in the "public"
    layout, the feature-major (out, batch) in the "kernel" one."""
    xt = np.ascontiguousarray(X.T)
    outs = [np.empty((layer.shape[1], X.shape[0]), X.dtype) for layer in layers]
    last = len(layers) - 1

    def sample_major(weights):
        """The chain as NumPy code runs it, on X (batch, in), for dense or scipy W."""
        def run():
            a = X
            for i, (W, layer) in enumerate(zip(weights, layers)):
                a = a @ W + layer.bias
                if i < last:
                    np.maximum(a, 0, out=a)
            return a
        return run

    def feature_major(kind):
        """The chain through sparseprune's ``kind`` layers, on feature-major x."""
        def run():
            a = xt
            for i, layer in enumerate(layers):
                a = getattr(layer, kind).forward_fm(a, outs[i], RELU if i < last else IDENTITY)
            return a
        return run

    def public(kind):
        """The chain through sparseprune's ``kind`` layers as users call them, on X."""
        def run():
            a = X
            for i, layer in enumerate(layers):
                a = getattr(layer, kind).forward(a)
                if i < last:
                    np.maximum(a, 0, out=a)
            return a
        return run

    chain = public if layout == "public" else feature_major
    return {"dense": sample_major([layer.dense for layer in layers]),
            "sparse": chain("sparse"),
            "scipy": sample_major([layer.scipy for layer in layers]),
            "quantized": chain("quantized")}


def _sum_bytes(layers):
    return {key: sum(layer.nbytes[key] for layer in layers) for key in layers[0].nbytes}


def synthetic_cases(shapes, sparsities, dtype, seed=0):
    """Yield (case, sparsity, [layer]) for random N(0, 1) weights of each shape, pruned
    by magnitude to each sparsity."""
    rng = np.random.default_rng(seed)
    for n_in, n_out in shapes:
        values = rng.standard_normal(n_in * n_out).astype(dtype)  # W (in, out), raveled
        bias = rng.standard_normal(n_out).astype(dtype)
        for s in sparsities:
            keep = _largest(values, round((1 - s) * values.size))
            rows, cols = np.divmod(keep, n_out)
            yield f"{n_in}x{n_out}", s, [_Layer((n_in, n_out), rows, cols, values[keep], bias,
                                                dtype)]


def model_cases(model, sparsities, dtype):
    """Yield (case, sparsity, layers) for a loaded model: each layer alone, then the
    whole model, re-pruned by magnitude along ``sparsities``.

    A layer keeps the largest |w| of its own stored weights, so its own nnz bounds the
    density: sparsities below a layer's own collapse onto it (and repeat cases are
    skipped). The sparsity reported is the one reached, over all layers for the model.
    """
    originals = []
    for layer in model.layers:
        coo = layer.weight.tocoo()
        originals.append((layer.shape, coo.row, coo.col, coo.data, layer.bias))

    def pruned(i, s):
        shape, rows, cols, values, bias = originals[i]
        k = min(values.size, round((1 - s) * shape[0] * shape[1]))
        return _Layer(shape, *_keep_largest(rows, cols, values, k), bias, dtype)

    for i, (shape, *_rest) in enumerate(originals):
        seen = set()
        for s in sparsities:
            layer = pruned(i, s)
            if layer.nnz in seen:
                continue
            seen.add(layer.nnz)
            reached = round(1 - layer.nnz / (shape[0] * shape[1]), 4)
            yield f"layer{i} {shape[0]}x{shape[1]}", reached, [layer]
    seen = set()
    n = sum(shape[0] * shape[1] for shape, *_rest in originals)
    for s in sparsities:
        layers = [pruned(i, s) for i in range(len(originals))]
        key = tuple(layer.nnz for layer in layers)
        if key in seen:
            continue
        seen.add(key)
        yield "model", round(1 - sum(key) / n, 4), layers


def run(shapes=SHAPES, sparsities=SPARSITIES, batches=BATCHES, dtype="float32",
        budget=BUDGET, model=None, seed=0, progress=True, layout="public"):
    """Measure every (case, sparsity, batch) and return the report (see :func:`report`).

    With ``model`` (a SparseMLP) its layers and the whole model are profiled instead of
    synthetic layers of ``shapes``. ``layout``: "public" (what a user's call costs, by
    default) or "kernel" (the layout inside a model, quiet); see the module.
    """
    layout = check_choice(layout, "layout", LAYOUTS)
    dtype = check_dtype(dtype)
    sparsities = sorted({float(s) for s in sparsities})
    if any(not 0 <= s < 1 for s in sparsities):
        raise ValueError(f"sparsities must be in [0, 1), got {sparsities}")
    batches = sorted({int(b) for b in batches})
    if any(b < 1 for b in batches):
        raise ValueError(f"batches must be positive integers, got {batches}")
    if model is None:
        cases = synthetic_cases(shapes, sparsities, dtype, seed)
        total = len(shapes) * len(sparsities) * len(batches)
    else:
        cases = model_cases(model, sparsities, dtype)
        total = (len(model.layers) + 1) * len(sparsities) * len(batches)  # at most
    rng = np.random.default_rng(seed + 1)
    rows = []
    with tqdm(total=total, desc="profile", unit="case", disable=not progress,
              file=sys.stderr) as bar:
        for case, sparsity, layers in cases:
            shape = (layers[0].shape[0], layers[-1].shape[1])
            nnz = sum(layer.nnz for layer in layers)
            for batch in batches:
                X = rng.standard_normal((batch, shape[0])).astype(dtype)
                times = measure(_chain(layers, X, layout), budget, pause=layout == "kernel")
                rows.append(make_row(case, shape, sparsity, batch, dtype, times,
                                     _sum_bytes(layers), nnz))
                bar.update()
        bar.total = bar.n
        bar.refresh()
    return {**report(rows, machine_info()), "layout": layout}
