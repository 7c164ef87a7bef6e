"""Thread pools: keep BLAS's and Numba's from fighting over the cores.

Interleave NumPy's OpenBLAS and Numba's parallel kernels on a 2-core machine and each
waits for cores the other's idle threads are spinning on. Measured (a dense product and
a CSR product alternating, ms a pair, against the two apart): 8.4 (0.6) at batch 1,
8.4 (1.5) at batch 64, 45.7 (22.2) at batch 256 (a 1024^2 dense layer, a 4096^2 CSR
layer at 90% sparsity). Two causes:

- Numba's OpenMP workers spin after every kernel and slow the next BLAS call by
  milliseconds. ``sparseprune/__init__.py`` sets ``OMP_WAIT_POLICY=passive`` unless the
  user chose a policy (it must happen before the OpenMP runtime starts). With it: 0.76,
  1.48 and 38.4. This is the default fix.
- OpenBLAS's workers spin for a long while after every call, taking a core from a long
  CSR kernel that follows. Their timeout can only be set before NumPy loads. What a
  library can do is hold BLAS to one thread (then it runs on the calling thread and
  leaves nothing spinning): 0.42, 1.91 and 23.4 with it. But that also halves the dense
  layers' speed, which loses when they are the big ones (``benchmarks/``, group
  ``threads``). So ``SparseMLP`` measures, per batch-size bucket, whether holding BLAS
  to one thread pays for its mix of layers, and :func:`single_threaded_blas` offers
  it for any other loop.
"""

import contextlib

_controller = None


def _threadpools():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        # Built on first use, when NumPy's BLAS is loaded; 15 us per limit() after that.
        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def single_threaded_blas():
    """Hold every loaded BLAS to one thread inside the block.

    Worth it around a loop whose parallel CSR layers take most of the time and whose
    dense products are small; see the module's notes and the ``threads`` benchmarks::

        with sparseprune.single_threaded_blas():
            smodel.predict(X)
    """
    with _threadpools().limit(limits=1, user_api="blas"):
        yield
