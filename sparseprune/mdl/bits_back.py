"""The bits-back code of Hinton & van Camp (1993): each weight sent to a tolerance, as a
Gaussian posterior, at the price of its KL divergence from a prior."""

import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_int, check_real
from .code import NoisyCode, nll_bits, parameters, prepare
from .pieces import BITS_BACK_SAMPLES, FLOAT_BITS, gaussian_kl_bits, header_bits, log2_binomial

__all__ = ["BitsBack", "LayerBitsBack", "bits_back", "expected_misfit_bits"]


@dataclass(frozen=True)
class LayerBitsBack:
    """One layer's share of the bits-back code."""

    shape: tuple
    n_kept: int
    n_bias: int
    mask_bits: float
    kl_bits: float  # sum over kept weights and biases of KL(posterior || prior)
    prior_bits: float  # the prior's mean and std, 2 x 32 bits
    prior_mean: float
    prior_std: float

    @property
    def total_bits(self):
        return self.mask_bits + self.kl_bits + self.prior_bits


@dataclass(frozen=True)
class BitsBack(NoisyCode):
    """The noisy-weights code of one sigma a layer (or given ones): ``model_bits``
    (header, masks, KL, priors) + expected ``data_bits`` under weights drawn from the
    posterior = ``total_bits``."""


def _sigma_for(entry, layer, index):
    """(std of kept weights (k,), std of biases (out,)) from one layer's ``sigma`` entry."""
    name = f"sigma[{index}]"
    if isinstance(entry, tuple):
        if len(entry) != 2:
            raise ValueError(f"{name} must be a std or a (weight_std, bias_std) pair, "
                             f"got a tuple of {len(entry)}")
        w_sigma, b_sigma = entry
    else:
        w_sigma = b_sigma = entry
    out = []
    for value, shape, part in ((w_sigma, layer.shape, "weight"),
                               (b_sigma, (layer.out_features,), "bias")):
        try:
            a = np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
        except (ValueError, TypeError):
            raise ValueError(f"{name} ({part} std) must broadcast to {shape}, got "
                             f"{np.shape(value)}") from None
        if not np.all(np.isfinite(a)) or not np.all(a > 0):
            raise ValueError(f"{name} ({part} std) must be finite and > 0")
        out.append(a)
    w_std, b_std = out
    return w_std[layer.kept_positions()], b_std


def bits_back(model, X, y, sigma, draws=BITS_BACK_SAMPLES, seed=0):
    """The bits-back description length of Hinton & van Camp: weights sent to a tolerance.

    Every kept weight and bias ``w`` is sent as a Gaussian posterior ``N(w, sigma^2)``
    against a Gaussian prior ``N(m_l, s_l^2)`` per layer, fitted at its closed-form
    optimum (Graves 2011): ``m_l`` the mean of the layer's posterior means and
    ``s_l^2`` the mean of ``sigma^2 + (w - m_l)^2``. The model costs the KL divergence of
    the posteriors from the prior, plus the header and which weights survive
    (``log2 C(n, k)``, as in :func:`description_length`, header without ``b``) and the
    priors' two 32-bit floats per layer. The data cost is the expected misfit
    ``E[sum_i -log2 p(y_i | x_i, w)]`` over weights drawn from the posterior, estimated
    with ``draws`` Monte Carlo draws from ``numpy.random.default_rng(seed)``.

    How it differs from the quantized count: :func:`description_length` charges every
    value the same ``b`` bits, however little the data cares about it. Here a weight
    costs about ``log2(s_l / sigma)`` bits plus its distance from the prior: a weight
    the misfit tolerates with a wide posterior is nearly free, and the random bits used
    to pick it within its tolerance are given back (the "bits back"). A narrow sigma
    everywhere recovers the quantized picture (``sigma`` near ``step / sqrt(12)``
    costs about ``b`` bits a value), at the price of being exactly as wasteful; the
    noise also raises the data cost above the misfit at the posterior means
    (``data_bits_at_mean``), which is the trade the paper's training minimizes.

    Parameters
    ----------
    model : MLP or SparseMLP
    X, y : the data, (n_samples, n_features) and (n_samples,) int labels
    sigma : float, or a sequence with one entry per layer
        The posterior std. An entry is a float, or a pair ``(weight_std, bias_std)`` of
        arrays broadcastable to the weight (in, out) and the bias (out,): per layer or
        per weight. Must be > 0.
    draws : int
        Monte Carlo draws for the expected misfit (default 16).
    seed : int or None

    Returns
    -------
    BitsBack
    """
    xt, y = prepare(model, X, y)
    draws = check_int(draws, "draws", minimum=1)
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0)
    n_layers = len(model.layers)
    if isinstance(sigma, (list, tuple)):
        if len(sigma) != n_layers:
            raise ValueError(f"sigma must have one entry per layer ({n_layers}), "
                             f"got {len(sigma)}")
        entries = list(sigma)
    else:
        entries = [check_real(sigma, "sigma", low=0.0, low_open=True)] * n_layers

    params, stds, codes = [], [], []
    for i, (layer, entry) in enumerate(zip(model.layers, entries)):
        kept, bias = parameters(layer)
        w_std, b_std = _sigma_for(entry, layer, i)
        means = np.concatenate([kept, bias])
        std = np.concatenate([w_std, b_std])
        prior_mean = float(means.mean())
        prior_std = math.sqrt(float(np.mean(std * std + (means - prior_mean) ** 2)))
        params.append((kept, bias))
        stds.append((w_std, b_std))
        codes.append(LayerBitsBack(
            shape=layer.shape, n_kept=kept.size, n_bias=bias.size,
            mask_bits=log2_binomial(layer.n_weights, kept.size),
            kl_bits=float(np.sum(gaussian_kl_bits(means, std, prior_mean, prior_std))),
            prior_bits=2.0 * FLOAT_BITS, prior_mean=prior_mean, prior_std=prior_std,
        ))

    mean, sem = expected_misfit_bits(model, xt, y, params, stds, draws, seed)
    return BitsBack(
        header_bits=float(header_bits(n_layers, bits=False)), layers=tuple(codes),
        data_bits=mean, data_bits_sem=sem,
        data_bits_at_mean=nll_bits(model.layers, model.dtype, xt, y, model.activation),
        n_samples=xt.shape[1], n_classes=model.n_classes, draws=draws, seed=seed,
    )


def expected_misfit_bits(model, xt, y, params, stds, draws, seed):
    """(mean, standard error or None) over ``draws`` Monte Carlo draws of
    ``sum_i -log2 p(y_i | x_i, w)`` with every kept weight and bias drawn from its
    posterior: ``params`` and ``stds`` per layer (kept weights (k,), bias (out,)), in
    the layers' kept order, draws from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        noisy = [layer.with_values(kept + w_std * rng.standard_normal(kept.size),
                                  bias + b_std * rng.standard_normal(bias.size))
                 for layer, (kept, bias), (w_std, b_std) in zip(model.layers, params, stds)]
        samples.append(nll_bits(noisy, model.dtype, xt, y, model.activation))
    samples = np.asarray(samples)
    sem = float(samples.std(ddof=1) / math.sqrt(draws)) if draws > 1 else None
    return float(samples.mean()), sem
