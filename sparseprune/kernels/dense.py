"""Dense kernels of the masked MLP: the passes around the BLAS products, fused.

The matrix products themselves go to BLAS through ``numpy.matmul(..., out=...)`` (the
benchmarks measured it faster than ``np.dot`` inside ``njit``, which allocates); these
kernels fuse everything else so that each activation buffer is read and written once:

- forward: bias add and the activation in one pass over ``Z``;
- output: the loss of each head (softmax cross-entropy, sigmoid cross-entropy, squared
  error), its gradient, the bias gradient and the count of correct predictions in one
  pass over the logits;
- backward: the activation's derivative and the bias gradient in one pass over ``dA``;
- the weight gradient restricted to the mask.

All activations are feature-major, ``(features, batch)``, C-contiguous. An activation is
an int code (below); derivatives are taken from the layer's output, as scikit-learn's
are, except GELU's, which needs the pre-activation (its output does not determine it).
"""

import math

from ._jit import REDUCE, inline, jit

__all__ = ["GELU", "GELU_TANH", "IDENTITY", "LOGISTIC", "RELU", "TANH", "dense_act_backward",
           "dense_act_into", "dense_bias_act", "dense_mask_grad", "dense_sigmoid",
           "dense_sigmoid_xent", "dense_softmax", "dense_softmax_xent", "dense_squared_error"]

# Activation codes, compiled into the kernels as constants.
IDENTITY = 0
RELU = 1
TANH = 2
LOGISTIC = 3
GELU = 4  # x Phi(x), with the exact normal CDF (torch's GELU())
GELU_TANH = 5  # torch's GELU(approximate="tanh")

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


@inline(REDUCE)
def _logistic(v):
    # Two branches so that exp never overflows: exp(-|v|) <= 1.
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@inline(REDUCE)
def _activate(v, act):
    """act(v) for a scalar."""
    if act == RELU:
        return v if v > 0 else 0.0 * v
    if act == TANH:
        return math.tanh(v)
    if act == LOGISTIC:
        return _logistic(v)
    if act == GELU:
        return 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))
    if act == GELU_TANH:
        return 0.5 * v * (1.0 + math.tanh(_SQRT_2_OVER_PI * (v + _GELU_C * v * v * v)))
    return v


@inline(REDUCE)
def _derivative(a, z, act):
    """act'(z), from the output ``a = act(z)`` where that determines it, else from z."""
    if act == RELU:
        return 1.0 if a > 0 else 0.0
    if act == TANH:
        return 1.0 - a * a
    if act == LOGISTIC:
        return a * (1.0 - a)
    if act == GELU:
        return 0.5 * (1.0 + math.erf(z * _SQRT_HALF)) + z * math.exp(-0.5 * z * z) * _INV_SQRT_2PI
    if act == GELU_TANH:
        inner = _SQRT_2_OVER_PI * (z + _GELU_C * z * z * z)
        t = math.tanh(inner)
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (
            1.0 + 3.0 * _GELU_C * z * z)
    return 1.0


@jit("void({T}[:, ::1], {T}[::1], int64)", fastmath=REDUCE)
def dense_bias_act(z, bias, act):
    """In place: ``z[j, :] = act(z[j, :] + bias[j])``.

    z: (out, batch); bias: (out,), or length 0 for none; act: an activation code.
    """
    n_out, batch = z.shape
    has_bias = bias.shape[0] != 0
    zero = z.dtype.type(0)
    for j in range(n_out):
        b = bias[j] if has_bias else zero
        row = z[j]
        # ReLU and identity get loops of their own: the hot path vectorizes.
        if act == RELU:
            for k in range(batch):
                v = row[k] + b
                row[k] = v if v > 0 else zero
        elif act == IDENTITY:
            if has_bias:
                for k in range(batch):
                    row[k] += b
        else:
            for k in range(batch):
                row[k] = _activate(row[k] + b, act)


@jit("void({T}[:, ::1], {T}[:, ::1], int64)", fastmath=REDUCE)
def dense_act_into(z, a, act):
    """``a = act(z)``, elementwise, z left as it is (training keeps GELU's pre-activation).

    z, a: (out, batch).
    """
    n_out, batch = z.shape
    for j in range(n_out):
        for k in range(batch):
            a[j, k] = _activate(z[j, k], act)


@jit("void({T}[:, ::1], {T}[:, ::1], {T}[:, ::1], {T}[::1], int64)", fastmath=REDUCE)
def dense_act_backward(a, z, da, grad_bias, act):
    """In place: ``da`` becomes ``dZ = dA * act'(Z)``; ``grad_bias[j] = sum(dZ[j, :])``.

    a: (out, batch) the layer's output, read only; z: its pre-activation (out, batch), read
    only and needed by GELU alone (any shape otherwise, e.g. (0, 0)); da: (out, batch);
    grad_bias: (out,). The derivative is taken from the output where it can be, so
    forward caches nothing else.
    """
    n_out, batch = a.shape
    for j in range(n_out):
        arow = a[j]
        drow = da[j]
        s = 0.0
        if act == RELU:
            for k in range(batch):
                g = drow[k] if arow[k] > 0 else 0
                drow[k] = g
                s += g
        elif act == IDENTITY:
            for k in range(batch):
                s += drow[k]
        elif act == GELU or act == GELU_TANH:
            zrow = z[j]
            for k in range(batch):
                g = drow[k] * _derivative(arow[k], zrow[k], act)
                drow[k] = g
                s += g
        else:
            for k in range(batch):
                g = drow[k] * _derivative(arow[k], arow[k], act)
                drow[k] = g
                s += g
        grad_bias[j] = s


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


@jit("void({T}[:, ::1])", fastmath=REDUCE)
def dense_sigmoid(z):
    """In place: every entry of the logits ``z`` (outputs, batch) becomes its sigmoid."""
    n_out, batch = z.shape
    for j in range(n_out):
        for k in range(batch):
            z[j, k] = _logistic(z[j, k])


@jit("UniTuple(float64, 2)({T}[:, ::1], {T}[:, ::1], {T}, {T}[:, ::1], {T}[::1])",
     fastmath=REDUCE)
def dense_sigmoid_xent(z, t, scale, grad, grad_bias):
    """Sigmoid cross-entropy of logits against 0/1 targets and its gradient, in one pass.

    z: (outputs, batch) logits, bias included; t: (outputs, batch) targets in {0, 1};
    scale: the gradient's factor (1/batch for the mean loss over samples). Writes
    grad = scale * (sigmoid(z) - t) and grad_bias (outputs,) = its row sums; ``grad``
    may be ``z`` itself. Returns (sum over entries of -log p(t), number of columns whose
    every output is predicted right, z > 0 meaning 1).
    """
    n_out, batch = z.shape
    loss = 0.0
    correct = 0.0
    for j in range(n_out):
        grad_bias[j] = 0
    for k in range(batch):
        right = True
        for j in range(n_out):
            v = z[j, k]
            target = t[j, k]
            if (v > 0) != (target > 0.5):
                right = False
            # softplus(v) - t v, written so that exp never overflows.
            loss += max(v, 0.0) - v * target + math.log1p(math.exp(-abs(v)))
            g = scale * (_logistic(v) - target)
            grad[j, k] = g
            grad_bias[j] += g
        if right:
            correct += 1.0
    return loss, correct


@jit("UniTuple(float64, 2)({T}[:, ::1], {T}[:, ::1], {T}, {T}[:, ::1], {T}[::1])",
     fastmath=REDUCE)
def dense_squared_error(z, t, scale, grad, grad_bias):
    """Half the squared error of outputs against targets and its gradient, in one pass.

    z: (outputs, batch) outputs, bias included; t: (outputs, batch) targets; scale: the
    gradient's factor (1/batch for the mean over samples). Writes grad = scale * (z - t)
    and grad_bias (outputs,) = its row sums; ``grad`` may be ``z``. Returns
    (sum of (z - t)^2 / 2, 0): regression counts nothing as correct.
    """
    n_out, batch = z.shape
    loss = 0.0
    for j in range(n_out):
        s = 0.0
        for k in range(batch):
            d = z[j, k] - t[j, k]
            loss += 0.5 * d * d
            g = scale * d
            grad[j, k] = g
            s += g
        grad_bias[j] = s
    return loss, 0.0


@jit("void({T}[:, ::1], boolean[:, ::1])", fastmath=REDUCE)
def dense_mask_grad(grad, mask):
    """In place: zero the weight gradient (in, out) wherever ``mask`` (in, out) is False."""
    g = grad.ravel()
    m = mask.ravel()
    for i in range(g.size):
        if not m[i]:
            g[i] = 0
