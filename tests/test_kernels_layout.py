"""The layout kernels against NumPy: training's batches taken from a sample-major X."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import sparseprune as spp
from sparseprune.kernels.layout import take_fm, take_fm_parallel
from sparseprune.train import FitOptions, fit_fm, fit_sm
from strategies import dtypes, seeds


@given(dtypes, st.integers(1, 40), st.integers(1, 600), st.integers(1, 70), seeds,
       st.booleans())
def test_take_fm_is_the_rows_transposed(dtype, n, n_features, batch, seed, parallel):
    # Feature counts cross the kernel's 64-feature and 256-feature blocks; rows may repeat
    # (the kernel does not need a permutation) and a batch may be one sample.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(dtype)
    idx = rng.integers(0, n, batch)
    out = np.full((n_features, batch), np.nan, dtype)
    (take_fm_parallel if parallel else take_fm)(X, idx, out)
    assert_array_equal(out, X[idx].T)


def _train(take_from, backend, dtype, batch_size):
    rng = np.random.default_rng(5)
    # 300 features by 512 float64 samples is over a MiB: batches taken in parallel.
    X = rng.standard_normal((600, 300)).astype(dtype)
    y = rng.integers(0, 4, 600)
    model = spp.MLP([300, 24, 4], seed=1, dtype=dtype)
    spp.prune.magnitude(model, 0.7)
    options = FitOptions.from_kwargs("test", epochs=2, lr=0.05, batch_size=batch_size,
                                     progress=False, seed=2, backend=backend)
    targets = model.targets(y, 600)
    if take_from == "rows":
        history = fit_sm(model, model.sample_major(X), targets, None, options)
    else:
        history = fit_fm(model, model.feature_major(X), targets, None, options)
    return model, history


@pytest.mark.parametrize("backend", ["dense", "sparse"])
@pytest.mark.parametrize("dtype, batch_size", [(np.float32, 64), (np.float64, 512)])
def test_batches_from_rows_train_exactly_as_batches_from_columns(backend, dtype, batch_size):
    a, ha = _train("rows", backend, dtype, batch_size)
    b, hb = _train("columns", backend, dtype, batch_size)
    assert ha.history == hb.history
    for la, lb in zip(a.layers, b.layers):
        assert_array_equal(la.weight, lb.weight)
        assert_array_equal(la.bias, lb.bias)
