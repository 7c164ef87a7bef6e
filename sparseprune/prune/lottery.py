"""Lottery tickets: iterative magnitude pruning with weight rewinding (Frankle & Carbin
2019; rewinding to an early iteration, Frankle et al. 2020), and the random-reinit
control."""

from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from .._validation import check_int, check_sparsity
from ..model import MLP
from ..train import FitOptions, check_validation_data, fit_sm
from .criteria import Magnitude
from .iterative import WeightPlan
from .schedules import geometric
from .unstructured import check_model

__all__ = ["LotteryRound", "Ticket", "lottery", "reinit"]


@dataclass(frozen=True)
class LotteryRound:
    """One round of iterative magnitude pruning, measured after its training. Round 0
    trains the network as it came; round r >= 1 pruned, rewound, then trained."""

    round: int
    sparsity: float
    active: int  # active parameters, biases included
    total: int
    loss: float  # training loss of the last epoch (nan if no epoch)
    train_accuracy: float
    val_accuracy: float | None = None

    def as_dict(self):
        return asdict(self)


def _frozen(arrays):
    out = []
    for a in arrays:
        a = np.array(a)  # a copy the ticket owns
        a.flags.writeable = False
        out.append(a)
    return tuple(out)


@dataclass(frozen=True, eq=False)
class Ticket:
    """A winning ticket candidate: a mask and the weights of the rewind point.

    ``masks``: bool (in, out) per layer; ``weights``: float (in, out) per layer, the
    rewind point's weights on the mask and zero off it; ``biases``: (out,) per layer,
    the rewind point's. Read-only arrays. ``rewind``: 0 for the initialization, else
    the training iteration (mini-batch step) the weights were taken after. ``rounds``:
    the :class:`LotteryRound` records of the search that found it.
    """

    sizes: tuple
    dtype: str
    rewind: int
    masks: tuple
    weights: tuple
    biases: tuple
    rounds: tuple = ()

    @property
    def sparsity(self):
        """Fraction of weights the mask prunes."""
        return 1.0 - sum(int(m.sum()) for m in self.masks) / sum(m.size for m in self.masks)

    def model(self, seed=None):
        """A new MLP holding the ticket: its mask and rewound weights and biases.
        ``seed`` seeds its shuffling (as ``MLP(seed=...)``; its initialization is
        replaced by the ticket's)."""
        model = MLP(self.sizes, dtype=self.dtype, seed=seed)
        for layer, mask, weight, bias in zip(model.layers, self.masks, self.weights,
                                             self.biases):
            layer.mask = mask
            layer.weight = weight
            layer.bias = bias
        return model

    def as_dict(self):
        """The ticket's description and its rounds, JSON-ready (no arrays)."""
        return {"sizes": list(self.sizes), "dtype": self.dtype, "rewind": self.rewind,
                "sparsity": self.sparsity, "rounds": [r.as_dict() for r in self.rounds]}


def reinit(ticket, seed=None):
    """The random-reinit control of ``ticket``: a new MLP with the ticket's mask and
    fresh weights, He-normal as ``MLP(sizes, seed=seed)`` draws them (zero biases), so
    that training it says how much of the ticket's accuracy its weights carry."""
    if not isinstance(ticket, Ticket):
        raise TypeError(f"ticket must be a Ticket (from prune.lottery), got "
                        f"{type(ticket).__name__}")
    model = MLP(ticket.sizes, dtype=ticket.dtype, seed=seed)
    for layer, mask in zip(model.layers, ticket.masks):
        layer.mask = mask
    return model


def _check_rewind(rewind, limit):
    if isinstance(rewind, str):
        if rewind != "init":
            raise ValueError(f"rewind must be 'init' or an iteration count, got {rewind!r}")
        return 0
    rewind = check_int(rewind, "rewind", minimum=0)
    if rewind > limit:
        raise ValueError(f"rewind is iteration {rewind}, but a round trains only {limit} "
                         f"iterations (epochs x batches per epoch)")
    return rewind


def _snapshot(model):
    return ([layer.weight.copy() for layer in model.layers],
            [layer.bias.copy() for layer in model.layers])


def lottery(model, X, y, target_sparsity, rounds=5, epochs=10, rewind="init",
            scope="global", validation_data=None, progress=True, **fit_kwargs):
    """Find a lottery ticket in ``model`` by iterative magnitude pruning with rewinding.

    Round 0 trains ``model`` for ``epochs`` epochs on (X, y), keeping its weights at the
    rewind point: "init" (or 0), the weights it starts with (Frankle & Carbin 2019), or
    an int k, the weights after k training iterations (mini-batch steps; Frankle et al.
    2020). Each round r = 1..``rounds`` then prunes the trained weights by magnitude
    (over ``scope``: "global", "layer", "erk" or {layer index: sparsity}) to
    ``geometric(r, rounds, target_sparsity, initial)`` (the same fraction of what
    remains every round, exactly ``target_sparsity`` at the last), resets the surviving
    weights and every bias to the rewind point's, and trains again for ``epochs``
    epochs. Further keyword arguments are ``fit``'s options (``lr``, ``batch_size``,
    ``optimizer``, ``seed``, ``backend``, ...); each round's optimizer starts afresh.

    ``model`` is left holding the last round's network: the ticket, trained from its
    rewind point at the target sparsity. Returns the :class:`Ticket` (mask and
    rewound weights) with the ``rounds + 1`` :class:`LotteryRound` records in
    ``ticket.rounds``; :func:`reinit` gives its control.
    """
    check_model(model)
    target = check_sparsity(target_sparsity, "target_sparsity")
    rounds = check_int(rounds, "rounds", minimum=1)
    taken = sorted({"epochs", "progress"} & set(fit_kwargs))
    if taken:
        raise TypeError(f"lottery() got unexpected keyword arguments {taken}: every round "
                        f"trains `epochs` epochs, and progress is lottery()'s own")
    options = FitOptions.from_kwargs("lottery", epochs=epochs, progress=False, **fit_kwargs)
    # Trained on from its rows (fit_sm), measured on feature-major.
    xs = model.sample_major(X)
    xt = model.feature_major(xs)
    n = xt.shape[1]
    y = model.targets(y, n)
    validation = check_validation_data(model, validation_data)
    batch = options.batch_for(n)
    k = _check_rewind(rewind, options.epochs * -(-n // batch))
    plan = WeightPlan(model, target, scope, Magnitude())

    point = _snapshot(model) if k == 0 else None
    seen = 0

    def keep_point(backends):
        # Called before each update: after `seen` updates the weights are iteration
        # `seen`'s, the sparse backend's held in the backend until training ends.
        nonlocal point, seen
        if seen == k and point is None:
            point = ([b.as_matrix(b.parameters[0][0]).astype(model.dtype) for b in backends],
                     [b.parameters[1][0].copy() for b in backends])
        seen += 1

    records = []
    bar = tqdm(range(rounds + 1), desc="lottery", unit="round", disable=not progress)
    for r in bar:
        if r > 0:
            plan.prune(model, r, rounds, geometric)
            for layer, weight, bias in zip(model.layers, *point):
                layer.weight = weight  # zeroed off the mask by the layer
                layer.bias = bias
        history = fit_sm(model, xs, y, validation, options,
                         on_batch=keep_point if point is None else None)
        if point is None:  # k is the last iteration of the round
            point = _snapshot(model)
        total, active = model.count_parameters()
        val_acc = model.evaluate_fm(*validation)[1] if validation is not None else None
        records.append(LotteryRound(
            round=r, sparsity=model.sparsity, active=active, total=total,
            loss=history.loss[-1] if len(history) else float("nan"),
            train_accuracy=model.evaluate_fm(xt, y)[1], val_accuracy=val_acc))
        bar.set_postfix({"sparsity": f"{model.sparsity:.3f}",
                         "acc": f"{records[-1].train_accuracy:.3f}"}, refresh=False)
    bar.close()
    masks = [layer.mask for layer in model.layers]
    return Ticket(sizes=tuple(model.sizes), dtype=str(model.dtype), rewind=k,
                  masks=_frozen(masks),
                  weights=_frozen(np.where(m, w, 0) for m, w in zip(masks, point[0])),
                  biases=_frozen(point[1]), rounds=tuple(records))
