"""Plain-NumPy references: sample-major, float64, written for obviousness, not speed.

Every function here takes and returns sample-major arrays ``(batch, features)``; the
package computes feature-major ``(features, batch)``, so tests transpose at the edges.
Nothing here imports sparseprune.
"""

import numpy as np
from scipy.special import expit
from scipy.stats import norm

# -- forward ----------------------------------------------------------------------------


def relu(z):
    return np.maximum(z, 0.0)


def dequantize(codes, offset, step):
    """The values a uniform quantizer's codes stand for: offset + step * code, float64."""
    return float(offset) + float(step) * np.asarray(codes, np.float64)


def csr_to_dense(shape, indptr, indices, values):
    """W (in, out) dense, float64, from CSR arrays of W.T (row j: output j's inputs)."""
    n_in, n_out = shape
    W = np.zeros((n_in, n_out))
    for j in range(n_out):
        W[indices[indptr[j]:indptr[j + 1]], j] = values[indptr[j]:indptr[j + 1]]
    return W


def gelu_tanh(z):
    return 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z**3)))


def gelu_tanh_grad(z):
    """d/dz gelu_tanh, by the product and chain rules on sech^2."""
    c = np.sqrt(2.0 / np.pi)
    u = c * (z + 0.044715 * z**3)
    # sech u = 2 e^-|u| / (1 + e^-2|u|): cosh(u)**2 overflows from |u| ~ 355 (z ~ 24).
    e = np.exp(-np.abs(u))
    sech2 = (2.0 * e / (1.0 + e * e)) ** 2
    return 0.5 * (1.0 + np.tanh(u)) + 0.5 * z * sech2 * c * (1.0 + 3 * 0.044715 * z**2)


#: name -> (activation, its derivative), both of the pre-activation z.
ACTIVATIONS = {
    "relu": (relu, lambda z: (z > 0).astype(np.float64)),
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "logistic": (expit, lambda z: expit(z) * expit(-z)),
    "identity": (lambda z: z, np.ones_like),
    "gelu": (lambda z: z * norm.cdf(z), lambda z: norm.cdf(z) + z * norm.pdf(z)),
    "gelu_tanh": (gelu_tanh, gelu_tanh_grad),
}


def softmax(z):
    """Row-wise softmax of logits z (batch, classes), shifted by the row max."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def forward(weights, biases, X, activation="relu", pre=False):
    """Activations of an MLP (``activation`` hidden, linear last layer) on X (batch, in).

    weights[i] (in, out), biases[i] (out,). Returns [X, a1, ..., logits], float64, and
    with ``pre`` also the pre-activations [z1, ..., logits].
    """
    act = ACTIVATIONS[activation][0]
    acts = [np.asarray(X, dtype=np.float64)]
    zs = []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = acts[-1] @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        zs.append(z)
        acts.append(z if i == last else act(z))
    return (acts, zs) if pre else acts


def predict_proba(weights, biases, X):
    return softmax(forward(weights, biases, X)[-1])


def cross_entropy_sum(logits, y):
    """Sum over samples of -log softmax(logits)[y]."""
    return float(-log_softmax(logits)[np.arange(len(y)), y].sum())


def mean_loss(weights, biases, X, y):
    """Mean softmax cross-entropy of the MLP on (X, y)."""
    return cross_entropy_sum(forward(weights, biases, X)[-1], y) / len(y)


def onehot(y, n_classes):
    out = np.zeros((len(y), n_classes))
    out[np.arange(len(y)), y] = 1.0
    return out


# -- backward ---------------------------------------------------------------------------


def head_loss(logits, y, loss):
    """Mean over samples of the head's loss: softmax cross-entropy (y class indices),
    summed sigmoid cross-entropy (y 0/1, (n, k)), half the summed squared error."""
    z = np.asarray(logits, np.float64)
    n = len(z)
    if loss == "softmax":
        return cross_entropy_sum(z, y) / n
    t = np.asarray(y, np.float64).reshape(n, -1)
    if loss == "sigmoid":
        return float(-(t * np.log(expit(z)) + (1 - t) * np.log(expit(-z))).sum() / n)
    return float(0.5 * ((z - t) ** 2).sum() / n)


def head_grad(logits, y, loss):
    """d head_loss / d logits (batch, k)."""
    z = np.asarray(logits, np.float64)
    n = len(z)
    if loss == "softmax":
        return (softmax(z) - onehot(y, z.shape[1])) / n
    t = np.asarray(y, np.float64).reshape(n, -1)
    return ((expit(z) if loss == "sigmoid" else z) - t) / n


def backprop(weights, biases, X, y, activation="relu", loss="softmax"):
    """The head's mean loss and its gradients by the chain rule, layer by layer.

    Returns (loss, [(grad_weight (in, out), grad_bias (out,)), ...]), float64.
    """
    acts, zs = forward(weights, biases, X, activation, pre=True)
    derivative = ACTIVATIONS[activation][1]
    logits = acts[-1]
    dz = head_grad(logits, y, loss)  # d loss / d logits
    grads = []
    for i in range(len(weights) - 1, -1, -1):
        a_in = acts[i]
        grads.append((a_in.T @ dz, dz.sum(axis=0)))
        if i > 0:
            da = dz @ np.asarray(weights[i], np.float64).T
            dz = da * derivative(zs[i - 1])
    grads.reverse()
    return head_loss(logits, y, loss), grads


# -- optimizers, as torch.optim defines them --------------------------------------------


class TorchSGD:
    """torch.optim.SGD(lr, momentum, weight_decay), dampening 0, no Nesterov.

    The momentum buffer is created on the first step as a copy of the gradient (torch's
    ``buf = torch.clone(d_p)``), afterwards ``buf = momentum * buf + d_p``.
    """

    def __init__(self, lr, momentum=0.0, weight_decay=0.0):
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers = {}

    def step(self, key, param, grad):
        """Return the updated copy of ``param`` for ``grad``; ``key`` names its state."""
        d_p = grad + self.weight_decay * param if self.weight_decay else grad.copy()
        if self.momentum:
            if key not in self.buffers:
                buf = d_p.copy()
            else:
                buf = self.momentum * self.buffers[key] + d_p
            self.buffers[key] = buf
            d_p = buf
        return param - self.lr * d_p


class TorchAdam:
    """torch.optim.Adam(lr, betas, eps, weight_decay): L2 added to the gradient, bias
    corrections applied as ``step_size = lr / bc1`` and ``denom = sqrt(v) / sqrt(bc2) + eps``.
    """

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.state = {}

    def step(self, key, param, grad):
        beta1, beta2 = self.betas
        t, m, v = self.state.get(key, (0, np.zeros_like(param), np.zeros_like(param)))
        t += 1
        g = grad + self.weight_decay * param
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        self.state[key] = (t, m, v)
        bc1 = 1 - beta1**t
        bc2 = 1 - beta2**t
        denom = np.sqrt(v) / np.sqrt(bc2) + self.eps
        return param - (self.lr / bc1) * m / denom


def train_full_batch(weights, biases, masks, X, y, optimizer, steps):
    """``steps`` full-batch steps of ``optimizer`` (a TorchSGD/TorchAdam) on the MLP.

    Gradients of pruned weights are zeroed before the step (what torch's pruning hooks
    achieve through ``weight = weight_orig * mask``). Returns (weights, biases), float64.
    """
    weights = [np.asarray(w, np.float64).copy() for w in weights]
    biases = [np.asarray(b, np.float64).copy() for b in biases]
    for _ in range(steps):
        _, grads = backprop(weights, biases, X, y)
        for i, ((gw, gb), mask) in enumerate(zip(grads, masks)):
            weights[i] = np.where(mask, optimizer.step(("w", i), weights[i], gw * mask), 0.0)
            biases[i] = optimizer.step(("b", i), biases[i], gb)
    return weights, biases


# -- pruning, as torch.nn.utils.prune defines it ----------------------------------------


def torch_unstructured_mask(weights, amount, scope):
    """Masks of ``global_unstructured`` (scope "global") or ``l1_unstructured`` per layer
    (scope "layer") with ``amount`` a fraction, on freshly unpruned weights.

    torch: ``nparams_toprune = round(amount * n)``; the mask zeroes
    ``topk(abs(t).view(-1), k=nparams_toprune, largest=False).indices``.
    Meant for distinct |w| (torch's topk orders ties arbitrarily).
    """

    def l1(flat):
        k = round(amount * flat.size)
        mask = np.ones(flat.size, bool)
        mask[np.argsort(np.abs(flat))[:k]] = False
        return mask

    if scope == "layer":
        return [l1(np.ravel(w)).reshape(np.shape(w)) for w in weights]
    flat = l1(np.concatenate([np.ravel(w) for w in weights]))
    out, start = [], 0
    for w in weights:
        out.append(flat[start : start + np.size(w)].reshape(np.shape(w)))
        start += np.size(w)
    return out
