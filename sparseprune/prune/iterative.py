"""The iterative driver: prune along a schedule, fine-tune after every step."""

from dataclasses import dataclass, fields

from tqdm.auto import tqdm

from .._validation import check_int, check_sparsity
from ..mdl.pieces import check_bits
from ..mdl.two_part import DescriptionLength, description_length_fm
from ..train import FitOptions, check_validation_data, fit_fm
from .criteria import get_criterion
from .schedules import get_schedule
from .unstructured import check_model, unstructured

__all__ = ["PruneStep", "iterative"]


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

    @property
    def total_bits(self):
        """The step's description length in bits (nan if not measured)."""
        code = self.description_length
        return code.total_bits if code is not None else float("nan")

    def as_dict(self):
        """Every field, JSON-ready; the description length as its own dict."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.description_length is not None:
            record["description_length"] = self.description_length.as_dict()
        return record


def iterative(model, X, y, target_sparsity, steps=5, schedule="cubic", finetune_epochs=10,
              lr=None, criterion="magnitude", scope="global", validation_data=None,
              progress=True, mdl_bits=32, callback=None, **fit_kwargs):
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
    xt = model.feature_major(X)
    y = model.targets(y, xt.shape[1])
    validation = check_validation_data(model, validation_data)
    # "random" draws from the fit seed if given, else the model's, as shuffling does.
    seed = options.seed if options.seed is not None else model.seed
    criterion = get_criterion(criterion, seed=seed)
    initial = model.sparsity
    n_weights = sum(layer.n_weights for layer in model.layers)
    n_pruned = n_weights - sum(layer.n_active for layer in model.layers)
    if round(target * n_weights) < n_pruned:
        raise ValueError(
            f"target_sparsity {target} is below the model's current sparsity "
            f"{initial:.4f} ({n_pruned} of {n_weights} weights pruned); pruning never "
            f"restores weights"
        )

    records = []
    bar = tqdm(range(1, steps + 1), desc="prune", unit="step", disable=not progress)
    for step in bar:
        # The last step lands on the target exactly, whatever the schedule's rounding.
        goal = target if step == steps else min(schedule(step, steps, target, initial), target)
        unstructured(model, goal, criterion=criterion, scope=scope)
        history = fit_fm(model, xt, y, validation, options)
        total, active = model.count_parameters()
        _, train_acc = model.evaluate_fm(xt, y)
        val_acc = model.evaluate_fm(*validation)[1] if validation is not None else None
        records.append(PruneStep(
            step=step, target=goal, sparsity=model.sparsity, active=active, total=total,
            loss=history.loss[-1] if len(history) else float("nan"),
            train_accuracy=train_acc, val_accuracy=val_acc,
            description_length=(description_length_fm(model, xt, y, mdl_bits)
                                if model.loss == "softmax" else None),
        ))
        postfix = {"sparsity": f"{model.sparsity:.3f}", "acc": f"{train_acc:.3f}"}
        if val_acc is not None:
            postfix["val_acc"] = f"{val_acc:.3f}"
        bar.set_postfix(postfix, refresh=False)
        if callback is not None:
            callback(records[-1], model)
    bar.close()
    return records
