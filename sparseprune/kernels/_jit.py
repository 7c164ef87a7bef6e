"""The one place that sets JIT options for every kernel.

Kernels are compiled eagerly for explicit float32 and float64 signatures and cached on
disk, so each signature is compiled once per machine, never at first call in a hot loop.
"""

import numba

# "reassoc" lets LLVM vectorize reductions (bias gradients, dot products); "contract"
# allows FMA. Neither assumes finite values, so NaN and inf still propagate honestly.
FASTMATH = {"reassoc", "contract", "nsz"}

OPTIONS = dict(nogil=True, cache=True, error_model="numpy", fastmath=FASTMATH)
# For loops that gain nothing from reassociation, or lose by it (gathers, updates).
CONTRACT_ONLY = dict(OPTIONS, fastmath={"contract"})

FLOAT_TYPES = ("float32", "float64")


def signatures(template):
    """Expand a signature template over the float dtypes: ``{T}`` stands for the dtype."""
    return [template.format(T=t) for t in FLOAT_TYPES]


def jit(template, **overrides):
    """Compile a kernel eagerly for every float dtype of ``template``."""
    return numba.njit(signatures(template), **{**OPTIONS, **overrides})
