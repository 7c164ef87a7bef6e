"""The demo's methods comparison: every pruning method of ``sparseprune.prune`` on the
demo's network and data, at a few sparsities, with the demo's training settings.

After-training methods start from the demo's trained baseline and fine-tune; SNIP
prunes at initialization and trains for the baseline's epochs plus the fine-tuning's;
the lottery ticket is found by iterative magnitude pruning (a few rounds, each trained
for the baseline's epochs) and retrained from its initialization, as is its
random-reinit control. One seed: the README's table (``benchmarks/methods_digits.py``)
has the spread over seeds.
"""

import copy
import warnings

from tqdm.auto import tqdm

from .. import prune
from ..model import MLP
from .results import MethodCurve, Methods

__all__ = ["LOTTERY_ROUNDS", "METHODS", "SPARSITIES", "STRUCTURED", "UNIT_FRACTIONS",
           "compare"]

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
# Hidden units removed by the structured method, plotted at the weights they remove.
UNIT_FRACTIONS = (0.25, 0.5, 0.75, 0.9)
LOTTERY_ROUNDS = 3
#: The methods in the order the figure and the table show them.
METHODS = ("one-shot magnitude", "one-shot magnitude, ERK", "gradual magnitude (cubic)",
           "one-shot Taylor", "SNIP at init", "movement (cubic)", "lottery ticket",
           "lottery ticket, random reinit")
STRUCTURED = "structured (units, L2)"


def _tune(model, X, y, tune, seed):
    model.fit(X, y, progress=False, seed=seed, **tune)
    return model


def _gradual(base, X, y, s, criterion, tune, seed):
    model = copy.deepcopy(base)
    options = {k: v for k, v in tune.items() if k != "epochs"}
    prune.iterative(model, X, y, s, steps=5, schedule="cubic", criterion=criterion,
                    finetune_epochs=max(1, tune["epochs"] // 5), progress=False, seed=seed,
                    **options)
    return model


def compare(base, sizes, X, y, Xt, yt, fit, tune, seed=0, progress=True):
    """Test accuracy against sparsity for each of :data:`METHODS`, and against the
    weights removed with their units for :data:`STRUCTURED`.

    base: the demo's trained dense MLP (left unchanged); sizes: its layer widths;
    fit, tune: the demo's training and fine-tuning options (dicts of ``fit``'s
    options, with ``epochs``). Returns a :class:`~sparseprune.app.results.Methods`.
    """
    with warnings.catch_warnings():
        # One global ranking at 95% and 98% empties the blobs network's output layer
        # (20-64-5): the comparison shows it, accuracy at chance beside ERK's layer by
        # layer budget, so it is not repeated as a warning.
        warnings.simplefilter("ignore", prune.EmptyLayerWarning)
        return _compare(base, sizes, X, y, Xt, yt, fit, tune, seed, progress)


def _compare(base, sizes, X, y, Xt, yt, fit, tune, seed, progress):
    points = {name: [] for name in METHODS}
    scratch = dict(fit, epochs=fit["epochs"] + tune["epochs"])
    rounds = dict(fit)
    del rounds["epochs"]
    bar = tqdm(SPARSITIES, desc="methods", unit="sparsity", disable=not progress)
    for s in bar:
        def one_shot(criterion, scope="global", s=s):
            model = copy.deepcopy(base)
            prune.prune(model, s, criterion=criterion, data=(X, y), scope=scope)
            return _tune(model, X, y, tune, seed)

        made = {
            "one-shot magnitude": one_shot("magnitude"),
            "one-shot magnitude, ERK": one_shot("magnitude", "erk"),
            "gradual magnitude (cubic)": _gradual(base, X, y, s, "magnitude", tune, seed),
            "one-shot Taylor": one_shot("taylor"),
            "movement (cubic)": _gradual(base, X, y, s, "movement", tune, seed),
        }
        snip = MLP(sizes, seed=seed)
        prune.prune(snip, s, criterion="snip", data=(X, y))
        made["SNIP at init"] = _tune(snip, X, y, scratch, seed)
        ticket_model = MLP(sizes, seed=seed)
        ticket = prune.lottery(ticket_model, X, y, s, rounds=LOTTERY_ROUNDS,
                               epochs=scratch["epochs"], progress=False, seed=seed, **rounds)
        made["lottery ticket"] = ticket_model
        made["lottery ticket, random reinit"] = _tune(prune.reinit(ticket, seed=seed + 1),
                                                      X, y, scratch, seed)
        for name, model in made.items():
            points[name].append((model.sparsity, model.score(Xt, yt)))
    total = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    units = []
    for f in UNIT_FRACTIONS:
        model = copy.deepcopy(base)
        prune.neurons(model, f, criterion="l2")
        _tune(model, X, y, tune, seed)
        # Plotted at the fraction of the original weights the removed units took along.
        removed = 1.0 - sum(layer.n_weights for layer in model.layers) / total
        units.append((removed, model.score(Xt, yt)))
    bar.close()
    curves = tuple(MethodCurve(name=name, sparsity=tuple(p[0] for p in points[name]),
                               test_accuracy=tuple(p[1] for p in points[name]))
                   for name in METHODS)
    structured = MethodCurve(name=STRUCTURED, sparsity=tuple(p[0] for p in units),
                             test_accuracy=tuple(p[1] for p in units))
    return Methods(baseline_accuracy=base.score(Xt, yt), curves=curves, structured=structured,
                   settings={"sparsities": list(SPARSITIES),
                             "unit_fractions": list(UNIT_FRACTIONS),
                             "lottery_rounds": LOTTERY_ROUNDS, "seed": seed})
