"""The optimizer kernels against torch.optim's definitions (tests/reference.py)."""

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

import reference as ref
import sparseprune as spp
from helpers import tol
from sparseprune.kernels.optim import sgd_step
from strategies import dtypes, floats, seeds

sizes = st.integers(1, 12)
lrs = st.sampled_from([1e-3, 0.01, 0.1, 0.5])
momenta = st.sampled_from([0.0, 0.5, 0.9, 0.99])
decays = st.sampled_from([0.0, 1e-4, 0.1])


@st.composite
def flat_state(draw):
    """(param, grad, state, mask) flat arrays of one dtype; state is arbitrary (not 0)."""
    dtype = draw(dtypes)
    n = draw(sizes)
    arrays = [draw(hnp.arrays(dtype, n, elements=floats(dtype, 5.0))) for _ in range(3)]
    return (*arrays, draw(hnp.arrays(bool, n)), dtype)


@given(flat_state(), lrs, momenta, decays)
def test_sgd_step_one_step(case, lr, momentum, weight_decay):
    param, grad, velocity, mask, dtype = case
    p, g, v = (a.astype(np.float64) for a in (param, grad, velocity))
    d_p = g + weight_decay * p
    if momentum:
        d_p = momentum * v + d_p
    expected_param = np.where(mask, p - lr * d_p, p)
    expected_velocity = np.where(mask, d_p if momentum else v, 0)

    sgd_step(param, grad, velocity, mask, lr, momentum, weight_decay)

    # The summands, not the (possibly cancelling) sum, set the size of rounding errors.
    terms = (momentum * np.abs(v) + np.abs(g) + weight_decay * np.abs(p)).max()
    assert_allclose(param, expected_param, **tol(dtype, scale=np.abs(p).max() + lr * terms))
    assert_allclose(velocity, expected_velocity, **tol(dtype, scale=terms))
    # Pruned entries: not touched, and their momentum is dropped.
    assert_array_equal(param[~mask], p[~mask].astype(dtype))
    assert_array_equal(velocity[~mask], 0)


@given(dtypes, sizes, seeds, lrs, momenta, decays)
def test_sgd_steps_match_torch(dtype, n, seed, lr, momentum, weight_decay):
    """Several steps from a zero buffer: torch starts the buffer as a copy of the first
    gradient, which is what momentum * 0 + g gives."""
    rng = np.random.default_rng(seed)
    param = rng.normal(size=n).astype(dtype)
    velocity = np.zeros(n, dtype)
    mask = np.ones(n, bool)
    torch_sgd = ref.TorchSGD(lr, momentum, weight_decay)
    expected = param.astype(np.float64)
    for _ in range(4):
        grad = rng.normal(size=n).astype(dtype)
        expected = torch_sgd.step("p", expected, grad.astype(np.float64))
        sgd_step(param, grad, velocity, mask, lr, momentum, weight_decay)
    assert_allclose(param, expected, **tol(dtype, scale=4))


def test_sgd_without_momentum_or_decay_is_plain_descent():
    param = np.array([1.0, -2.0, 3.0])
    grad = np.array([0.5, 0.25, -1.0])
    velocity = np.zeros(3)
    sgd_step(param, grad, velocity, np.ones(3, bool), 0.1, 0.0, 0.0)
    assert_array_equal(param, [1.0 - 0.1 * 0.5, -2.0 - 0.1 * 0.25, 3.0 + 0.1 * 1.0])


# adam_step's scalar arguments are an internal detail (the bias corrections, 1 - beta);
# it is driven here through spp.Adam, the documented optimizer that calls it, whose
# bind(params, masks) / step(grads) are what fit uses.


def adam(params, masks, lr, weight_decay=0.0):
    optimizer = spp.Adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    optimizer.bind(params, masks)
    return optimizer


@given(dtypes, sizes, seeds, lrs, decays, st.integers(1, 5))
@example(np.float64, 1, 0, 1e-3, 0.0, 2)  # a second step whose g**2 >> v: cancellation-prone
@example(np.float32, 3, 0, 1e-3, 0.0, 1)  # 1 - 0.999f would be 1.3e-5 off torch's 0.001
def test_adam_steps_match_torch(dtype, n, seed, lr, weight_decay, steps):
    rng = np.random.default_rng(seed)
    param = rng.normal(size=n).astype(dtype)
    optimizer = adam([param], [np.ones(n, bool)], lr, weight_decay)
    torch_adam = ref.TorchAdam(lr, (0.9, 0.999), 1e-8, weight_decay)
    expected = param.astype(np.float64)
    g_max = 0.0  # the largest |grad| + weight_decay * |param| seen
    for _ in range(steps):
        grad = rng.normal(size=n).astype(dtype)
        g_max = max(g_max, (np.abs(grad) + weight_decay * np.abs(expected)).max())
        expected = torch_adam.step("p", expected, grad.astype(np.float64))
        optimizer.step([grad])
    _, exp_m1, exp_m2 = torch_adam.state["p"]
    (m1, m2), = optimizer._state
    assert_allclose(param, expected, **tol(dtype, scale=1 + lr * steps))
    assert_allclose(m1, exp_m1, **tol(dtype, scale=g_max))
    # v sums positive terms (1 - beta2) * g**2, so it is accurate relative to itself: a
    # constant 1e-5 off (1 - beta2 formed in float32) or a cancelling rewrite shows here.
    # Only weight decay spoils that: g = grad + wd * p inherits p's rounding, about
    # eps * wd * |p| in g, i.e. 2 eps * wd * |p| * |g| per g**2 term.
    decay_spread = 2 * weight_decay * np.abs(expected).max() * g_max * 1e-3 * steps
    assert_allclose(m2, exp_m2, **tol(dtype, scale=decay_spread))


@given(flat_state(), lrs, decays)
def test_adam_masked_entries(case, lr, weight_decay):
    """Pruned entries get no update and their moments are zeroed, whatever they held."""
    param, grad, other_grad, mask, dtype = case
    live = np.ones_like(mask)
    optimizer = adam([param], [live], lr, weight_decay)
    optimizer.step([other_grad])  # fills the moments everywhere
    p = param.copy()
    live[:] = mask  # prune between steps (the optimizer holds the mask array)
    optimizer.step([grad])
    (m1, m2), = optimizer._state
    assert_array_equal(param[~mask], p[~mask])
    assert_array_equal(m1[~mask], 0)
    assert_array_equal(m2[~mask], 0)


def test_adam_first_step_moves_each_weight_by_lr():
    """At t = 1 the bias-corrected update is lr * g / (|g| + eps): about lr * sign(g)."""
    param = np.zeros(4)
    grad = np.array([3.0, -0.5, 1e-3, -200.0])
    adam([param], [np.ones(4, bool)], 0.01).step([grad])
    assert_allclose(param, -0.01 * np.sign(grad), rtol=1e-5)
