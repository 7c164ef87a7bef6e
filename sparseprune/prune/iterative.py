"""The iterative driver: prune along a schedule, fine-tune after every step."""

from dataclasses import dataclass, fields

from tqdm.auto import tqdm

from .._validation import check_choice, check_int, check_sparsity
from ..mdl.pieces import check_bits
from ..mdl.two_part import DescriptionLength, description_length_fm
from ..train import FitOptions, check_validation_data, fit_sm
from .criteria import get_criterion
from .schedules import get_schedule
from .scopes import check_scope, layer_counts
from .structured import UnitPlan
from .unstructured import apply_counts, check_model, check_scores

__all__ = ["STRUCTURES", "PruneStep", "WeightPlan", "iterative"]

STRUCTURES = ("weights", "neurons")


@dataclass(frozen=True)
class PruneStep:
    """One step of iterative pruning, measured after its fine-tuning."""

    step: int
    target: float  # the schedule's sparsity for this step
    sparsity: float  # the weights' actual sparsity
    active: int  # active parameters, biases included
    total: int
    loss: float  # training loss of the last fine-tuning epoch (nan if none)
    train_accuracy: float
    val_accuracy: float | None = None
    # Of the training labels, by sparseprune.mdl.description_length.
    description_length: DescriptionLength | None = None
    sizes: tuple = ()  # the layer widths after the step (they shrink with neurons)

    @property
    def total_bits(self):
        """The step's description length in bits (nan if not measured)."""
        code = self.description_length
        return code.total_bits if code is not None else float("nan")

    def as_dict(self):
        """Every field, JSON-ready; the description length as its own dict."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record["sizes"] = list(self.sizes)
        if self.description_length is not None:
            record["description_length"] = self.description_length.as_dict()
        return record


class WeightPlan:
    """The iterative driver's plan for pruning weights (``structure="weights"``).

    With ``scope="global"`` the schedule runs over the model's sparsity, from where it
    is to ``target``, one ranking over all layers at every step. With a per-layer scope
    ("layer", "erk", a mapping) each layer runs the schedule from its own sparsity to
    its own final count (:func:`~sparseprune.prune.scopes.layer_counts` of ``target``);
    a layer already past it stays as it is. The last step lands on the final counts
    exactly, whatever the schedule's rounding.
    """

    def __init__(self, model, target, scope, criterion):
        layers = model.layers
        self.scope = check_scope(scope, len(layers))
        self.criterion = criterion
        self.target = target
        self.sizes = [layer.n_weights for layer in layers]
        self.final = layer_counts(self.scope, [layer.shape for layer in layers], target)
        self.initial = [layer.n_weights - layer.n_active for layer in layers]
        n_weights, n_pruned = sum(self.sizes), sum(self.initial)
        if self.final is None and round(target * n_weights) < n_pruned:
            raise ValueError(
                f"target_sparsity {target} is below the model's current sparsity "
                f"{model.sparsity:.4f} ({n_pruned} of {n_weights} weights pruned); pruning "
                f"never restores weights"
            )

    def prune(self, model, step, steps, schedule):
        """Prune for ``step`` (1..steps), in place; returns the step's target sparsity."""
        scores = check_scores(self.criterion, self.criterion.scores(model), model.layers)
        last = step == steps
        n_weights = sum(self.sizes)
        if self.final is None:
            initial = sum(self.initial) / n_weights
            goal = self.target if last else min(
                schedule(step, steps, self.target, initial), self.target)
            apply_counts(model, scores, round(goal * n_weights))
            return goal
        goals = [final if last else
                 min(round(schedule(step, steps, final / n, start / n) * n), final)
                 for n, start, final in zip(self.sizes, self.initial, self.final)]
        apply_counts(model, scores, goals)
        return sum(goals) / n_weights


def iterative(model, X, y, target_sparsity, steps=5, schedule="cubic", finetune_epochs=10,
              lr=None, criterion=None, scope=None, validation_data=None,
              progress=True, mdl_bits=32, callback=None, structure="weights", **fit_kwargs):
    """Prune ``model`` to ``target_sparsity`` in ``steps`` steps, fine-tuning after each.

    At step t = 1..steps the weights are pruned (in place, by ``criterion``, over
    ``scope``) to ``schedule(t, steps, target_sparsity, initial)`` with ``initial`` the
    model's sparsity at the start, then trained for ``finetune_epochs`` epochs on (X, y)
    with learning rate ``lr`` (default: the optimizer's, 0.01 for SGD); further keyword
    arguments are ``fit``'s options (:class:`~sparseprune.train.FitOptions`:
    ``batch_size``, ``optimizer``, ``seed``, ``backend``, ...).

    Schedules: "linear" (the notebook's), "cubic" (Zhu & Gupta 2017), "constant"
    (one-shot, then fine-tuning), "geometric" (a constant fraction of what remains), or a
    callable ``f(step, steps, target, initial)``.

    Criteria (default "magnitude"): any of :func:`~sparseprune.prune.prune`'s; those
    that score by gradients take them on (X, y). "movement" also accumulates ``-w * g``
    at every fine-tuning step (Sanh et al. 2020; :class:`~sparseprune.prune.Movement`).
    Scopes (default "global"): "global", "layer", "erk" or {layer index: sparsity}
    (:class:`WeightPlan` says how each follows the schedule).

    ``structure="neurons"`` removes whole hidden units instead
    (:func:`~sparseprune.prune.neurons`; the layers shrink): ``target_sparsity`` is then
    the fraction of the hidden units (as they are at the start) to remove, the schedule
    runs from 0 to it, ``criterion`` is a unit criterion ("l2" by default, "l1",
    "taylor", "activation") and ``scope`` "layer" (default), "global" or {layer index:
    fraction} (:class:`~sparseprune.prune.structured.UnitPlan`). To shrink and then
    sparsify, run it and then the weights' driver.

    Every step also measures the description length of the training labels
    (:func:`sparseprune.mdl.description_length` with ``bits=mdl_bits``; None chooses
    the precision at each step); ``sparseprune.mdl.best(records)`` picks the step the
    MDL principle prefers. (Softmax classifiers only: other heads' records carry None.)
    ``train_accuracy`` and ``val_accuracy`` are the model's score: R^2 for regression.

    ``callback(record, model)``, if given, is called after each step, e.g. to keep a
    copy of the model of every step.

    Returns a list of :class:`PruneStep`, one per step.
    """
    check_model(model)
    target = check_sparsity(target_sparsity, "target_sparsity")
    steps = check_int(steps, "steps", minimum=1)
    finetune_epochs = check_int(finetune_epochs, "finetune_epochs", minimum=0)
    schedule = get_schedule(schedule)
    check_choice(structure, "structure", STRUCTURES)
    if mdl_bits is not None:
        mdl_bits = check_bits(mdl_bits, "mdl_bits")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable (record, model), got {callback!r}")
    taken = sorted({"epochs", "progress"} & set(fit_kwargs))
    if taken:
        raise TypeError(f"iterative() got unexpected keyword arguments {taken}: fine-tuning "
                        f"runs finetune_epochs epochs, and progress is iterative()'s own")
    # Every option is checked before the first weight is pruned.
    options = FitOptions.from_kwargs("iterative", epochs=finetune_epochs, lr=lr,
                                     progress=False, **fit_kwargs)
    # Trained on from its rows (fit_sm), measured on feature-major.
    xs = model.sample_major(X)
    xt = model.feature_major(xs)
    y = model.targets(y, xt.shape[1])
    validation = check_validation_data(model, validation_data)
    on_batch = None
    if structure == "neurons":
        plan = UnitPlan(model, target, "layer" if scope is None else scope,
                        "l2" if criterion is None else criterion, (X, y))
    else:
        # "random" draws from the fit seed if given, else the model's, as shuffling does.
        seed = options.seed if options.seed is not None else model.seed
        criterion = get_criterion("magnitude" if criterion is None else criterion, seed=seed,
                                  data=(X, y))
        plan = WeightPlan(model, target, "global" if scope is None else scope, criterion)
        if criterion.observes_training:
            on_batch = criterion.observe

    records = []
    bar = tqdm(range(1, steps + 1), desc="prune", unit="step", disable=not progress)
    for step in bar:
        goal = plan.prune(model, step, steps, schedule)
        history = fit_sm(model, xs, y, validation, options, on_batch=on_batch)
        total, active = model.count_parameters()
        _, train_acc = model.evaluate_fm(xt, y)
        val_acc = model.evaluate_fm(*validation)[1] if validation is not None else None
        records.append(PruneStep(
            step=step, target=goal, sparsity=model.sparsity, active=active, total=total,
            loss=history.loss[-1] if len(history) else float("nan"),
            train_accuracy=train_acc, val_accuracy=val_acc,
            description_length=(description_length_fm(model, xt, y, mdl_bits)
                                if model.loss == "softmax" else None),
            sizes=tuple(model.sizes),
        ))
        postfix = {"sparsity": f"{model.sparsity:.3f}", "acc": f"{train_acc:.3f}"}
        if structure == "neurons":
            postfix["sizes"] = "-".join(map(str, model.sizes))
        if val_acc is not None:
            postfix["val_acc"] = f"{val_acc:.3f}"
        bar.set_postfix(postfix, refresh=False)
        if callback is not None:
            callback(records[-1], model)
    bar.close()
    return records
