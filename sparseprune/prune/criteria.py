"""Criteria: what to cut. A criterion scores every weight; the lowest scores go first.

A criterion is a small object with one method, ``scores(model) -> list of float64
arrays (in, out)``, one per layer, higher meaning more important. Pruned weights are
handled by the caller (they are always counted as pruned), so scores need not care.
"""

import numpy as np

__all__ = ["CRITERIA", "Criterion", "Magnitude", "Random", "get_criterion"]


class Criterion:
    """Base class: subclasses implement :meth:`scores`."""

    name = "criterion"

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


CRITERIA = {"magnitude": Magnitude, "random": Random}


def get_criterion(criterion, seed=None):
    """A criterion by name, or ``criterion`` itself if it already is one. ``seed``
    seeds a criterion made by name that draws random numbers ("random")."""
    if isinstance(criterion, Criterion):
        return criterion
    if criterion == "random":
        return Random(seed)
    if isinstance(criterion, str) and criterion in CRITERIA:
        return CRITERIA[criterion]()
    expected = ", ".join(repr(c) for c in CRITERIA)
    raise ValueError(f"criterion must be one of {expected} or a Criterion, got {criterion!r}")
