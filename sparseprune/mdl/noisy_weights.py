"""Noisy weights trained to minimize their description length: the paper's own method.

Hinton & van Camp (1993) send each weight as a Gaussian posterior ``N(mu, sigma^2)``
rather than as a number: it costs its KL divergence from a coding prior (the bits
back argument), and the labels cost their expected misfit under weights drawn from the
posteriors. :func:`variational` trains the means and the variances of every weight and
bias to minimize that sum, in bits, by stochastic gradient with the local
reparameterization trick (Kingma, Salimans & Welling 2015: each pre-activation is
drawn from the Gaussian the noisy weights give it, so every sample of a batch sees
independent weights, at the cost of two matrix products a layer instead of one).

Priors:

- ``"gaussian"``: one Gaussian per layer (its kept weights and biases), at its
  closed-form optimum (Graves 2011), as :func:`~sparseprune.mdl.bits_back` codes it.
- ``"mixture"``: Hinton & van Camp's adaptive mixture of Gaussians, one for all the
  weights and biases, its parameters learned with them (an EM step per epoch) and sent
  at 32 bits each. The KL divergence from a mixture has no closed form; the code uses
  its variational upper bound ``-log sum_k pi_k exp(-KL(q || N_k))`` (Hershey & Olsen
  2007), which is the length of a code that also sends each weight's component with
  bits back: a code length, if not the shortest.
- ``"log-uniform"``: sparse variational dropout (Molchanov, Ashukha & Vetrov 2017). The
  prior is improper: the KL divergence from it is defined only up to an infinite
  constant, and the objective uses Molchanov's fit of it. That is a training objective,
  not a code length. Weights whose noise-to-signal ratio ``log alpha = log(sigma^2 /
  mu^2)`` exceeds 3 carry no information and are pruned (:meth:`Posterior.prune`); the
  survivors can then be coded with a proper prior (:meth:`Posterior.description_length`
  does so with the Gaussian one). Biases keep the Gaussian prior under every prior.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import erf
from tqdm.auto import tqdm

from .._validation import check_choice, check_int, check_real
from ..model import MLP
from .bits_back import bits_back, expected_misfit_bits
from .code import NoisyCode, nll_bits, parameters, prepare
from .pieces import FLOAT_BITS, LN2, header_bits, log2_binomial

__all__ = ["LOG_ALPHA_THRESHOLD", "PRIORS", "LayerKL", "Posterior", "VariationalCode",
           "gaussian_prior_kl", "log_uniform_kl", "mixture_kl", "variational"]

PRIORS = ("gaussian", "mixture", "log-uniform")
#: Sparse variational dropout prunes the weights whose log alpha exceeds this.
LOG_ALPHA_THRESHOLD = 3.0
# Molchanov et al. (2017), eq. 14: -KL(q || log-uniform) ~ k1 sigmoid(k2 + k3 log alpha)
# - log1p(1 / alpha) / 2 + C, a fit within 0.01 nats of the numerically integrated value.
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
# log alpha is clipped here in the objective (Molchanov's code does the same): beyond it
# the weight is pruned anyway, and its gradient would be 1/mu^2.
_LOG_ALPHA_CLIP = 20.0
# The smallest variance a posterior may take, so that log(sigma^2) stays finite.
_MIN_VAR = 1e-30


# -- the KL terms, in nats, with their gradients ------------------------------------------

def gaussian_prior_kl(mu, var):
    """KL of posteriors ``N(mu, var)`` (1-D arrays) from the Gaussian prior at its
    optimum (Graves 2011: mean ``m = mean(mu)``, variance ``P = mean(var + (mu - m)^2)``),
    in nats, with its gradients: (kl, d kl / d mu, d kl / d var, (m, sqrt(P))).

    At that optimum the sum simplifies to ``sum_i log(P / var_i) / 2``; the gradients
    treat the prior as fixed, which is exact there (the envelope theorem).
    """
    m = float(mu.mean())
    p = float(np.mean(var + (mu - m) ** 2))
    kl = 0.5 * float(np.sum(np.log(p / var)))
    return kl, (mu - m) / p, 0.5 * (1.0 / p - 1.0 / var), (m, math.sqrt(p))


def _component_kl(mu, var, means, variances):
    """KL(N(mu_i, var_i) || N(m_k, s_k^2)) for every i and k: (n, K)."""
    return (0.5 * np.log(variances[None, :] / var[:, None])
            + (var[:, None] + (mu[:, None] - means[None, :]) ** 2)
            / (2.0 * variances[None, :]) - 0.5)


def mixture_kl(mu, var, weights, means, variances):
    """The variational upper bound on KL(N(mu_i, var_i) || sum_k pi_k N(m_k, s_k^2)),
    summed over i, in nats: ``-log sum_k pi_k exp(-KL_ik)``. Returns (bound,
    d bound / d mu, d bound / d var, responsibilities (n, K))."""
    kl = _component_kl(mu, var, means, variances)
    logits = np.log(weights)[None, :] - kl
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    resp = np.exp(logits - lse[:, None])
    d_mu = (resp * (mu[:, None] - means[None, :]) / variances[None, :]).sum(axis=1)
    d_var = (resp * 0.5 * (1.0 / variances[None, :] - 1.0 / var[:, None])).sum(axis=1)
    return float(-lse.sum()), d_mu, d_var, resp


def _mixture_update(mu, var, resp):
    """The mixture's parameters that minimize the bound for these responsibilities."""
    mass = resp.sum(axis=0) + 1e-12
    weights = mass / mass.sum()
    means = (resp * mu[:, None]).sum(axis=0) / mass
    variances = (resp * (var[:, None] + (mu[:, None] - means[None, :]) ** 2)).sum(axis=0) / mass
    return weights, means, np.maximum(variances, 1e-12)


def log_alpha(mu, var):
    """``log(var / mu^2)``, the posterior's noise-to-signal ratio in log form."""
    return np.log(var) - np.log(mu * mu + 1e-300)


def log_uniform_kl(mu, var):
    """Molchanov's approximation of KL(q || log-uniform) up to its constant, in nats,
    summed, with its gradients: (kl, d / d mu, d / d var). Not a code length."""
    la = log_alpha(mu, var)
    inside = np.abs(la) < _LOG_ALPHA_CLIP
    la = np.clip(la, -_LOG_ALPHA_CLIP, _LOG_ALPHA_CLIP)
    t = _K2 + _K3 * la
    sig_t = 1.0 / (1.0 + np.exp(-t))
    kl = -(_K1 * sig_t - 0.5 * np.log1p(np.exp(-la)) - _K1)
    d_la = -(_K1 * _K3 * sig_t * (1 - sig_t) + 0.5 / (1.0 + np.exp(la))) * inside
    return float(kl.sum()), d_la * (-2.0 / np.where(mu == 0, np.inf, mu)), d_la / var


# -- activations in NumPy (the forward and backward of the noisy network) -----------------

def _act(name, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "logistic":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if name == "gelu":
        return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
    return z


def _act_grad(name, z, a):
    if name == "relu":
        return (z > 0).astype(z.dtype)
    if name == "tanh":
        return 1.0 - a * a
    if name == "logistic":
        return a * (1.0 - a)
    if name == "gelu":
        return (0.5 * (1.0 + erf(z / math.sqrt(2.0)))
                + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))
    if name == "gelu_tanh":
        c = math.sqrt(2.0 / math.pi)
        u = c * (z + 0.044715 * z**3)
        t = np.tanh(u)
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * z * z)
    return np.ones_like(z)


# -- the posterior -------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerKL:
    """One layer's share of a variational code."""

    shape: tuple
    n_kept: int
    n_bias: int
    mask_bits: float  # log2 C(n_weights, n_kept)
    kl_bits: float  # its kept weights' and biases' KL from the prior (or their bound)

    @property
    def total_bits(self):
        return self.mask_bits + self.kl_bits


@dataclass(frozen=True)
class VariationalCode(NoisyCode):
    """The bits-back code of a trained posterior: ``model_bits`` (header, the prior's
    parameters, masks, KL) + expected ``data_bits`` under weights drawn from it. Its
    ``header_bits`` include the prior's parameters at 32 bits each; ``prior`` names it."""

    prior: str


@dataclass(frozen=True)
class Posterior:
    """What :func:`variational` learned: a Gaussian ``N(mu, sigma^2)`` per kept weight
    and bias, and the prior it was trained against.

    ``means`` and ``variances`` hold per layer ``(weight (in, out), bias (out,))``,
    zero where the mask is False; ``masks`` the layers' masks. ``mixture`` is the
    learned prior ``(weights, means, variances)`` of a "mixture" posterior. ``history``
    holds per epoch the objective's parts, in bits per sample.
    """

    means: tuple
    variances: tuple
    masks: tuple
    prior: str
    sizes: tuple
    activation: str
    dtype: np.dtype
    classes: object = None
    mixture: tuple | None = None
    history: dict = field(default_factory=dict)

    @property
    def sigmas(self):
        """[(weight std (in, out), bias std (out,))] per layer: the ``sigma`` that
        :func:`~sparseprune.mdl.bits_back` takes (pruned weights get 1, unused)."""
        return [(np.where(m, np.sqrt(np.maximum(w, _MIN_VAR)), 1.0),
                 np.sqrt(np.maximum(b, _MIN_VAR)))
                for (w, b), m in zip(self.variances, self.masks)]

    @property
    def log_alphas(self):
        """log(sigma^2 / mu^2) of every weight (in, out) per layer (inf where pruned)."""
        return [np.where(m, log_alpha(mu_w, np.maximum(var_w, _MIN_VAR)), np.inf)
                for (mu_w, _), (var_w, _), m in zip(self.means, self.variances, self.masks)]

    @property
    def sparsity(self):
        """Fraction of the weights that would be pruned at log alpha > 3."""
        kept = sum(int(np.sum(la <= LOG_ALPHA_THRESHOLD)) for la in self.log_alphas)
        return 1.0 - kept / sum(m.size for m in self.masks)

    def to_model(self):
        """The MLP of the posterior means, with the posterior's masks."""
        model = MLP(self.sizes, dtype=self.dtype, activation=self.activation,
                    classes=self.classes)
        for layer, (mu_w, mu_b), mask in zip(model.layers, self.means, self.masks):
            layer.mask = mask
            layer.weight = mu_w
            layer.bias = mu_b
        return model

    def prune(self, threshold=LOG_ALPHA_THRESHOLD):
        """The MLP of the posterior means without the weights whose log alpha exceeds
        ``threshold`` (3 by default, Molchanov's): their noise drowns their signal."""
        threshold = check_real(threshold, "threshold")
        model = self.to_model()
        for layer, la in zip(model.layers, self.log_alphas):
            layer.mask = layer.mask & (la <= threshold)
        return model

    def description_length(self, X, y, draws=16, seed=0, threshold=LOG_ALPHA_THRESHOLD):
        """The bits-back code of the labels ``y`` given ``X`` with these posteriors.

        "gaussian": exactly :func:`~sparseprune.mdl.bits_back` of the means with the
        learned sigmas. "mixture": the KL bound against the learned mixture, whose
        ``3 K`` parameters are sent at 32 bits. "log-uniform": the prior is no code, so
        the weights of log alpha above ``threshold`` are pruned (their mask sent) and
        the survivors coded with the Gaussian prior.
        """
        if self.prior == "gaussian":
            return _from_bits_back(bits_back(self.to_model(), X, y, sigma=self.sigmas,
                                             draws=draws, seed=seed), "gaussian")
        if self.prior == "log-uniform":
            model = self.prune(threshold)
            return _from_bits_back(bits_back(model, X, y, sigma=self.sigmas, draws=draws,
                                             seed=seed), "log-uniform, coded gaussian")
        model = self.to_model()
        xt, y = prepare(model, X, y)
        draws = check_int(draws, "draws", minimum=1)
        params = [parameters(layer) for layer in model.layers]
        stds = [(np.sqrt(np.maximum(var_w[layer.kept_positions()], _MIN_VAR)),
                 np.sqrt(np.maximum(var_b, _MIN_VAR)))
                for layer, (var_w, var_b) in zip(model.layers, self.variances)]
        weights, means, variances = self.mixture
        layers = []
        for layer, (kept, bias), (w_std, b_std) in zip(model.layers, params, stds):
            mu = np.concatenate([kept, bias])
            var = np.concatenate([w_std, b_std]) ** 2
            kl, _, _, _ = mixture_kl(mu, var, weights, means, variances)
            layers.append(LayerKL(shape=layer.shape, n_kept=layer.n_active,
                                  n_bias=layer.out_features,
                                  mask_bits=log2_binomial(layer.n_weights, layer.n_active),
                                  kl_bits=kl / LN2))
        data, sem = expected_misfit_bits(model, xt, y, params, stds, draws, seed)
        return VariationalCode(
            prior="mixture",
            header_bits=float(header_bits(len(model.layers), bits=False))
            + 3 * len(weights) * FLOAT_BITS,
            layers=tuple(layers), data_bits=data, data_bits_sem=sem,
            data_bits_at_mean=nll_bits(model.layers, model.dtype, xt, y, model.activation),
            n_samples=xt.shape[1], n_classes=model.n_classes, draws=draws, seed=seed)


def _from_bits_back(code, prior):
    """A BitsBack code as a VariationalCode (the priors' floats go to the header)."""
    return VariationalCode(
        prior=prior,
        header_bits=code.header_bits + sum(layer.prior_bits for layer in code.layers),
        layers=tuple(LayerKL(shape=layer.shape, n_kept=layer.n_kept, n_bias=layer.n_bias,
                             mask_bits=layer.mask_bits, kl_bits=layer.kl_bits)
                     for layer in code.layers),
        data_bits=code.data_bits, data_bits_sem=code.data_bits_sem,
        data_bits_at_mean=code.data_bits_at_mean, n_samples=code.n_samples,
        n_classes=code.n_classes, draws=code.draws, seed=code.seed)


# -- training ------------------------------------------------------------------------------

class _Objective:
    """The per-sample objective, in nats: expected misfit of a batch (scaled to one
    sample) plus the KL divergence over ``n`` samples, with its gradients."""

    def __init__(self, masks, activation, prior, n):
        self.masks = masks
        self.activation = activation
        self.prior = prior
        self.n = n
        self.mixture = None

    def kl(self, mu, var):
        """(kl nats, [(d mu_w, d mu_b)], [(d var_w, d var_b)]) over every layer."""
        total = 0.0
        d_mu, d_var = [], []
        if self.prior == "mixture":
            flat_mu = np.concatenate([np.concatenate([w[m], b]) for (w, b), m
                                      in zip(mu, self.masks)])
            flat_var = np.concatenate([np.concatenate([w[m], b]) for (w, b), m
                                       in zip(var, self.masks)])
            total, g_mu, g_var, resp = mixture_kl(flat_mu, flat_var, *self.mixture)
            self.resp = (flat_mu, flat_var, resp)
            start = 0
            for (w, b), m in zip(mu, self.masks):
                k = int(m.sum())
                parts = []
                for g in (g_mu, g_var):
                    gw = np.zeros_like(w)
                    gw[m] = g[start : start + k]
                    parts.append((gw, g[start + k : start + k + b.size]))
                d_mu.append(parts[0])
                d_var.append(parts[1])
                start += k + b.size
            return total, d_mu, d_var
        for (mu_w, mu_b), (var_w, var_b), m in zip(mu, var, self.masks):
            gw_mu, gw_var = np.zeros_like(mu_w), np.zeros_like(mu_w)
            if self.prior == "log-uniform":
                kl_w, g_mu, g_var = log_uniform_kl(mu_w[m], var_w[m])
                kl_b, gb_mu, gb_var, _ = gaussian_prior_kl(mu_b, var_b)
                total += kl_w + kl_b
            else:
                flat_mu = np.concatenate([mu_w[m], mu_b])
                flat_var = np.concatenate([var_w[m], var_b])
                kl, g_mu_all, g_var_all, _ = gaussian_prior_kl(flat_mu, flat_var)
                total += kl
                k = int(m.sum())
                g_mu, gb_mu = g_mu_all[:k], g_mu_all[k:]
                g_var, gb_var = g_var_all[:k], g_var_all[k:]
            gw_mu[m] = g_mu
            gw_var[m] = g_var
            d_mu.append((gw_mu, gb_mu))
            d_var.append((gw_var, gb_var))
        return total, d_mu, d_var

    def misfit(self, mu, var, X, y, noise):
        """(mean nll nats of the batch, [(d mu)], [(d var)]) by the local
        reparameterization; ``noise[l]`` (batch, out) are the standard normal draws."""
        acts, pres, stds = [X], [], []
        last = len(mu) - 1
        for i, ((mu_w, mu_b), (var_w, var_b)) in enumerate(zip(mu, var)):
            a = acts[-1]
            mean = a @ mu_w + mu_b
            std = np.sqrt(np.maximum((a * a) @ var_w + var_b, _MIN_VAR))
            z = mean + std * noise[i]
            pres.append(z)
            stds.append(std)
            acts.append(z if i == last else _act(self.activation, z))
        logits = acts[-1]
        top = logits.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        batch = len(y)
        nll = float(np.mean(lse - logits[np.arange(batch), y]))
        g = np.exp(logits - lse[:, None])
        g[np.arange(batch), y] -= 1.0
        g /= batch
        d_mu, d_var = [None] * len(mu), [None] * len(mu)
        for i in range(last, -1, -1):
            a = acts[i]
            (mu_w, _), (var_w, _) = mu[i], var[i]
            g_v = g * noise[i] / (2.0 * stds[i])  # d / d (pre-activation variance)
            d_mu[i] = (a.T @ g * self.masks[i], g.sum(axis=0))
            d_var[i] = ((a * a).T @ g_v * self.masks[i], g_v.sum(axis=0))
            if i > 0:
                da = g @ mu_w.T + 2.0 * a * (g_v @ var_w.T)
                g = da * _act_grad(self.activation, pres[i - 1], acts[i])
        return nll, d_mu, d_var

    def value_and_grads(self, mu, var, X, y, noise, kl_weight=1.0):
        """(nll, kl, d mu, d var) of ``nll + kl_weight * kl / n``."""
        nll, m_mu, m_var = self.misfit(mu, var, X, y, noise)
        kl, k_mu, k_var = self.kl(mu, var)
        w = kl_weight / self.n
        d_mu = [(a + w * b, c + w * d) for (a, c), (b, d) in zip(m_mu, k_mu)]
        d_var = [(a + w * b, c + w * d) for (a, c), (b, d) in zip(m_var, k_var)]
        return nll, kl, d_mu, d_var


class _Adam:
    """Adam on a list of arrays (the means and the log-variances), in place."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        step = self.lr * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m += (1 - b1) * (g - m)
            v += (1 - b2) * (g * g - v)
            p -= step * m / (np.sqrt(v) + self.eps)


def variational(model, X, y, epochs=200, prior="gaussian", lr=3e-3, batch_size=None,
                init_sigma=0.05, components=4, warmup=0.25, kl_weight=1.0, seed=None,
                progress=True):
    """Train Gaussian posteriors for the weights of ``model`` to minimize the bits-back
    description length of ``y`` given ``X``: expected misfit plus KL from ``prior``.

    The posterior means start at the model's weights and biases (train it first: the
    noisy network learns faster from a trained one), the standard deviations at
    ``init_sigma``; the model's masks are kept (pruned weights are not sent). Each step
    draws the pre-activations by the local reparameterization trick and takes an Adam
    step (``lr``) on the means and log-variances; ``batch_size`` None is min(200, n).
    The objective is per sample: the batch's mean misfit plus KL / n, in nats. During
    the first ``warmup`` fraction of the epochs the KL term's weight rises linearly
    from 0 to 1 (Sønderby et al. 2016's warm-up): started at full weight, the KL of
    narrow posteriors dwarfs the misfit and every weight collapses onto the prior
    before the data can say which ones matter. The rest of the epochs minimize the
    description length itself, and ``history`` always reports it at full weight.

    Parameters
    ----------
    model : MLP with a softmax head
    X, y : (n_samples, n_features), (n_samples,) class labels
    epochs : int >= 1
    prior : "gaussian", "mixture" or "log-uniform" (see the module)
    lr : float > 0
    batch_size : int >= 1 or None
    init_sigma : float > 0
    components : int >= 1
        Gaussians of the "mixture" prior.
    warmup : float in [0, 1)
        Fraction of the epochs over which the KL weight rises to ``kl_weight``.
    kl_weight : float > 0
        The KL term's weight after the warm-up. 1 minimizes the description length;
        less trades it for accuracy (sparse variational dropout used as a pruning
        method: the log-uniform objective is no code length anyway). ``history``
        reports the description length at weight 1 whatever this is.
    seed : int or None
        Seeds the noise and the shuffling.

    Returns
    -------
    Posterior
        ``.prune()`` gives a masked MLP, ``.description_length(X, y)`` the code,
        ``.sigmas`` what :func:`~sparseprune.mdl.bits_back` takes.
    """
    xt, targets = prepare(model, X, y)
    prior = check_choice(prior, "prior", PRIORS)
    epochs = check_int(epochs, "epochs", minimum=1)
    lr = check_real(lr, "lr", low=0.0, low_open=True)
    init_sigma = check_real(init_sigma, "init_sigma", low=0.0, low_open=True)
    components = check_int(components, "components", minimum=1)
    warmup = check_real(warmup, "warmup", low=0.0, high=1.0, high_open=True)
    kl_weight = check_real(kl_weight, "kl_weight", low=0.0, low_open=True)
    warm_steps = warmup * epochs
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0)
    n = xt.shape[1]
    if batch_size is None:
        batch = min(200, n)
    else:
        batch = min(check_int(batch_size, "batch_size", minimum=1), n)
    X64 = np.ascontiguousarray(xt.T, dtype=np.float64)
    masks = [np.array(layer.mask) for layer in model.layers]
    mu = [(layer.weight.astype(np.float64) * m, layer.bias.astype(np.float64))
          for layer, m in zip(model.layers, masks)]
    log_var = [(np.full(w.shape, 2 * math.log(init_sigma)), np.full(b.shape,
                                                                    2 * math.log(init_sigma)))
               for w, b in mu]
    objective = _Objective(masks, model.activation, prior, n)
    if prior == "mixture":
        objective.mixture = _initial_mixture(mu, masks, components, init_sigma)
    flat = [a for pair in mu for a in pair] + [a for pair in log_var for a in pair]
    adam = _Adam(flat, lr)
    rng = np.random.default_rng(seed)
    history = {"epoch": [], "objective_bits": [], "data_bits": [], "kl_bits": [],
               "sparsity": []}
    bar = tqdm(range(1, epochs + 1), desc="variational", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(n)
        data_nats = 0.0
        weight = kl_weight * (min(1.0, epoch / warm_steps) if warm_steps else 1.0)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            var = [(np.exp(lw) * m, np.exp(lb)) for (lw, lb), m in zip(log_var, masks)]
            noise = [rng.standard_normal((idx.size, w.shape[1])) for w, _ in mu]
            nll, kl, d_mu, d_var = objective.value_and_grads(mu, var, X64[idx],
                                                             targets[idx], noise, weight)
            data_nats += nll * idx.size
            # Through var = exp(log var): d / d log var = d / d var * var.
            grads = [g for pair in d_mu for g in pair] + [
                g * v for pair_g, pair_v in zip(d_var, var) for g, v in zip(pair_g, pair_v)]
            adam.step(grads)
            for (w, _), m in zip(mu, masks):
                w *= m
        var = [(np.exp(lw) * m, np.exp(lb)) for (lw, lb), m in zip(log_var, masks)]
        kl, _, _ = objective.kl(mu, var)
        if prior == "mixture":
            objective.mixture = _mixture_update(*objective.resp)
        post = _posterior(mu, var, masks, prior, model, objective.mixture, history)
        history["epoch"].append(epoch)
        history["data_bits"].append(data_nats / n / LN2)
        history["kl_bits"].append(kl / n / LN2)
        history["objective_bits"].append((data_nats + kl) / n / LN2)
        history["sparsity"].append(post.sparsity)
        bar.set_postfix({"bits/sample": f"{history['objective_bits'][-1]:.3f}",
                         "sparsity": f"{post.sparsity:.3f}"}, refresh=False)
    bar.close()
    var = [(np.exp(lw) * m, np.exp(lb)) for (lw, lb), m in zip(log_var, masks)]
    return _posterior(mu, var, masks, prior, model, objective.mixture, history)


def _initial_mixture(mu, masks, components, init_sigma):
    """K Gaussians over the initial means: one at zero, the rest at their quantiles."""
    values = np.concatenate([np.concatenate([w[m], b]) for (w, b), m in zip(mu, masks)])
    spread = float(values.std()) or 1.0
    quantiles = np.quantile(values, np.linspace(0.1, 0.9, max(components - 1, 1)))
    means = np.concatenate([[0.0], quantiles])[:components]
    variances = np.full(components, spread**2)
    return np.full(components, 1.0 / components), means, variances


def _posterior(mu, var, masks, prior, model, mixture, history):
    return Posterior(
        means=tuple((w.copy(), b.copy()) for w, b in mu),
        variances=tuple((w.copy(), b.copy()) for w, b in var),
        masks=tuple(m.copy() for m in masks), prior=prior, sizes=tuple(model.sizes),
        activation=model.activation, dtype=model.dtype, classes=model.classes,
        mixture=None if mixture is None else tuple(np.array(a) for a in mixture),
        history={k: list(v) for k, v in history.items()})

