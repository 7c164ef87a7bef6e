"""Training backends: how one layer of an MLP runs its forward and backward passes.

``DenseBackend`` runs the masked dense weight through BLAS; ``SparseBackend`` runs only
the surviving weights through the CSR kernels and writes them back when training ends.
Both present the same interface to the training loop:

- ``forward_fm(x, out, act)`` and ``backward_fm(x, dz, dx)`` on feature-major buffers;
- ``parameters``: [(values, live)] flat arrays for the optimizer, the weight's then
  the bias's; ``grads``: the matching gradient buffers (the bias gradient is the loop's);
- ``finish()``: put the trained weights back into the layer;
- ``as_matrix(flat)``: an array in the order of the weight's parameter (its values,
  its gradient) as a dense (in, out) float64 array, zero off the pattern.
"""

import numpy as np

from .._tuning import MEASURE_SAMPLES, measure
from ..kernels.dense import RELU
from ..ops import aligned_empty

__all__ = ["BACKENDS", "DenseBackend", "SparseBackend", "choose_backends", "time_backends"]


class DenseBackend:
    """The masked dense layer itself: weight gradient via BLAS, then masked."""

    name = "dense"

    def __init__(self, layer):
        self.layer = layer
        self.grad_weight = np.empty(layer.shape, layer.dtype)
        self.parameters = layer.parameters()
        self.grads = [self.grad_weight.ravel()]

    def forward_fm(self, x, out, act):
        return self.layer.forward_fm(x, out, act)

    def backward_fm(self, x, dz, dx):
        self.layer.backward_fm(x, dz, self.grad_weight, dx)

    def finish(self):
        pass

    def as_matrix(self, flat):
        return np.asarray(flat, dtype=np.float64).reshape(self.layer.shape)


class SparseBackend:
    """The surviving weights of a masked layer as CSR; the optimizer sees only them.

    The bias array is shared with the layer, so its updates need no copying back.
    """

    name = "sparse"

    def __init__(self, layer):
        self.layer = layer
        # The layer's twin: its pattern state is kept from one fit to the next.
        self.sparse = layer.sparse_twin()
        self.grad_data = np.empty_like(self.sparse.data)
        self.parameters = self.sparse.parameters()
        self.grads = [self.grad_data]
        self._positions = None

    @property
    def positions(self):
        """(inputs, outputs) int64 (nnz,): where each stored weight sits in W, in the
        order of the parameter; made on first use (dynamic sparse training asks)."""
        if self._positions is None:
            self._positions = self.sparse.kept_positions()
        return self._positions

    def forward_fm(self, x, out, act):
        return self.sparse.forward_fm(x, out, act)

    def backward_fm(self, x, dz, dx):
        self.sparse.backward_fm(x, dz, self.grad_data, dx)

    def finish(self):
        self.layer.keep_twin(self.sparse)

    def as_matrix(self, flat):
        matrix = np.zeros(self.layer.shape)
        matrix[self.positions] = flat
        return matrix


BACKENDS = {"dense": DenseBackend, "sparse": SparseBackend}


def time_backends(backends, batch, act=RELU, seed=0):
    """Seconds for one forward and backward pass of each of ``backends`` (of one layer)
    at ``batch`` samples, best of interleaved repetitions on random data (the layer's
    weights are not changed)."""
    layer = backends[0].layer
    rng = np.random.default_rng(seed)
    # Laid out as training lays out its buffers (aligned, see Workspace).
    x, out, dz, dx = (aligned_empty(shape, layer.dtype) for shape in (
        (layer.in_features, batch), (layer.out_features, batch),
        (layer.out_features, batch), (layer.in_features, batch)))
    x[...] = rng.standard_normal(x.shape)
    dz[...] = rng.standard_normal(dz.shape)

    def step(backend):
        backend.forward_fm(x, out, act)
        backend.backward_fm(x, dz, dx)

    times = measure({i: (lambda b=backend: step(b)) for i, backend in enumerate(backends)})
    return [times[i] for i in range(len(backends))]


def choose_backends(model, backend, batch):
    """One backend per layer: all dense, all sparse, or (``"auto"``) per layer whichever
    measured faster for a forward and backward pass at this batch size (at most
    ``MEASURE_SAMPLES``: the winner there is the winner above)."""
    if backend != "auto":
        return [BACKENDS[backend](layer) for layer in model.layers]
    chosen = []
    for layer in model.layers:
        candidates = [DenseBackend(layer), SparseBackend(layer)]
        times = time_backends(candidates, min(batch, MEASURE_SAMPLES))
        chosen.append(candidates[int(np.argmin(times))])
    return chosen
