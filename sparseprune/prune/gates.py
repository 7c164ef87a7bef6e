"""L0 regularization by hard-concrete gates (Louizos, Welling & Kingma 2018).

Every weight ``w`` gets a stochastic gate ``z`` in [0, 1] with a learned location
``log alpha``: ``s = sigmoid((log u - log(1 - u) + log alpha) / beta)`` for ``u`` uniform,
stretched to ``(zeta - gamma) s + gamma`` and clipped to [0, 1], so that ``z`` is exactly
0 or exactly 1 with positive probability. The network computes with ``w * z``; the
penalty is the expected number of nonzero gates, ``sum sigmoid(log alpha - beta
log(-gamma / zeta))``, which is differentiable in ``log alpha``. When training ends the
gates are made deterministic (``z = clip(sigmoid(log alpha) (zeta - gamma) + gamma)``)
and become the mask: weights whose gate is 0 are pruned, the others keep ``w * z``.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .._validation import check_int, check_real
from ..kernels.optim import adam_step
from ..passes import Workspace, forward_backward
from ..train import DenseBackend, FitOptions, take_rows
from .unstructured import check_model

__all__ = ["BETA", "GAMMA", "L0History", "ZETA", "expected_l0", "gate_probabilities",
           "hard_concrete", "l0"]

# The hard concrete's temperature and stretch, Louizos et al.'s values.
BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1


def hard_concrete(log_alpha, u, beta=BETA, gamma=GAMMA, zeta=ZETA):
    """Gates z (like log_alpha) for uniform draws u in (0, 1), and dz / d log_alpha."""
    s = 1.0 / (1.0 + np.exp(-(np.log(u) - np.log1p(-u) + log_alpha) / beta))
    stretched = s * (zeta - gamma) + gamma
    z = np.clip(stretched, 0.0, 1.0)
    inside = (stretched > 0.0) & (stretched < 1.0)
    return z, inside * (zeta - gamma) * s * (1.0 - s) / beta


def gate_probabilities(log_alpha, beta=BETA, gamma=GAMMA, zeta=ZETA):
    """(P(z = 0), P(z = 1)) of the hard-concrete gates, in closed form."""
    p_zero = 1.0 / (1.0 + np.exp(-(beta * math.log(-gamma / zeta) - log_alpha)))
    p_one = 1.0 / (1.0 + np.exp(-(log_alpha - beta * math.log((1 - gamma) / (zeta - 1)))))
    return p_zero, p_one


def expected_l0(log_alpha, beta=BETA, gamma=GAMMA, zeta=ZETA):
    """(sum of P(z != 0), its gradient in log_alpha)."""
    p = 1.0 / (1.0 + np.exp(-(log_alpha - beta * math.log(-gamma / zeta))))
    return float(p.sum()), p * (1.0 - p)


def deterministic_gates(log_alpha, gamma=GAMMA, zeta=ZETA):
    """The gates at test time: clip(sigmoid(log alpha) (zeta - gamma) + gamma, 0, 1)."""
    return np.clip((zeta - gamma) / (1.0 + np.exp(-log_alpha)) + gamma, 0.0, 1.0)


@dataclass
class L0History:
    """Per epoch: the training loss (the head's, with the sampled gates), the expected
    number of nonzero gates, and the sparsity of the deterministic gates."""

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    expected_l0: list = field(default_factory=list)
    sparsity: list = field(default_factory=list)


def l0(model, X, y, lam, epochs=50, lr=1e-3, gate_lr=0.05, batch_size=None, init_keep=0.9,
       seed=None, progress=True):
    """Train ``model`` with hard-concrete gates on its weights and an expected-L0
    penalty, then prune by the deterministic gates; in place.

    Minimizes, per mini-batch, the head's mean loss with weights ``w * z`` plus
    ``lam * E[number of nonzero gates]``, by Adam: ``lr`` on the weights and biases,
    ``gate_lr`` on the gates' ``log alpha``, which must travel a few units (from a gate
    open 90% of the time to a closed one) where a trained weight moves by hundredths.
    Gates start at ``log alpha`` with ``P(z != 0) = init_keep``. Weights already pruned
    stay pruned (no gate).

    Parameters
    ----------
    model : MLP
    X, y : the training data (n_samples, n_features) and targets
    lam : float >= 0
        The price of one nonzero weight in units of the per-sample loss.
    epochs : int >= 1
    lr : float > 0
    gate_lr : float > 0
    batch_size : int, "full" or None (min(200, n))
    init_keep : float in (0, 1)
    seed : int or None

    Returns
    -------
    L0History
    """
    check_model(model)
    lam = check_real(lam, "lam", low=0.0)
    epochs = check_int(epochs, "epochs", minimum=1)
    lr = check_real(lr, "lr", low=0.0, low_open=True)
    gate_lr = check_real(gate_lr, "gate_lr", low=0.0, low_open=True)
    init_keep = check_real(init_keep, "init_keep", low=0.0, high=1.0, low_open=True,
                           high_open=True)
    options = FitOptions(batch_size=batch_size, seed=seed, optimizer="adam", lr=lr)
    xs = model.sample_major(X)
    targets = model.targets(y, xs.shape[0])
    n = xs.shape[0]
    batch = options.batch_for(n)
    rng = np.random.default_rng(model.rng.integers(2**63) if seed is None else seed)

    masks = [layer.mask.copy() for layer in model.layers]
    weights = [np.array(layer.weight, dtype=np.float64) for layer in model.layers]
    # P(z != 0) = init_keep  <=>  log alpha = logit(init_keep) + beta log(-gamma / zeta)
    start = math.log(init_keep / (1 - init_keep)) + BETA * math.log(-GAMMA / ZETA)
    log_alphas = [np.full(w.shape, start) for w in weights]
    ws = Workspace(model.sizes, batch, model.dtype, model.activation, model.head)
    backends = [DenseBackend(layer) for layer in model.layers]
    flat = [a.ravel() for a in weights] + [a.ravel() for a in log_alphas]
    live = [m.ravel() for m in masks] * 2
    biases = [layer.bias for layer in model.layers]
    adam_w = [(np.zeros_like(p), np.zeros_like(p)) for p in flat]
    adam_b = [(np.zeros_like(b), np.zeros_like(b)) for b in biases]
    bias_live = [np.ones(b.size, bool) for b in biases]
    history = L0History()
    t = 0
    bar = tqdm(range(1, epochs + 1), desc="l0", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(n)
        loss = 0.0
        for begin in range(0, n, batch):
            idx = order[begin : begin + batch]
            b = idx.size
            gates, slopes = [], []
            for layer, w, la, m in zip(model.layers, weights, log_alphas, masks):
                z, dz = hard_concrete(la, rng.uniform(1e-6, 1 - 1e-6, la.shape))
                layer.weight = w * z * m
                gates.append(z)
                slopes.append(dz)
            take_rows(xs, idx, ws.acts(b)[0])
            model.head.gather(targets, idx, ws.targets(b))
            batch_loss, _ = forward_backward(backends, ws, b)
            loss += batch_loss
            # Through w * z: d/dw = G z, d/d log alpha = G w dz/d log alpha (+ penalty).
            g_w, g_la = [], []
            for backend, w, la, z, dz in zip(backends, weights, log_alphas, gates, slopes):
                g = backend.grad_weight.astype(np.float64)
                g_w.append((g * z).ravel())
                g_la.append((g * w * dz + lam * expected_l0(la)[1]).ravel())
            t += 1
            n_layers = len(weights)
            _adam(flat[:n_layers], g_w, live[:n_layers], adam_w[:n_layers], lr, t)
            _adam(flat[n_layers:], g_la, live[n_layers:], adam_w[n_layers:], gate_lr, t)
            _adam(biases, [gb.astype(biases[0].dtype) for gb in ws.grad_bias], bias_live,
                  adam_b, lr, t)
        penalty = sum(expected_l0(la[m])[0] for la, m in zip(log_alphas, masks))
        kept = sum(int(np.count_nonzero(deterministic_gates(la) * m))
                   for la, m in zip(log_alphas, masks))
        history.epoch.append(epoch)
        history.loss.append(loss / n)
        history.expected_l0.append(penalty)
        history.sparsity.append(1.0 - kept / sum(m.size for m in masks))
        bar.set_postfix({"loss": f"{loss / n:.4f}", "sparsity": f"{history.sparsity[-1]:.3f}"},
                        refresh=False)
    bar.close()
    for layer, w, la, m in zip(model.layers, weights, log_alphas, masks):
        z = deterministic_gates(la) * m
        layer.weight = w * z
        layer.mask = z > 0
    return history


def _adam(params, grads, masks, state, lr, t, betas=(0.9, 0.999), eps=1e-8):
    """One Adam step over ``params`` by the package's fused kernel (float64 scalars)."""
    b1, b2 = betas
    step = lr / (1.0 - b1**t)
    root = math.sqrt(1.0 - b2**t)
    for p, g, m, (m1, m2) in zip(params, grads, masks, state):
        adam_step(p, np.ascontiguousarray(g, dtype=p.dtype), m1, m2, m, step, 1.0 - b1, b2,
                  1.0 - b2, root, eps, 0.0)
