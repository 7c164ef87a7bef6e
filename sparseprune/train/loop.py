"""The epoch loop and its history: ``fit`` on validated data, and at the boundary."""

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..kernels.layout import take_fm, take_fm_parallel
from ..kernels.optim import soft_threshold
from ..ops import PACK_PARALLEL_BYTES
from ..passes import Workspace, forward_backward
from .backends import choose_backends
from .options import FitOptions

__all__ = ["History", "bind", "check_validation_data", "fit", "fit_fm", "fit_sm", "l1_step",
           "record_epoch", "run_epoch", "take_rows"]


@dataclass
class History:
    """What ``fit`` saw, one entry per epoch.

    ``loss`` and ``accuracy`` are over the training batches as they were seen during the
    epoch (before each batch's update, like Keras); ``val_loss`` and ``val_accuracy``
    are measured after the epoch, and stay empty without validation data. ``accuracy``
    is the model's score: the fraction predicted right for a classifier (subset accuracy
    for multi-label), R^2 for regression (over the epoch's batches: weighted by each
    output's variance; on validation data: :meth:`~sparseprune.MLP.score`'s average).
    """

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    #: Whether the stopping rule (``tol``) ended training before ``epochs``.
    stopped_early: bool = False

    @property
    def history(self):
        """The per-epoch record as a dict of lists, keyed as the attributes."""
        return {k: list(v) for k, v in self.__dict__.items() if isinstance(v, list)}

    def __getitem__(self, key):
        return self.history[key]

    def __len__(self):
        return len(self.epoch)


def check_validation_data(model, validation_data):
    """None, or ``validation_data`` (X_val, y_val) as a feature-major pair (xv, yv)
    checked against ``model``."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("validation_data must be a pair (X_val, y_val)")
    xv = model.feature_major(validation_data[0], name="validation_data[0]")
    yv = model.targets(validation_data[1], xv.shape[1], name="validation_data[1]")
    return xv, yv


def fit(model, X, y, validation_data=None, **options):
    """Train ``model`` on X (n_samples, n_features) and targets y (see
    :meth:`sparseprune.MLP.fit`).

    Minimizes the head's mean loss over each mini-batch; pruned weights stay exactly
    zero. ``validation_data`` (X_val, y_val) is measured after every epoch.
    ``options`` are those of :class:`FitOptions` (epochs, lr, batch_size, optimizer,
    momentum, weight_decay, progress, seed, backend), all checked before anything runs.

    Returns
    -------
    History
    """
    options = FitOptions.from_kwargs("fit", **options)
    X = model.sample_major(X)
    targets = model.targets(y, X.shape[0])
    validation = check_validation_data(model, validation_data)
    return fit_sm(model, X, targets, validation, options)


def bind(optimizer, backends, ws):
    """Point ``optimizer`` at every trainable array of the model (each backend's
    parameters, updated in place); returns the matching gradient buffers, in the order
    ``optimizer.step`` takes them."""
    params, masks, grads = [], [], []
    for backend, grad_bias in zip(backends, ws.grad_bias):
        for values, live in backend.parameters:
            params.append(values)
            masks.append(live)
        grads += backend.grads + [grad_bias]
    optimizer.bind(params, masks)
    return grads


def l1_step(optimizer, backends, l1):
    """The proximal step of an L1 penalty ``l1`` on the backends' weights, as a function
    to call after every optimizer step; None when ``l1`` is 0."""
    if l1 == 0:
        return None
    lr = getattr(optimizer, "lr", None)
    if lr is None:
        raise ValueError(f"l1 needs the optimizer's learning rate: {type(optimizer).__name__} "
                         f"has no lr attribute")
    weights = [backend.parameters[0] for backend in backends]
    threshold = lr * l1

    def step():
        for values, live in weights:
            soft_threshold(values, live, threshold)

    return step


def fit_sm(model, X, targets, validation, options, on_batch=None):
    """``fit`` on data already validated: X (n, n_features) sample-major, C-contiguous, of
    the model's dtype (``model.sample_major``), targets as ``model.targets`` gives them,
    validation None or a feature-major pair (:func:`check_validation_data`), ``options``
    a :class:`FitOptions`.

    ``on_batch(backends)``, if given, is called after every batch's backward pass and
    before its update: each backend's weight (``parameters[0][0]``) still holds the
    values the gradient (``grads[0]``) was computed at (pruning criteria that accumulate
    during training, and lottery tickets' rewind points, read them there).

    Each batch is taken from X's rows (:func:`take_rows`).
    """
    def take(idx, out):
        take_rows(X, idx, out)

    return _fit(model, X.shape[0], take, targets, validation, options, on_batch)


def take_rows(X, idx, out):
    """Fill the feature-major batch ``out`` (n_features, len(idx)) with the rows ``idx``
    (int64, valid: not checked) of sample-major X (n, n_features), both C-contiguous of
    one dtype.

    At 2,048 x 2,048 float32, batch 256: 0.34 ms a batch, where a feature-major copy of X
    (25 ms a fit) and its batch columns (2.6 ms a batch: nearly every cache line of the
    copy holds one of the batch's columns) cost 46 ms a one-epoch fit.
    """
    if out.nbytes < PACK_PARALLEL_BYTES:
        take_fm(X, idx, out)
    else:
        take_fm_parallel(X, idx, out)


def fit_fm(model, xt, targets, validation, options, on_batch=None):
    """:func:`fit_sm` on feature-major xt (n_features, n) of the model's dtype
    (``model.feature_major``), for callers that hold X only so."""
    def take(idx, out):
        # mode="clip" skips the bounds check (idx is a permutation) and the copy of
        # ``out`` that numpy makes under the default mode.
        np.take(xt, idx, axis=1, out=out, mode="clip")

    return _fit(model, xt.shape[1], take, targets, validation, options, on_batch)


def _fit(model, n, take, targets, validation, options, on_batch):
    """Train on ``n`` samples; ``take(idx, out)`` fills the feature-major ``out``
    (n_features, len(idx)) with the samples ``idx``."""
    batch = options.batch_for(n)
    seed = model.rng.integers(2**63) if options.seed is None else options.seed
    rng = np.random.default_rng(seed)
    optimizer = options.make_optimizer()

    ws = Workspace(model.sizes, batch, model.dtype, model.activation, model.head)
    backends = choose_backends(model, options.backend, batch)
    grads = bind(optimizer, backends, ws)
    prox = l1_step(optimizer, backends, options.l1)
    try:
        return _epochs(model, n, take, targets, validation, options, batch, optimizer, rng,
                       ws, backends, grads, prox, on_batch)
    finally:
        for backend in backends:
            backend.finish()
        if prox is not None:
            # The mask follows the weights the penalty brought to zero.
            for layer in model.layers:
                layer.mask = layer.mask & (layer.weight != 0)


def run_epoch(model, n, take, targets, batch, rng, ws, backends, optimizer, grads,
              on_batch=None, after_step=None):
    """One epoch of mini-batch steps over ``n`` samples, in the order of
    ``rng.permutation(n)``: each batch taken (``take(idx, out)``, as :func:`_fit` has
    it) into ``ws``, its forward and backward pass, ``on_batch(backends)`` if given,
    the optimizer's step, then ``after_step(b)`` (b the batch's size) if given.
    Returns the epoch's summed loss and count of correct predictions."""
    order = rng.permutation(n)
    loss = correct = 0.0
    for start in range(0, n, batch):
        idx = order[start : start + batch]
        b = idx.shape[0]
        take(idx, ws.acts(b)[0])
        model.head.gather(targets, idx, ws.targets(b))
        batch_loss, batch_correct = forward_backward(backends, ws, b)
        if on_batch is not None:
            on_batch(backends)
        optimizer.step(grads)
        if after_step is not None:
            after_step(b)
        loss += batch_loss
        correct += batch_correct
    return loss, correct


def record_epoch(history, epoch, model, backends, loss, correct, n, targets, validation):
    """Append ``epoch``'s record to ``history`` (a :class:`History` or one with its
    fields): the mean training loss, the score over the epoch's batches, and with
    ``validation`` the loss and score measured on it (the backends' weights put back
    into the model first). Returns the progress bar's postfix."""
    score = model.head.epoch_score(loss, correct, n, targets)
    history.epoch.append(epoch)
    history.loss.append(loss / n)
    history.accuracy.append(score)
    postfix = {"loss": f"{loss / n:.4f}", "acc": f"{score:.3f}"}
    if validation is not None:
        for backend in backends:
            backend.finish()
        val_loss, val_acc = model.evaluate_fm(*validation)
        history.val_loss.append(val_loss)
        history.val_accuracy.append(val_acc)
        postfix["val_acc"] = f"{val_acc:.3f}"
    return postfix


def _epochs(model, n, take, targets, validation, options, batch, optimizer, rng, ws,
            backends, grads, prox, on_batch):
    history = History()
    best, stale = np.inf, 0
    bar = tqdm(range(1, options.epochs + 1), desc="fit", unit="epoch",
               disable=not options.progress, dynamic_ncols=True)
    after_step = None if prox is None else (lambda b: prox())
    for epoch in bar:
        loss, correct = run_epoch(model, n, take, targets, batch, rng, ws, backends,
                                  optimizer, grads, on_batch, after_step)
        bar.set_postfix(record_epoch(history, epoch, model, backends, loss, correct, n,
                                     targets, validation), refresh=False)
        if options.tol is not None:
            # scikit-learn's rule: an epoch that does not beat the best loss by tol is
            # stale; more than n_iter_no_change stale epochs in a row end training.
            stale = stale + 1 if loss / n > best - options.tol else 0
            best = min(best, loss / n)
            if stale > options.n_iter_no_change:
                history.stopped_early = True
                break
    bar.close()
    return history
