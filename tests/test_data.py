"""The data sets: blobs share their centers between train and test; digits split well."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import sparseprune as spp


def class_means(X, y, n_classes):
    return np.array([X[y == c].mean(axis=0) for c in range(n_classes)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blobs_shapes_dtypes_balance(dtype):
    X, y, Xt, yt = spp.data.blobs(n_train=101, n_test=37, n_features=3, n_classes=4, seed=0,
                                  dtype=dtype)
    assert X.shape == (101, 3) and Xt.shape == (37, 3)
    assert X.dtype == Xt.dtype == np.dtype(dtype)
    assert y.shape == (101,) and yt.shape == (37,) and y.dtype == yt.dtype == np.int64
    for labels in (y, yt):
        counts = np.bincount(labels, minlength=4)
        assert counts.max() - counts.min() <= 1  # balanced up to one sample
    assert not (np.diff(y) == 0).all()  # shuffled, not sorted by class


def test_blobs_train_and_test_share_centers():
    """The notebook drew test data around new centers; here both sets come from the same
    ones: the class means agree and a nearest-train-mean classifier works on test."""
    n_classes = 5
    X, y, Xt, yt = spp.data.blobs(n_train=1000, n_test=500, n_features=20,
                                  n_classes=n_classes, seed=3)
    train_means, test_means = class_means(X, y, n_classes), class_means(Xt, yt, n_classes)
    # Mean of 100-200 unit-variance samples: each coordinate within ~0.1, the 20-d
    # distance within ~0.6; centers are ~3 * sqrt(40) ~ 19 apart.
    assert np.linalg.norm(train_means - test_means, axis=1).max() < 1.5
    distances = np.linalg.norm(Xt[:, None, :] - train_means[None], axis=2)
    assert np.mean(np.argmin(distances, axis=1) == yt) >= 0.95


def test_blobs_are_deterministic_by_seed():
    a = spp.data.blobs(n_train=50, n_test=20, seed=11)
    b = spp.data.blobs(n_train=50, n_test=20, seed=11)
    c = spp.data.blobs(n_train=50, n_test=20, seed=12)
    for x, y in zip(a, b):
        assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_digits_split(digits):
    from sklearn.datasets import load_digits

    X, y, Xt, yt = digits
    assert X.shape == (1347, 64) and Xt.shape == (450, 64)
    assert X.dtype == Xt.dtype == np.float32 and y.dtype == yt.dtype == np.int64
    assert X.min() >= 0 and X.max() <= 1 and X.max() == 1
    all_y = load_digits().target
    counts = np.bincount(all_y, minlength=10)
    # Stratified: each class's test share is round(0.25 * its count).
    assert_array_equal(np.bincount(yt, minlength=10), np.round(0.25 * counts))
    assert_array_equal(np.bincount(y, minlength=10) + np.bincount(yt, minlength=10), counts)
    # Every image is used once: the pixel sums of both parts add up to the whole.
    whole = load_digits().data / 16.0
    assert np.sum(X, dtype=np.float64) + np.sum(Xt, dtype=np.float64) == \
        pytest.approx(whole.sum(), rel=1e-9)


def test_digits_seed_and_test_size():
    a, b = spp.data.digits(seed=0), spp.data.digits(seed=0)
    for x, y in zip(a, b):
        assert_array_equal(x, y)
    c = spp.data.digits(seed=1)
    assert not np.array_equal(a[0], c[0])
    X, _, Xt, _ = spp.data.digits(test_size=0.5, dtype="float64")
    assert X.dtype == np.float64
    assert abs(X.shape[0] - Xt.shape[0]) <= 10
