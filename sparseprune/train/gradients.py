"""Gradients without updates: the training engine's own forward and backward passes
over a data set, batch by batch, for criteria that score weights or units by them."""

from dataclasses import dataclass

from ..passes import Workspace, forward_backward
from .backends import choose_backends

__all__ = ["BatchGradients", "batch_gradients_fm"]


@dataclass(frozen=True)
class BatchGradients:
    """One mini-batch's pass, as the training engine computed it.

    ``size``: the batch's samples; ``backends``: one per layer (``as_matrix`` turns
    their flat weight and gradient into (in, out) arrays); ``activations``: each hidden
    layer's output (units, size), feature-major, of the model's dtype. Every array is
    a view of a buffer the next batch overwrites: use it before asking for the next.
    """

    size: int
    backends: list
    activations: list

    def weights(self, i):
        """Layer ``i``'s weight (in, out), float64, zero off the mask."""
        backend = self.backends[i]
        return backend.as_matrix(backend.parameters[0][0])

    def gradient(self, i):
        """The gradient of the batch's mean loss with respect to layer ``i``'s weight,
        (in, out) float64, zero off the mask."""
        backend = self.backends[i]
        return backend.as_matrix(backend.grads[0])


def batch_gradients_fm(model, xt, y, batch_size=None, backend="dense", batches=None):
    """Yield a :class:`BatchGradients` for each mini-batch of (xt, y), in data order.

    xt: (n_features, n) feature-major, validated (``model.feature_major``); y: the
    targets as ``model.targets`` gives them. ``batch_size`` samples a batch (the whole set if None; the last batch
    may be smaller); ``batches`` stops after that many. ``backend`` is ``fit``'s:
    "dense", "sparse" or "auto". The weights are never updated: this is ``fit``'s pass
    (:func:`sparseprune.passes.forward_backward`) without the optimizer's step.
    """
    n = xt.shape[1]
    batch = n if batch_size is None else min(batch_size, n)
    ws = Workspace(model.sizes, batch, model.dtype, model.activation, model.head)
    backends = choose_backends(model, backend, batch)
    try:
        for count, start in enumerate(range(0, n, batch)):
            if batches is not None and count >= batches:
                return
            b = min(batch, n - start)
            acts = ws.acts(b)
            acts[0][...] = xt[:, start : start + b]
            ws.targets(b)[...] = model.head.slice(y, start, start + b)
            forward_backward(backends, ws, b)
            yield BatchGradients(size=b, backends=backends, activations=acts[1:-1])
    finally:
        for each in backends:
            each.finish()
