"""The models: ReLU hidden layers, softmax output. ``MLP`` holds dense weights with
pruning masks and trains; ``SparseMLP`` holds only the surviving weights, for fast
inference and small files."""

import warnings

import numpy as np

from ._tuning import Plan, check_backend, single_threaded_blas
from ._validation import check_dtype, check_features, check_int, check_labels
from .kernels.dense import dense_softmax, dense_softmax_xent
from .layers import MaskedLinear, SparseLinear
from .ops import aligned_empty

# Inference runs in chunks of this many samples, bounding the activations' memory.
PREDICT_CHUNK = 4096


def _check_sizes(sizes):
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a sequence of layer widths, got {sizes!r}")
    if len(sizes) < 2:
        raise ValueError(
            f"sizes must have at least two entries (inputs, outputs), got {list(sizes)}"
        )
    sizes = tuple(check_int(s, f"sizes[{i}]", minimum=1) for i, s in enumerate(sizes))
    if sizes[-1] < 2:
        raise ValueError(f"sizes[-1] is the number of classes and must be >= 2, got {sizes[-1]}")
    return sizes


def logits_fm(layers, dtype, xt):
    """Logits (n_classes, batch) of ``layers`` (ReLU between them) on feature-major
    ``xt`` (n_features, batch); activations laid out as ops.aligned_empty lays them."""
    a = xt
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        out = aligned_empty((layer.out_features, a.shape[1]), dtype)
        a = layer.forward_fm(a, out, relu=i < last)
    return a


def chunks(xt):
    """(start, chunk) over feature-major ``xt`` in PREDICT_CHUNK samples, each chunk
    C-contiguous (a copy unless it is the whole of ``xt``)."""
    for start in range(0, xt.shape[1], PREDICT_CHUNK):
        chunk = xt[:, start : start + PREDICT_CHUNK]
        if chunk.shape[1] != xt.shape[1]:
            chunk = aligned_empty(chunk.shape, chunk.dtype)
            chunk[...] = xt[:, start : start + PREDICT_CHUNK]
        yield start, chunk


class _Network:
    """Inference shared by the dense and the sparse model: a stack of layers with
    ``forward_fm(x, out, relu)``, ReLU between them, softmax at the end."""

    # -- shape and size -----------------------------------------------------------------

    @property
    def n_features(self):
        return self.sizes[0]

    @property
    def n_classes(self):
        return self.sizes[-1]

    def count_parameters(self):
        """(total, active): all weights and biases, and those not pruned.

        Biases are never pruned and always count as active.
        """
        total = sum(layer.n_weights + layer.out_features for layer in self.layers)
        active = sum(layer.n_active + layer.out_features for layer in self.layers)
        return total, active

    @property
    def sparsity(self):
        """Fraction of weights pruned, over all layers (biases not counted)."""
        n = sum(layer.n_weights for layer in self.layers)
        return 1.0 - sum(layer.n_active for layer in self.layers) / n

    # -- inference ------------------------------------------------------------------------

    def _feature_major(self, X, name="X"):
        """Validate X (n_samples, n_features) and return it as (n_features, n_samples)."""
        X = check_features(X, self.n_features, self.dtype, name=name)
        xt = aligned_empty((X.shape[1], X.shape[0]), self.dtype)
        xt[...] = X.T
        return xt

    def _logits_fm(self, xt):
        """Logits (n_classes, batch) of feature-major input ``xt`` (n_features, batch)."""
        return logits_fm(self.layers, self.dtype, xt)

    _chunks = staticmethod(chunks)

    def _proba_fm(self, xt):
        """Class probabilities (batch, n_classes) of feature-major input."""
        proba = np.empty((xt.shape[1], self.n_classes), self.dtype)
        for start, chunk in self._chunks(xt):
            z = self._logits_fm(chunk)
            dense_softmax(z)
            proba[start : start + z.shape[1]] = z.T
        return proba

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) of X (n_samples, n_features)."""
        return self._proba_fm(self._feature_major(X))

    forward = predict_proba

    def _predict_fm(self, xt):
        """Predicted classes (batch,) int64 of feature-major input: the argmax of the
        logits, as training's accuracy counts it (probabilities can round to a tie)."""
        labels = np.empty(xt.shape[1], np.int64)
        for start, chunk in self._chunks(xt):
            z = self._logits_fm(chunk)
            labels[start : start + z.shape[1]] = np.argmax(z, axis=0)
        return labels

    def predict(self, X):
        """Predicted class (n_samples,) int64: the most probable one."""
        return self._predict_fm(self._feature_major(X))

    def score(self, X, y):
        """Accuracy: the fraction of samples whose predicted class is ``y``."""
        xt = self._feature_major(X)
        y = check_labels(y, xt.shape[1], self.n_classes)
        return float(np.mean(self._predict_fm(xt) == y))

    accuracy = score

    def evaluate(self, X, y):
        """(mean cross-entropy in nats, accuracy) on X, y."""
        xt = self._feature_major(X)
        y = check_labels(y, xt.shape[1], self.n_classes)
        return self._evaluate_fm(xt, y)

    def _evaluate_fm(self, xt, y):
        grad_bias = np.empty(self.n_classes, self.dtype)
        loss = correct = 0.0
        for start, chunk in self._chunks(xt):
            z = self._logits_fm(chunk)
            labels = y[start : start + z.shape[1]]
            chunk_loss, chunk_correct = dense_softmax_xent(z, labels, 1.0, z, grad_bias)
            loss += chunk_loss
            correct += chunk_correct
        n = xt.shape[1]
        return loss / n, correct / n


class MLP(_Network):
    """A multilayer perceptron with a pruning mask on every weight matrix.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_features, hidden..., n_classes]``; at least two entries.
    dtype : "float32" or "float64"
        Parameters and computation.
    seed : int or None
        Seeds the He-normal initialization and, unless ``fit`` is given its own seed,
        the shuffling of mini-batches. Biases start at zero.

    Attributes
    ----------
    layers : list of MaskedLinear
        ``layer.weight`` (in, out), ``layer.bias`` (out,), ``layer.mask`` (in, out) bool.
    """

    def __init__(self, sizes, dtype="float32", seed=None):
        self.sizes = _check_sizes(sizes)
        self.dtype = check_dtype(dtype)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.layers = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            # He et al. 2015: variance 2 / fan_in keeps ReLU activations' scale. Drawn in
            # float64 so float32 and float64 models of one seed agree to rounding.
            weight = self._rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
            self.layers.append(MaskedLinear(weight, np.zeros(n_out), dtype=self.dtype))

    # -- training -------------------------------------------------------------------------

    def loss_and_gradients(self, X, y):
        """Mean cross-entropy on (X, y) and its gradients, as training computes them.

        Returns (loss, grads) with grads a list of (grad_weight (in, out),
        grad_bias (out,)) per layer; weight gradients are zero outside the mask.
        """
        from .engines import DenseBackend
        from .train import Workspace, forward_backward

        xt = self._feature_major(X)
        n = xt.shape[1]
        y = check_labels(y, n, self.n_classes)
        ws = Workspace(self.sizes, n, self.dtype)
        ws.acts(n)[0][...] = xt
        ws.y[:] = y
        backends = [DenseBackend(layer) for layer in self.layers]
        loss, _ = forward_backward(backends, ws, n)
        return loss / n, [(b.grad_weight, gb.copy()) for b, gb in zip(backends, ws.grad_bias)]

    def to_sparse(self, backend="auto", *, engine=None):
        """The model with every weight matrix stored sparse: a :class:`SparseMLP`.

        Each layer keeps only its surviving weights, as a ``scipy.sparse`` (in, out)
        weight; predictions equal this model's (to rounding). ``backend`` is each
        layer's: "auto" (measured per batch size, see :meth:`SparseLinear.forward_fm`),
        "sparse" (the CSR kernels) or "dense". (``engine=``, with "csr" for "sparse", is
        the deprecated name of ``backend``.)
        """
        if engine is not None:
            warnings.warn("to_sparse(engine=...) is deprecated; use backend= ('sparse' for "
                          "'csr')", DeprecationWarning, stacklevel=2)
            backend = "sparse" if engine == "csr" else engine
        check_backend(backend)
        return SparseMLP([SparseLinear.from_masked(layer, backend) for layer in self.layers])

    def fit(self, X, y, epochs=10, lr=None, batch_size=None, optimizer="sgd", momentum=None,
            weight_decay=None, validation_data=None, progress=True, seed=None, backend="dense"):
        """Train on X (n_samples, n_features), y (n_samples,) int labels.

        Minimizes the mean softmax cross-entropy over each mini-batch. Pruned weights
        stay exactly zero. See :func:`sparseprune.train.fit` for every argument.
        Returns a :class:`sparseprune.train.History`.
        """
        from .train import fit

        return fit(self, X, y, epochs=epochs, lr=lr, batch_size=batch_size,
                   optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                   validation_data=validation_data, progress=progress, seed=seed,
                   backend=backend)

    def __repr__(self):
        return (
            f"MLP(sizes={list(self.sizes)}, dtype={self.dtype}, "
            f"sparsity={self.sparsity:.3f})"
        )


class SparseMLP(_Network):
    """An MLP whose weights are stored sparse, for fast inference and small files.

    Parameters
    ----------
    layers : list of SparseLinear
        Consecutive layers: each one's ``in_features`` is the previous one's
        ``out_features``; one dtype for all. ReLU between layers, softmax at the end.

    Usually made by :meth:`MLP.to_sparse` or :func:`sparseprune.load`.
    """

    def __init__(self, layers):
        layers = list(layers)
        if not layers or not all(isinstance(layer, SparseLinear) for layer in layers):
            raise TypeError("layers must be a non-empty list of SparseLinear")
        for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
            if a.out_features != b.in_features:
                raise ValueError(f"layers[{i + 1}] takes {b.in_features} inputs, "
                                 f"layers[{i}] gives {a.out_features}")
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) != 1:
            raise TypeError(f"layers must share one dtype, got {sorted(map(str, dtypes))}")
        self.layers = layers
        self.dtype = layers[0].dtype
        self.sizes = _check_sizes([layers[0].in_features] + [l.out_features for l in layers])
        #: Measured: whether to hold BLAS to one thread, per batch bucket (see
        #: :meth:`_logits_fm`); each layer keeps its own backend choices in ``layer.plan``.
        self.plan = Plan()

    def _logits_fm(self, xt):
        """Logits of feature-major input. Where dense and CSR layers mix, BLAS's and
        Numba's thread pools compete (see ``_tuning``); the first call at each batch
        bucket times the forward pass with BLAS free and held to one thread, on the
        real input, and keeps the faster way for that bucket."""
        batch = xt.shape[1]
        threads = self.plan.get("blas", batch)
        if threads is None:
            logits = _Network._logits_fm(self, xt)  # settles every layer's backend
            if {layer.backend_for(batch) for layer in self.layers} != {"sparse", "dense"}:
                self.plan.record("blas", batch, "free")
                return logits

            def single():
                with single_threaded_blas():
                    _Network._logits_fm(self, xt)

            threads = self.plan.choose("blas", batch, {
                "free": lambda: _Network._logits_fm(self, xt), "single": single})
        if threads == "single":
            with single_threaded_blas():
                return _Network._logits_fm(self, xt)
        return _Network._logits_fm(self, xt)

    def reset_plan(self):
        """Forget every measured choice, the model's and its layers': the next calls
        measure again."""
        self.plan.reset()
        for layer in self.layers:
            layer.plan.reset()

    def plans(self):
        """Every measured choice so far: ``{"model": ..., "layer 0": ..., ...}``, each
        ``{decision: {batch bucket: winner}}``."""
        return {"model": self.plan.as_dict(),
                **{f"layer {i}": layer.plan.as_dict() for i, layer in enumerate(self.layers)}}

    def nbytes(self):
        """Bytes of the stored weights and biases (CSR data + indices + indptr)."""
        return sum(layer.nbytes() + layer.bias.nbytes for layer in self.layers)

    def save(self, path):
        """Write the model to ``path`` (.npz, atomically); read it with
        :func:`sparseprune.load`."""
        from .io import save

        return save(self, path)

    def __repr__(self):
        return (
            f"SparseMLP(sizes={list(self.sizes)}, dtype={self.dtype}, "
            f"sparsity={self.sparsity:.3f})"
        )
