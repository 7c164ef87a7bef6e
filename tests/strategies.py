"""Hypothesis strategies shared by the tests.

Kernel cases are small arrays drawn element by element (so hypothesis finds zeros, ties
and signs at the boundaries); model cases draw only sizes and a seed, the arrays come
from numpy's generator (large enough to be realistic, still fast).
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DTYPES = (np.float32, np.float64)

dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2**32 - 1)
# Batch 1 and a single row are the edge cases the kernels must get right.
dims = st.integers(1, 7)


def floats(dtype, bound=10.0):
    """Finite floats in [-bound, bound] representable in ``dtype``.

    Subnormals are left out: they carry fewer significant bits, so relative tolerances
    mean nothing there, and no real weight or activation lives at 1e-40.
    """
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return st.floats(-bound, bound, width=width, allow_nan=False, allow_infinity=False,
                     allow_subnormal=False)


def matrices(dtype, shape, bound=10.0):
    """C-contiguous arrays of ``shape`` and ``dtype`` with finite entries."""
    return hnp.arrays(np.dtype(dtype), shape, elements=floats(dtype, bound))


@st.composite
def logits_and_labels(draw, bound=30.0):
    """(z (classes, batch), y (batch,) int64 labels, dtype); classes may be 1."""
    dtype = draw(dtypes)
    n_classes, batch = draw(dims), draw(dims)
    z = draw(matrices(dtype, (n_classes, batch), bound))
    y = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, n_classes - 1)))
    return z, y, dtype


@st.composite
def mlp_sizes(draw, max_depth=3, max_width=6, min_classes=2):
    """Layer widths [in, hidden..., classes]; two entries means no hidden layer."""
    depth = draw(st.integers(1, max_depth))
    widths = draw(st.lists(st.integers(1, max_width), min_size=depth, max_size=depth))
    n_classes = draw(st.integers(min_classes, max_width))
    return [*widths, n_classes]


# Sparsities a user could ask for: the ends, round fractions and arbitrary floats.
sparsities = st.one_of(
    st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 0.99]),
    st.floats(0.0, 1.0, exclude_max=True, allow_nan=False),
)
