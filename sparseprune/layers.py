"""Layers: a dense weight with a pruning mask, or only the surviving weights as CSR.

Both kinds present one face. Users see the weight as ``(in, out)``, like ``X @ W`` on
sample-major data:

- ``forward(X)``: ``X @ W + bias`` on sample-major X (batch, in), validated;
- ``forward_fm(x, out, act)`` and ``backward_fm(x, dz, grad, dx)``: the passes on
  feature-major activations ``(features, batch)``, already validated (the ``_fm``
  contract: C-contiguous, of the layer's dtype); ``act`` is an activation code of
  ``kernels.dense`` (``IDENTITY``, ``RELU``, ...), applied after the bias;
- the surviving ("kept") weights in one order, CSR of ``W.T`` (by output, then input),
  whatever the kind: ``kept_values()``, ``kept_positions()``, ``csr_arrays()``, and
  ``with_values(kept, bias)``, a copy with new values on the same pattern;
- ``parameters()``: the flat arrays an optimizer updates in place, with their masks.

A third kind, :class:`QuantizedLinear`, serves a sparse layer whose values are b-bit
codes: it has the inference half of the face (``forward``, ``forward_fm``, the kept
weights, ``csr_arrays``, ``with_values``, ``nbytes``, ``stored_arrays``: what a model
file holds of it) and no training half.

Callers never need to know which kind they hold, nor touch its private state.
"""

import warnings
import weakref

import numpy as np
import scipy.sparse as sp

from ._tuning import MEASURE_SAMPLES, Plan, check_backend
from ._validation import (
    INDEX_DTYPE, check_dtype, check_features, check_matrix, check_quantized_bits,
    check_sparse_weight, writable,
)
from .kernels.dense import IDENTITY, RELU, dense_bias_act, dense_mask_grad
from .mdl.pieces import quantize
from .ops import (
    EMPTY, aligned_empty, csr_forward, csr_forward_sm, csr_gather, csr_transpose,
    csr_values_from_dense, csr_values_into_dense, csr_weight_grad, dense_sync,
    leading_columns, masked_to_csr, narrow_indices, panel_layout, row_chunks,
)
from .quantized_ops import (
    dequantization_table, index_dtype, qcsr_forward, qcsr_forward_sm,
)

__all__ = ["MaskedLinear", "QuantizedLinear", "SparseLinear"]


def _read_only(a):
    view = a.view()
    view.flags.writeable = False
    return view


class _Linear:
    """What both layer kinds share. Subclasses set ``in_features``, ``out_features``,
    ``dtype`` and ``_bias``, and implement ``n_active``, ``csr_arrays``, ``forward_fm``
    and ``with_values``."""

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
        """in * out: every weight, pruned or not."""
        return self.in_features * self.out_features

    @property
    def density(self):
        """Fraction of the weights that are live."""
        return self.n_active / self.n_weights if self.n_weights else 0.0

    def forward(self, X):
        """``X @ W + bias`` for X (batch, in); returns (batch, out) of the layer's dtype."""
        X = check_features(X, self.in_features, self.dtype)
        xt = aligned_empty((X.shape[1], X.shape[0]), self.dtype)
        xt[...] = X.T
        out = aligned_empty((self.out_features, xt.shape[1]), self.dtype)
        return self.forward_fm(xt, out, IDENTITY).T

    def __call__(self, X):
        return self.forward(X)

    def kept_values(self):
        """The surviving weights (nnz,) of the layer's dtype, in CSR-of-``W.T`` order
        (by output, then input): the order of ``csr_arrays()`` and ``kept_positions()``."""
        return self.csr_arrays()[2].copy()

    def kept_positions(self):
        """(inputs, outputs), int64 (nnz,) each: where the kept weights sit in W (in, out),
        in CSR-of-``W.T`` order; ``W[kept_positions()] == kept_values()``."""
        indptr, indices, _ = self.csr_arrays()
        outputs = np.repeat(np.arange(self.out_features, dtype=np.int64), np.diff(indptr))
        return indices.astype(np.int64), outputs

    def nbytes(self):
        """Bytes of the weight as this layer stores it."""
        raise NotImplementedError

    def stored_arrays(self):
        """What a model file holds of this layer, as ``io.write_arrays`` takes it: the
        pattern as CSR of ``W.T`` (``indptr``, ``indices``) with the float ``data`` and
        ``bias``."""
        indptr, indices, data = self.csr_arrays()
        return {"indptr": indptr, "indices": indices, "data": data, "bias": self.bias}

    def _panels(self):
        """The stored CSR's panel layout (``ops.panel_layout``; None where panels do not
        pay), for the tiled forward of layers with many inputs: built when that forward
        first runs and kept, as the pattern never changes. The kernels read the values in
        place, so it never goes stale."""
        if self._panel_cache is None:
            self._panel_cache = (panel_layout(self._indptr, self._indices, self.in_features),)
        return self._panel_cache[0]

    def _new_values(self, kept, bias):
        """``kept`` (nnz,) and ``bias`` (out,) for :meth:`with_values`, checked (shape,
        real numbers, finite) and cast to the layer's dtype: the kernels trust them."""
        return (check_matrix(kept, (self.n_active,), self.dtype, "kept"),
                check_matrix(bias, (self.out_features,), self.dtype, "bias"))


# OpenBLAS's kernels can raise the "invalid" floating-point flag on finite operands
# (numpy/numpy#24067, OpenMathLib/OpenBLAS#1924), which NumPy turns into a RuntimeWarning
# after the product: seen in CI once, float32, a layer of 2 x 1, on the first call and
# not on a rerun. The inputs here are finite (checked at the boundary), and a NaN that a
# product really makes still reaches the loss; so the layers' dense products ignore the
# flag rather than warn at random. A new errstate per use: NumPy's may not be entered
# twice at once, and layers run in several threads.
def _blas_flags():
    return np.errstate(invalid="ignore")


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
        self._forget_twins()
        self._mask = np.ones(weight.shape, dtype=bool)
        self.weight = weight
        self.bias = bias
        if mask is not None:
            self.mask = mask

    # -- parameters ------------------------------------------------------------------

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
        self._forget_twins()
        self._mask = mask
        self._weight[~mask] = 0

    @property
    def n_active(self):
        """Live weights (biases not included)."""
        return int(np.count_nonzero(self._mask))

    nnz = n_active

    def nbytes(self):
        """Bytes of the dense weight (the mask not counted)."""
        return self._weight.nbytes

    # -- the sparse twin -------------------------------------------------------------

    def sparse_twin(self):
        """A :class:`SparseLinear` (backend ``"sparse"``) on this layer's pattern, holding
        its kept weights as they are now and sharing its bias array: what the sparse
        training backend trains in place, then hands back with :meth:`keep_twin`.

        The twin kept by :meth:`keep_twin` is returned again while the mask stands, its
        values read afresh from the weight: its pattern and what was made from it (the
        transposed pattern, panel layouts) are not made again. At 2048^2, 90%, that read
        takes about 1 ms where a new twin costs some 15.
        """
        twin = self._twin
        if twin is None:
            indptr, indices, data = masked_to_csr(self._weight, self._mask)
            twin = SparseLinear.from_csr(self.shape, indptr, indices, data, self._bias,
                                         backend="sparse")
            self._made = weakref.ref(twin)
        else:
            twin._bias = self._bias  # the bias may have been assigned anew since
            csr_values_from_dense(twin._transposed_pattern(), self._weight, twin._data)
        return twin

    def keep_twin(self, twin):
        """Write the values of ``twin``, a :meth:`sparse_twin` of this layer made since
        its mask last changed, into the weight, and keep the twin for the next
        :meth:`sparse_twin` until the mask changes. Its memory (about 24 bytes a kept
        weight with the transposed pattern, more with panel layouts) is held until then;
        a pickled or copied layer holds none."""
        made = self._made() if self._made is not None else None
        if twin is not self._twin and twin is not made:
            raise ValueError("twin must be a sparse_twin() of this layer made since its "
                             "mask last changed")
        csr_values_into_dense(twin._transposed_pattern(), twin._data, self._weight)
        self._twin, self._made = twin, None

    def _forget_twins(self):
        self._twin = None
        self._made = None

    def __getstate__(self):
        # A twin is a cache (and a weak reference cannot be pickled): a copy starts
        # without one.
        state = dict(self.__dict__)
        state.pop("_twin", None)
        state.pop("_made", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._forget_twins()

    def csr_arrays(self):
        """The live weights as CSR of ``W.T`` (out, in): (indptr int32 (out + 1,),
        indices int32 (nnz,), data (nnz,)), row ``j`` holding output ``j``'s inputs.
        New arrays: the layer's own are dense."""
        return masked_to_csr(self._weight, self._mask)

    def assign_kept(self, values, positions=None):
        """Set the kept weights, in place, to ``values`` (nnz,) in CSR-of-``W.T`` order
        (the order of :meth:`kept_values`). ``positions``, if given, is the layer's
        :meth:`kept_positions` already computed (a caller that holds it saves a scan
        of the whole mask)."""
        if positions is None:
            positions = self.kept_positions()
        inputs, outputs = positions
        # One flat index rather than the (inputs, outputs) pair: 12.5-13.0 against
        # 19.3-19.7 ms at 2048^2, 90%, the index's own arithmetic included
        # (at 6afd9d5; `benchmarks/tune.py layout` times both forms). The weight is
        # C-contiguous: ravel is a view.
        self._weight.ravel()[inputs * self.out_features + outputs] = values

    def with_values(self, kept, bias):
        """A new MaskedLinear with this mask, the kept weights ``kept`` (nnz,) in
        CSR-of-``W.T`` order and ``bias`` (out,), cast to the layer's dtype."""
        kept, bias = self._new_values(kept, bias)
        weight = np.zeros(self.shape, self.dtype)
        weight[self.kept_positions()] = kept
        return MaskedLinear(weight, bias, mask=self._mask, dtype=self.dtype)

    def to_dense(self):
        """The weight as a new dense array (in, out)."""
        return self._weight.copy()

    def parameters(self):
        """[(values, live)] for the optimizer: the weight and the bias as flat writable
        views of the layer's own arrays, each with a flat bool array of its live entries.
        An optimizer that honours ``live`` keeps pruned weights at zero."""
        return [(self._weight.ravel(), self._mask.ravel()),
                (self._bias, np.ones(self.out_features, bool))]

    # -- passes ----------------------------------------------------------------------

    def forward_fm(self, x, out, act):
        """Fill ``out`` (out, batch) with ``act(W.T @ x + b)``.

        x: (in, batch), C-contiguous, of the layer's dtype; act: an activation code.
        """
        with _blas_flags():
            np.matmul(self._weight.T, x, out=out)
        dense_bias_act(out, self._bias, act)
        return out

    def backward_fm(self, x, dz, grad_weight, dx=None):
        """Weight and input gradients from ``dz`` (out, batch), the gradient at the
        layer's pre-activation.

        Fills ``grad_weight`` (in, out) with ``x @ dz.T`` restricted to the mask, and
        ``dx`` (in, batch) with ``W @ dz`` if given. The bias gradient is the row sum of
        ``dz``, fused into the kernel that produced ``dz``.
        """
        with _blas_flags():
            np.matmul(x, dz.T, out=grad_weight)
        dense_mask_grad(grad_weight, self._mask)
        if dx is not None:
            with _blas_flags():
                np.matmul(self._weight, dz, out=dx)
        return grad_weight

    def __repr__(self):
        return (
            f"MaskedLinear(in={self.in_features}, out={self.out_features}, "
            f"density={self.density:.3f}, dtype={self.dtype})"
        )


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
    backend : "auto", "sparse" or "dense"
        How the forward pass computes: the CSR kernels, a BLAS product on a dense copy
        of the weight, or (``"auto"``) whichever measures faster at each batch-size
        bucket (see :attr:`plan`).

    The weight is held as CSR of ``W.T`` (out, in): row ``j`` lists the inputs of output
    ``j``, the same arrays as scipy's CSC of W, its column indices as uint16 when the
    layer has at most 65,536 inputs (6 bytes a nonzero with a float32 value instead of 8:
    the forward kernels are bound by the bytes they read), else int32. ``weight`` gives
    it back as a ``scipy.sparse.csc_array`` (in, out) that shares the layer's values.

    A layer of 2,048 inputs or more, once it has run a forward on register tiles of
    samples (from 32 samples at float32 with AVX-512; with AVX2's narrower tiles, from 2
    MiB of packed samples below 4,096 inputs) or a backward, also keeps its pattern cut
    into column panels (``ops.panel_layout``: a byte per nonzero, its column's offset
    within its panel, and 8 bytes per output and panel), which those then run on. The
    values stay where they are.
    """

    def __init__(self, W, bias=None, dtype=None, backend="auto"):
        shape, indptr, indices, data = check_sparse_weight(W, dtype=dtype, name="W")
        n_out = shape[1]
        bias = np.zeros(n_out) if bias is None else bias
        bias = check_matrix(bias, (n_out,), data.dtype, "bias").copy()
        self._setup(shape, indptr, indices, data, bias, check_backend(backend))

    @classmethod
    def from_csr(cls, shape, indptr, indices, data, bias, backend="auto"):
        """A layer on CSR arrays of ``W.T`` that are already validated (``check_csr``:
        int32 indices in range, canonical, finite values; ``bias`` (out,) of the data's
        dtype). The arrays are used as they are, not copied: the package's own path
        from files and masked layers."""
        layer = cls.__new__(cls)
        layer._setup(tuple(shape), indptr, indices, data, bias, check_backend(backend))
        return layer

    @classmethod
    def from_masked(cls, layer, backend="auto"):
        """The surviving weights of a :class:`MaskedLinear`, as a new SparseLinear."""
        return cls.from_csr(layer.shape, *layer.csr_arrays(), layer.bias.copy(), backend)

    def _setup(self, shape, indptr, indices, data, bias, backend):
        indptr, indices, data, bias = map(writable, (indptr, indices, data, bias))
        self.in_features, self.out_features = shape
        self.dtype = data.dtype
        # The forward kernels read the narrowest index type; int32 ones are made when the
        # backward pass or an export asks for them, and kept (training asks every step).
        narrow = indices if indices.dtype == np.uint16 else narrow_indices(indices,
                                                                            shape[0])
        self._wide = narrow if narrow.dtype == INDEX_DTYPE else None
        self._indptr, self._indices, self._data, self._bias = indptr, narrow, data, bias
        self._row_bounds = row_chunks(indptr)
        self._panel_cache = None
        self._transpose = None
        self._transpose_panel_cache = None
        self.plan = Plan()
        self.backend = backend

    # -- parameters ------------------------------------------------------------------

    @property
    def weight(self):
        """The weight as a ``scipy.sparse.csc_array`` (in, out), sharing the values.

        Its index arrays are read-only views: the pattern is fixed, and an index written
        out of range would send a kernel outside its arrays.
        """
        return sp.csc_array(
            (self._data, _read_only(self._wide_indices()), _read_only(self._indptr)),
            shape=self.shape, copy=False,
        )

    @property
    def data(self):
        """The stored weights (nnz,), in CSR-of-``W.T`` order: the layer's own array."""
        return self._data

    @property
    def nnz(self):
        return int(self._indices.size)

    n_active = nnz

    def csr_arrays(self):
        """(indptr (out + 1,), indices (nnz,), data (nnz,)): CSR of ``W.T``, int32
        indices; the layer's own arrays (the int32 indices made once from the stored
        uint16 ones if the layer holds those)."""
        return self._indptr, self._wide_indices(), self._data

    def _wide_indices(self):
        if self._wide is None:
            self._wide = self._indices.astype(INDEX_DTYPE)
        return self._wide

    def nbytes(self):
        """Bytes of the stored weight as the forward kernels read it: data + indices (the
        narrowest type that holds them) + indptr."""
        return self._data.nbytes + self._indices.nbytes + self._indptr.nbytes

    def with_values(self, kept, bias):
        """A new SparseLinear on this pattern (shared, never changed) with the values
        ``kept`` (nnz,) and ``bias`` (out,), cast to the layer's dtype.

        The copy keeps a fixed backend; an ``"auto"`` layer's copy runs the CSR kernels,
        as copies are made to be evaluated a few times (noisy weights, quantized ones),
        too few to pay for measuring, and a fixed backend keeps their results
        reproducible."""
        kept, bias = self._new_values(kept, bias)
        backend = "sparse" if self._backend == "auto" else self._backend
        copy = SparseLinear.from_csr(self.shape, self._indptr, self._indices, kept, bias,
                                     backend)
        copy._panel_cache = self._panel_cache  # the same pattern: its layout is shared
        return copy

    def to_dense(self):
        """The weight as a new dense array (in, out)."""
        return self.weight.toarray()

    def parameters(self):
        """[(values, live)] for the optimizer: the stored weights and the bias, the
        layer's own arrays, each with a flat bool array of its live entries (all)."""
        return [(self._data, np.ones(self._data.size, bool)),
                (self._bias, np.ones(self.out_features, bool))]

    # -- the backend -------------------------------------------------------------------

    @property
    def backend(self):
        """"auto" (measured per batch-size bucket), "sparse" (CSR kernels) or "dense"."""
        return self._backend

    @backend.setter
    def backend(self, value):
        self._backend = check_backend(value)
        self.plan.reset()
        self._dense = None

    def backend_for(self, batch, public=False):
        """The backend ("sparse" or "dense") this layer runs at ``batch`` samples, or None
        if ``backend="auto"`` has not measured that batch size's bucket yet: inside a
        model (``forward_fm``, decision "backend"), or on the public sample-major path
        with ``public=True`` (``forward``, decision "forward")."""
        if self._backend != "auto":
            return self._backend
        return self.plan.get("forward" if public else "backend", batch)

    # The names of sparseprune 0.1, kept working: "engine" with "csr" for "sparse".
    _OLD_NAMES = {"csr": "sparse", "dense": "dense", "auto": "auto"}

    @property
    def engine(self):
        """Deprecated: :attr:`backend`, with "csr" for "sparse"."""
        warnings.warn("SparseLinear.engine is deprecated; use .backend ('sparse' for 'csr')",
                      DeprecationWarning, stacklevel=2)
        return "csr" if self._backend == "sparse" else self._backend

    @engine.setter
    def engine(self, value):
        warnings.warn("SparseLinear.engine is deprecated; use .backend ('sparse' for 'csr')",
                      DeprecationWarning, stacklevel=2)
        self.backend = self._OLD_NAMES.get(value, value)

    def engine_for(self, batch):
        """Deprecated: :meth:`backend_for`, with "csr" for "sparse"."""
        warnings.warn("SparseLinear.engine_for is deprecated; use .backend_for",
                      DeprecationWarning, stacklevel=2)
        chosen = self.backend_for(batch)
        return "csr" if chosen == "sparse" else chosen

    def forward(self, X):
        """``X @ W + bias`` for X (batch, in); returns (batch, out) of the layer's dtype,
        C-contiguous.

        The public path costs what the kernel costs: X is packed into the kernel's tiles
        straight from its rows, the finiteness check riding along, and the kernel writes
        sample-major rows; no transposes at the edges. With ``backend="auto"`` this path
        measures its own choice per batch bucket (decision "forward", the CSR kernels
        against ``X @ W + bias``).
        """
        given = X
        backend = self._backend
        # Shapes and dtypes are checked before any kernel runs; finiteness rides along
        # with the packing (no pass of its own over X), except on the call that measures
        # a batch bucket: contenders are never timed on input that will be refused.
        X = writable(check_features(X, self.in_features, self.dtype, finite=False))
        out = np.empty((X.shape[0], self.out_features), self.dtype)
        if backend == "auto":
            backend = self.plan.get("forward", X.shape[0])
        if backend is None:
            X = writable(check_features(given, self.in_features, self.dtype))
            part, part_out = X[:MEASURE_SAMPLES], out[:MEASURE_SAMPLES]
            backend = self.plan.choose("forward", X.shape[0], {
                "sparse": lambda: self._sparse_forward_sm(part, part_out),
                "dense": lambda: self._dense_forward_sm(part, part_out)},
                measured_at=part.shape[0])
        finite = (self._sparse_forward_sm(X, out) if backend == "sparse"
                  else self._dense_forward_sm(X, out))
        if not finite:
            check_features(given, self.in_features, self.dtype)  # raises, saying why
        return out

    def _sparse_forward_sm(self, X, out):
        return csr_forward_sm(self._indptr, self._indices, self._data, self._row_bounds,
                              self._bias, False, X, out, panels=self._panels)

    def _dense_forward_sm(self, X, out):
        dense = self._dense_weight()
        with np.errstate(invalid="ignore", over="ignore"):
            np.matmul(X, dense, out=out)
            out += self._bias
        return bool(np.isfinite(X).all())

    def _choose(self, x, out, act):
        if self._backend != "auto":
            return self._backend
        choice = self.plan.get("backend", x.shape[1])
        if choice is None:
            part = leading_columns(x, MEASURE_SAMPLES)
            part_out = out if part is x else aligned_empty((out.shape[0], part.shape[1]),
                                                           out.dtype)
            choice = self.plan.choose("backend", x.shape[1], {
                "sparse": lambda: self._sparse_forward(part, part_out, act),
                "dense": lambda: self._dense_forward(part, part_out, act)},
                measured_at=part.shape[1])
        if "dense" not in self.plan.winners("backend") | self.plan.winners("forward"):
            self._dense = None
        return choice

    # -- passes ----------------------------------------------------------------------

    def forward_fm(self, x, out, act):
        """Fill ``out`` (out, batch) with ``act(W.T @ x + b)`` for feature-major ``x``
        (in, batch); both C-contiguous, of the layer's dtype; act: an activation code.

        With ``backend="auto"`` the first call at each batch-size bucket (powers of two)
        times the CSR kernel against a dense BLAS product on the real input and keeps
        the faster one for that bucket; a dense copy of the weight exists only while a
        bucket runs dense.
        """
        if self._choose(x, out, act) == "sparse":
            self._sparse_forward(x, out, act)
        else:
            self._dense_forward(x, out, act)
        return out

    def _sparse_forward(self, x, out, act):
        # The CSR kernels fuse the bias and ReLU; another activation is one more pass.
        csr_forward(self._indptr, self._indices, self._data, self._row_bounds, self._bias,
                    act == RELU, x, out, panels=self._panels)
        if act not in (IDENTITY, RELU):
            dense_bias_act(out, EMPTY[self.dtype], act)

    def _dense_forward(self, x, out, act):
        dense = self._dense_weight()
        with _blas_flags():
            np.matmul(dense.T, x, out=out)
        dense_bias_act(out, self._bias, act)

    def _dense_weight(self):
        """The weight as a dense (in, out) array, for the dense backend: made at its
        first use, then kept and brought up to date with the values before each use, as
        ``data`` is the layer's own array and may have been written in place since (by a
        user, through ``data`` or ``weight``). The check reads each value and its copy
        from the last use once (``dense_sync``: 0.3 ms at 1.7 million nonzeros, 3 ms at
        10 million, where the dense product it serves takes 45 ms at batch 256) and
        rewrites only what changed."""
        cached = self._dense
        fresh = cached is None
        if fresh:
            # W.T (out, in) C-contiguous, so each CSR row's writes are contiguous; from
            # zeros, the first sync writes every value.
            cached = (np.zeros((self.out_features, self.in_features), self.dtype),
                      np.zeros_like(self._data))
        dense_sync(self._indptr, self._indices, self._row_bounds, self._data, cached[1],
                   cached[0])
        if fresh:
            # Published whole, as one tuple, once written: a concurrent first call
            # makes its own rather than reading a half-written one.
            self._dense = cached
        return cached[0].T

    def _transposed(self):
        """The pattern of W (in, out) as CSR, for the input gradient, built once: its
        column indices in the narrowest type (``narrow_indices``), a gather order for
        its values, their buffer and row chunks."""
        if self._transpose is None:
            indptr_t, indices_t, perm = csr_transpose(
                self.in_features, self._indptr, self._wide_indices())
            indices_t = narrow_indices(indices_t, self.out_features)
            data_t = np.empty_like(self._data)
            self._transpose = (indptr_t, indices_t, perm, data_t, row_chunks(indptr_t))
        return self._transpose

    def _transposed_pattern(self):
        """(indptr_t, indices_t, perm, row_bounds_t) of :meth:`_transposed`: what moves
        values between CSR-of-``W.T`` order and a dense (in, out) weight."""
        indptr_t, indices_t, perm, _, bounds_t = self._transposed()
        return indptr_t, indices_t, perm, bounds_t

    def _transposed_panels(self):
        """The transposed pattern's panel layout (as ``_panels`` is the pattern's), for
        the input gradient of a layer of 2,048 outputs or more; built when first used."""
        if self._transpose_panel_cache is None:
            indptr_t, indices_t = self._transposed()[:2]
            self._transpose_panel_cache = (panel_layout(indptr_t, indices_t,
                                                        self.out_features),)
        return self._transpose_panel_cache[0]

    def backward_fm(self, x, dz, grad_data, dx=None):
        """Weight and input gradients from ``dz`` (out, batch), the gradient at the
        pre-activation, for feature-major input ``x`` (in, batch).

        Fills ``grad_data`` (nnz,) with the weight gradient on the pattern only (one
        dot product over the batch per stored weight), and ``dx`` (in, batch) with
        ``W @ dz`` if given. The bias gradient is fused into the kernel that made ``dz``.
        """
        csr_weight_grad(self._indptr, self._wide_indices(), self._row_bounds, dz, x,
                        grad_data, panels=self._panels)
        if dx is not None:
            indptr_t, indices_t, perm, data_t, bounds_t = self._transposed()
            # The values change at every optimizer step; one gather refreshes them.
            csr_gather(perm, self._data, data_t)
            csr_forward(indptr_t, indices_t, data_t, bounds_t, EMPTY[self.dtype], False,
                        dz, dx, panels=self._transposed_panels)
        return grad_data

    def __repr__(self):
        return (
            f"SparseLinear(in={self.in_features}, out={self.out_features}, nnz={self.nnz}, "
            f"density={self.density:.3f}, dtype={self.dtype}, backend={self.backend!r})"
        )


class QuantizedLinear(_Linear):
    """A sparse layer whose kept weights and biases are ``bits``-bit codes, for serving:
    ``forward(X) == X @ W_q + b_q`` with W_q and b_q the dequantized weight and bias.

    Parameters
    ----------
    W : scipy.sparse array or matrix (in, out)
        As for :class:`SparseLinear`: its stored entries are the weights to quantize.
    bias : array (out,), optional
        Zeros by default; quantized with the weights.
    bits : int, 2 to 8
    dtype : float32 or float64, optional
        Of the computation and the dequantized values; W's dtype if it is one of these.

    The quantizer is the one the two-part code counts (``mdl.quantize``): per layer, the
    kept weights and the biases together, ``2**bits`` levels from ``offset`` with spacing
    ``step`` (two float32), every value within half a step of its code's. The layer is
    therefore the model ``mdl.description_length(model, X, y, bits=bits)`` describes.

    Held: the pattern as CSR of ``W.T`` (indptr int32 (out + 1,); indices uint16 for at
    most 65,536 inputs, else int32 (nnz,)), ``codes`` uint8 (nnz,) and ``bias_codes``
    uint8 (out,), ``step`` and ``offset``; the dequantized bias (out,) and the table of the
    ``2**bits`` values, in ``dtype``. No float weight array: the kernels dequantize as they
    go (``kernels/quantized.py``). Forward only, always through those kernels.
    """

    def __init__(self, W, bias=None, bits=8, dtype=None):
        bits = check_quantized_bits(bits)
        shape, indptr, indices, data = check_sparse_weight(W, dtype=dtype, name="W")
        bias = np.zeros(shape[1]) if bias is None else bias
        bias = check_matrix(bias, (shape[1],), data.dtype, "bias")
        self._quantize(shape, indptr, indices, data.astype(np.float64),
                       bias.astype(np.float64), bits, data.dtype)

    @classmethod
    def from_layer(cls, layer, bits=8):
        """``layer`` (a MaskedLinear, SparseLinear or QuantizedLinear) with its kept
        weights and biases quantized to ``bits`` bits, in its dtype. A QuantizedLinear
        is quantized again from its exact values (``offset + step * code`` in float64): at
        its own ``bits`` that gives back its codes, step and offset."""
        bits = check_quantized_bits(bits)
        if not isinstance(layer, _Linear):
            raise TypeError(f"layer must be a MaskedLinear, SparseLinear or QuantizedLinear, "
                            f"got {type(layer).__name__}")
        indptr, indices, values = layer.csr_arrays()
        if isinstance(layer, QuantizedLinear):
            exact = dequantization_table(layer.bits, layer.offset, layer.step, np.float64)
            values, bias = exact[layer._codes], exact[layer._bias_codes]
        else:
            values, bias = values.astype(np.float64), layer.bias.astype(np.float64)
        layer_q = cls.__new__(cls)
        layer_q._quantize(layer.shape, indptr, indices, values, bias, bits, layer.dtype)
        return layer_q

    @classmethod
    def from_codes(cls, shape, indptr, indices, codes, bias_codes, bits, offset, step, dtype):
        """A layer on arrays that are already validated: CSR of ``W.T`` (``check_csr``),
        ``codes`` uint8 (nnz,) and ``bias_codes`` uint8 (out,) below ``2**bits``, ``bits``
        in 2..8, ``offset`` and ``step`` finite float32 (step >= 0). The package's own path
        from files; a table of values that overflows ``dtype`` is a ValueError."""
        layer = cls.__new__(cls)
        layer._setup(tuple(shape), indptr, indices, codes, bias_codes, bits, offset, step,
                     np.dtype(dtype))
        return layer

    def _quantize(self, shape, indptr, indices, values, bias, bits, dtype):
        q, offset, step = quantize(np.concatenate([values, bias]), bits)
        q = q.astype(np.uint8)
        self._setup(shape, indptr, indices, q[: values.size], q[values.size :], bits, offset,
                    step, dtype)

    def _setup(self, shape, indptr, indices, codes, bias_codes, bits, offset, step, dtype):
        self.in_features, self.out_features = shape
        self.dtype = dtype
        self.bits = int(bits)
        #: The quantizer, as float32: value = offset + step * code.
        self.offset, self.step = np.float32(offset), np.float32(step)
        table = dequantization_table(self.bits, self.offset, self.step, dtype)
        if not np.isfinite(table).all():
            raise ValueError(f"offset {self.offset} and step {self.step} give values beyond "
                             f"the range of {dtype} at {bits} bits")
        self._table = table
        # The kernels' signatures take writable arrays (as SparseLinear's): read-only
        # ones (a buffer read from a file, a memory map) are copied once here.
        self._indptr, self._indices, self._codes, self._bias_codes = (
            a if a.flags.writeable else a.copy() for a in (
                np.ascontiguousarray(indptr, INDEX_DTYPE),
                np.ascontiguousarray(indices, index_dtype(self.in_features)),
                np.ascontiguousarray(codes, np.uint8),
                np.ascontiguousarray(bias_codes, np.uint8)))
        self._bias = table[self._bias_codes]
        self._kernel_step, self._kernel_offset = dtype.type(self.step), dtype.type(self.offset)
        self._row_bounds = row_chunks(self._indptr)
        self._panel_cache = None
        #: Measured choices: none (the backend is fixed); here for the common face.
        self.plan = Plan()

    # -- parameters ------------------------------------------------------------------

    @property
    def bias(self):
        """The dequantized bias (out,), read-only: it is ``offset + step * bias_codes``."""
        return _read_only(self._bias)

    @property
    def codes(self):
        """The kept weights' codes, uint8 (nnz,) in CSR-of-``W.T`` order, read-only."""
        return _read_only(self._codes)

    @property
    def bias_codes(self):
        """The biases' codes, uint8 (out,), read-only."""
        return _read_only(self._bias_codes)

    @property
    def table(self):
        """The ``2**bits`` values the codes stand for, of the layer's dtype, read-only."""
        return _read_only(self._table)

    @property
    def nnz(self):
        return int(self._codes.size)

    n_active = nnz

    @property
    def weight(self):
        """The dequantized weight as a new ``scipy.sparse.csc_array`` (in, out)."""
        indptr, indices, values = self.csr_arrays()
        return sp.csc_array((values, indices, indptr), shape=self.shape)

    def csr_arrays(self):
        """The dequantized weight as CSR of ``W.T``: (indptr int32 (out + 1,), indices
        int32 (nnz,), values (nnz,)), new arrays (the layer's own hold codes)."""
        return (self._indptr.copy(), self._indices.astype(INDEX_DTYPE),
                self._table[self._codes])

    def kept_values(self):
        """The dequantized kept weights (nnz,), in CSR-of-``W.T`` order."""
        return self._table[self._codes]

    def stored_arrays(self):
        """What a model file holds of this layer: the pattern as CSR of ``W.T``
        (``indptr``, ``indices``), the ``codes`` and ``bias_codes`` with ``bits`` and the
        quantizer's ``offset`` and ``step``: no float values."""
        indptr, indices, _ = self.csr_arrays()
        return {"indptr": indptr, "indices": indices, "codes": self.codes,
                "bias_codes": self.bias_codes, "bits": self.bits, "offset": self.offset,
                "step": self.step}

    def nbytes(self):
        """Bytes the layer holds for its weight: codes (1 a nonzero), indices (2 or 4),
        indptr, the bias codes, the table and the step and offset (the float bias, as
        every layer's, is counted by the model)."""
        arrays = (self._codes, self._indices, self._indptr, self._bias_codes, self._table)
        return sum(a.nbytes for a in arrays) + self.offset.nbytes + self.step.nbytes

    def with_values(self, kept, bias):
        """A float :class:`SparseLinear` on this pattern with the values ``kept`` (nnz,)
        and ``bias`` (out,), cast to the layer's dtype, on the CSR kernels: values off
        the grid have no codes (noisy weights, another quantizer)."""
        kept, bias = self._new_values(kept, bias)
        indptr, indices, _ = self.csr_arrays()
        return SparseLinear.from_csr(self.shape, indptr, indices, kept, bias, "sparse")

    def to_dense(self):
        """The dequantized weight as a new dense array (in, out)."""
        return self.weight.toarray()

    @property
    def backend(self):
        """Always "sparse" (the quantized CSR kernels), and read-only: there is no
        float weight to run a dense product on."""
        return "sparse"

    def backend_for(self, batch, public=False):
        """Always "sparse": the quantized kernels at every batch size, inside a model and
        on the public path alike."""
        return "sparse"

    # -- passes ----------------------------------------------------------------------

    def forward(self, X):
        """``X @ W_q + b_q`` for X (batch, in); returns (batch, out) of the layer's dtype,
        C-contiguous. As :meth:`SparseLinear.forward`: X is packed into the kernel's tiles
        straight from its rows, the finiteness check riding along, and the kernel writes
        sample-major rows."""
        given = X
        X = writable(check_features(X, self.in_features, self.dtype, finite=False))
        out = np.empty((X.shape[0], self.out_features), self.dtype)
        if not qcsr_forward_sm(self._indptr, self._indices, self._codes, self._table,
                               self._kernel_step, self._kernel_offset, self._row_bounds,
                               self._bias, False, X, out, self._panels):
            check_features(given, self.in_features, self.dtype)  # raises, saying why
        return out

    def forward_fm(self, x, out, act):
        """Fill ``out`` (out, batch) with ``act(W_q.T @ x + b_q)`` for feature-major ``x``
        (in, batch); both C-contiguous, of the layer's dtype; act: an activation code."""
        qcsr_forward(self._indptr, self._indices, self._codes, self._table, self._kernel_step,
                     self._kernel_offset, self._row_bounds, self._bias, act == RELU, x, out,
                     self._panels)
        if act not in (IDENTITY, RELU):
            dense_bias_act(out, EMPTY[self.dtype], act)
        return out

    def __repr__(self):
        return (
            f"QuantizedLinear(in={self.in_features}, out={self.out_features}, nnz={self.nnz}, "
            f"bits={self.bits}, density={self.density:.3f}, dtype={self.dtype})"
        )
