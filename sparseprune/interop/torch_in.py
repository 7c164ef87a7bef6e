"""A PyTorch ``nn.Sequential`` MLP as a sparseprune :class:`~sparseprune.MLP`.

The module is read in full and checked before anything is built: a model comes back
whole or not at all. PyTorch is imported on first use.
"""

import numpy as np

from ..heads import check_loss
from ..model import MLP
from .torch_out import TORCH_ACTIVATIONS

__all__ = ["from_torch"]

SUPPORTED = ("sparseprune imports Linear and ReLU/Tanh/Sigmoid/GELU/Identity (Dropout, "
             "and a leading Flatten, are no-ops at inference)")


def _flatten(module, prefix=""):
    """(name, module) of every leaf of a Sequential, nested Sequentials opened; names
    as torch prints them ("3", or "2.1" inside a nested Sequential)."""
    from torch import nn

    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            yield from _flatten(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


def _activation(module):
    """sparseprune's name of an activation module, or None if it is not one."""
    from torch import nn

    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    for ours, (theirs, _) in TORCH_ACTIVATIONS.items():
        if theirs not in ("Identity", "GELU") and isinstance(module, getattr(nn, theirs)):
            return ours
    return None


def _is_no_op(module, leading):
    """Dropout and Identity anywhere, and a Flatten of (batch, features...) before the
    first Linear: nothing at inference on the (n_samples, n_features) input."""
    from torch import nn

    dropouts = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                nn.FeatureAlphaDropout)
    if isinstance(module, (*dropouts, nn.Identity)):
        return True
    return (leading and isinstance(module, nn.Flatten) and module.start_dim == 1
            and module.end_dim == -1)


def _read_linear(name, linear):
    """(weight (in, out) float64, bias (out,) float64, mask (in, out) bool) of an
    ``nn.Linear``, pruned (``torch.nn.utils.prune``: weight_orig and weight_mask) or not,
    with or without a bias."""
    import torch

    def array(tensor):
        return tensor.detach().cpu().to(torch.float64).numpy()

    if hasattr(linear, "weight_orig") and hasattr(linear, "weight_mask"):
        # ``linear.weight`` is recomputed by a forward hook and may be stale: training
        # changes weight_orig, not weight.
        mask = array(linear.weight_mask) != 0
        weight = np.where(mask, array(linear.weight_orig), 0.0)
    else:
        weight = array(linear.weight)
        mask = np.ones(weight.shape, bool)
    if linear.bias is None:
        bias = np.zeros(linear.out_features)
    elif hasattr(linear, "bias_orig") and hasattr(linear, "bias_mask"):
        # sparseprune never prunes biases: a pruned bias is kept as the zero it is.
        bias = np.where(array(linear.bias_mask) != 0, array(linear.bias_orig), 0.0)
    else:
        bias = array(linear.bias)
    if weight.shape != (linear.out_features, linear.in_features):
        raise ValueError(f"layer {name}: Linear({linear.in_features}, "
                         f"{linear.out_features}) holds a weight of shape {weight.shape}")
    return weight.T, bias, mask.T


def _parameter_dtype(linears, dtype):
    """``dtype`` if given, else the Linear layers' own: float64 if they are all float64,
    float32 if all float32 or of a narrower float type (half, bfloat16)."""
    import torch

    if dtype is not None:
        return dtype
    kinds = {linear.weight_orig.dtype if hasattr(linear, "weight_orig")
             else linear.weight.dtype for _, linear in linears}
    if kinds == {torch.float64}:
        return "float64"
    if torch.float64 in kinds:
        raise TypeError(f"module mixes parameter dtypes {sorted(map(str, kinds))}; pass "
                        f"dtype='float32' or 'float64'")
    return "float32"


def _walk(module):
    """([(name, Linear)], activation name) of ``module``, every layer checked."""
    from torch import nn

    linears, between, kinds = [], [], {}
    for name, child in _flatten(module):
        kind = type(child).__name__
        if isinstance(child, nn.Linear):
            if linears:
                prev_name, prev = linears[-1]
                if len(between) > 1:
                    raise ValueError(
                        f"layer {name}: {len(between)} activations "
                        f"({', '.join(k for _, k, _ in between)}) between it and layer "
                        f"{prev_name}; sparseprune applies one between two Linear layers")
                if prev.out_features != child.in_features:
                    raise ValueError(
                        f"layer {name}: Linear takes {child.in_features} inputs, layer "
                        f"{prev_name} gives {prev.out_features}: the shapes do not chain")
                # Two Linear layers with nothing between them: identity.
                activation = between[0][2] if between else "identity"
                kinds.setdefault(activation, between[0][0] if between else name)
            linears.append((name, child))
            between = []
        elif _is_no_op(child, leading=not linears):
            continue
        elif _activation(child) is not None:
            if not linears:
                raise ValueError(f"layer {name}: {kind} before the first Linear is not "
                                 f"supported; the module must start with a Linear")
            between.append((name, kind, _activation(child)))
        elif isinstance(child, (nn.Softmax, nn.LogSoftmax)):
            raise ValueError(f"layer {name}: {kind} is not supported; the module must end "
                             f"in logits: drop it and pass loss='softmax'")
        else:
            raise ValueError(f"layer {name}: {kind} is not supported; {SUPPORTED}")
    if not linears:
        raise ValueError("module holds no Linear layer; sparseprune imports MLPs")
    if between:
        name, kind, _ = between[0]
        raise ValueError(
            f"layer {name}: {kind} after the last Linear (layer {linears[-1][0]}) is not "
            f"supported; the module must end in logits, and loss=... names the head "
            f"that turns them into predictions")
    if len(kinds) > 1:
        found = ", ".join(f"{kind} at layer {name}" for kind, name in kinds.items())
        raise ValueError(f"module mixes activations ({found}); sparseprune uses one "
                         f"activation between all its layers")
    return linears, next(iter(kinds), "relu")


def from_torch(module, loss, dtype=None, classes=None):
    """An :class:`~sparseprune.MLP` equal to a PyTorch MLP.

    Parameters
    ----------
    module : torch.nn.Sequential
        ``nn.Linear`` layers with one kind of activation between them (``ReLU``,
        ``Tanh``, ``Sigmoid``, ``GELU`` in either ``approximate`` mode, or none:
        identity), ending in a ``Linear`` (logits). Nested Sequentials are opened;
        ``Dropout`` and ``Identity`` anywhere, and a ``Flatten`` before the first
        ``Linear``, do nothing at inference and are skipped. Layers pruned with
        ``torch.nn.utils.prune`` bring their ``weight_mask`` as the model's mask (a
        pruned bias comes as its zeros: sparseprune never prunes biases); layers
        without a bias get a zero one.
    loss : "softmax", "sigmoid" or "squared" (or "cross_entropy", "bce", "mse", ...)
        The head: what the logits mean, named by the caller because a torch module
        ends before it (``CrossEntropyLoss``: "softmax"; ``BCEWithLogitsLoss``:
        "sigmoid"; ``MSELoss``: "squared").
    dtype : "float32", "float64" or None
        None: the module's own (float64 if its Linear layers are float64, else float32).
    classes : sequence, optional
        Labels of the classes, as :class:`~sparseprune.MLP` takes them.

    Returns an MLP whose logits equal the module's (to rounding) and whose masks are
    the module's ``weight_mask`` (all True for layers not pruned). The module is not
    changed. Anything unsupported is a ValueError or TypeError naming the layer, before
    anything is built.
    """
    try:
        from torch import nn
    except ImportError as exc:  # no torch: the module cannot be a torch module
        raise TypeError(f"module must be a torch.nn.Sequential, got "
                        f"{type(module).__name__} (and PyTorch is not installed)") from exc
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"module must be a torch.nn.Sequential of Linear layers and "
                        f"activations, got {type(module).__name__}; pass the Sequential "
                        f"inside it")
    loss = check_loss(loss)
    linears, activation = _walk(module)
    dtype = _parameter_dtype(linears, dtype)
    arrays = [(name, *_read_linear(name, linear)) for name, linear in linears]
    sizes = [linears[0][1].in_features] + [linear.out_features for _, linear in linears]
    model = MLP(sizes, dtype=dtype, activation=activation, loss=loss, classes=classes)
    for layer, (name, weight, bias, mask) in zip(model.layers, arrays):
        try:
            layer.mask = mask
            layer.weight = weight
            layer.bias = bias
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name}: {exc}") from exc
    return model
