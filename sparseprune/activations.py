"""Hidden-layer activations by name: their kernel codes and initial weight scales.

scikit-learn's four (``"relu"``, ``"tanh"``, ``"logistic"``, ``"identity"``) and PyTorch's
GELU (``"gelu"``, exact; ``"gelu_tanh"``, its tanh approximation). ReLU is the fused fast
path of every kernel; the others run through the same kernels with an activation code.
"""

import math

from ._validation import check_choice
from .kernels.dense import GELU, GELU_TANH, IDENTITY, LOGISTIC, RELU, TANH

__all__ = ["ACTIVATIONS", "check_activation", "code", "init_std", "needs_preactivation"]

#: Name -> the kernels' activation code.
ACTIVATIONS = {"relu": RELU, "tanh": TANH, "logistic": LOGISTIC, "identity": IDENTITY,
               "gelu": GELU, "gelu_tanh": GELU_TANH}


def check_activation(value, name="activation"):
    """``value`` if it names an activation of :data:`ACTIVATIONS`."""
    return check_choice(value, name, tuple(ACTIVATIONS))


def code(activation):
    """The kernels' code of ``activation`` (a name)."""
    return ACTIVATIONS[activation]


def needs_preactivation(activation):
    """Whether training must keep the layer's pre-activation for the derivative (GELU's
    output does not determine its input; the others' derivatives come from the output)."""
    return ACTIVATIONS[activation] in (GELU, GELU_TANH)


def init_std(activation, fan_in, fan_out):
    """The standard deviation of a layer's normal initial weights.

    He et al. (2015), ``sqrt(2 / fan_in)``, for ReLU and GELU, which pass on about half
    the variance they receive; Glorot & Bengio (2010), ``sqrt(2 / (fan_in + fan_out))``,
    for tanh, logistic and identity (the variance scikit-learn's MLP draws for tanh).
    """
    if activation in ("relu", "gelu", "gelu_tanh"):
        return math.sqrt(2.0 / fan_in)
    return math.sqrt(2.0 / (fan_in + fan_out))
