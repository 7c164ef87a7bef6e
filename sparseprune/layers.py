"""Layers: a dense weight matrix with a pruning mask.

A layer maps feature-major activations ``(in, batch)`` to ``(out, batch)``. Users see
the weight as ``(in, out)``, like ``X @ W`` on sample-major data.
"""

import numpy as np

from ._validation import check_dtype, check_matrix
from .kernels.dense import dense_bias_act, dense_mask_grad, dense_relu_backward


class MaskedLinear:
    """A dense linear layer whose pruned weights are held at exactly zero.

    Parameters
    ----------
    weight : array (in, out)
    bias : array (out,)
    mask : bool array (in, out), optional
        True where a weight is live. Defaults to all True. Weights outside the mask are
        set to zero and stay zero: training never updates them.
    dtype : float32 or float64, optional
        Defaults to the weight's dtype if it is a float type, else float32.
    """

    def __init__(self, weight, bias, mask=None, dtype=None):
        weight = np.asarray(weight)
        if weight.ndim != 2:
            raise ValueError(f"weight must be 2-D (in, out), got shape {weight.shape}")
        if dtype is None:
            dtype = weight.dtype if weight.dtype in (np.float32, np.float64) else np.float32
        self.dtype = check_dtype(dtype)
        self.in_features, self.out_features = weight.shape
        self._mask = np.ones(weight.shape, dtype=bool)
        self.weight = weight
        self.bias = bias
        if mask is not None:
            self.mask = mask

    @property
    def shape(self):
        """(in, out)."""
        return (self.in_features, self.out_features)

    @property
    def weight(self):
        """The dense weight (in, out); zero wherever ``mask`` is False."""
        return self._weight

    @weight.setter
    def weight(self, value):
        # Always a copy: the layer owns its parameters and updates them in place.
        weight = check_matrix(value, self.shape, self.dtype, "weight").copy()
        weight[~self._mask] = 0
        self._weight = weight

    @property
    def bias(self):
        """The bias (out,); never pruned."""
        return self._bias

    @bias.setter
    def bias(self, value):
        self._bias = check_matrix(value, (self.out_features,), self.dtype, "bias").copy()

    @property
    def mask(self):
        """Bool (in, out): True where the weight is live."""
        return self._mask

    @mask.setter
    def mask(self, value):
        mask = check_matrix(value, self.shape, np.dtype(bool), "mask", finite=False).copy()
        self._mask = mask
        self._weight[~mask] = 0

    @property
    def n_weights(self):
        return self.in_features * self.out_features

    @property
    def n_active(self):
        """Live weights (biases not included)."""
        return int(np.count_nonzero(self._mask))

    @property
    def density(self):
        return self.n_active / self.n_weights

    # -- kernels ---------------------------------------------------------------------

    def forward(self, x, out, relu):
        """Fill ``out`` (out, batch) with ``W.T @ x + b``, ReLU'd if ``relu``.

        x: (in, batch), C-contiguous, of the layer's dtype.
        """
        np.matmul(self._weight.T, x, out=out)
        dense_bias_act(out, self._bias, relu)
        return out

    def backward(self, x, dz, grad_weight, dx=None):
        """Weight and input gradients from ``dz`` (out, batch), the gradient at the
        layer's pre-activation.

        Fills ``grad_weight`` (in, out) with ``x @ dz.T`` restricted to the mask, and
        ``dx`` (in, batch) with ``W @ dz`` if given. The bias gradient is the row sum of
        ``dz``, fused into the kernel that produced ``dz``.
        """
        np.matmul(x, dz.T, out=grad_weight)
        dense_mask_grad(grad_weight, self._mask)
        if dx is not None:
            np.matmul(self._weight, dz, out=dx)
        return grad_weight

    @staticmethod
    def relu_backward(a, da, grad_bias):
        """Turn ``da`` (out, batch), the gradient at a ReLU output ``a``, into the
        gradient at the pre-activation, in place, and fill ``grad_bias`` (out,)."""
        dense_relu_backward(a, da, grad_bias)
        return da

    def __repr__(self):
        return (
            f"MaskedLinear(in={self.in_features}, out={self.out_features}, "
            f"density={self.density:.3f}, dtype={self.dtype})"
        )
