"""Layers: a dense weight matrix with a pruning mask.

A layer maps feature-major activations ``(in, batch)`` to ``(out, batch)``. Users see
the weight as ``(in, out)``, like ``X @ W`` on sample-major data.
"""

import numpy as np

from ._timing import batch_bucket, best_times
from ._validation import (
    INDEX_DTYPE, check_choice, check_dtype, check_features, check_matrix, check_sparse_weight,
)
from .kernels.dense import dense_bias_act, dense_mask_grad, dense_relu_backward
from .ops import (
    EMPTY, aligned_empty, csr_forward, csr_gather, csr_transpose, csr_weight_grad, row_chunks,
)


def _read_only(a):
    view = a.view()
    view.flags.writeable = False
    return view


class _Linear:
    """What both layer kinds share: shape, bias, counts. Subclasses set
    ``in_features``, ``out_features``, ``dtype``, ``_bias`` and ``n_active``."""

    @property
    def shape(self):
        """(in, out)."""
        return (self.in_features, self.out_features)

    @property
    def bias(self):
        """The bias (out,); never pruned."""
        return self._bias

    @bias.setter
    def bias(self, value):
        self._bias = check_matrix(value, (self.out_features,), self.dtype, "bias").copy()

    @property
    def n_weights(self):
        return self.in_features * self.out_features

    @property
    def density(self):
        """Fraction of the weights that are live."""
        return self.n_active / self.n_weights if self.n_weights else 0.0


class MaskedLinear(_Linear):
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
    def weight(self):
        """The dense weight (in, out), zero wherever ``mask`` is False.

        A read-only view: assign ``layer.weight = W`` to change it, so that pruned
        weights stay zero.
        """
        return _read_only(self._weight)

    @weight.setter
    def weight(self, value):
        # Always a copy: the layer owns its parameters and updates them in place.
        weight = check_matrix(value, self.shape, self.dtype, "weight").copy()
        weight[~self._mask] = 0
        self._weight = weight

    @property
    def mask(self):
        """Bool (in, out): True where the weight is live.

        A read-only view: assign ``layer.mask = M`` to change it, which also zeroes the
        weights it removes.
        """
        return _read_only(self._mask)

    @mask.setter
    def mask(self, value):
        mask = check_matrix(value, self.shape, np.dtype(bool), "mask", finite=False).copy()
        self._mask = mask
        self._weight[~mask] = 0

    @property
    def n_active(self):
        """Live weights (biases not included)."""
        return int(np.count_nonzero(self._mask))

    # -- kernels ---------------------------------------------------------------------

    def csr_arrays(self):
        """The live weights as CSR of ``W.T`` (out, in): (indptr int32 (out + 1,),
        indices int32 (nnz,), data (nnz,)), row ``j`` holding output ``j``'s inputs."""
        rows, cols = np.nonzero(self._mask.T)
        indptr = np.zeros(self.out_features + 1, INDEX_DTYPE)
        np.cumsum(np.bincount(rows, minlength=self.out_features), out=indptr[1:])
        data = np.ascontiguousarray(self._weight.T[rows, cols])
        return indptr, cols.astype(INDEX_DTYPE), data

    def forward_fm(self, x, out, relu):
        """Fill ``out`` (out, batch) with ``W.T @ x + b``, ReLU'd if ``relu``.

        x: (in, batch), C-contiguous, of the layer's dtype.
        """
        np.matmul(self._weight.T, x, out=out)
        dense_bias_act(out, self._bias, relu)
        return out

    def backward_fm(self, x, dz, grad_weight, dx=None):
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


ENGINES = ("auto", "csr", "dense")


class SparseLinear(_Linear):
    """A linear layer whose weight is stored sparse: ``forward(X) == X @ W + bias``.

    Parameters
    ----------
    W : scipy.sparse array or matrix (in, out)
        Any format (CSR, CSC, COO, ...). Its stored entries are the layer's weights,
        explicit zeros included; duplicates are summed.
    bias : array (out,), optional
        Zeros by default.
    dtype : float32 or float64, optional
        W's dtype if it is one of these, else float32.

    The weight is held as CSR of ``W.T`` (out, in), int32 indices: row ``j`` lists the
    inputs of output ``j``, the same arrays as scipy's CSC of W. ``weight`` gives it
    back as a ``scipy.sparse.csc_array`` (in, out) that shares the layer's values.
    """

    def __init__(self, W, bias=None, dtype=None):
        shape, indptr, indices, data = check_sparse_weight(W, dtype=dtype, name="W")
        n_out = shape[1]
        bias = np.zeros(n_out) if bias is None else bias
        bias = check_matrix(bias, (n_out,), data.dtype, "bias").copy()
        self._setup(shape, indptr, indices, data, bias)

    @classmethod
    def _from_arrays(cls, shape, indptr, indices, data, bias):
        """A layer on arrays that have passed ``check_csr``; they are not copied."""
        layer = cls.__new__(cls)
        layer._setup(shape, indptr, indices, data, bias)
        return layer

    @classmethod
    def from_masked(cls, layer):
        """The surviving weights of a :class:`MaskedLinear`, as a new SparseLinear."""
        return cls._from_arrays(layer.shape, *layer.csr_arrays(), layer.bias.copy())

    def _setup(self, shape, indptr, indices, data, bias):
        self.in_features, self.out_features = shape
        self.dtype = data.dtype
        self._indptr, self._indices, self._data, self._bias = indptr, indices, data, bias
        self._row_bounds = row_chunks(indptr)
        self._transpose = None
        self.engine = "auto"

    # -- parameters ------------------------------------------------------------------

    @property
    def weight(self):
        """The weight as a ``scipy.sparse.csc_array`` (in, out), sharing the values.

        Its index arrays are read-only views: the pattern is fixed, and an index written
        out of range would send a kernel outside its arrays.
        """
        import scipy.sparse as sp

        return sp.csc_array(
            (self._data, _read_only(self._indices), _read_only(self._indptr)),
            shape=self.shape, copy=False,
        )

    @property
    def data(self):
        """The stored weights (nnz,), in CSR-of-``W.T`` order."""
        return self._data

    @property
    def nnz(self):
        return int(self._indices.size)

    n_active = nnz

    def csr_arrays(self):
        """(indptr (out + 1,), indices (nnz,), data (nnz,)): CSR of ``W.T``."""
        return self._indptr, self._indices, self._data

    def nbytes(self):
        """Bytes of the stored weight: data + indices + indptr."""
        return self._data.nbytes + self._indices.nbytes + self._indptr.nbytes

    # -- kernels ---------------------------------------------------------------------

    def forward(self, X):
        """``X @ W + bias`` for X (batch, in); returns (batch, out) of the layer's dtype."""
        X = check_features(X, self.in_features, self.dtype)
        xt = aligned_empty((X.shape[1], X.shape[0]), self.dtype)
        xt[...] = X.T
        out = aligned_empty((self.out_features, xt.shape[1]), self.dtype)
        return self.forward_fm(xt, out, relu=False).T

    __call__ = forward

    def forward_fm(self, x, out, relu):
        """Fill ``out`` (out, batch) with ``W.T @ x + b`` (ReLU'd if ``relu``) for
        feature-major ``x`` (in, batch); both C-contiguous, of the layer's dtype.

        With ``engine="auto"`` the first call at each batch-size bucket (powers of two)
        times the CSR kernel against a dense BLAS product on the real input and keeps
        the faster one for that bucket; a dense copy of the weight exists only while a
        bucket runs dense. ``engine="csr"`` or ``"dense"`` fixes the choice.
        """
        if self._choose_engine(x, out, relu) == "csr":
            self._csr_forward(x, out, relu)
        else:
            self._dense_forward(x, out, relu)
        return out

    def _csr_forward(self, x, out, relu):
        csr_forward(self._indptr, self._indices, self._data, self._row_bounds, self._bias,
                    relu, x, out)

    def _dense_forward(self, x, out, relu):
        if self._dense is None:
            self._dense = self.weight.toarray()
        np.matmul(self._dense.T, x, out=out)
        dense_bias_act(out, self._bias, relu)

    @property
    def engine(self):
        """"auto" (measure per batch-size bucket), "csr" or "dense"."""
        return self._engine

    @engine.setter
    def engine(self, value):
        self._engine = check_choice(value, "engine", ENGINES)
        self._plan = {}
        self._dense = None

    @property
    def plan(self):
        """What ``engine="auto"`` chose so far: {batch bucket: "csr" or "dense"}."""
        return dict(self._plan)

    def engine_for(self, batch):
        """The kernel ("csr" or "dense") this layer runs at ``batch`` samples, or None if
        ``engine="auto"`` has not measured that batch size's bucket yet."""
        return self._engine if self._engine != "auto" else self._plan.get(batch_bucket(batch))

    def _choose_engine(self, x, out, relu):
        if self._engine != "auto":
            return self._engine
        bucket = batch_bucket(x.shape[1])
        choice = self._plan.get(bucket)
        if choice is None:
            times = best_times({"csr": lambda: self._csr_forward(x, out, relu),
                                "dense": lambda: self._dense_forward(x, out, relu)})
            choice = self._plan[bucket] = min(times, key=times.get)
            if "dense" not in self._plan.values():
                self._dense = None
        return choice

    def _transposed(self):
        """The pattern of W (in, out) as CSR, for the input gradient, built once."""
        if self._transpose is None:
            indptr_t, indices_t, perm = csr_transpose(
                self.in_features, self._indptr, self._indices)
            data_t = np.empty_like(self._data)
            self._transpose = (indptr_t, indices_t, perm, data_t, row_chunks(indptr_t))
        return self._transpose

    def backward_fm(self, x, dz, grad_data, dx=None):
        """Weight and input gradients from ``dz`` (out, batch), the gradient at the
        pre-activation, for feature-major input ``x`` (in, batch).

        Fills ``grad_data`` (nnz,) with the weight gradient on the pattern only (one
        dot product over the batch per stored weight), and ``dx`` (in, batch) with
        ``W @ dz`` if given. The bias gradient is fused into the kernel that made ``dz``.
        """
        csr_weight_grad(self._indptr, self._indices, self._row_bounds, dz, x, grad_data)
        if dx is not None:
            indptr_t, indices_t, perm, data_t, bounds_t = self._transposed()
            # The values change at every optimizer step; one gather refreshes them.
            csr_gather(perm, self._data, data_t)
            csr_forward(indptr_t, indices_t, data_t, bounds_t, EMPTY[self.dtype], False,
                        dz, dx)
        return grad_data

    def to_dense(self):
        """The weight as a dense array (in, out)."""
        return self.weight.toarray()

    def __repr__(self):
        return (
            f"SparseLinear(in={self.in_features}, out={self.out_features}, nnz={self.nnz}, "
            f"density={self.density:.3f}, dtype={self.dtype})"
        )
