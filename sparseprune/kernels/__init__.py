"""Numba kernels. Everything here is jitted, trusts its inputs and allocates nothing.

Callers validate, convert and allocate; the kernels own the loops. Activations are
feature-major, ``(features, batch)`` and C-contiguous, so inner loops run over a
contiguous batch vector.
"""

__all__ = []
