"""The one place that sets JIT options for every kernel.

Kernels are compiled eagerly for explicit signatures and cached on disk, so each
signature is compiled once per machine, never at first call in a hot loop. A signature is
a string template whose placeholders expand over types: ``{T}`` over float32 and
float64 unless told otherwise, any other placeholder over the types the kernel names::

    @jit("void({T}[::1], {I}[::1])", I=("int32", "uint16"))

Helpers that kernels call are compiled into (and cached with) their callers: they take
no signature of their own (:func:`inline`).

Numba's on-disk cache keys a kernel on its own module's source, not on this one's: after
editing this file (or ``_vec.py``), delete ``kernels/__pycache__``.
"""

import itertools

import numba

__all__ = ["CONTRACT", "EXACT", "FLOAT_TYPES", "REDUCE", "inline", "jit", "signatures"]

# fastmath flags, by what a loop may do. None of them assumes finite values, so NaN and
# inf still propagate honestly.
#: Reductions may be reassociated (LLVM vectorizes sums and dot products); FMAs allowed.
REDUCE = {"reassoc", "contract", "nsz"}
#: FMAs only: for gathers and streams that gain nothing from reassociation, or lose by it.
CONTRACT = {"contract"}
#: IEEE-exact: elementwise updates whose terms reassociation would regroup (optimizers).
EXACT = False

#: Every kernel: no GIL (threads may run kernels at once), cached on disk, and NumPy's
#: error model (a division by zero gives inf or NaN, not an exception).
BASE = dict(nogil=True, cache=True, error_model="numpy")

FLOAT_TYPES = ("float32", "float64")


def signatures(template, **types):
    """Every signature of ``template``: each ``{NAME}`` placeholder over ``types[NAME]``
    (``T`` defaults to the float types), in the order the placeholders are given."""
    types = {"T": FLOAT_TYPES, **types}
    names = [name for name in types if "{" + name + "}" in template]
    return [template.format(**dict(zip(names, combo)))
            for combo in itertools.product(*(types[name] for name in names))]


def jit(template, fastmath=REDUCE, parallel=False, **types):
    """Compile a kernel eagerly for every signature of ``template``."""
    return numba.njit(signatures(template, **types), fastmath=fastmath, parallel=parallel,
                      **BASE)


def inline(fastmath=CONTRACT):
    """A helper for kernels: compiled for the types its callers pass, into their code."""
    return numba.njit(fastmath=fastmath, **BASE)
