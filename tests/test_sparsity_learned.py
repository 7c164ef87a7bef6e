"""Sparsity that is learned: the L1 proximal step of fit(l1=...)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import sparseprune as spp
from helpers import params, random_model, random_problem
from sparseprune.kernels.optim import soft_threshold
from strategies import dtypes, matrices, mlp_sizes, seeds


def reference_soft_threshold(w, t):
    return np.sign(w) * np.maximum(np.abs(w) - t, 0)


@st.composite
def vectors(draw):
    return draw(matrices(draw(dtypes), (draw(st.integers(1, 40)),)))


@given(vectors(), st.floats(0, 2))
def test_soft_threshold_kernel(w, t):
    mask = np.arange(w.size) % 3 != 0
    w[~mask] = 0
    expected = np.where(mask, reference_soft_threshold(w.astype(np.float64),
                                                       float(w.dtype.type(t))), 0)
    soft_threshold(w, mask, w.dtype.type(t))
    assert_allclose(w, expected, rtol=0, atol=0 if w.dtype == np.float64 else 1e-6)
    assert (w[np.abs(expected) == 0] == 0).all()  # exact zeros, not tiny values


@given(mlp_sizes(), seeds, st.sampled_from([1e-3, 0.1]), st.sampled_from([0.01, 1.0]))
def test_one_sgd_step_with_l1_is_a_proximal_gradient_step(sizes, seed, lr, l1):
    """Full batch, momentum 0: w <- soft_threshold(w - lr grad, lr l1); biases are not
    penalized. The mask then drops the weights that ended at zero."""
    model = random_model(sizes, np.float64, seed)
    X, y = random_problem(8, sizes[0], sizes[-1], seed)
    _, grads = model.loss_and_gradients(X, y)
    weights, biases, _ = params(model)
    model.fit(X, y, epochs=1, lr=lr, optimizer="sgd", momentum=0.0, batch_size="full",
              l1=l1, progress=False)
    for layer, w, b, (gw, gb) in zip(model.layers, weights, biases, grads):
        expected = reference_soft_threshold(w - lr * gw, lr * l1)
        assert_allclose(layer.weight, expected, rtol=1e-12, atol=1e-12)
        assert_allclose(layer.bias, b - lr * gb, rtol=1e-12, atol=1e-12)
        assert_array_equal(layer.mask, layer.weight != 0)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
def test_l1_prunes_and_the_backends_agree(backend):
    X, y = random_problem(120, 6, 3, 0)
    model = spp.MLP([6, 24, 3], dtype="float64", seed=1)
    twin = spp.MLP([6, 24, 3], dtype="float64", seed=1)
    for m, b in ((model, backend), (twin, "dense")):
        m.fit(X, y, epochs=20, lr=0.05, optimizer="sgd", l1=0.1, batch_size=16, tol=None,
              seed=2, progress=False, backend=b)
    assert 0.2 < model.sparsity < 1.0
    for a, b in zip(model.layers, twin.layers):
        assert_array_equal(a.mask, b.mask)
        assert_allclose(a.weight, b.weight, rtol=1e-9, atol=1e-12)
    # Pruned weights stay pruned in later fits without the penalty.
    masks = [layer.mask.copy() for layer in model.layers]
    model.fit(X, y, epochs=2, progress=False)
    for layer, mask in zip(model.layers, masks):
        assert not layer.mask[~mask].any() and (layer.weight[~mask] == 0).all()


@pytest.mark.parametrize("l1, error, match", [
    (-0.1, ValueError, "l1 must be >= 0.0"),
    ("a", TypeError, "l1 must be a real number"),
    (np.nan, ValueError, "l1 must be finite"),
])
def test_bad_l1(l1, error, match):
    model = spp.MLP([3, 2], seed=0)
    with pytest.raises(error, match=match):
        model.fit(np.zeros((4, 3)), np.zeros(4, int), l1=l1, progress=False)


def test_l1_needs_a_learning_rate():
    class NoLr:
        def bind(self, params, masks):
            pass

        def step(self, grads):
            pass

    model = spp.MLP([3, 2], seed=0)
    with pytest.raises(ValueError, match="l1 needs the optimizer's learning rate"):
        model.fit(np.zeros((4, 3)), np.zeros(4, int), l1=0.1, optimizer=NoLr(),
                  progress=False)


# -- L0: hard-concrete gates --------------------------------------------------------------

from sparseprune.prune import gates as l0_module  # noqa: E402


@pytest.mark.parametrize("log_alpha", [-3.0, -0.5, 0.0, 1.0, 4.0])
def test_hard_concrete_sampling_statistics_match_the_closed_forms(log_alpha):
    u = np.random.default_rng(0).uniform(1e-9, 1 - 1e-9, 400_000)
    z, _ = l0_module.hard_concrete(np.full(u.size, log_alpha), u)
    p_zero, p_one = l0_module.gate_probabilities(np.float64(log_alpha))
    se = math.sqrt(0.25 / u.size)
    assert np.mean(z == 0) == pytest.approx(p_zero, abs=5 * se)
    assert np.mean(z == 1) == pytest.approx(p_one, abs=5 * se)
    total, _ = l0_module.expected_l0(np.array([log_alpha]))
    assert total == pytest.approx(1 - p_zero, rel=1e-12)
    assert ((z >= 0) & (z <= 1)).all()


def test_gate_slopes_and_penalty_gradient_against_finite_differences():
    rng = np.random.default_rng(1)
    la, u = rng.normal(0, 2, 200), rng.uniform(0.01, 0.99, 200)
    h = 1e-6
    _, slope = l0_module.hard_concrete(la, u)
    numeric = (l0_module.hard_concrete(la + h, u)[0] - l0_module.hard_concrete(la - h, u)[0]) / (2 * h)
    assert_allclose(slope, numeric, rtol=1e-5, atol=1e-7)
    _, grad = l0_module.expected_l0(la)
    numeric = np.array([(l0_module.expected_l0(la[i:i + 1] + h)[0]
                         - l0_module.expected_l0(la[i:i + 1] - h)[0]) / (2 * h)
                        for i in range(la.size)])
    assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_l0_prunes_by_its_gates_and_the_price_sets_how_much():
    X, y = random_problem(150, 6, 3, 3)
    sparsities = []
    for lam in (0.0, 0.01):
        model = spp.MLP([6, 24, 3], dtype="float64", seed=1)
        model.fit(X, y, epochs=30, progress=False)
        spp.prune.magnitude(model, 0.2)
        before = [layer.mask.copy() for layer in model.layers]
        history = spp.prune.l0(model, X, y, lam=lam, epochs=40, lr=0.05, batch_size=16,
                               seed=0, progress=False)
        assert len(history.epoch) == 40
        assert history.sparsity[-1] == pytest.approx(model.sparsity)
        for layer, mask in zip(model.layers, before):
            assert not layer.mask[~mask].any()  # pruned weights never come back
            assert (layer.weight[~layer.mask] == 0).all()
            assert (layer.weight[layer.mask] != 0).all()
        sparsities.append(model.sparsity)
    assert sparsities[0] < 0.5 < sparsities[1]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lam=-1.0), ValueError, "lam must be >= 0.0"),
    (dict(lam=0.1, epochs=0), ValueError, "epochs must be >= 1"),
    (dict(lam=0.1, init_keep=1.0), ValueError, "init_keep must be < 1.0"),
    (dict(lam=0.1, batch_size=0), ValueError, "batch_size must be >= 1"),
])
def test_l0_bad_input(kwargs, error, match):
    model = spp.MLP([3, 2], seed=0)
    with pytest.raises(error, match=match):
        spp.prune.l0(model, np.zeros((4, 3)), np.zeros(4, int), progress=False, **kwargs)
