"""Criteria: what to cut. A criterion scores every weight; the lowest scores go first.

A criterion is a small object with one method, ``scores(model) -> list of float64
arrays (in, out)``, one per layer, higher meaning more important. Pruned weights are
handled by the caller (they are always counted as pruned), so scores need not care.

Magnitude and random scores need the weights alone. The gradient criteria (Taylor, SNIP,
movement) need data, which they are given when made: ``Taylor(X, y)``, or by name with
``data=(X, y)`` (``prune.prune(model, s, criterion="taylor", data=(X, y))``). Their
gradients are the training engine's (:func:`sparseprune.train.batch_gradients_fm`,
``fit``'s own forward and backward pass, on the dense or the sparse backend).
"""

from collections.abc import Sequence

import numpy as np

from .._tuning import check_backend
from .._validation import check_int
from ..train.gradients import batch_gradients_fm

__all__ = ["CRITERIA", "Criterion", "GradientCriterion", "Magnitude", "Movement", "Random",
           "SNIP", "Taylor", "check_data", "check_score_arrays", "from_registry",
           "get_criterion"]


class Criterion:
    """Base class: subclasses implement :meth:`scores`.

    ``needs_data``: made by name, the criterion needs ``data=(X, y)``.
    ``observes_training``: the criterion has an ``observe(backends)`` method that drivers
    call at every training step (``train.fit_sm``'s ``on_batch``).
    """

    name = "criterion"
    needs_data = False
    observes_training = False

    def scores(self, model):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class Magnitude(Criterion):
    """|w|: the L1 criterion of ``torch.nn.utils.prune.l1_unstructured``."""

    name = "magnitude"

    def scores(self, model):
        return [np.abs(layer.weight, dtype=np.float64) for layer in model.layers]


class Random(Criterion):
    """Uniform random scores: the baseline any real criterion must beat."""

    name = "random"

    def __init__(self, seed=None):
        self.seed = seed

    def scores(self, model):
        rng = np.random.default_rng(self.seed)
        return [rng.random(layer.shape) for layer in model.layers]

    def __repr__(self):
        return f"Random(seed={self.seed!r})"


def check_data(data, name="data"):
    """``data`` as a pair (X, y), as given (the model checks X and y when it scores)."""
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (X, y), got {type(data).__name__}")
    return tuple(data)


def from_registry(criterion, registry, base, data, scores_what):
    """``criterion`` itself if it is a ``base`` instance, else the one ``registry`` names,
    made with ``data`` (X, y) if it needs them (``scores_what`` says, in the error for
    missing data, what it scores them by)."""
    if isinstance(criterion, base):
        return criterion
    if isinstance(criterion, str) and criterion in registry:
        made = registry[criterion]
        if not made.needs_data:
            return made()
        if data is None:
            raise ValueError(f"criterion {criterion!r} scores {scores_what} on data: pass "
                             f"data=(X, y) (training samples and labels)")
        return made(*check_data(data))
    expected = ", ".join(repr(c) for c in registry)
    raise ValueError(f"criterion must be one of {expected} or a {base.__name__}, got "
                     f"{criterion!r}")


def check_score_arrays(criterion, scores, shapes, per="layer", shape_note=""):
    """A criterion is user code: its scores get the same checks as any input. One array
    per entry of ``shapes`` (``per`` names what an entry is, ``shape_note`` follows a
    shape in the error), no NaN; returned as float64 arrays."""
    if not isinstance(scores, (list, tuple)) or len(scores) != len(shapes):
        raise ValueError(f"criterion {criterion!r} must return one score array per {per} "
                         f"({len(shapes)}), got {type(scores).__name__}")
    checked = []
    for i, (s, shape) in enumerate(zip(scores, shapes)):
        s = np.asarray(s, dtype=np.float64)
        if s.shape != shape:
            raise ValueError(f"criterion {criterion!r} scores for layer {i} must have shape "
                             f"{shape}{shape_note}, got {s.shape}")
        if np.isnan(s).any():
            raise ValueError(f"criterion {criterion!r} scores for layer {i} contain NaN")
        checked.append(s)
    return checked


class GradientCriterion(Criterion):
    """A criterion scored from gradients of the mean cross-entropy on (X, y).

    X (n_samples, n_features) and y (n_samples,) as ``fit`` takes them; ``batch_size``
    samples a batch (None: all of them at once), in data order; ``backend`` is
    ``fit``'s ("dense", "sparse" or "auto"): the engine that computes the gradients.
    """

    needs_data = True

    def __init__(self, X, y, batch_size=64, backend="dense"):
        self.X, self.y = X, y
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size",
                                                                     minimum=1)
        self.backend = check_backend(backend)

    def batches(self, model, batches=None):
        """The engine's :class:`~sparseprune.train.BatchGradients` over the data (at most
        ``batches`` of them), X and y checked against ``model``."""
        xt = model.feature_major(self.X)
        return batch_gradients_fm(model, xt, self.labels(model, xt.shape[1]),
                                  self.batch_size, self.backend, batches)

    def labels(self, model, n_samples):
        """``y`` checked against ``model`` and the ``n_samples`` of X, as the model's head
        trains on it."""
        return model.targets(self.y, n_samples)

    def __repr__(self):
        return f"{type(self).__name__}(batch_size={self.batch_size!r}, backend={self.backend!r})"


class Taylor(GradientCriterion):
    """First-order Taylor: ``|w * dL/dw|`` averaged over the mini-batches (Molchanov et
    al. 2017, 2019).

    ``|w * g|`` is the first-order estimate of how much the loss changes when ``w`` is
    set to zero. It is taken per batch and averaged, as Molchanov et al. accumulate
    their per-batch estimates: a gradient that averages out over the data (a trained
    network's, near a minimum) does not make a weight look unimportant as long as single
    batches lean on it.
    """

    name = "taylor"

    def scores(self, model):
        total = [np.zeros(layer.shape) for layer in model.layers]
        count = 0
        for batch in self.batches(model):
            for i, acc in enumerate(total):
                acc += np.abs(batch.gradient(i))
            count += 1
        # The weights do not change between batches: |w| factors out of the sum.
        return [np.abs(layer.weight.astype(np.float64)) * acc / count
                for layer, acc in zip(model.layers, total)]


class SNIP(GradientCriterion):
    """Connection sensitivity at initialization (Lee et al. 2019, SNIP):
    ``|w * g| / sum |w * g|`` over every weight of the model.

    ``g`` is the gradient of the mean loss over the first ``batches`` batches of
    ``batch_size`` samples (one batch of 128 by default: "one or a few"), in data
    order; shuffle the data to draw them at random. Meant to prune a network before it
    trains (``prune.prune(model, s, criterion="snip", data=(X, y))`` right after
    ``MLP(...)``), then train it with its mask; the scores of a trained network are
    defined the same way.
    """

    name = "snip"

    def __init__(self, X, y, batch_size=128, batches=1, backend="dense"):
        super().__init__(X, y, batch_size=batch_size, backend=backend)
        self.n_batches = check_int(batches, "batches", minimum=1)

    def scores(self, model):
        total = [np.zeros(layer.shape) for layer in model.layers]
        samples = 0
        for batch in self.batches(model, self.n_batches):
            # Each batch's gradient is of its mean loss: weigh it by its size.
            for i, acc in enumerate(total):
                acc += batch.size * batch.gradient(i)
            samples += batch.size
        sensitivity = [np.abs(layer.weight.astype(np.float64) * acc / samples)
                       for layer, acc in zip(model.layers, total)]
        norm = sum(s.sum() for s in sensitivity)
        return [s / norm for s in sensitivity] if norm > 0 else sensitivity

    def __repr__(self):
        return (f"SNIP(batch_size={self.batch_size!r}, batches={self.n_batches}, "
                f"backend={self.backend!r})")


class Movement(GradientCriterion):
    """Movement (Sanh et al. 2020): ``S = -sum_t w_t * dL/dw_t``, accumulated over
    training steps t; weights moving away from zero score high, weights shrinking
    towards it low.

    Two uses:

    - **In the iterative driver** (``prune.iterative(..., criterion="movement")``, the
      paper's use): the driver calls :meth:`observe` at every fine-tuning step, so the
      score sums ``-w * g`` over all the fine-tuning since pruning began, with the
      weights as they were at each step. The first step, which prunes before any
      fine-tuning, scores by the pass over the data described next; the training steps'
      terms are added to it.
    - **One-shot** (``prune.prune(model, s, criterion="movement", data=(X, y))``): no
      weight moves, so the score is one pass over (X, y) without updates,
      ``-w * sum_b g_b`` over the batches: the first-order estimate of the loss's rise
      when ``w`` is removed, signed (Taylor's without the absolute value). Weights
      whose removal would lower the loss go first.

    The criterion keeps its sum between calls; :meth:`reset` forgets it.
    """

    name = "movement"
    observes_training = True

    def __init__(self, X, y, batch_size=64, backend="dense"):
        super().__init__(X, y, batch_size=batch_size, backend=backend)
        self.total = None

    def reset(self):
        """Forget the accumulated score."""
        self.total = None

    def _check_shapes(self, shapes):
        if self.total is None:
            self.total = [np.zeros(shape) for shape in shapes]
        elif [t.shape for t in self.total] != list(shapes):
            raise ValueError(f"Movement has scores for layers of shapes "
                             f"{[t.shape for t in self.total]}, the model has {list(shapes)}; "
                             f"call reset() before scoring another model")

    def observe(self, backends):
        """Add ``-w * g`` of one training step: each backend's weight and the gradient
        computed at it (``train.fit_sm``'s ``on_batch``, before the update)."""
        self._check_shapes([b.layer.shape for b in backends])
        for acc, b in zip(self.total, backends):
            acc -= b.as_matrix(b.parameters[0][0]) * b.as_matrix(b.grads[0])

    def scores(self, model):
        if self.total is None:
            self._check_shapes([layer.shape for layer in model.layers])
            for batch in self.batches(model):
                for i, acc in enumerate(self.total):
                    acc -= batch.weights(i) * batch.gradient(i)
        self._check_shapes([layer.shape for layer in model.layers])
        return [acc.copy() for acc in self.total]


CRITERIA = {"magnitude": Magnitude, "random": Random, "taylor": Taylor, "snip": SNIP,
            "movement": Movement}


def get_criterion(criterion, seed=None, data=None):
    """A criterion by name, or ``criterion`` itself if it already is one.

    ``seed`` seeds a criterion made by name that draws random numbers ("random");
    ``data`` (X, y) feeds one that scores by gradients ("taylor", "snip", "movement"),
    and is required for those. A Criterion object carries its own data.
    """
    if criterion == "random":
        return Random(seed)
    return from_registry(criterion, CRITERIA, Criterion, data, "weights by their gradients")
