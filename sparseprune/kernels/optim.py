"""Optimizer update kernels: one fused pass over a parameter, its gradient and its state.

Parameters are flat C-contiguous views. ``mask`` says which entries are live: pruned
entries get no update and their optimizer state is held at zero, so nothing leaks into
a weight that was pruned between or during fits.
"""

import math

from ._jit import EXACT, jit

__all__ = ["adam_step", "sgd_step", "soft_threshold"]

# Elementwise updates vectorize without reassociation, and reassociating them lets LLVM
# regroup the moment updates in ways that cancel: these kernels stay IEEE-exact.


@jit("void({T}[::1], {T}[::1], {T}[::1], boolean[::1], {T}, {T}, {T})", fastmath=EXACT)
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
    "{T}, {T}, {T}, {T}, {T}, {T}, {T})",
    fastmath=EXACT,
)
def adam_step(param, grad, m1, m2, mask, step_size, beta1_c, beta2, beta2_c, root_bc2, eps,
              weight_decay):
    """Adam with coupled L2, as ``torch.optim.Adam``.

    The scalars come precomputed in double precision, as torch computes them:
    step_size = lr / (1 - beta1**t), beta1_c = 1 - beta1, beta2_c = 1 - beta2,
    root_bc2 = sqrt(1 - beta2**t). (``1 - beta2`` rounded from float32 operands is off
    by 1.3e-5 relative, which biases every float32 step.)
    """
    for i in range(param.size):
        if not mask[i]:
            m1[i] = 0
            m2[i] = 0
            continue
        g = grad[i] + weight_decay * param[i]
        m = m1[i] + beta1_c * (g - m1[i])  # torch's lerp
        v = beta2 * m2[i] + beta2_c * g * g
        m1[i] = m
        m2[i] = v
        param[i] -= step_size * m / (math.sqrt(v) / root_bc2 + eps)


@jit("void({T}[::1], boolean[::1], {T})", fastmath=EXACT)
def soft_threshold(param, mask, threshold):
    """The L1 proximal step, in place: ``param = sign(param) * max(|param| - t, 0)`` on
    live entries (pruned ones are zero already). Weights it brings to zero stay exactly
    zero until a gradient step moves them again."""
    for i in range(param.size):
        if not mask[i]:
            continue
        p = param[i]
        if p > threshold:
            param[i] = p - threshold
        elif p < -threshold:
            param[i] = p + threshold
        else:
            param[i] = 0
