"""The models: one activation between layers (ReLU by default), an output head (softmax
by default; :mod:`sparseprune.heads`). ``MLP`` holds dense weights with pruning masks and
trains; ``SparseMLP`` holds only the surviving weights, for fast inference and small
files (:meth:`SparseMLP.save`, :func:`load`)."""

import warnings

import numpy as np

from ._tuning import MEASURE_SAMPLES, Plan, check_backend, single_threaded_blas
from ._validation import check_dtype, check_features, check_int, check_quantized_bits
from .activations import check_activation, code, init_std
from .heads import check_loss, get_head
from .interop import torch_out
from .io import read_arrays, write_arrays
from .layers import MaskedLinear, QuantizedLinear, SparseLinear
from .ops import leading_columns
from .passes import (Workspace, chunks, chunks_sm, forward_backward, logits_fm,
                     to_feature_major, to_sample_major)
from .train import DenseBackend, fit

__all__ = ["MLP", "SparseMLP", "load"]


def _check_sizes(sizes, head):
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a sequence of layer widths, got {sizes!r}")
    if len(sizes) < 2:
        raise ValueError(
            f"sizes must have at least two entries (inputs, outputs), got {list(sizes)}"
        )
    sizes = tuple(check_int(s, f"sizes[{i}]", minimum=1) for i, s in enumerate(sizes))
    head.check_outputs(sizes[-1])
    return sizes


def _check_classes(classes, head, n_outputs):
    """None, or ``classes`` as a 1-D array of distinct labels, as many as the head
    tells apart (numbers, bools or strings: a model file holds no Python objects)."""
    if classes is None:
        return None
    if not head.classifier:
        raise ValueError(f"classes are for classifiers; the {head.name!r} loss is regression")
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.dtype.kind not in "biufU":
        raise TypeError(f"classes must be a 1-D array of numbers or strings, got "
                        f"{classes.dtype} of shape {classes.shape}")
    expected = head.n_classes(n_outputs)
    if classes.size != expected:
        raise ValueError(f"classes must hold {expected} labels for {n_outputs} "
                         f"{head.name} output{'s' if n_outputs > 1 else ''}, got "
                         f"{classes.size}")
    if np.unique(classes).size != classes.size:
        raise ValueError(f"classes must be distinct, got {classes.tolist()}")
    return classes.copy()


class _Network:
    """Inference shared by the dense and the sparse model: a stack of layers with
    ``forward_fm(x, out, act)``, one activation between them, a head at the end.
    Subclasses set ``layers``, ``sizes``, ``dtype``, ``activation``, ``loss`` and
    ``classes`` (through :meth:`_set_head`)."""

    def _set_head(self, activation, loss, classes):
        self.activation = check_activation(activation)
        self.loss = check_loss(loss)
        self.head = get_head(self.loss)
        self.classes = _check_classes(classes, self.head, self.sizes[-1])

    # -- shape and size -----------------------------------------------------------------

    @property
    def n_features(self):
        return self.sizes[0]

    @property
    def n_outputs(self):
        return self.sizes[-1]

    @property
    def n_classes(self):
        """Classes a classifier tells apart (labels, for a multi-label one); None for
        regression."""
        return self.head.n_classes(self.sizes[-1])

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
    # The ``_fm`` methods take feature-major input (n_features, batch) that has passed
    # the boundary (``feature_major``); they are the package's own entry points.

    def feature_major(self, X, name="X"):
        """Validate X (n_samples, n_features) and return it as (n_features, n_samples)."""
        return to_feature_major(X, self.n_features, self.dtype, name=name)

    def sample_major(self, X, name="X"):
        """Validate X (n_samples, n_features) and return it C-contiguous, of the model's
        dtype (X itself when it is so already): what ``train.fit_sm`` takes."""
        return to_sample_major(X, self.n_features, self.dtype, name=name)

    def logits_fm(self, xt):
        """Logits (n_outputs, batch) of feature-major input ``xt`` (n_features, batch).
        The one hook a model kind overrides (``SparseMLP`` measures its thread plan)."""
        return logits_fm(self.layers, self.dtype, xt, code(self.activation))

    def targets(self, y, n_samples, name="y"):
        """``y`` checked against this model's head and turned into what it trains on
        (class indices, or (n_outputs, n) float targets); labels are looked up in
        ``classes`` when the model has them."""
        if self.classes is not None and (self.loss == "softmax" or self.n_outputs == 1):
            y = self._encode(y, name)
        return self.head.check_targets(y, n_samples, self.n_outputs, self.dtype, name=name)

    def _encode(self, y, name):
        """Labels from ``classes`` -> their indices; any other label is a ValueError."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{name} must be 1-D (n_samples,) labels, got shape {y.shape}")
        order = np.argsort(self.classes, kind="stable")
        ranked = self.classes[order]
        try:
            pos = np.minimum(np.searchsorted(ranked, y), ranked.size - 1)
            unknown = ranked[pos] != y
        except TypeError:  # labels of a kind the classes are not (strings for numbers)
            pos, unknown = None, np.ones(y.shape, bool)
        if unknown.any():
            raise ValueError(f"{name} holds labels that are not among the model's classes "
                             f"{self.classes.tolist()}, e.g. {y[unknown][0]!r}")
        return order[pos]

    def _rows(self, X, name="X"):
        """X (n_samples, n_features) checked and of the model's dtype, in any layout:
        inference copies it feature-major a chunk at a time (``passes.chunks_sm``)."""
        return check_features(X, self.n_features, self.dtype, name=name)

    def proba_fm(self, xt):
        """Class probabilities (batch, columns) of feature-major input: a column per
        class; two for a binary sigmoid head (as scikit-learn gives them)."""
        return self._proba(chunks(xt), xt.shape[1])

    def _proba(self, parts, n):
        """:meth:`proba_fm` over ``parts``, (start, feature-major chunk) of n samples."""
        proba = None
        for start, chunk in parts:
            p = self.head.proba(self.logits_fm(chunk))
            if proba is None:
                proba = np.empty((n, p.shape[1]), self.dtype)
            proba[start : start + p.shape[0]] = p
        return proba

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) of X (n_samples, n_features); a
        TypeError for a regression model."""
        if not self.head.classifier:
            self.head.proba(None)  # says why
        X = self._rows(X)
        return self._proba(chunks_sm(X), X.shape[0])

    def predict_fm(self, xt):
        """The head's predictions of feature-major input, as indices: class indices
        (batch,) int64, 0/1 labels ((batch,) or (batch, k)), or values of the model's
        dtype ((batch,) for one output, (batch, k))."""
        return self._predict(chunks(xt))

    def _predict(self, parts):
        """:meth:`predict_fm` over ``parts``, (start, feature-major chunk)."""
        predictions = [self.head.predict(self.logits_fm(chunk)) for _, chunk in parts]
        return predictions[0] if len(predictions) == 1 else np.concatenate(predictions)

    def predict(self, X):
        """Predictions for X (n_samples, n_features): the most probable class (from
        ``classes`` if the model has them, else its index), 0/1 labels of a multi-label
        model, or the values of a regression model."""
        predictions = self._predict(chunks_sm(self._rows(X)))
        if self.classes is not None and predictions.ndim == 1 and self.head.classifier:
            return self.classes[predictions]
        return predictions

    def to_torch(self, masks=True):
        """The model as a ``torch.nn.Sequential`` of ``nn.Linear`` layers and its
        activation, ending in logits, each pruning mask attached through
        ``torch.nn.utils.prune.custom_from_mask`` (see
        :func:`sparseprune.interop.torch_out.to_torch`); PyTorch is imported here."""
        return torch_out.to_torch(self, masks=masks)

    def score(self, X, y):
        """Accuracy (subset accuracy for multi-label), or R^2 for regression, as
        scikit-learn's ``score``."""
        X = self._rows(X)
        targets = self.targets(y, X.shape[0])
        return self.head.score(self._predict(chunks_sm(X)), targets)

    def accuracy(self, X, y):
        """Deprecated alias of :meth:`score`."""
        warnings.warn("accuracy() is deprecated; use score()", DeprecationWarning,
                      stacklevel=2)
        return self.score(X, y)

    def forward(self, X):
        """Deprecated alias of :meth:`predict_proba` (on a layer, ``forward`` is the
        affine map; on a model it meant probabilities)."""
        warnings.warn("model.forward() is deprecated; use predict_proba()",
                      DeprecationWarning, stacklevel=2)
        return self.predict_proba(X)

    def evaluate(self, X, y):
        """(mean loss per sample, score) on X, y: the loss training minimizes (nats for
        the cross-entropies) and :meth:`score`'s number."""
        X = self._rows(X)
        return self._evaluate(chunks_sm(X), X.shape[0], self.targets(y, X.shape[0]))

    def evaluate_fm(self, xt, targets):
        """(mean loss per sample, score) of feature-major ``xt`` against checked
        ``targets`` (see :meth:`targets`)."""
        return self._evaluate(chunks(xt), xt.shape[1], targets)

    def _evaluate(self, parts, n, targets):
        """:meth:`evaluate_fm` over ``parts``, (start, feature-major chunk) of n samples."""
        grad_bias = np.empty(self.n_outputs, self.dtype)
        loss = correct = 0.0
        predictions = []
        for start, chunk in parts:
            z = self.logits_fm(chunk)
            t = np.ascontiguousarray(self.head.slice(targets, start, start + z.shape[1]))
            if not self.head.classifier:
                predictions.append(self.head.predict(z))
            chunk_loss, chunk_correct = self.head.loss_grad(z, t, 1.0, z, grad_bias)
            loss += chunk_loss
            correct += chunk_correct
        if self.head.classifier:
            return loss / n, correct / n
        return loss / n, self.head.score(np.concatenate(predictions), targets)


class MLP(_Network):
    """A multilayer perceptron with a pruning mask on every weight matrix.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_features, hidden..., n_outputs]``; at least two entries.
    dtype : "float32" or "float64"
        Parameters and computation.
    seed : int or None
        Seeds the initialization (normal weights at the scale of
        :func:`sparseprune.activations.init_std`: He's for ReLU) and, unless ``fit`` is
        given its own seed, the shuffling of mini-batches. Biases start at zero.
    activation : "relu", "tanh", "logistic", "identity", "gelu" or "gelu_tanh"
        Between layers.
    loss : "softmax", "sigmoid" or "squared"
        The output head (:mod:`sparseprune.heads`): softmax cross-entropy over
        ``n_outputs >= 2`` classes, sigmoid cross-entropy (one output: binary; k: k
        labels), or squared error (regression). PyTorch's and scikit-learn's names
        ("cross_entropy", "bce", "mse", ...) are accepted.
    classes : sequence, optional
        Labels of the classes, so that ``fit`` takes and ``predict`` returns them instead
        of indices (numbers or strings).

    Attributes
    ----------
    layers : list of MaskedLinear
        ``layer.weight`` (in, out), ``layer.bias`` (out,), ``layer.mask`` (in, out) bool.
    """

    def __init__(self, sizes, dtype="float32", seed=None, activation="relu", loss="softmax",
                 classes=None):
        self.sizes = _check_sizes(sizes, get_head(loss))
        self.dtype = check_dtype(dtype)
        self._set_head(activation, loss, classes)
        self.seed = seed
        #: The model's seeded random stream: its initialization, and the shuffling seed of
        #: every fit not given one.
        self.rng = np.random.default_rng(seed)
        self.layers = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            # Drawn in float64 so float32 and float64 models of one seed agree to rounding.
            weight = self.rng.standard_normal((n_in, n_out)) * init_std(self.activation,
                                                                        n_in, n_out)
            self.layers.append(MaskedLinear(weight, np.zeros(n_out), dtype=self.dtype))

    # -- training -------------------------------------------------------------------------

    def loss_and_gradients(self, X, y):
        """The mean loss on (X, y) and its gradients, as training computes them.

        Returns (loss, grads) with grads a list of (grad_weight (in, out),
        grad_bias (out,)) per layer; weight gradients are zero outside the mask.
        """
        xt = self.feature_major(X)
        n = xt.shape[1]
        targets = self.targets(y, n)
        ws = Workspace(self.sizes, n, self.dtype, self.activation, self.head)
        ws.acts(n)[0][...] = xt
        ws.targets(n)[...] = targets
        backends = [DenseBackend(layer) for layer in self.layers]
        loss, _ = forward_backward(backends, ws, n)
        return loss / n, [(b.grad_weight, gb.copy()) for b, gb in zip(backends, ws.grad_bias)]

    def to_sparse(self, backend="auto", *, engine=None, bits=None):
        """The model with every weight matrix stored sparse: a :class:`SparseMLP`.

        Each layer keeps only its surviving weights, as a ``scipy.sparse`` (in, out)
        weight; predictions equal this model's (to rounding). ``backend`` is each
        layer's: "auto" (measured per batch size, see :meth:`SparseLinear.forward_fm`),
        "sparse" (the CSR kernels) or "dense". (``engine=``, with "csr" for "sparse", is
        the deprecated name of ``backend``.)

        With ``bits`` (2..8) the kept weights and biases are quantized as well:
        ``to_sparse(bits=b)`` is ``to_sparse().quantize(b)`` (see
        :meth:`SparseMLP.quantize`), made without the float copy; ``backend`` must then
        be "auto" or "sparse", as quantized layers run their own kernels only.
        """
        if engine is not None:
            warnings.warn("to_sparse(engine=...) is deprecated; use backend= ('sparse' for "
                          "'csr')", DeprecationWarning, stacklevel=2)
            backend = "sparse" if engine == "csr" else engine
        check_backend(backend)
        if bits is not None:
            bits = check_quantized_bits(bits)
            if backend == "dense":
                raise ValueError("backend='dense' cannot serve quantized layers: they run "
                                 "the quantized CSR kernels; use backend='auto' or 'sparse'")
            layers = [QuantizedLinear.from_layer(layer, bits) for layer in self.layers]
        else:
            layers = [SparseLinear.from_masked(layer, backend) for layer in self.layers]
        return SparseMLP(layers, activation=self.activation, loss=self.loss,
                         classes=self.classes)

    def quantize(self, bits=8):
        """Not for a masked model: quantized values are served by sparse layers. A
        TypeError that says so; use ``model.to_sparse(bits=bits)``."""
        raise TypeError(f"quantize() serves sparse models; this MLP holds dense masked "
                        f"weights: use model.to_sparse(bits={bits!r}) (or "
                        f"model.to_sparse().quantize({bits!r}))")

    def remove_units(self, layer, units):
        """Remove hidden units, in place: ``units`` (int indices) of the outputs of
        ``layers[layer]``, a hidden layer (not the last).

        Each unit's column of ``layers[layer]``'s weight, mask and bias and its row of
        ``layers[layer + 1]``'s weight and mask go; ``sizes[layer + 1]`` shrinks by their
        number. The model then computes what it computed with those units' outgoing
        weights set to zero. Returns the model.
        """
        n_hidden = len(self.layers) - 1
        layer = check_int(layer, "layer", minimum=0)
        if layer >= n_hidden:
            raise ValueError(f"layer must name a hidden layer, 0..{n_hidden - 1} (the last "
                             f"layer's outputs are the classes), got {layer}")
        n_units = self.sizes[layer + 1]
        units = np.asarray(units)
        if units.ndim != 1 or not (units.size == 0 or np.issubdtype(units.dtype, np.integer)):
            raise TypeError(f"units must be a 1-D array of unit indices, got "
                            f"{units.dtype} of shape {units.shape}")
        if units.size and (units.min() < 0 or units.max() >= n_units):
            raise ValueError(f"units must lie in [0, {n_units}) for layer {layer}, got "
                             f"values in [{units.min()}, {units.max()}]")
        keep = np.ones(n_units, dtype=bool)
        keep[units] = False
        if not keep.any():
            raise ValueError(f"units would remove all {n_units} units of layer {layer}; "
                             f"a layer keeps at least one")
        first, second = self.layers[layer], self.layers[layer + 1]
        self.layers[layer] = MaskedLinear(first.weight[:, keep], first.bias[keep],
                                          mask=first.mask[:, keep], dtype=self.dtype)
        self.layers[layer + 1] = MaskedLinear(second.weight[keep], second.bias,
                                              mask=second.mask[keep], dtype=self.dtype)
        sizes = list(self.sizes)
        sizes[layer + 1] = int(keep.sum())
        self.sizes = tuple(sizes)
        return self

    def fit(self, X, y, validation_data=None, **options):
        """Train on X (n_samples, n_features) and targets y: class labels (n_samples,),
        0/1 labels for a sigmoid head, values for regression.

        Minimizes the head's mean loss over each mini-batch. Pruned weights stay
        exactly zero. ``validation_data`` (X_val, y_val) is measured after every
        epoch. ``options``: ``epochs`` (10), ``lr``, ``batch_size``, ``optimizer``
        ("sgd", "adam" or an object), ``momentum``, ``weight_decay``, ``progress``,
        ``seed`` and ``backend``; :class:`sparseprune.train.FitOptions` says what each
        does and checks them all before anything runs.

        Returns a :class:`sparseprune.train.History`.
        """
        return fit(self, X, y, validation_data=validation_data, **options)

    def __repr__(self):
        return (
            f"MLP(sizes={list(self.sizes)}, dtype={self.dtype}, activation="
            f"{self.activation!r}, loss={self.loss!r}, sparsity={self.sparsity:.3f})"
        )


class SparseMLP(_Network):
    """An MLP whose weights are stored sparse, for fast inference and small files.

    Parameters
    ----------
    layers : list of SparseLinear or QuantizedLinear
        Consecutive layers: each one's ``in_features`` is the previous one's
        ``out_features``; one dtype for all. Float and quantized layers may mix.
    activation, loss, classes
        As :class:`MLP`'s: the activation between layers, the output head, the labels.

    Usually made by :meth:`MLP.to_sparse`, :meth:`quantize` or :func:`sparseprune.load`.
    """

    def __init__(self, layers, activation="relu", loss="softmax", classes=None):
        layers = list(layers)
        if not layers or not all(isinstance(layer, (SparseLinear, QuantizedLinear))
                                 for layer in layers):
            raise TypeError("layers must be a non-empty list of SparseLinear or "
                            "QuantizedLinear")
        for i, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
            if a.out_features != b.in_features:
                raise ValueError(f"layers[{i + 1}] takes {b.in_features} inputs, "
                                 f"layers[{i}] gives {a.out_features}")
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) != 1:
            raise TypeError(f"layers must share one dtype, got {sorted(map(str, dtypes))}")
        self.layers = layers
        self.dtype = layers[0].dtype
        self.sizes = _check_sizes([layers[0].in_features] + [l.out_features for l in layers],
                                  get_head(loss))
        self._set_head(activation, loss, classes)
        #: Measured: whether to hold BLAS to one thread, per batch bucket (see
        #: :meth:`logits_fm`); each layer keeps its own backend choices in ``layer.plan``.
        self.plan = Plan()

    def logits_fm(self, xt):
        """Logits of feature-major input. Where dense and CSR layers mix, BLAS's and
        Numba's thread pools compete (see ``_tuning``); the first call at each batch
        bucket times the forward pass with BLAS free and held to one thread, on the
        real input, and keeps the faster way for that bucket."""
        batch = xt.shape[1]
        threads = self.plan.get("blas", batch)
        if threads is None:
            logits = _Network.logits_fm(self, xt)  # settles every layer's backend
            if {layer.backend_for(batch) for layer in self.layers} != {"sparse", "dense"}:
                self.plan.record("blas", batch, "free")
                return logits

            part = leading_columns(xt, MEASURE_SAMPLES)

            def single():
                with single_threaded_blas():
                    _Network.logits_fm(self, part)

            threads = self.plan.choose("blas", batch, {
                "free": lambda: _Network.logits_fm(self, part), "single": single},
                measured_at=part.shape[1])
        if threads == "single":
            with single_threaded_blas():
                return _Network.logits_fm(self, xt)
        return _Network.logits_fm(self, xt)

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

    def quantize(self, bits=8):
        """A new SparseMLP whose layers hold their kept weights and biases as ``bits``-bit
        codes (2..8): :class:`QuantizedLinear`, quantized per layer exactly as
        ``mdl.description_length(self, X, y, bits=bits)`` counts them, so the new model is
        the one that code describes. Served by the quantized kernels; saved compact
        (format version 2)."""
        bits = check_quantized_bits(bits)
        return SparseMLP([QuantizedLinear.from_layer(layer, bits) for layer in self.layers],
                         activation=self.activation, loss=self.loss, classes=self.classes)

    @property
    def bits(self):
        """The bits of the layers' codes when every layer is quantized at the same
        precision, else None."""
        bits = {getattr(layer, "bits", None) for layer in self.layers}
        return bits.pop() if len(bits) == 1 else None

    def nbytes(self):
        """Bytes of the stored weights and biases (CSR data + indices + indptr, or codes
        + indices + indptr + the dequantization table, and the biases)."""
        return sum(layer.nbytes() + layer.bias.nbytes for layer in self.layers)

    def save(self, path, version=None):
        """Write the model to ``path`` atomically; read it with :func:`sparseprune.load`.
        Returns ``path``.

        ``version`` 1 is an ``.npz`` of the float CSR arrays, 2 the compact format (the
        mask Golomb coded, quantized values at their bits; float values as they are).
        By default a model with a quantized layer is saved as 2 (1 cannot hold codes),
        any other as 1.
        """
        return write_arrays(path, self.dtype, self.sizes,
                            [layer.stored_arrays() for layer in self.layers],
                            head={"activation": self.activation, "loss": self.loss,
                                  "classes": self.classes}, version=version)

    @classmethod
    def load(cls, path):
        """A SparseMLP from a file written by :meth:`save` (either version), every array
        validated before use; a corrupt or hostile file gets a ValueError."""
        dtype, sizes, arrays, head = read_arrays(path)
        layers = []
        for i, ((n_in, n_out), a) in enumerate(zip(zip(sizes[:-1], sizes[1:]), arrays)):
            if "codes" in a:
                try:
                    layers.append(QuantizedLinear.from_codes(
                        (n_in, n_out), a["indptr"], a["indices"], a["codes"],
                        a["bias_codes"], a["bits"], a["offset"], a["step"], dtype))
                except ValueError as exc:
                    raise ValueError(f"{path}: layer {i}: {exc}") from None
            else:
                layers.append(SparseLinear.from_csr((n_in, n_out), a["indptr"], a["indices"],
                                                    a["data"], a["bias"]))
        try:
            return cls(layers, **head)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def __repr__(self):
        return (
            f"SparseMLP(sizes={list(self.sizes)}, dtype={self.dtype}, activation="
            f"{self.activation!r}, loss={self.loss!r}, sparsity={self.sparsity:.3f}"
            + ("" if self.bits is None else f", bits={self.bits}") + ")"
        )


def load(path):
    """Read a :class:`SparseMLP` written by :meth:`SparseMLP.save`.

    Every array is validated before use; a corrupt or hostile file gets a ValueError.
    """
    return SparseMLP.load(path)
