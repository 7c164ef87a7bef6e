"""sparseprune: pruned MLPs that are actually smaller and faster on a CPU.

A masked MLP trained through Numba dense kernels, magnitude pruning (one-shot or along a
schedule), and description length in bits.
"""

from . import data, prune
from .layers import MaskedLinear
from .model import MLP
from .train import SGD, Adam, History

__version__ = "0.1.0"

__all__ = ["MLP", "MaskedLinear", "SGD", "Adam", "History", "data", "prune", "__version__"]
