"""sparseprune: pruned MLPs that are actually smaller and faster on a CPU.

A masked MLP trained through fused Numba kernels (any of five activations, softmax,
sigmoid or squared-error heads); pruning by magnitude, gradients, whole units, lottery
tickets, learned sparsity (RigL/SET, L1, L0) and noisy weights; Numba CSR kernels that
serve and train the pruned model; description length in bits; scikit-learn and PyTorch
models in and out; quantized sparse models and compact files; batch scoring on Dask.
"""

import importlib as _importlib
import os as _os

# Numba's OpenMP workers spin after every parallel kernel and slow the next BLAS call
# by milliseconds (see _tuning.py). Passive waiting must be set before the OpenMP
# runtime starts, which loading the first parallel kernel does; a user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# OpenBLAS's idle workers spin for about 2^28 cycles after every call and take a core
# from a parallel CSR kernel started then: 4096^2 at 90%, batch 256, right after a dense
# product, 27-28 ms against 12-16 ms with a timeout of 2^4 (benchmark group `public
# ...`); dense NumPy is no slower with it. OpenBLAS reads this once, when NumPy loads
# it: effective when sparseprune is imported before NumPy (or the variable exported in
# the shell). A user's own value wins (28 is about OpenBLAS's default).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import data, mdl, prune  # noqa: E402
# spp.dask: scoring on Dask. The module imports dask only inside its functions, so this
# costs no dask import; it stays out of __all__, where ``from sparseprune import *``
# would shadow the user's own ``dask``.
from . import dask  # noqa: E402, F401
from ._tuning import single_threaded_blas  # noqa: E402
from .interop.sklearn_in import from_sklearn  # noqa: E402
from .interop.torch_in import from_torch  # noqa: E402
from .layers import MaskedLinear, QuantizedLinear, SparseLinear  # noqa: E402
from .model import MLP, SparseMLP, load  # noqa: E402
from .train import SGD, Adam, FitOptions, History  # noqa: E402

__version__ = "0.2.0"

__all__ = [
    "MLP", "MaskedLinear", "QuantizedLinear", "SparseMLP", "SparseLinear", "SGD", "Adam",
    "FitOptions", "History", "data", "from_sklearn", "from_torch", "load", "mdl", "prune", "single_threaded_blas",
    "__version__",
]

# Submodules that are an optional extra's own home, imported on first access
# (``spp.sklearn``) so that ``import sparseprune`` never imports the extra (PEP 562).
_LAZY = ("sklearn",)


def __getattr__(name):
    if name in _LAZY:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
