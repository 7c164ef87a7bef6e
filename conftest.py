"""Loaded first by pytest, before the tests' and benchmarks' own conftest files import
NumPy: importing sparseprune here sets its thread environment (OMP_WAIT_POLICY,
OPENBLAS_THREAD_TIMEOUT) before NumPy loads OpenBLAS, as a user's program that imports
sparseprune first gets it. Export either variable to measure with another value."""

import sparseprune  # noqa: F401
