import os

import numpy as np
import pytest
from hypothesis import settings

import sparseprune as spp

# Numba kernels and BLAS make example times uneven (a first call may compile), so no
# deadline; a modest number of examples keeps the suite within a couple of minutes.
# HYPOTHESIS_PROFILE=thorough runs ten times as many.
settings.register_profile("default", deadline=None, max_examples=100)
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def digits():
    """(X_train, y_train, X_test, y_test) of the digits, float32, seed 0."""
    return spp.data.digits()


@pytest.fixture(scope="session")
def blobs():
    """A small, easy 4-class problem: (X_train, y_train, X_test, y_test), float32."""
    return spp.data.blobs(n_train=120, n_test=60, n_features=6, n_classes=4, seed=7)
