"""Passes over a stack of layers, on feature-major activations ``(features, batch)``.

Inference (:func:`logits_fm` over :func:`chunks` of the input) and training's forward
and backward pass (:func:`forward_backward` into a :class:`Workspace` allocated once per
fit). Layers or training backends are anything with ``forward_fm(x, out, act)`` (and
``backward_fm(x, dz, dx)`` for training): the passes never ask which kind they hold.
One activation between layers, the head's loss at the end. Everything here takes input
that has passed the public boundary already (the ``_fm`` contract: C-contiguous, of
the model's dtype, finite).
"""

import numpy as np

from ._validation import check_features, writable
from .activations import code, needs_preactivation
from .kernels.dense import IDENTITY, dense_act_backward, dense_act_into
from .kernels.layout import transpose_fm, transpose_fm_parallel
from .ops import PACK_PARALLEL_BYTES, aligned_empty

__all__ = ["PREDICT_CHUNK", "Workspace", "chunks", "chunks_sm", "forward_backward",
           "logits_fm", "to_feature_major", "to_sample_major"]

#: Inference runs in chunks of this many samples, bounding the activations' memory.
PREDICT_CHUNK = 4096


def to_feature_major(X, n_features, dtype, name="X"):
    """Validate X (n_samples, n_features) and return it as a new C-contiguous
    (n_features, n_samples) array of ``dtype``, laid out as activations are (aligned).

    A C-contiguous X is transposed by ``kernels.layout.transpose_fm`` (float32: 256 x
    4096 in 0.22 ms, 4096 x 1024 in 1.06, against 3.0 and 29.8 for numpy's
    ``xt[...] = X.T``); other layouts by numpy.
    """
    return _transposed(check_features(X, n_features, dtype, name=name))


def _transposed(X):
    """A new aligned C-contiguous copy of X.T for checked X (samples, features)."""
    xt = aligned_empty((X.shape[1], X.shape[0]), X.dtype)
    if X.flags.c_contiguous and X.flags.writeable:
        (transpose_fm if X.nbytes < PACK_PARALLEL_BYTES else transpose_fm_parallel)(X, xt)
    else:
        xt[...] = X.T
    return xt


def to_sample_major(X, n_features, dtype, name="X"):
    """Validate X (n_samples, n_features) and return it C-contiguous and writable, of
    ``dtype``: X itself when it is so already (no copy). The kernels' signatures take
    writable arrays; a read-only X (a memory map) is copied."""
    return writable(np.ascontiguousarray(check_features(X, n_features, dtype, name=name)))


def logits_fm(layers, dtype, xt, act):
    """Logits (n_outputs, batch) of ``layers`` on feature-major ``xt`` (n_features,
    batch), with the activation code ``act`` between them (none after the last);
    activations laid out as ops.aligned_empty lays them."""
    a = xt
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        out = aligned_empty((layer.out_features, a.shape[1]), dtype)
        a = layer.forward_fm(a, out, act if i < last else IDENTITY)
    return a


def chunks_sm(X):
    """(start, chunk) over checked sample-major X (n_samples, n_features) of the model's
    dtype, any layout: each chunk the feature-major copy of PREDICT_CHUNK rows, so that
    X is never copied whole (a predict on a million rows held a transposed copy of all
    of them, then copied each chunk out of it again)."""
    for start in range(0, X.shape[0], PREDICT_CHUNK):
        yield start, _transposed(X[start : start + PREDICT_CHUNK])


def chunks(xt):
    """(start, chunk) over feature-major ``xt`` in PREDICT_CHUNK samples, each chunk
    C-contiguous (a copy unless it is the whole of ``xt``)."""
    for start in range(0, xt.shape[1], PREDICT_CHUNK):
        chunk = xt[:, start : start + PREDICT_CHUNK]
        if chunk.shape[1] != xt.shape[1]:
            chunk = aligned_empty(chunk.shape, chunk.dtype)
            chunk[...] = xt[:, start : start + PREDICT_CHUNK]
        yield start, chunk


class Workspace:
    """Activation buffers for batches of up to ``capacity`` samples, allocated once per
    fit, for a network of layer widths ``sizes`` with the hidden ``activation`` (a name)
    and the output ``head`` (:class:`~sparseprune.heads.Head`). A batch of
    ``b <= capacity`` samples gets C-contiguous ``(features, b)`` views of the leading
    ``features * b`` elements of each buffer."""

    def __init__(self, sizes, capacity, dtype, activation, head):
        self.capacity = capacity
        self.sizes = sizes
        self.act = code(activation)
        self.head = head
        # _acts[0] is the input batch, _acts[-1] the logits, overwritten by their gradient.
        # Cache-line aligned, so a batch of one register tile feeds the CSR kernels in
        # place (see ops.aligned_empty); a view of the leading elements stays aligned.
        self._acts = [aligned_empty(s * capacity, dtype) for s in sizes]
        # Gradients at the hidden layers' outputs; the input gets none.
        self._grads = [aligned_empty(s * capacity, dtype) for s in sizes[1:-1]]
        # Pre-activations of the hidden layers, kept only where the derivative needs them.
        self._pres = ([aligned_empty(s * capacity, dtype) for s in sizes[1:-1]]
                      if needs_preactivation(activation) else None)
        self.no_pre = np.empty((0, 0), dtype)
        self._targets = head.target_buffer(sizes[-1], capacity, dtype)
        self.grad_bias = [np.empty(o, dtype) for o in sizes[1:]]

    @staticmethod
    def _view(buffer, rows, batch):
        return buffer[: rows * batch].reshape(rows, batch)

    def acts(self, batch):
        """[(features, batch)] views: the input, each layer's output, the logits."""
        return [self._view(a, s, batch) for a, s in zip(self._acts, self.sizes)]

    def grads(self, batch):
        """[(features, batch)] views: the gradient at each hidden layer's output."""
        return [self._view(g, s, batch) for g, s in zip(self._grads, self.sizes[1:-1])]

    def pres(self, batch):
        """[(features, batch)] views of the hidden pre-activations, or None if the
        activation's derivative needs none."""
        if self._pres is None:
            return None
        return [self._view(p, s, batch) for p, s in zip(self._pres, self.sizes[1:-1])]

    def targets(self, batch):
        """The batch's targets, as the head trains on them."""
        return self.head.batch_view(self._targets, self.sizes[-1], batch)


def forward_backward(backends, ws, batch):
    """One forward and backward pass over the batch held in ``ws``.

    ``ws.acts(batch)[0]`` and ``ws.targets(batch)`` hold the input. The gradients of the
    head's mean loss land in each backend's ``grads`` and in ``ws.grad_bias``.
    Returns (summed loss, number predicted right) of the batch, before any update.
    """
    acts = ws.acts(batch)
    grads = ws.grads(batch)
    pres = ws.pres(batch)
    last = len(backends) - 1
    for i, backend in enumerate(backends):
        if i == last:
            backend.forward_fm(acts[i], acts[i + 1], IDENTITY)
        elif pres is None:
            backend.forward_fm(acts[i], acts[i + 1], ws.act)
        else:
            backend.forward_fm(acts[i], pres[i], IDENTITY)
            dense_act_into(pres[i], acts[i + 1], ws.act)
    dz = acts[-1]
    loss, correct = ws.head.loss_grad(dz, ws.targets(batch), 1.0 / batch, dz,
                                      ws.grad_bias[-1])
    for i in range(last, -1, -1):
        dx = grads[i - 1] if i > 0 else None
        backends[i].backward_fm(acts[i], dz, dx)
        if dx is not None:
            # dA becomes dZ in place; the bias gradient rides along.
            pre = pres[i - 1] if pres is not None else ws.no_pre
            dense_act_backward(acts[i], pre, dx, ws.grad_bias[i - 1], ws.act)
            dz = dx
    return loss, correct
