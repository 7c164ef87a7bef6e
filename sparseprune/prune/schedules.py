"""Schedules: how fast. A schedule maps a step to the sparsity to reach at that step.

A schedule is any callable ``schedule(step, steps, target, initial) -> sparsity`` with
``step`` in 1..steps; it must reach ``target`` at ``step == steps`` and never decrease.
"""

__all__ = ["SCHEDULES", "constant", "cubic", "geometric", "get_schedule", "linear"]


def linear(step, steps, target, initial=0.0):
    """Equal increments: ``initial + (target - initial) * step / steps`` (the notebook's)."""
    # Written from the target down so that the last step is the target exactly.
    return target - (target - initial) * (1.0 - step / steps)


def cubic(step, steps, target, initial=0.0):
    """Zhu & Gupta (2017): ``target + (initial - target) * (1 - step / steps) ** 3``.

    Prunes fast while many redundant weights remain and slowly near the target.
    """
    return target + (initial - target) * (1.0 - step / steps) ** 3


def constant(step, steps, target, initial=0.0):
    """The target at every step: one-shot pruning followed by ``steps`` rounds of
    fine-tuning (TensorFlow Model Optimization's ``ConstantSparsity``)."""
    return target


def geometric(step, steps, target, initial=0.0):
    """The same fraction of the remaining weights at every step, as in iterative
    magnitude pruning for lottery tickets (Frankle & Carbin 2019)."""
    keep = (1.0 - target) / (1.0 - initial)
    return 1.0 - (1.0 - initial) * keep ** (step / steps)


SCHEDULES = {"linear": linear, "cubic": cubic, "constant": constant, "geometric": geometric}


def get_schedule(schedule):
    """A schedule by name, or ``schedule`` itself if it is callable."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, str) and schedule in SCHEDULES:
        return SCHEDULES[schedule]
    expected = ", ".join(repr(s) for s in SCHEDULES)
    raise ValueError(f"schedule must be one of {expected} or a callable, got {schedule!r}")
