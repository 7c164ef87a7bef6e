"""scikit-learn estimators that train an MLP, prune it along a schedule with
fine-tuning, and predict through the sparse model: :class:`SparseMLPClassifier` and
:class:`SparseMLPRegressor`.

This module is scikit-learn's home in sparseprune: it imports scikit-learn at its top
and is itself imported only on demand (``sparseprune.sklearn``, or
``import sparseprune.sklearn``), never by the rest of the package.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    check_is_fitted, check_random_state, column_or_1d, validate_data,
)

from ._validation import check_dtype, check_int, check_sparsity
from .activations import check_activation
from .model import MLP
from .prune import get_criterion, get_schedule, iterative
from .prune.scopes import check_scope
from .train import FitOptions, fit_sm

__all__ = ["SparseMLPClassifier", "SparseMLPRegressor"]

#: The float dtypes the estimators compute in; other input is converted to float64.
FLOATS = (np.float64, np.float32)


def _check_hidden(hidden_layer_sizes):
    """The hidden widths as a tuple of ints >= 1 (an int is one hidden layer)."""
    sizes = hidden_layer_sizes
    if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
        sizes = (sizes,)
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise TypeError(f"hidden_layer_sizes must be a sequence of layer widths, got "
                        f"{hidden_layer_sizes!r}")
    return tuple(check_int(s, f"hidden_layer_sizes[{i}]", minimum=1)
                 for i, s in enumerate(sizes))


class _SparseMLP(BaseEstimator):
    """What both estimators share: the parameters (documented on
    :class:`SparseMLPClassifier`), training and pruning, serving."""

    def __init__(self, hidden_layer_sizes=(100,), *, activation="relu", sparsity=0.8,
                 schedule="cubic", steps=5, criterion="magnitude", scope="layer",
                 finetune_epochs=50, epochs=200, lr=None, batch_size=None,
                 optimizer="adam", momentum=None, weight_decay=0.0, tol=1e-4,
                 n_iter_no_change=10, backend="dense", random_state=None, dtype=None,
                 progress=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.sparsity = sparsity
        self.schedule = schedule
        self.steps = steps
        self.criterion = criterion
        self.scope = scope
        self.finetune_epochs = finetune_epochs
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.random_state = random_state
        self.dtype = dtype
        self.progress = progress

    # -- training ---------------------------------------------------------------------

    def _train(self, X, y, loss, n_outputs):
        """The MLP trained, pruned and fine-tuned on validated X (n, f) and targets y as
        the head takes them; sets ``history_``, ``prune_steps_`` and ``n_iter_``.
        Every parameter is checked before training starts."""
        hidden = _check_hidden(self.hidden_layer_sizes)
        check_activation(self.activation)
        sparsity = check_sparsity(self.sparsity)
        steps = check_int(self.steps, "steps", minimum=1)
        finetune_epochs = check_int(self.finetune_epochs, "finetune_epochs", minimum=0)
        get_schedule(self.schedule)
        get_criterion(self.criterion, data=(X, y))
        check_scope(self.scope, len(hidden) + 1)
        dtype = X.dtype if self.dtype is None else check_dtype(self.dtype)
        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max,
                                                              size=3)
        options = FitOptions.from_kwargs(
            type(self).__name__, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            optimizer=self.optimizer, momentum=self.momentum,
            weight_decay=self.weight_decay, tol=self.tol,
            n_iter_no_change=self.n_iter_no_change, backend=self.backend,
            progress=self.progress, seed=int(seeds[1]))

        model = MLP([X.shape[1], *hidden, n_outputs], dtype=dtype, seed=int(seeds[0]),
                    activation=self.activation, loss=loss)
        X = model.sample_major(X)
        history = fit_sm(model, X, model.targets(y, X.shape[0]), None, options)
        records = []
        if sparsity > 0:
            records = iterative(
                model, X, y, sparsity, steps=steps, schedule=self.schedule,
                finetune_epochs=finetune_epochs, lr=options.lr, criterion=self.criterion,
                scope=self.scope, progress=self.progress, batch_size=options.batch_size,
                optimizer=options.optimizer, momentum=options.momentum,
                weight_decay=options.weight_decay, tol=options.tol,
                n_iter_no_change=options.n_iter_no_change, backend=options.backend,
                seed=int(seeds[2]))
        self.history_, self.prune_steps_, self.n_iter_ = history, records, len(history)
        return model

    def _serve(self, model):
        """Keep ``model`` and serve its sparse form."""
        self.model_ = model
        self.sparse_model_ = model.to_sparse()
        return self

    # -- inference --------------------------------------------------------------------

    def _checked(self, X):
        """X checked as at fit, for the served model (which predicts class indices: its
        ``classes`` are None)."""
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=FLOATS)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "sparse_model_")

    # -- pickling ---------------------------------------------------------------------

    def __getstate__(self):
        # The sparse model is derived from ``model_``: rebuilt on loading, not stored.
        # A copy: object.__getstate__ may hand out the instance's own __dict__.
        state = dict(super().__getstate__())
        state.pop("sparse_model_", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        model = getattr(self, "model_", None)
        if model is not None:
            # Loaded from a memory map (joblib's mmap_mode) the arrays are read-only, and
            # the kernels take writable ones: the layers' setters make copies.
            for layer in model.layers:
                layer.weight = layer.weight
                layer.mask = layer.mask
                layer.bias = layer.bias
            self.sparse_model_ = model.to_sparse()


class SparseMLPClassifier(ClassifierMixin, _SparseMLP):
    """An MLP classifier trained, pruned to ``sparsity`` and served sparse.

    ``fit(X, y)`` trains the network (as ``MLP.fit``), prunes it along ``schedule`` in
    ``steps`` steps with fine-tuning after each (:func:`sparseprune.prune.iterative`),
    and keeps the pruned model (``model_``) and its sparse form (``sparse_model_``),
    which ``predict`` and ``predict_proba`` run. Labels may be of any type (strings,
    non-contiguous integers); two classes train one sigmoid output, more a softmax over
    them, and a 0/1 indicator matrix y one sigmoid output per label (multi-label).
    The models predict class indices into ``classes_``.

    Parameters
    ----------
    hidden_layer_sizes : sequence of int, or int
        Widths of the hidden layers.
    activation : "relu", "tanh", "logistic", "identity", "gelu" or "gelu_tanh"
        Between layers.
    sparsity : float in [0, 1)
        Fraction of the weights pruned at the end (biases are never pruned); 0 trains
        a dense network and skips pruning. The default, 0.8, was measured to cost
        next to nothing against the dense network on the digits and the diabetes data
        with the other defaults, where 0.9 costs 3 points of accuracy on the digits at
        100 hidden units (see the README). Search it with ``GridSearchCV``.
    schedule : "cubic", "linear", "constant", "geometric" or a callable
        How sparsity rises over the pruning steps (:func:`sparseprune.prune.iterative`).
    steps : int >= 1
        Pruning steps, each followed by fine-tuning.
    criterion : "magnitude", "random" or a :class:`sparseprune.prune.Criterion`
    scope : "layer" or "global"
        The same sparsity in every layer, or one ranking over all weights. "layer" by
        default: a global ranking can empty a small layer whose weights are smaller
        than the others' (on a 2-100-3 network the whole output layer), after which
        no fine-tuning helps.
    finetune_epochs : int >= 0
        At most this many epochs of fine-tuning after each pruning step (fewer if the
        training loss stops improving, by ``tol`` and ``n_iter_no_change``).
    epochs, lr, batch_size, optimizer, momentum, weight_decay, tol, n_iter_no_change
    backend
        Training, as :class:`sparseprune.FitOptions` (and ``MLP.fit``) take them; the
        fine-tuning uses the same. The defaults are scikit-learn's MLP's: Adam at
        1e-3, mini-batches of min(200, n), up to 200 epochs, stopping when the loss
        stops improving. (``weight_decay`` is torch's coupled L2 on every parameter,
        not scikit-learn's ``alpha``.)
    random_state : int, numpy RandomState or None
        Seeds the initialization, the shuffling and a random criterion.
    dtype : "float32", "float64" or None
        What the network computes in; None: the input's, float32 or float64 (float64
        for any other input), as scikit-learn's MLP.
    progress : bool
        Progress bars for training and pruning.

    Attributes
    ----------
    classes_ : array (n_classes,)
    n_features_in_, n_outputs_ : int
    model_ : sparseprune.MLP
        The pruned network, with its masks.
    sparse_model_ : sparseprune.SparseMLP
        The same network, sparse: what ``predict`` runs.
    history_ : sparseprune.History
        The training before pruning; ``n_iter_`` its epochs.
    prune_steps_ : list of sparseprune.prune.PruneStep
        One record per pruning step, after its fine-tuning.
    """

    def fit(self, X, y):
        """Train, prune and fine-tune on X (n_samples, n_features) and labels y
        (n_samples,), or a 0/1 indicator matrix (n_samples, n_labels). Returns self."""
        X, y = validate_data(self, X, y, multi_output=True, dtype=FLOATS)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind == "multilabel-indicator":
            targets = y.toarray() if sp.issparse(y) else np.asarray(y)
            classes, loss, n_outputs = np.arange(targets.shape[1]), "sigmoid", targets.shape[1]
        elif kind in ("binary", "multiclass"):
            classes, targets = np.unique(y, return_inverse=True)
            if classes.size < 2:
                raise ValueError(f"{type(self).__name__} needs samples of at least 2 "
                                 f"classes, got 1 class: {classes.tolist()}")
            loss, n_outputs = ("sigmoid", 1) if classes.size == 2 else ("softmax", classes.size)
        else:
            raise ValueError(f"y is {kind}; {type(self).__name__} takes class labels "
                             f"(n_samples,) or a 0/1 indicator matrix (multi-label)")
        model = self._train(X, targets, loss, n_outputs)
        self.classes_, self.n_outputs_ = classes, n_outputs
        self._multilabel = kind == "multilabel-indicator"
        return self._serve(model)

    def predict(self, X):
        """Labels (n_samples,) from ``classes_``, or 0/1 (n_samples, n_labels) for a
        multi-label classifier."""
        X = self._checked(X)  # first: an unfitted estimator has no sparse_model_
        indices = self.sparse_model_.predict(X)
        return indices if self._multilabel else self.classes_[indices]

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes) in the order of ``classes_`` (per label
        for a multi-label classifier)."""
        X = self._checked(X)
        return self.sparse_model_.predict_proba(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class SparseMLPRegressor(RegressorMixin, _SparseMLP):
    """An MLP regressor trained, pruned to ``sparsity`` and served sparse.

    As :class:`SparseMLPClassifier`, with a squared-error head: y (n_samples,) or
    (n_samples, n_outputs). The network trains on standardized targets (each output
    centred and scaled to unit variance, which makes the default learning rate fit any
    target's scale); the scaling is folded into the last layer afterwards, so
    ``model_`` and ``sparse_model_`` predict raw values.

    Parameters are :class:`SparseMLPClassifier`'s; the attributes too, without
    ``classes_``.
    """

    def fit(self, X, y):
        """Train, prune and fine-tune on X (n_samples, n_features) and targets y
        (n_samples,) or (n_samples, n_outputs). Returns self."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=FLOATS)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        targets = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
        mean = targets.mean(axis=0)
        scale = targets.std(axis=0)
        scale[scale == 0] = 1.0  # a constant output: nothing to scale
        standardized = (targets - mean) / scale
        model = self._train(X, standardized[:, 0] if y.ndim == 1 else standardized,
                            "squared", targets.shape[1])
        # W' = W diag(scale), b' = b scale + mean: the same pattern, raw predictions.
        last = model.layers[-1]
        last.weight = last.weight * scale
        last.bias = last.bias * scale + mean
        self.n_outputs_ = targets.shape[1]
        return self._serve(model)

    def predict(self, X):
        """Values (n_samples,) for one output, (n_samples, n_outputs) for more."""
        X = self._checked(X)
        return self.sparse_model_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
