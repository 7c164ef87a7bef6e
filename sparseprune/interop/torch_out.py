"""A sparseprune model as a PyTorch ``nn.Sequential``: ``nn.Linear`` layers with the
model's activation between them, the pruning masks attached through
``torch.nn.utils.prune.custom_from_mask``. PyTorch is imported on first use."""

import numpy as np

__all__ = ["TORCH_ACTIVATIONS", "to_torch"]

#: sparseprune's activation -> the ``torch.nn`` module that computes it, and its arguments.
TORCH_ACTIVATIONS = {
    "relu": ("ReLU", {}),
    "tanh": ("Tanh", {}),
    "logistic": ("Sigmoid", {}),
    "identity": ("Identity", {}),
    "gelu": ("GELU", {"approximate": "none"}),
    "gelu_tanh": ("GELU", {"approximate": "tanh"}),
}


def torch_dtype(dtype):
    """The torch dtype of a numpy float32 or float64 ``dtype``."""
    import torch

    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def kept_mask(layer):
    """Bool (out, in), torch's orientation: True where ``layer`` keeps a weight (the
    mask of a masked layer, the stored pattern of a sparse one)."""
    inputs, outputs = layer.kept_positions()
    mask = np.zeros((layer.out_features, layer.in_features), bool)
    mask[outputs, inputs] = True
    return mask


def to_torch(model, masks=True):
    """``model`` (an MLP or a SparseMLP) as a ``torch.nn.Sequential`` of its dtype.

    ``Linear, act, Linear, act, ..., Linear``: ``nn.Linear`` layers holding the weights
    (as ``(out, in)``, torch's orientation) and biases, with the model's activation
    between them (ReLU, Tanh, Sigmoid, Identity, GELU or GELU(approximate="tanh")). The
    module ends in logits, as torch models do: the head (softmax, sigmoid or identity)
    belongs to the loss, ``torch.nn.CrossEntropyLoss``, ``BCEWithLogitsLoss`` or
    ``MSELoss``.

    With ``masks`` (the default) every ``Linear`` carries its mask through
    ``torch.nn.utils.prune.custom_from_mask``: ``weight_orig`` (the parameter),
    ``weight_mask`` (a buffer, 1 where the weight is kept) and ``weight`` (their
    product), so that training in torch keeps pruned weights at zero;
    ``torch.nn.utils.prune.remove(linear, "weight")`` makes a layer plain again.
    Without, the layers are plain ``nn.Linear`` with zeros where weights were pruned.
    """
    import torch
    from torch import nn
    from torch.nn.utils import prune, skip_init

    dtype = torch_dtype(model.dtype)
    modules = []
    for i, layer in enumerate(model.layers):
        if i:
            name, kwargs = TORCH_ACTIVATIONS[model.activation]
            modules.append(getattr(nn, name)(**kwargs))
        # skip_init: the weights are about to be overwritten, their random init is waste.
        linear = skip_init(nn.Linear, layer.in_features, layer.out_features, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer.to_dense().T)))
            linear.bias.copy_(torch.from_numpy(np.array(layer.bias)))
        if masks:
            prune.custom_from_mask(linear, "weight", torch.from_numpy(kept_mask(layer)))
        modules.append(linear)
    return nn.Sequential(*modules)
