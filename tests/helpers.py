"""Small builders shared by the tests."""

import contextlib
import threading

import numpy as np

import sparseprune as spp
from sparseprune import ops, quantized_ops

KERNEL_PATHS = ("serial", "parallel")


def sm_reference(A, X, bias, relu):
    """X @ A.T + bias (ReLU'd), in float64: (batch, n_rows), for a layer's weight A
    (n_rows, n_cols) stored as CSR of W.T and sample-major X (batch, n_cols)."""
    expected = X.astype(np.float64) @ A.T.astype(np.float64) + bias.astype(np.float64)
    return np.maximum(expected, 0.0) if relu else expected


def sm_scale(A, X):
    """The size of the terms sm_reference sums, for the absolute tolerance."""
    return (np.abs(X.astype(np.float64)) @ abs(A).T.astype(np.float64)).max(initial=0.0) + 2.0


@contextlib.contextmanager
def kernel_path(path):
    """Run ``ops`` and ``quantized_ops`` on their serial or their parallel kernels
    whatever the size, so that small test cases check both (each picks by the amount
    of work)."""
    names = ((ops, "PARALLEL_WORK"), (ops, "PARALLEL_MATVEC_NNZ"), (ops, "PARALLEL_GATHER_NNZ"),
             (ops, "PARALLEL_SYNC_NNZ"), (quantized_ops, "PARALLEL_MATVEC_NNZ"))
    saved = [getattr(module, name) for module, name in names]
    for module, name in names:
        setattr(module, name, 1 << 62 if path == "serial" else 0)
    try:
        yield
    finally:
        for (module, name), value in zip(names, saved):
            setattr(module, name, value)


def random_model(sizes, dtype, seed):
    """An MLP whose biases are random too (the initial zeros would hide bias bugs)."""
    model = spp.MLP(sizes, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.bias = rng.normal(0.0, 0.5, layer.out_features)
    return model


def random_problem(n_samples, n_features, n_classes, seed):
    """(X float64 (n, f), y int64 (n,)) with every class likely present."""
    rng = np.random.default_rng(seed + 1)
    return rng.normal(size=(n_samples, n_features)), rng.integers(0, n_classes, n_samples)


def params(model):
    """Copies of the model's (weights, biases, masks)."""
    return (
        [layer.weight.copy() for layer in model.layers],
        [layer.bias.copy() for layer in model.layers],
        [layer.mask.copy() for layer in model.layers],
    )


def tol(dtype, scale=1.0, ops=64):
    """assert_allclose tolerances for a result computed in ``dtype``.

    Each rounding costs at most one eps (float32 1.2e-7, float64 2.2e-16) relative to the
    magnitude of the quantities involved; the kernels chain a few dozen of them at most
    (a sum over a row, exp, a division) and may reassociate sums under fastmath. So allow
    ``ops`` eps relative, and ``ops`` eps of ``scale`` (the size of the summed terms)
    absolute, for results that cancel towards zero. Below the normal range a result is
    a multiple of the smallest subnormal (float32 1.4e-45), whatever its inputs: ``ops``
    of those are allowed absolute too (hypothesis found 0 - 1e-3 * 1.18e-38 off by 5e-46).
    """
    info = np.finfo(dtype)
    return dict(rtol=ops * float(info.eps),
                atol=ops * float(info.eps) * scale + ops * float(info.smallest_subnormal))


def in_threads(check, cases):
    """Run ``check(*case)`` for every case at once, one Python thread each, and raise the
    first exception any of them raised (an assertion failing in a thread is otherwise
    only printed)."""
    errors = []

    def run(case):
        try:
            check(*case)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(case,)) for case in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
