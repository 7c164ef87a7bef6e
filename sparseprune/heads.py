"""Output heads: what a network's outputs mean, the loss that trains them, and what
``predict``, ``predict_proba`` and ``score`` return.

- ``"softmax"``: softmax cross-entropy over ``k >= 2`` classes. Targets are class
  indices; ``predict`` gives the most probable class, ``score`` the accuracy.
- ``"sigmoid"``: sigmoid cross-entropy per output. One output is a binary classifier
  (targets 0/1, ``predict_proba`` gives both columns, as scikit-learn does); ``k``
  outputs are ``k`` labels at once (multi-label: targets an (n, k) 0/1 matrix, ``score``
  the subset accuracy, as scikit-learn's).
- ``"squared"``: half the squared error, identity output: regression. ``predict`` gives
  the values ((n,) for one output), ``score`` the R^2 (averaged over outputs, as
  scikit-learn's ``r2_score``); no ``predict_proba``.

Every loss is a mean over samples of a sum over outputs; its gradient comes from one
fused kernel (``kernels/dense.py``). Targets live feature-major in training, like the
activations: int64 ``(n,)`` class indices, or ``(k, n)`` floats.
"""

import numpy as np

from ._validation import check_choice, to_finite_float, to_real_array
from .kernels.dense import (
    dense_sigmoid, dense_sigmoid_xent, dense_softmax, dense_softmax_xent, dense_squared_error,
)

__all__ = ["HEADS", "Head", "check_loss", "get_head"]

#: Other names users know for the losses (PyTorch's, scikit-learn's).
ALIASES = {"cross_entropy": "softmax", "log_loss": "softmax",
           "binary_cross_entropy": "sigmoid", "bce": "sigmoid", "binary_log_loss": "sigmoid",
           "squared_error": "squared", "mse": "squared"}


class Head:
    """One head; subclasses set ``name`` and ``classifier`` and implement the loss."""

    name = "head"
    classifier = True

    def check_outputs(self, n_outputs):
        """A ValueError if a network of ``n_outputs`` outputs cannot carry this head."""
        if n_outputs < 1:
            raise ValueError(f"sizes[-1] must be >= 1, got {n_outputs}")

    def n_classes(self, n_outputs):
        """Classes a classifier tells apart (None for regression)."""
        return n_outputs

    # -- targets ------------------------------------------------------------------------

    def check_targets(self, y, n_samples, n_outputs, dtype, name="y"):
        """``y`` as this head trains on it, feature-major; see the subclasses."""
        raise NotImplementedError

    def target_buffer(self, n_outputs, capacity, dtype):
        """A buffer for the targets of a batch of up to ``capacity`` samples."""
        return np.empty((n_outputs * capacity,), dtype)

    def batch_view(self, buffer, n_outputs, batch):
        """The buffer's targets of a batch of ``batch`` samples."""
        return buffer[: n_outputs * batch].reshape(n_outputs, batch)

    def gather(self, targets, idx, out):
        """``out`` = the targets of samples ``idx`` (a permutation's slice)."""
        # mode="clip" skips the bounds check (idx comes from a permutation) and the copy
        # of ``out`` numpy makes under the default mode.
        np.take(targets, idx, axis=-1, out=out, mode="clip")

    def slice(self, targets, start, stop):
        return targets[..., start:stop]

    # -- the loss -----------------------------------------------------------------------

    def loss_grad(self, z, t, scale, grad, grad_bias):
        """(summed loss, count predicted right) of logits z (k, batch) against the batch's
        targets ``t``; fills ``grad`` (may be ``z``) = scale * dloss/dz and ``grad_bias``."""
        raise NotImplementedError

    # -- predictions --------------------------------------------------------------------

    def link(self, z):
        """In place: logits (k, batch) become the head's outputs (probabilities, values)."""

    def proba(self, z):
        """(batch, columns) probabilities from logits (k, batch); z is overwritten."""
        raise TypeError(f"predict_proba needs a classification head; this model's loss is "
                        f"{self.name!r}")

    def predict(self, z):
        """Predictions from logits (k, batch): class indices (batch,), 0/1 labels, or
        values; z may be overwritten."""
        raise NotImplementedError

    def score(self, predictions, targets):
        """Accuracy (or R^2) of ``predict``'s output against checked targets."""
        raise NotImplementedError

    def epoch_score(self, loss_sum, correct, n, targets):
        """The training score of an epoch from its batches' sums: accuracy, or R^2
        weighted by each output's variance for regression."""
        return correct / n

    def __repr__(self):
        return f"{type(self).__name__}()"


def _check_float_targets(y, n_samples, n_outputs, dtype, name):
    """y (n,) for one output or (n, k), finite numbers, as (k, n) of ``dtype``."""
    y = to_real_array(y, name, "numeric")
    if y.ndim == 1 and n_outputs == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[1] != n_outputs:
        expected = "(n_samples,) or (n_samples, 1)" if n_outputs == 1 else \
            f"(n_samples, {n_outputs})"
        raise ValueError(f"{name} must have shape {expected} for a model of {n_outputs} "
                         f"output{'s' if n_outputs > 1 else ''}, got {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"{name} has {y.shape[0]} samples, X has {n_samples}")
    return np.ascontiguousarray(to_finite_float(y, dtype, name).T)


class Softmax(Head):
    """Softmax cross-entropy: one class of ``k >= 2``."""

    name = "softmax"

    def check_outputs(self, n_outputs):
        if n_outputs < 2:
            raise ValueError(f"sizes[-1] is the number of classes and must be >= 2 for the "
                             f"softmax loss, got {n_outputs} (one output: loss='sigmoid' "
                             f"for a binary classifier, 'squared' for regression)")

    def check_targets(self, y, n_samples, n_outputs, dtype, name="y"):
        """Class indices: int64 (n,) in [0, k); float labels only if integral."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"{name} must be 1-D (n_samples,) class labels, got shape "
                             f"{y.shape}")
        if y.shape[0] != n_samples:
            raise ValueError(f"{name} has {y.shape[0]} labels, X has {n_samples} samples")
        if np.issubdtype(y.dtype, np.floating):
            if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
                raise ValueError(f"{name} must hold integer class labels, got non-integral "
                                 f"values (a regression target? use loss='squared')")
        elif not np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
            raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= n_outputs):
            raise ValueError(f"{name} must hold labels in [0, {n_outputs}), "
                             f"got values in [{y.min():g}, {y.max():g}]")
        return np.ascontiguousarray(y, dtype=np.int64)

    def target_buffer(self, n_outputs, capacity, dtype):
        return np.empty(capacity, np.int64)

    def batch_view(self, buffer, n_outputs, batch):
        return buffer[:batch]

    def loss_grad(self, z, t, scale, grad, grad_bias):
        return dense_softmax_xent(z, t, scale, grad, grad_bias)

    def link(self, z):
        dense_softmax(z)

    def proba(self, z):
        dense_softmax(z)
        return z.T

    def predict(self, z):
        # The argmax of the logits, as training's accuracy counts it (probabilities can
        # round to a tie).
        return np.argmax(z, axis=0)

    def score(self, predictions, targets):
        return float(np.mean(predictions == targets))


class Sigmoid(Head):
    """Sigmoid cross-entropy per output: binary (one output) or multi-label."""

    name = "sigmoid"

    def n_classes(self, n_outputs):
        return 2 if n_outputs == 1 else n_outputs

    def check_targets(self, y, n_samples, n_outputs, dtype, name="y"):
        """0/1 targets, (n,) or (n, 1) for one output, (n, k) for k labels: as (k, n)."""
        t = _check_float_targets(y, n_samples, n_outputs, dtype, name)
        if not np.isin(t, (0, 1)).all():
            raise ValueError(f"{name} must hold 0/1 labels for the sigmoid loss, got other "
                             f"values (a regression target? use loss='squared')")
        return t

    def loss_grad(self, z, t, scale, grad, grad_bias):
        return dense_sigmoid_xent(z, t, scale, grad, grad_bias)

    def link(self, z):
        dense_sigmoid(z)

    def proba(self, z):
        dense_sigmoid(z)
        if z.shape[0] == 1:
            return np.concatenate([1 - z, z]).T
        return z.T

    def predict(self, z):
        labels = (z > 0).astype(np.int64)
        return labels[0] if z.shape[0] == 1 else labels.T

    def score(self, predictions, targets):
        # Subset accuracy: a sample counts when all its labels are right.
        predictions = predictions.reshape(predictions.shape[0], -1)
        return float(np.mean(np.all(predictions == targets.T, axis=1)))


class Squared(Head):
    """Half the squared error, identity output: regression."""

    name = "squared"
    classifier = False

    def n_classes(self, n_outputs):
        return None

    def check_targets(self, y, n_samples, n_outputs, dtype, name="y"):
        """Finite values, (n,) or (n, 1) for one output, (n, k): as (k, n)."""
        return _check_float_targets(y, n_samples, n_outputs, dtype, name)

    def loss_grad(self, z, t, scale, grad, grad_bias):
        return dense_squared_error(z, t, scale, grad, grad_bias)

    def predict(self, z):
        return z[0].copy() if z.shape[0] == 1 else z.T.copy()

    def score(self, predictions, targets):
        """R^2 per output, averaged (scikit-learn's r2_score, uniform average): an output
        whose targets are constant scores 1 if predicted exactly, else 0."""
        pred = predictions.reshape(predictions.shape[0], -1).astype(np.float64)
        true = targets.T.astype(np.float64)
        sse = ((true - pred) ** 2).sum(axis=0)
        sst = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
        r2 = np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1), np.where(sse == 0, 1.0, 0.0))
        return float(r2.mean())

    def epoch_score(self, loss_sum, correct, n, targets):
        t = targets.astype(np.float64)
        sst = float(((t - t.mean(axis=1, keepdims=True)) ** 2).sum())
        sse = 2.0 * loss_sum
        if sst == 0:
            return 1.0 if sse == 0 else 0.0
        return 1.0 - sse / sst


HEADS = {"softmax": Softmax(), "sigmoid": Sigmoid(), "squared": Squared()}


def check_loss(value, name="loss"):
    """The canonical name of the loss ``value`` (aliases accepted)."""
    if isinstance(value, str) and value in ALIASES:
        return ALIASES[value]
    return check_choice(value, name, tuple(HEADS) + tuple(ALIASES))


def get_head(loss):
    """The :class:`Head` of the loss named ``loss`` (checked)."""
    return HEADS[check_loss(loss)]
