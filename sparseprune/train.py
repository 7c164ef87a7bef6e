"""Training: optimizers, the epoch loop and its history."""

import math
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ._validation import check_choice, check_int, check_labels, check_real
from .engines import choose_backends
from .kernels.dense import dense_relu_backward, dense_softmax_xent
from .kernels.optim import adam_step, sgd_step
from .ops import aligned_empty

OPTIMIZERS = ("sgd", "adam")
BACKENDS = ("dense", "sparse", "auto")
DEFAULT_LR = {"sgd": 0.01, "adam": 0.001}


class Workspace:
    """Activation buffers for batches of up to ``capacity`` samples, allocated once per
    fit. A batch of ``b <= capacity`` samples gets C-contiguous ``(features, b)`` views
    of the leading ``features * b`` elements of each buffer."""

    def __init__(self, sizes, capacity, dtype):
        self.capacity = capacity
        self.sizes = sizes
        # _acts[0] is the input batch, _acts[-1] the logits, overwritten by their gradient.
        # Cache-line aligned, so a batch of one register tile feeds the CSR kernels in
        # place (see ops.aligned_empty); a view of the leading elements stays aligned.
        self._acts = [aligned_empty(s * capacity, dtype) for s in sizes]
        # Gradients at the hidden layers' outputs; the input gets none.
        self._grads = [aligned_empty(s * capacity, dtype) for s in sizes[1:-1]]
        self.y = np.empty(capacity, np.int64)
        self.grad_bias = [np.empty(o, dtype) for o in sizes[1:]]

    @staticmethod
    def _view(buffer, rows, batch):
        return buffer[: rows * batch].reshape(rows, batch)

    def acts(self, batch):
        return [self._view(a, s, batch) for a, s in zip(self._acts, self.sizes)]

    def grads(self, batch):
        return [self._view(g, s, batch) for g, s in zip(self._grads, self.sizes[1:-1])]


def forward_backward(backends, ws, batch):
    """One forward and backward pass over the batch held in ``ws``.

    ``ws.acts(batch)[0]`` and ``ws.y[:batch]`` hold the input. The gradients of the mean
    cross-entropy land in each backend's ``grads`` and in ``ws.grad_bias``.
    Returns (summed loss, number correct) of the batch, before any update.
    """
    acts = ws.acts(batch)
    grads = ws.grads(batch)
    last = len(backends) - 1
    for i, layer_backend in enumerate(backends):
        layer_backend.forward_fm(acts[i], acts[i + 1], i < last)
    dz = acts[-1]
    loss, correct = dense_softmax_xent(dz, ws.y[:batch], 1.0 / batch, dz, ws.grad_bias[-1])
    for i in range(last, -1, -1):
        dx = grads[i - 1] if i > 0 else None
        backends[i].backward_fm(acts[i], dz, dx)
        if dx is not None:
            # dA becomes dZ in place; the bias gradient rides along.
            dense_relu_backward(acts[i], dx, ws.grad_bias[i - 1])
            dz = dx
    return loss, correct


class SGD:
    """Stochastic gradient descent with heavy-ball momentum and coupled L2, as
    ``torch.optim.SGD`` (no dampening, no Nesterov)."""

    def __init__(self, lr, momentum=0.9, weight_decay=0.0):
        self.lr = check_real(lr, "lr", low=0.0, low_open=True)
        self.momentum = check_real(momentum, "momentum", low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
        self._state = None

    def bind(self, params, masks):
        """Allocate state for ``params`` (flat C-contiguous arrays updated in place) and
        their ``masks`` (flat bool arrays of the same sizes)."""
        self._params, self._masks = params, masks
        self._state = [np.zeros_like(p) for p in params]

    def step(self, grads):
        for p, g, v, m in zip(self._params, grads, self._state, self._masks):
            sgd_step(p, g, v, m, self.lr, self.momentum, self.weight_decay)


class Adam:
    """Adam (Kingma & Ba 2015) with coupled L2, as ``torch.optim.Adam``."""

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = check_real(lr, "lr", low=0.0, low_open=True)
        self.betas = tuple(
            check_real(b, f"betas[{i}]", low=0.0, high=1.0, high_open=True)
            for i, b in enumerate(betas)
        )
        self.eps = check_real(eps, "eps", low=0.0, low_open=True)
        self.weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
        self._state = None

    def bind(self, params, masks):
        self._params, self._masks = params, masks
        self._state = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        self._t = 0

    def step(self, grads):
        self._t += 1
        beta1, beta2 = self.betas
        # Scalars in double precision, then rounded once to the parameters' dtype.
        step_size = self.lr / (1.0 - beta1**self._t)
        root_bc2 = math.sqrt(1.0 - beta2**self._t)
        for p, g, (m1, m2), m in zip(self._params, grads, self._state, self._masks):
            adam_step(p, g, m1, m2, m, step_size, 1.0 - beta1, beta2, 1.0 - beta2, root_bc2,
                      self.eps, self.weight_decay)


@dataclass
class History:
    """What ``fit`` saw, one entry per epoch.

    ``loss`` and ``accuracy`` are over the training batches as they were seen during the
    epoch (before each batch's update, like Keras); ``val_loss`` and ``val_accuracy``
    are measured after the epoch, and stay empty without validation data.
    """

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)

    @property
    def history(self):
        """The record as a dict of lists, keyed as the attributes."""
        return {k: list(v) for k, v in self.__dict__.items()}

    def __getitem__(self, key):
        return self.history[key]

    def __len__(self):
        return len(self.epoch)


def _check_validation_data(model, validation_data):
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("validation_data must be a pair (X_val, y_val)")
    xv = model._feature_major(validation_data[0], name="validation_data[0]")
    yv = check_labels(validation_data[1], xv.shape[1], model.n_classes, name="validation_data[1]")
    return xv, yv


def make_optimizer(optimizer, lr=None, momentum=None, weight_decay=None):
    """An optimizer by name ("sgd" or "adam"), or ``optimizer`` itself if it already is
    one (anything with ``bind`` and ``step``).

    Options left None take the defaults: lr 0.01 (SGD) or 0.001 (Adam), momentum 0.9,
    weight_decay 0. An option that would be ignored is an error rather than a surprise:
    any of them with an optimizer object (it carries its own), momentum with Adam.
    """
    options = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    if hasattr(optimizer, "bind") and hasattr(optimizer, "step"):
        given = [name for name, value in options.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be given with an optimizer object "
                             f"({type(optimizer).__name__}): set them on the object")
        return optimizer
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    weight_decay = 0.0 if weight_decay is None else weight_decay
    if optimizer == "sgd":
        return SGD(lr, momentum=0.9 if momentum is None else momentum,
                   weight_decay=weight_decay)
    if momentum is not None:
        raise ValueError("momentum is an SGD option; for Adam's betas pass "
                         "optimizer=spp.Adam(lr, betas=...)")
    return Adam(lr, weight_decay=weight_decay)


def check_fit_options(epochs, lr, batch_size, optimizer, momentum, weight_decay, backend):
    """Check ``fit``'s options before anything runs; returns (epochs, batch_size or None,
    the optimizer object)."""
    epochs = check_int(epochs, "epochs", minimum=0)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
    check_choice(backend, "backend", BACKENDS)
    optimizer = make_optimizer(optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return epochs, batch_size, optimizer


def fit(model, X, y, epochs=10, lr=None, batch_size=None, optimizer="sgd", momentum=None,
        weight_decay=None, validation_data=None, progress=True, seed=None, backend="dense"):
    """Train ``model`` on X (n_samples, n_features), y (n_samples,) integer labels.

    Parameters
    ----------
    epochs : int >= 0
    lr : float > 0, optional
        Learning rate; 0.01 for SGD and 0.001 for Adam by default.
    batch_size : int, optional
        Mini-batch size; the whole set (full-batch gradient descent) if None. The last
        batch of an epoch may be smaller.
    optimizer : "sgd", "adam", or an optimizer object
        With ``"sgd"`` and ``momentum=0`` a step is exactly ``w -= lr * grad``. An
        object (``spp.SGD(...)``, ``spp.Adam(...)``) carries its own lr, momentum and
        weight decay; giving them here too is an error.
    momentum, weight_decay : float, optional
        SGD momentum in [0, 1), default 0.9 (SGD only); coupled L2 weight decay >= 0,
        default 0 (both optimizers).
    validation_data : (X_val, y_val), optional
        Measured after every epoch.
    progress : bool
        A progress bar over epochs, with the loss and validation accuracy.
    seed : int, optional
        Seeds the shuffling; by default it is drawn from the model's own seeded stream.
    backend : "dense", "sparse" or "auto"
        How the layers train. "dense": the masked weight matrices through BLAS.
        "sparse": only the surviving weights, through the CSR kernels (same results to
        rounding). "auto": per layer, whichever measured faster for one forward and
        backward pass at this batch size.

    Returns
    -------
    History
    """
    xt = model._feature_major(X)
    y = check_labels(y, xt.shape[1], model.n_classes)
    validation = _check_validation_data(model, validation_data)
    return _fit(model, xt, y, validation, epochs=epochs, lr=lr, batch_size=batch_size,
                optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                progress=progress, seed=seed, backend=backend)


def bind(optimizer, model, backends, ws):
    """Point ``optimizer`` at every trainable array of the model (the backends' weights,
    the layers' biases, updated in place); returns the matching gradient buffers, in
    the order ``optimizer.step`` takes them."""
    params, masks, grads = [], [], []
    for backend, grad_bias in zip(backends, ws.grad_bias):
        for values, live in backend.parameters:
            params.append(values)
            masks.append(live)
        grads += backend.grads + [grad_bias]
    optimizer.bind(params, masks)
    return grads


def _fit(model, xt, y, validation, epochs, lr, batch_size, optimizer, momentum, weight_decay,
         progress, seed, backend):
    """``fit`` on data already validated: xt (n_features, n) of the model's dtype, y
    (n,) int64 labels, validation None or such a pair."""
    n = xt.shape[1]
    epochs, batch_size, optimizer = check_fit_options(
        epochs, lr, batch_size, optimizer, momentum, weight_decay, backend)
    batch = n if batch_size is None else min(batch_size, n)
    rng = np.random.default_rng(model._rng.integers(2**63) if seed is None else seed)

    ws = Workspace(model.sizes, batch, model.dtype)
    backends = choose_backends(model, backend, batch)
    grads = bind(optimizer, model, backends, ws)
    try:
        return _epochs(model, xt, y, validation, epochs, batch, optimizer, rng, progress, ws,
                       backends, grads)
    finally:
        for layer_backend in backends:
            layer_backend.finish()


def _epochs(model, xt, y, validation, epochs, batch, optimizer, rng, progress, ws, backends,
            grads):
    n = xt.shape[1]
    history = History()
    bar = tqdm(range(1, epochs + 1), desc="fit", unit="epoch", disable=not progress,
               dynamic_ncols=True)
    for epoch in bar:
        order = rng.permutation(n)
        loss = correct = 0.0
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            b = idx.shape[0]
            # mode="clip" skips the bounds check (idx is a permutation) and the copy of
            # ``out`` that numpy makes under the default mode.
            np.take(xt, idx, axis=1, out=ws.acts(b)[0], mode="clip")
            np.take(y, idx, out=ws.y[:b], mode="clip")
            batch_loss, batch_correct = forward_backward(backends, ws, b)
            optimizer.step(grads)
            loss += batch_loss
            correct += batch_correct
        history.epoch.append(epoch)
        history.loss.append(loss / n)
        history.accuracy.append(correct / n)
        postfix = {"loss": f"{loss / n:.4f}", "acc": f"{correct / n:.3f}"}
        if validation is not None:
            for layer_backend in backends:
                layer_backend.finish()
            val_loss, val_acc = model._evaluate_fm(*validation)
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_acc)
            postfix["val_acc"] = f"{val_acc:.3f}"
        bar.set_postfix(postfix, refresh=False)
    bar.close()
    return history
