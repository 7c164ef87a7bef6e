"""sparseprune: pruned MLPs that are actually smaller and faster on a CPU.

A masked MLP trained through Numba dense kernels, magnitude pruning (one-shot or along a
schedule), Numba CSR kernels for the pruned model, and description length in bits.
"""

import importlib as _importlib
import os as _os

# Numba's OpenMP workers spin after every parallel kernel and slow the next BLAS call
# by milliseconds (see _tuning.py). Passive waiting must be set before the OpenMP
# runtime starts, which loading the first parallel kernel does; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from . import data, mdl, prune  # noqa: E402
from ._tuning import single_threaded_blas  # noqa: E402
from .interop.sklearn_in import from_sklearn  # noqa: E402
from .interop.torch_in import from_torch  # noqa: E402
from .layers import MaskedLinear, QuantizedLinear, SparseLinear  # noqa: E402
from .model import MLP, SparseMLP, load  # noqa: E402
from .train import SGD, Adam, FitOptions, History  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MLP", "MaskedLinear", "QuantizedLinear", "SparseMLP", "SparseLinear", "SGD", "Adam", "FitOptions", "History",
    "data", "from_sklearn", "from_torch", "load", "mdl", "prune", "single_threaded_blas",
    "__version__",
]

# Submodules that are an optional extra's own home, imported on first access
# (``spp.sklearn``) so that ``import sparseprune`` never imports the extra (PEP 562).
_LAZY = ("sklearn",)


def __getattr__(name):
    if name in _LAZY:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
