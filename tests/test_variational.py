"""mdl.variational: the KL terms against quadrature, the objective's gradients against
finite differences with the noise held fixed, the posterior's codes, and bad input."""

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate
from scipy.stats import norm

import sparseprune as spp
from helpers import random_problem
from sparseprune.mdl import noisy_weights as vi


def kl_quadrature(q_mean, q_std, log_p):
    """KL(N(q_mean, q_std^2) || p) in nats by quadrature over +-12 q_std."""
    def integrand(w):
        q = norm.pdf(w, q_mean, q_std)
        return q * (norm.logpdf(w, q_mean, q_std) - log_p(w)) if q > 0 else 0.0
    value, _ = integrate.quad(integrand, q_mean - 12 * q_std, q_mean + 12 * q_std,
                              limit=400, points=[q_mean])
    return value


def test_gaussian_prior_kl_at_its_optimum():
    rng = np.random.default_rng(0)
    mu, var = rng.normal(0, 0.3, 50), rng.uniform(0.001, 0.05, 50)
    kl, d_mu, d_var, (m, s) = vi.gaussian_prior_kl(mu, var)
    assert m == pytest.approx(mu.mean())
    assert s**2 == pytest.approx(np.mean(var + (mu - m) ** 2))
    # Each term against quadrature, and the sum against the package's closed form.
    for i in (0, 7, 31):
        expected = kl_quadrature(mu[i], math.sqrt(var[i]), lambda w: norm.logpdf(w, m, s))
        single = 0.5 * np.log(s**2 / var[i]) + (var[i] + (mu[i] - m) ** 2) / (2 * s**2) - 0.5
        assert single == pytest.approx(expected, rel=1e-7, abs=1e-9)
    assert kl == pytest.approx(float(np.sum(spp.mdl.gaussian_kl_bits(mu, np.sqrt(var), m, s)))
                               * math.log(2), rel=1e-12)
    # The gradients treat the prior as fixed: exact at its optimum (envelope theorem).
    h = 1e-6
    for i in (3, 20):
        for arr, grad in ((mu, d_mu), (var, d_var)):
            saved = arr[i]
            arr[i] = saved + h
            up = vi.gaussian_prior_kl(mu, var)[0]
            arr[i] = saved - h
            down = vi.gaussian_prior_kl(mu, var)[0]
            arr[i] = saved
            assert grad[i] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-7)


def test_mixture_bound_is_an_upper_bound_on_the_true_kl():
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([0.0, -0.4, 0.5])
    variances = np.array([0.01, 0.04, 0.09])

    def log_mixture(w):
        return float(np.log(np.sum(weights * norm.pdf(w, means, np.sqrt(variances)))))

    mu = np.array([0.0, 0.3, -0.5, 0.05, 1.0])
    var = np.array([0.005, 0.01, 0.02, 0.0001, 0.05])
    bound, d_mu, d_var, resp = vi.mixture_kl(mu, var, weights, means, variances)
    per_component = vi._component_kl(mu, var, means, variances)
    singles = [vi.mixture_kl(mu[i:i + 1], var[i:i + 1], weights, means, variances)[0]
               for i in range(mu.size)]
    assert bound == pytest.approx(sum(singles))
    for i, single in enumerate(singles):
        true = kl_quadrature(mu[i], math.sqrt(var[i]), log_mixture)
        assert single >= true - 1e-9
        assert single <= np.min(per_component[i] - np.log(weights)) + 1e-12
    assert_allclose(resp.sum(axis=1), 1.0)
    h = 1e-7
    for arr, grad in ((mu, d_mu), (var, d_var)):
        for i in range(mu.size):
            saved = arr[i]
            arr[i] = saved + h
            up = vi.mixture_kl(mu, var, weights, means, variances)[0]
            arr[i] = saved - h
            down = vi.mixture_kl(mu, var, weights, means, variances)[0]
            arr[i] = saved
            assert grad[i] == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-6)


def test_log_uniform_kl_follows_the_integral_up_to_a_constant():
    """-KL(q || log-uniform) = log(alpha) / 2 - E[log|e|] + C with e ~ N(1, alpha)
    (Molchanov et al. 2017, eq. 13); their fit is within 0.01 nats of it. Differences
    between alphas cancel the constant."""
    def true_kl(alpha):
        expectation, _ = integrate.quad(
            lambda e: norm.pdf(e, 1.0, math.sqrt(alpha)) * math.log(abs(e)),
            1 - 12 * math.sqrt(alpha), 1 + 12 * math.sqrt(alpha), points=[0.0], limit=400)
        return -0.5 * math.log(alpha) + expectation

    alphas = [0.01, 0.1, 1.0, 4.0, 20.0]
    mu = np.ones(len(alphas))
    approx = [vi.log_uniform_kl(mu[:1], np.array([a]))[0] for a in alphas]
    true = [true_kl(a) for a in alphas]
    for i in range(1, len(alphas)):
        assert (approx[i] - approx[0]) == pytest.approx(true[i] - true[0], abs=0.03)


@pytest.mark.parametrize("prior", vi.PRIORS)
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_objective_gradients_against_finite_differences(prior, activation):
    """With the noise fixed the objective is a smooth function of the means and
    variances: its gradients against central differences (float64)."""
    rng = np.random.default_rng(1)
    sizes = [3, 4, 3]
    masks = [rng.random((a, b)) < 0.8 for a, b in zip(sizes[:-1], sizes[1:])]
    mu = [(rng.normal(0, 0.5, m.shape) * m, rng.normal(0, 0.1, m.shape[1])) for m in masks]
    var = [(rng.uniform(0.01, 0.05, m.shape) * m, rng.uniform(0.01, 0.05, m.shape[1]))
           for m in masks]
    X, y = random_problem(5, 3, 3, 2)
    noise = [rng.standard_normal((5, m.shape[1])) for m in masks]
    objective = vi._Objective(masks, activation, prior, n=20)
    if prior == "mixture":
        objective.mixture = (np.array([0.6, 0.4]), np.array([0.0, 0.3]),
                             np.array([0.02, 0.1]))

    def value():
        nll, kl, _, _ = objective.value_and_grads(mu, var, X, y, noise)
        return nll + kl / objective.n

    _, _, d_mu, d_var = objective.value_and_grads(mu, var, X, y, noise)
    h = 1e-6
    for params, grads in ((mu, d_mu), (var, d_var)):
        for (w, b), (gw, gb), m in zip(params, grads, masks):
            for arr, grad, live in ((w, gw, m), (b, gb, np.ones(b.shape, bool))):
                for idx in zip(*np.nonzero(live)):
                    saved = arr[idx]
                    arr[idx] = saved + h
                    up = value()
                    arr[idx] = saved - h
                    down = value()
                    arr[idx] = saved
                    assert grad[idx] == pytest.approx((up - down) / (2 * h), rel=1e-4,
                                                      abs=1e-6), (prior, idx)


@pytest.fixture(scope="module")
def trained():
    X, y = random_problem(60, 5, 3, 0)
    model = spp.MLP([5, 12, 3], dtype="float64", seed=0)
    model.fit(X, y, epochs=30, progress=False)
    spp.prune.magnitude(model, 0.3)
    return model, X, y


@pytest.mark.parametrize("prior", vi.PRIORS)
def test_training_lowers_the_description_length(trained, prior):
    model, X, y = trained
    post = spp.mdl.variational(model, X, y, epochs=40, prior=prior, lr=3e-3, warmup=0.0,
                               seed=0, progress=False)
    objective = post.history["objective_bits"]
    assert len(objective) == 40 and objective[-1] < objective[0]
    assert all(np.array_equal(m, layer.mask) for m, layer in zip(post.masks, model.layers))
    for (w, _), m in zip(post.means, post.masks):
        assert (w[~m] == 0).all()
    code = post.description_length(X, y, draws=4)
    assert code.total_bits == pytest.approx(code.model_bits + code.data_bits)
    assert code.kl_bits >= 0
    pruned = post.prune(threshold=0.0)
    assert pruned.sparsity >= model.sparsity
    if prior == "gaussian":
        # Exactly bits_back of the means with the learned sigmas.
        expected = spp.mdl.bits_back(post.to_model(), X, y, sigma=post.sigmas, draws=4)
        assert code.total_bits == pytest.approx(expected.total_bits, rel=1e-12)
    if prior == "mixture":
        weights, means, variances = post.mixture
        assert weights.sum() == pytest.approx(1.0) and (variances > 0).all()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(prior="laplace"), ValueError, "prior must be one of 'gaussian', 'mixture'"),
    (dict(epochs=0), ValueError, "epochs must be >= 1"),
    (dict(warmup=1.0), ValueError, "warmup must be < 1.0"),
    (dict(lr=0), ValueError, "lr must be > 0.0"),
    (dict(init_sigma=-1.0), ValueError, "init_sigma must be > 0.0"),
])
def test_bad_arguments(trained, kwargs, error, match):
    model, X, y = trained
    with pytest.raises(error, match=match):
        spp.mdl.variational(model, X, y, progress=False, **kwargs)


def test_a_regression_model_has_no_label_code():
    model = spp.MLP([3, 2], loss="squared", seed=0)
    with pytest.raises(TypeError, match="softmax head"):
        spp.mdl.variational(model, np.zeros((4, 3)), np.zeros((4, 2)), progress=False)
