"""sparseprune: pruned MLPs that are actually smaller and faster on a CPU.

A masked MLP trained through Numba dense kernels, magnitude pruning (one-shot or along a
schedule), and description length in bits.
"""

from . import data, prune
from .io import load
from .layers import MaskedLinear, SparseLinear
from .model import MLP, SparseMLP
from .train import SGD, Adam, History

__version__ = "0.1.0"

__all__ = [
    "MLP", "MaskedLinear", "SparseMLP", "SparseLinear", "SGD", "Adam", "History", "data",
    "load", "prune", "__version__",
]
