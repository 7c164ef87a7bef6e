"""The fused dense path against the straightforward NumPy step.

Each group times two contenders on the same case:

- ``numpy``: the step as a person would write it in NumPy, sample-major ``(batch,
  features)``, allocating its temporaries: ``Z = X @ W + b``, ``np.maximum(Z, 0)``,
  softmax by ``exp``/``sum``, ``dZ = (P - onehot) / B``, ``dW = A.T @ dZ * mask``,
  ``db = dZ.sum(0)``, ``dA = dZ @ W.T * (A > 0)``, ``w -= lr * dW``.
- ``sparseprune``: the package's path, feature-major ``(features, batch)``: BLAS through
  ``numpy.matmul(..., out=...)`` and the fused Numba kernels, on buffers allocated once.

Groups: ``mlp-step`` (one ``train.forward_backward`` and the SGD update, as ``fit`` runs
them), and the pieces of it: ``forward`` (a hidden layer: product, bias, ReLU),
``softmax-xent`` (the output's loss and gradient), ``backward`` (a hidden layer: masked
weight gradient, input gradient, ReLU derivative and bias gradient) and ``sgd-update``.

Every test first runs both contenders once on identical inputs and checks that they
agree, outside the timed call.
"""

import copy

import numpy as np
from bench_utils import assert_close

import sparseprune as spp
from sparseprune.kernels.dense import RELU, dense_act_backward, dense_softmax_xent
from sparseprune.kernels.optim import sgd_step
from sparseprune.layers import MaskedLinear
from sparseprune.passes import Workspace, forward_backward
from sparseprune.train import SGD, DenseBackend
from sparseprune.train.loop import bind

# ReLU's derivative comes from its output: no pre-activation is passed.
NO_PRE = {np.dtype(t): np.empty((0, 0), t) for t in (np.float32, np.float64)}

# The timed step runs thousands of times on one batch; a small learning rate keeps the
# weights near their start (no overfitting the batch, no underflow to subnormals), and
# the update costs the same at any learning rate. The agreement checks use a large one
# so that the update, not just the weights, is compared.
LR_TIMED = 1e-5
LR_CHECK = 1.0


def _nbytes(*shapes, dtype):
    return int(sum(np.prod(s) for s in shapes) * np.dtype(dtype).itemsize)


# -- the plain NumPy step -----------------------------------------------------------------


def numpy_mlp_step(weights, biases, masks, X, y, lr, record=None):
    """One SGD step on a batch, in place, the plain NumPy way. Returns the summed loss.

    weights[i] (in, out), biases[i] (out,), masks[i] (in, out) bool; X (B, in) sample-
    major; y (B,) int labels. If ``record`` is a dict, the gradients go in it, by layer.
    """
    batch = X.shape[0]
    rows = np.arange(batch)
    last = len(weights) - 1
    acts = [X]
    for i, (W, b) in enumerate(zip(weights, biases)):
        Z = acts[-1] @ W + b
        acts.append(np.maximum(Z, 0) if i < last else Z)
    Z = acts[-1]
    Zs = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Zs)
    S = E.sum(axis=1, keepdims=True)
    P = E / S
    loss = np.sum(np.log(S[:, 0]) - Zs[rows, y])
    dZ = (P - np.eye(Z.shape[1], dtype=Z.dtype)[y]) / batch
    for i in range(last, -1, -1):
        dW = acts[i].T @ dZ * masks[i]
        db = dZ.sum(axis=0)
        if record is not None:
            record[i] = (dW, db)
        if i > 0:
            dZ = dZ @ weights[i].T * (acts[i] > 0)
        weights[i] -= lr * dW
        biases[i] -= lr * db
    return loss


def numpy_forward(X, W, b):
    """A hidden layer: X (B, in) -> (B, out)."""
    return np.maximum(X @ W + b, 0)


def numpy_softmax_xent(Z, y):
    """Summed loss, dZ (B, C) of the mean loss and its column sums, of logits Z (B, C)."""
    batch = Z.shape[0]
    Zs = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Zs)
    S = E.sum(axis=1, keepdims=True)
    P = E / S
    loss = np.sum(np.log(S[:, 0]) - Zs[np.arange(batch), y])
    dZ = (P - np.eye(Z.shape[1], dtype=Z.dtype)[y]) / batch
    return loss, dZ, dZ.sum(axis=0)


def numpy_backward(A, dZ, W, mask):
    """A hidden layer whose input A (B, in) is a ReLU output; dZ (B, out) the gradient at
    its pre-activation. Returns dW (in, out), the gradient at the input's
    pre-activation (B, in) and its column sums (the input layer's bias gradient)."""
    dW = A.T @ dZ * mask
    dZ_in = dZ @ W.T * (A > 0)
    return dW, dZ_in, dZ_in.sum(axis=0)


# -- builders -------------------------------------------------------------------------------


def make_model(case, rng, sparsity):
    """An MLP with random biases and a random mask pruning ``sparsity`` of each weight."""
    model = spp.MLP(case.sizes, dtype=case.dtype, seed=int(rng.integers(2**31)))
    for layer in model.layers:
        layer.bias = rng.normal(0.0, 0.1, layer.out_features)
        layer.mask = rng.random(layer.shape) >= sparsity
    return model


def make_batch(case, rng):
    X = rng.standard_normal((case.batch, case.sizes[0])).astype(case.dtype)
    y = rng.integers(0, case.sizes[-1], case.batch)
    return X, y


def sparseprune_step(model, X, y, lr):
    """The package's step on batch X (B, in), y, as ``train.fit_sm`` runs it: a workspace,
    dense backends and an SGD optimizer bound once, then ``forward_backward`` and ``step``
    per batch. Returns (step, workspace, backends)."""
    batch = X.shape[0]
    ws = Workspace(model.sizes, batch, model.dtype, model.activation, model.head)
    ws.acts(batch)[0][...] = X.T
    ws.targets(batch)[...] = y
    backends = [DenseBackend(layer) for layer in model.layers]
    optimizer = SGD(lr, momentum=0.0)
    grads = bind(optimizer, backends, ws)

    def step():
        loss, _ = forward_backward(backends, ws, batch)
        optimizer.step(grads)
        return loss

    return step, ws, backends


def numpy_params(model):
    return ([layer.weight.copy() for layer in model.layers],
            [layer.bias.copy() for layer in model.layers],
            [layer.mask.copy() for layer in model.layers])


# -- benchmarks -------------------------------------------------------------------------------


def test_mlp_step(measure, rng, sparsity, mlp_case, contender):
    case = mlp_case
    model = make_model(case, rng, sparsity)
    X, y = make_batch(case, rng)

    # Agreement: one step of each from the same weights; compare the loss, the gradients
    # (the optimizer masks the update too, so the update alone would not show an unmasked
    # weight gradient) and the update.
    weights, biases, masks = numpy_params(model)
    np_after, np_grads = copy.deepcopy([weights, biases]), {}
    np_loss = numpy_mlp_step(*np_after, masks, X, y, LR_CHECK, record=np_grads)
    twin = copy.deepcopy(model)
    twin_step, ws, backends = sparseprune_step(twin, X, y, LR_CHECK)
    sp_loss = twin_step()
    assert_close(sp_loss, np_loss, case.dtype)
    for i, (dw, db) in np_grads.items():
        assert_close(backends[i].grad_weight, dw, case.dtype)
        assert_close(ws.grad_bias[i], db, case.dtype)
    sp_after = [layer.weight for layer in twin.layers] + [layer.bias for layer in twin.layers]
    for p0, p_np, p_sp in zip(weights + biases, np_after[0] + np_after[1], sp_after):
        assert_close(p_sp - p0, p_np - p0, case.dtype)

    if contender == "numpy":
        def step():
            return numpy_mlp_step(weights, biases, masks, X, y, LR_TIMED)
    else:
        step, _, _ = sparseprune_step(model, X, y, LR_TIMED)
    n_weights = sum(i * o for i, o in zip(case.sizes[:-1], case.sizes[1:]))
    measure(step, f"mlp-step {case.id}", sizes=list(case.sizes), batch=case.batch,
            dtype=case.dtype, sparsity=sparsity,
            weight_bytes=n_weights * np.dtype(case.dtype).itemsize,
            activation_bytes=sum(case.sizes) * case.batch * np.dtype(case.dtype).itemsize)


def test_forward(measure, rng, layer_case, contender):
    case = layer_case
    W = (rng.standard_normal((case.n_in, case.n_out)) / np.sqrt(case.n_in)).astype(case.dtype)
    b = rng.normal(0.0, 0.1, case.n_out).astype(case.dtype)
    X = rng.standard_normal((case.batch, case.n_in)).astype(case.dtype)
    layer = MaskedLinear(W, b)
    x = np.ascontiguousarray(X.T)
    out = np.empty((case.n_out, case.batch), case.dtype)

    assert_close(layer.forward_fm(x, out, RELU).T, numpy_forward(X, W, b), case.dtype)

    if contender == "numpy":
        def step():
            return numpy_forward(X, W, b)
    else:
        def step():
            return layer.forward_fm(x, out, RELU)
    measure(step, f"forward {case.id}", shape=[case.n_in, case.n_out], batch=case.batch,
            dtype=case.dtype,
            bytes=_nbytes(W.shape, X.shape, out.shape, dtype=case.dtype))


def test_softmax_xent(measure, rng, output_case, contender):
    n_classes, batch, dtype = output_case
    Z = (3 * rng.standard_normal((batch, n_classes))).astype(dtype)
    y = rng.integers(0, n_classes, batch)
    z = np.ascontiguousarray(Z.T)
    # A gradient buffer of its own (the model writes it over the logits): the logits
    # stay the same from round to round.
    grad = np.empty_like(z)
    grad_bias = np.empty(n_classes, dtype)
    scale = 1.0 / batch

    loss, _ = dense_softmax_xent(z, y, scale, grad, grad_bias)
    np_loss, np_grad, np_grad_bias = numpy_softmax_xent(Z, y)
    assert_close(loss, np_loss, dtype)
    assert_close(grad.T, np_grad, dtype)
    assert_close(grad_bias, np_grad_bias, dtype)

    if contender == "numpy":
        def step():
            return numpy_softmax_xent(Z, y)
    else:
        def step():
            return dense_softmax_xent(z, y, scale, grad, grad_bias)
    measure(step, f"softmax-xent {n_classes}x{batch}-{np.dtype(dtype).name}",
            shape=[n_classes, batch], batch=batch, dtype=dtype,
            bytes=_nbytes(z.shape, grad.shape, dtype=dtype))


def test_backward(measure, rng, sparsity, layer_case, contender):
    case = layer_case
    W = (rng.standard_normal((case.n_in, case.n_out)) / np.sqrt(case.n_in)).astype(case.dtype)
    mask = rng.random(W.shape) >= sparsity
    A = np.maximum(rng.standard_normal((case.batch, case.n_in)), 0).astype(case.dtype)
    dZ = (rng.standard_normal((case.batch, case.n_out)) / case.batch).astype(case.dtype)
    layer = MaskedLinear(W, np.zeros(case.n_out), mask=mask)
    W = layer.weight  # pruned entries zeroed, as the model holds them
    a, dz = np.ascontiguousarray(A.T), np.ascontiguousarray(dZ.T)
    grad_weight = np.empty(W.shape, case.dtype)
    dx = np.empty_like(a)
    grad_bias = np.empty(case.n_in, case.dtype)

    def fused():
        layer.backward_fm(a, dz, grad_weight, dx)
        dense_act_backward(a, NO_PRE[a.dtype], dx, grad_bias, RELU)
        return dx

    fused()
    np_dw, np_dz_in, np_db = numpy_backward(A, dZ, W, mask)
    assert_close(grad_weight, np_dw, case.dtype)
    assert_close(dx.T, np_dz_in, case.dtype)
    assert_close(grad_bias, np_db, case.dtype)

    if contender == "numpy":
        def step():
            return numpy_backward(A, dZ, W, mask)
    else:
        step = fused
    measure(step, f"backward {case.id}", shape=[case.n_in, case.n_out], batch=case.batch,
            dtype=case.dtype, sparsity=sparsity,
            bytes=_nbytes(W.shape, W.shape, a.shape, a.shape, dz.shape, dtype=case.dtype)
            + mask.nbytes)


def test_sgd_update(measure, rng, sparsity, weight_case, contender):
    n_in, n_out, dtype = weight_case
    shape = (n_in, n_out)
    mask = rng.random(shape) >= sparsity
    w = np.where(mask, rng.standard_normal(shape), 0).astype(dtype)
    dw = np.where(mask, rng.standard_normal(shape), 0).astype(dtype)
    flat_w, flat_dw, flat_mask = w.ravel(), dw.ravel(), mask.ravel()
    velocity = np.zeros_like(flat_w)

    expected = w - LR_CHECK * dw
    got = w.copy()
    sgd_step(got.ravel(), flat_dw, velocity, flat_mask, LR_CHECK, 0.0, 0.0)
    assert_close(got, expected, dtype)

    if contender == "numpy":
        def step(w=w):
            w -= LR_TIMED * dw
    else:
        def step():
            sgd_step(flat_w, flat_dw, velocity, flat_mask, LR_TIMED, 0.0, 0.0)
    measure(step, f"sgd-update {n_in}x{n_out}-{np.dtype(dtype).name}",
            shape=list(shape), dtype=dtype, sparsity=sparsity,
            bytes=_nbytes(shape, shape, dtype=dtype) + mask.nbytes)
