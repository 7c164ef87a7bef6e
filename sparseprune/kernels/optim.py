"""Optimizer update kernels: one fused pass over a parameter, its gradient and its state.

Parameters are flat C-contiguous views. ``mask`` says which entries are live: pruned
entries get no update and their optimizer state is held at zero, so nothing leaks into
a weight that was pruned between or during fits.
"""

import math

from ._jit import jit


@jit("void({T}[::1], {T}[::1], {T}[::1], boolean[::1], {T}, {T}, {T})")
def sgd_step(param, grad, velocity, mask, lr, momentum, weight_decay):
    """SGD with (heavy-ball) momentum and coupled L2, as ``torch.optim.SGD``.

    g = grad + weight_decay * param; v = momentum * v + g; param -= lr * v.
    With momentum 0 and weight_decay 0 this is exactly ``param -= lr * grad``.
    """
    for i in range(param.size):
        if not mask[i]:
            velocity[i] = 0
            continue
        g = grad[i] + weight_decay * param[i]
        if momentum != 0:
            g = momentum * velocity[i] + g
            velocity[i] = g
        param[i] -= lr * g


@jit(
    "void({T}[::1], {T}[::1], {T}[::1], {T}[::1], boolean[::1], "
    "{T}, {T}, {T}, {T}, {T}, {T}, {T})"
)
def adam_step(param, grad, m1, m2, mask, lr, beta1, beta2, eps, weight_decay, bc1, bc2):
    """Adam with coupled L2, as ``torch.optim.Adam``; bc1, bc2 are the bias corrections
    ``1 - beta**t`` for this step."""
    step = lr / bc1
    root_bc2 = math.sqrt(bc2)
    for i in range(param.size):
        if not mask[i]:
            m1[i] = 0
            m2[i] = 0
            continue
        g = grad[i] + weight_decay * param[i]
        m = beta1 * m1[i] + (1 - beta1) * g
        v = beta2 * m2[i] + (1 - beta2) * g * g
        m1[i] = m
        m2[i] = v
        param[i] -= step * m / (math.sqrt(v) / root_bc2 + eps)
