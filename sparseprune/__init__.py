"""sparseprune: pruned MLPs that are actually smaller and faster on a CPU.

A masked MLP trained through Numba dense kernels, magnitude pruning (one-shot or along a
schedule), Numba CSR kernels for the pruned model, and description length in bits.
"""

import os as _os

# Numba's OpenMP workers spin after every parallel kernel and slow the next BLAS call
# by milliseconds (see _tuning.py). Passive waiting must be set before the OpenMP
# runtime starts, which loading the first parallel kernel does; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from . import data, mdl, prune  # noqa: E402
# spp.dask: scoring on Dask. The module imports dask only inside its functions, so this
# costs no dask import; it stays out of __all__, where ``from sparseprune import *``
# would shadow the user's own ``dask``.
from . import dask  # noqa: E402
from ._tuning import single_threaded_blas  # noqa: E402
from .layers import MaskedLinear, SparseLinear  # noqa: E402
from .model import MLP, SparseMLP, load  # noqa: E402
from .train import SGD, Adam, FitOptions, History  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MLP", "MaskedLinear", "SparseMLP", "SparseLinear", "SGD", "Adam", "FitOptions", "History",
    "data", "load", "mdl", "prune", "single_threaded_blas", "__version__",
]
