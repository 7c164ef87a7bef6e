"""Data sets: the notebook's Gaussian blobs, and scikit-learn's bundled digits."""

import numpy as np

from ._validation import check_dtype, check_int, check_real

__all__ = ["blobs", "digits"]


def blobs(n_train=1000, n_test=500, n_features=20, n_classes=5, center_scale=3.0,
          seed=None, dtype="float32"):
    """Gaussian blobs: one random center per class, unit-variance samples around it.

    Train and test are drawn from the *same* class centers (the notebook drew its test
    set with new centers, so its test accuracy measured nothing). Classes are balanced
    up to one sample, and each set is shuffled.

    Returns (X_train (n_train, n_features), y_train (n_train,) int64,
    X_test (n_test, n_features), y_test (n_test,) int64).
    """
    n_train = check_int(n_train, "n_train", minimum=1)
    n_test = check_int(n_test, "n_test", minimum=1)
    n_features = check_int(n_features, "n_features", minimum=1)
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    center_scale = check_real(center_scale, "center_scale", low=0.0)
    dtype = check_dtype(dtype)
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, n_features)) * center_scale

    def draw(n):
        y = rng.permutation(np.arange(n) % n_classes)
        X = centers[y] + rng.standard_normal((n, n_features))
        return X.astype(dtype), y.astype(np.int64)

    return (*draw(n_train), *draw(n_test))


def digits(test_size=0.25, seed=0, dtype="float32"):
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixels scaled to
    [0, 1], split into train and test with every class in proportion.

    Needs scikit-learn (the ``test`` extra); the data ship with it, nothing is fetched.
    Returns (X_train (n, 64), y_train (n,) int64, X_test, y_test).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(
            "digits() needs scikit-learn: pip install 'sparseprune[test]'"
        ) from exc
    test_size = check_real(test_size, "test_size", low=0.0, high=1.0, low_open=True,
                           high_open=True)
    dtype = check_dtype(dtype)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    y = y.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(y.shape, bool)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        test[members[: round(test_size * members.size)]] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    test_idx = rng.permutation(np.flatnonzero(test))
    return X[train_idx], y[train_idx], X[test_idx], y[test_idx]
