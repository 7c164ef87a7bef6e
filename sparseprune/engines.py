"""Training engines: how one layer of an MLP runs its forward and backward passes.

``DenseEngine`` runs the masked dense weight through BLAS; ``SparseEngine`` runs only the
surviving weights through the CSR kernels and writes them back when training ends.
Both present the same interface to the training loop:

- ``forward_fm(x, out, relu)`` and ``backward_fm(x, dz, dx)`` on feature-major buffers;
- ``params``, ``masks``, ``grads``: flat arrays for the optimizer (the weight part only;
  biases are the loop's business);
- ``finish()``: put the trained weights back into the layer.
"""

import numpy as np

from ._timing import best_times
from .layers import SparseLinear
from .ops import aligned_empty


class DenseEngine:
    """The masked dense layer itself: weight gradient via BLAS, then masked."""

    name = "dense"

    def __init__(self, layer):
        self.layer = layer
        self.grad_weight = np.empty(layer.shape, layer.dtype)
        self.params = [layer._weight.ravel()]
        self.masks = [layer._mask.ravel()]
        self.grads = [self.grad_weight.ravel()]

    def forward_fm(self, x, out, relu):
        return self.layer.forward_fm(x, out, relu)

    def backward_fm(self, x, dz, dx):
        self.layer.backward_fm(x, dz, self.grad_weight, dx)

    def finish(self):
        pass


class SparseEngine:
    """The surviving weights of a masked layer as CSR; the optimizer sees only them.

    The bias array is shared with the layer, so its updates need no copying back.
    """

    name = "sparse"

    def __init__(self, layer):
        self.layer = layer
        self.sparse = SparseLinear._from_arrays(layer.shape, *layer.csr_arrays(), layer.bias)
        self.sparse.engine = "csr"  # the choice between engines is made here, per fit
        indptr, indices, data = self.sparse.csr_arrays()
        rows = np.repeat(np.arange(layer.out_features), np.diff(indptr))
        # Where each stored weight lives in the dense (in, out) array, for finish().
        self._positions = indices.astype(np.int64) * layer.out_features + rows
        self.grad_data = np.empty_like(data)
        self.params = [data]
        self.masks = [np.ones(data.size, bool)]
        self.grads = [self.grad_data]

    def forward_fm(self, x, out, relu):
        return self.sparse.forward_fm(x, out, relu)

    def backward_fm(self, x, dz, dx):
        self.sparse.backward_fm(x, dz, self.grad_data, dx)

    def finish(self):
        self.layer._weight.ravel()[self._positions] = self.sparse.data


ENGINES = {"dense": DenseEngine, "sparse": SparseEngine}


def time_engines(engines, batch, relu=True, seed=0):
    """Seconds for one forward and backward pass of each of ``engines`` (of one layer)
    at ``batch`` samples, best of interleaved repetitions on random data (the layer's
    weights are not changed)."""
    layer = engines[0].layer
    rng = np.random.default_rng(seed)
    # Laid out as training lays out its buffers (aligned, see Workspace).
    x, out, dz, dx = (aligned_empty(shape, layer.dtype) for shape in (
        (layer.in_features, batch), (layer.out_features, batch),
        (layer.out_features, batch), (layer.in_features, batch)))
    x[...] = rng.standard_normal(x.shape)
    dz[...] = rng.standard_normal(dz.shape)

    def step(engine):
        engine.forward_fm(x, out, relu)
        engine.backward_fm(x, dz, dx)

    times = best_times({i: (lambda e=engine: step(e)) for i, engine in enumerate(engines)})
    return [times[i] for i in range(len(engines))]


def choose_engines(model, backend, batch):
    """One engine per layer: all dense, all sparse, or (``"auto"``) per layer whichever
    measured faster for a forward and backward pass at this batch size."""
    if backend != "auto":
        return [ENGINES[backend](layer) for layer in model.layers]
    engines = []
    for layer in model.layers:
        candidates = [DenseEngine(layer), SparseEngine(layer)]
        times = time_engines(candidates, batch)
        engines.append(candidates[int(np.argmin(times))])
    return engines
