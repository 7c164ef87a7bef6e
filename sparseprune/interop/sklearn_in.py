"""A fitted scikit-learn ``MLPClassifier`` or ``MLPRegressor`` as a sparseprune
:class:`~sparseprune.MLP` that predicts what it predicts.

Read from the estimator's fitted attributes (``coefs_``, ``intercepts_``,
``activation``, ``out_activation_``, ``classes_``); scikit-learn itself is imported
only to recognize the estimator.
"""

import numpy as np

from ..model import MLP

__all__ = ["from_sklearn"]

#: scikit-learn's output activation -> sparseprune's head. Binary classifiers end in one
#: logistic output, multi-label ones in one per label, multi-class ones in softmax.
HEADS = {"softmax": "softmax", "logistic": "sigmoid", "identity": "squared"}


def _check_estimator(estimator):
    """``estimator`` if it is a fitted MLPClassifier or MLPRegressor."""
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    except ImportError as exc:  # no scikit-learn: it cannot be one of its estimators
        raise TypeError(f"estimator must be a fitted scikit-learn MLPClassifier or "
                        f"MLPRegressor, got {type(estimator).__name__} (and scikit-learn "
                        f"is not installed)") from exc
    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        raise TypeError(f"estimator must be a fitted scikit-learn MLPClassifier or "
                        f"MLPRegressor, got {type(estimator).__name__}")
    if not hasattr(estimator, "coefs_"):
        # NotFittedError is a ValueError, and what scikit-learn users catch.
        raise NotFittedError(f"estimator is an unfitted {type(estimator).__name__}; call "
                             f"its fit(X, y) first")
    if estimator.out_activation_ not in HEADS:
        raise ValueError(
            f"estimator's output activation {estimator.out_activation_!r} (loss="
            f"{getattr(estimator, 'loss', None)!r}) has no sparseprune head; supported: "
            f"{', '.join(HEADS)} (softmax, sigmoid and squared-error heads)")
    return estimator


def _classes(estimator):
    """The estimator's class labels as an array sparseprune keeps (numbers, bools or
    strings), or None for a regressor."""
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        return None
    classes = np.asarray(classes)
    if classes.dtype == object:  # strings (or numbers) held as Python objects
        classes = np.asarray(classes.tolist())
    return classes


def from_sklearn(estimator, dtype=None):
    """An :class:`~sparseprune.MLP` equal to a fitted scikit-learn MLP.

    Parameters
    ----------
    estimator : sklearn.neural_network.MLPClassifier or MLPRegressor, fitted
        Any hidden activation ("relu", "tanh", "logistic", "identity"). A binary
        classifier becomes a one-output sigmoid model with the two classes, a
        multi-label one a k-output sigmoid model, a multi-class one a softmax model with
        the estimator's ``classes_``; a regressor (``loss="squared_error"``) a squared
        head with its ``n_outputs_`` outputs.
    dtype : "float32", "float64" or None
        None: the estimator's own (float64 unless it was fitted on float32 data).

    Returns an MLP (no weight pruned) whose ``predict``, ``predict_proba`` and
    ``score`` equal the estimator's, to rounding. The estimator is not changed.
    Anything else, an unfitted estimator or a Poisson regressor, is a TypeError or
    ValueError.
    """
    estimator = _check_estimator(estimator)
    coefs, intercepts = estimator.coefs_, estimator.intercepts_
    sizes = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
    model = MLP(sizes, dtype=coefs[0].dtype if dtype is None else dtype,
                activation=estimator.activation, loss=HEADS[estimator.out_activation_],
                classes=_classes(estimator))
    for i, (layer, coef, intercept) in enumerate(zip(model.layers, coefs, intercepts)):
        try:
            layer.weight = coef
            layer.bias = intercept
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"estimator.coefs_[{i}] / intercepts_[{i}]: {exc}") from exc
    return model
