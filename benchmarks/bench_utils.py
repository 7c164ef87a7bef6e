"""Helpers the benchmark modules share (imported by name: pytest puts this folder on
sys.path, as it does tests/)."""

import numpy as np


def assert_close(got, expected, dtype):
    """``got`` equals ``expected`` up to the rounding of sums taken in another order
    (BLAS blocking, fastmath), relative to the result's largest entry."""
    expected = np.asarray(expected)
    rtol = 1e-4 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(np.asarray(got), expected, rtol=rtol,
                               atol=rtol * max(np.abs(expected).max(), 1e-30))
