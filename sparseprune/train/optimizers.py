"""Optimizers: SGD with momentum and Adam, each step one fused kernel per parameter.

An optimizer is anything with ``bind(params, masks)`` (flat C-contiguous arrays it will
update in place, and their flat bool masks of live entries) and ``step(grads)``. The two
here also ``remap`` one parameter's state when its array is replaced by one of another
pattern (dynamic sparse training): surviving entries keep their state, new ones start
from zero.
"""

import math

import numpy as np

from .._validation import check_choice, check_real
from ..kernels.optim import adam_step, sgd_step

__all__ = ["Adam", "DEFAULT_LR", "OPTIMIZERS", "SGD", "make_optimizer"]

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}


def _remapped(state, source):
    """State for a new parameter: entry i continues ``state[source[i]]``, or starts at
    zero where ``source[i]`` is -1."""
    new = np.zeros(source.shape, state.dtype)
    keep = source >= 0
    new[keep] = state[source[keep]]
    return new


class SGD:
    """Stochastic gradient descent with heavy-ball momentum and coupled L2, as
    ``torch.optim.SGD`` (no dampening, no Nesterov)."""

    def __init__(self, lr, momentum=0.9, weight_decay=0.0):
        self.lr = check_real(lr, "lr", low=0.0, low_open=True)
        self.momentum = check_real(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
        self._state = None

    def bind(self, params, masks):
        """Allocate state for ``params`` (flat C-contiguous arrays updated in place) and
        their ``masks`` (flat bool arrays of the same sizes)."""
        self._params, self._masks = params, masks
        self._state = [np.zeros_like(p) for p in params]

    def step(self, grads):
        for p, g, v, m in zip(self._params, grads, self._state, self._masks):
            sgd_step(p, g, v, m, self.lr, self.momentum, self.weight_decay)

    def remap(self, index, param, mask, source):
        """Replace bound parameter ``index`` by ``param`` (flat) with live ``mask``; its
        momentum follows ``source`` (int64 like param: the old entry each new one
        continues, -1 for a new entry, which starts with no momentum)."""
        self._params[index], self._masks[index] = param, mask
        self._state[index] = _remapped(self._state[index], source)


class Adam:
    """Adam (Kingma & Ba 2015) with coupled L2, as ``torch.optim.Adam``."""

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = check_real(lr, "lr", low=0.0, low_open=True)
        self.betas = tuple(
            check_real(b, f"betas[{i}]", low=0.0, high=1.0, high_open=True)
            for i, b in enumerate(betas)
        )
        self.eps = check_real(eps, "eps", low=0.0, low_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
        self._state = None

    def bind(self, params, masks):
        self._params, self._masks = params, masks
        self._state = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        self._t = 0

    def remap(self, index, param, mask, source):
        """Replace bound parameter ``index`` by ``param`` (flat) with live ``mask``; both
        moments follow ``source`` (int64 like param: the old entry each new one continues,
        -1 for a new entry, which starts with zero moments). The step count is global
        and goes on."""
        self._params[index], self._masks[index] = param, mask
        m1, m2 = self._state[index]
        self._state[index] = (_remapped(m1, source), _remapped(m2, source))

    def step(self, grads):
        self._t += 1
        beta1, beta2 = self.betas
        # Scalars in double precision, then rounded once to the parameters' dtype.
        step_size = self.lr / (1.0 - beta1**self._t)
        root_bc2 = math.sqrt(1.0 - beta2**self._t)
        for p, g, (m1, m2), m in zip(self._params, grads, self._state, self._masks):
            adam_step(p, g, m1, m2, m, step_size, 1.0 - beta1, beta2, 1.0 - beta2, root_bc2,
                      self.eps, self.weight_decay)


def is_optimizer(obj):
    """Whether ``obj`` is an optimizer object (has ``bind`` and ``step``)."""
    return hasattr(obj, "bind") and hasattr(obj, "step")


def make_optimizer(optimizer, lr=None, momentum=None, weight_decay=None):
    """An optimizer by name ("sgd" or "adam"), or ``optimizer`` itself if it already is
    one (anything with ``bind`` and ``step``).

    Options left None take the defaults: lr 0.001 (Adam) or 0.01 (SGD), momentum 0.9,
    weight_decay 0. An option that would be ignored is an error rather than a surprise:
    any of them with an optimizer object (it carries its own), momentum with Adam.
    """
    options = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    if is_optimizer(optimizer):
        given = [name for name, value in options.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be given with an optimizer object "
                             f"({type(optimizer).__name__}): set them on the object")
        return optimizer
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    weight_decay = 0.0 if weight_decay is None else weight_decay
    if optimizer == "sgd":
        return SGD(lr, momentum=0.9 if momentum is None else momentum,
                   weight_decay=weight_decay)
    if momentum is not None:
        raise ValueError("momentum is an SGD option; for Adam's betas pass "
                         "optimizer=spp.Adam(lr, betas=...)")
    return Adam(lr, weight_decay=weight_decay)
