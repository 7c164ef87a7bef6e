"""Dense kernels of the masked MLP: the passes around the BLAS products, fused.

The matrix products themselves go to BLAS through ``numpy.matmul(..., out=...)`` (the
benchmarks measured it faster than ``np.dot`` inside ``njit``, which allocates); these
kernels fuse everything else so that each activation buffer is read and written once:

- forward: bias add and ReLU in one pass over ``Z``;
- output: softmax, cross-entropy, its gradient, the bias gradient and the count of correct
  predictions in one pass over the logits;
- backward: the ReLU derivative and the bias gradient in one pass over ``dA``;
- the weight gradient restricted to the mask.

All activations are feature-major, ``(features, batch)``, C-contiguous.
"""

import math

from ._jit import REDUCE, jit

__all__ = ["dense_bias_act", "dense_mask_grad", "dense_relu_backward", "dense_softmax",
           "dense_softmax_xent"]


@jit("void({T}[:, ::1], {T}[::1], boolean)", fastmath=REDUCE)
def dense_bias_act(z, bias, relu):
    """In place: ``z[j, :] += bias[j]``, then ``max(z, 0)`` if ``relu``.

    z: (out, batch); bias: (out,).
    """
    n_out, batch = z.shape
    for j in range(n_out):
        b = bias[j]
        row = z[j]
        if relu:
            for k in range(batch):
                v = row[k] + b
                row[k] = v if v > 0 else 0
        else:
            for k in range(batch):
                row[k] += b


@jit("void({T}[:, ::1])", fastmath=REDUCE)
def dense_softmax(z):
    """In place: each column of the logits ``z`` (classes, batch) becomes its softmax."""
    n_classes, batch = z.shape
    for k in range(batch):
        m = z[0, k]
        for c in range(1, n_classes):
            m = max(m, z[c, k])
        s = 0.0
        for c in range(n_classes):
            e = math.exp(z[c, k] - m)
            z[c, k] = e
            s += e
        inv = 1.0 / s
        for c in range(n_classes):
            z[c, k] *= inv


@jit("UniTuple(float64, 2)({T}[:, ::1], int64[::1], {T}, {T}[:, ::1], {T}[::1])",
     fastmath=REDUCE)
def dense_softmax_xent(z, y, scale, grad, grad_bias):
    """Softmax cross-entropy of logits and its gradient, in one pass.

    z: (classes, batch) logits, bias included; y: (batch,) labels in [0, classes);
    scale: the gradient's factor (1/batch for the mean loss).
    Writes grad (classes, batch) = scale * (softmax(z) - onehot(y)) and
    grad_bias (classes,) = its row sums. ``grad`` may be ``z`` itself.
    Returns (sum of -log p(y), number of columns whose argmax is y); ties in the
    argmax go to the lowest class, like ``numpy.argmax``.
    """
    n_classes, batch = z.shape
    grad_bias[:] = 0
    loss = 0.0
    correct = 0.0
    for k in range(batch):
        label = y[k]
        m = z[0, k]
        best = 0
        for c in range(1, n_classes):
            if z[c, k] > m:
                m = z[c, k]
                best = c
        if best == label:
            correct += 1.0
        zy = z[label, k]
        s = 0.0
        for c in range(n_classes):
            e = math.exp(z[c, k] - m)
            grad[c, k] = e
            s += e
        # log-sum-exp minus the true logit, shifted by the max: never overflows.
        loss += math.log(s) + (m - zy)
        inv = scale / s
        for c in range(n_classes):
            g = grad[c, k] * inv
            if c == label:
                g -= scale
            grad[c, k] = g
            grad_bias[c] += g
    return loss, correct


@jit("void({T}[:, ::1], {T}[:, ::1], {T}[::1])", fastmath=REDUCE)
def dense_relu_backward(a, da, grad_bias):
    """In place: ``da`` becomes ``dZ = dA * (a > 0)``; ``grad_bias[j] = sum(dZ[j, :])``.

    a: (out, batch) the layer's ReLU output, read only; da: (out, batch); grad_bias: (out,).
    The derivative is taken from the output, so forward caches nothing else.
    """
    n_out, batch = a.shape
    for j in range(n_out):
        arow = a[j]
        drow = da[j]
        s = 0.0
        for k in range(batch):
            g = drow[k] if arow[k] > 0 else 0
            drow[k] = g
            s += g
        grad_bias[j] = s


@jit("void({T}[:, ::1], boolean[:, ::1])", fastmath=REDUCE)
def dense_mask_grad(grad, mask):
    """In place: zero the weight gradient (in, out) wherever ``mask`` (in, out) is False."""
    g = grad.ravel()
    m = mask.ravel()
    for i in range(g.size):
        if not m[i]:
            g[i] = 0
