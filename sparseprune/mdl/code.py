"""What every code shares: its totals read against the uniform code, the model as a
code sees it (kept weights in one order, whatever the layer kind), and the misfit of the
labels in bits."""

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..activations import code
from ..model import MLP, SparseMLP
from ..passes import chunks, logits_fm
from .pieces import LN2

__all__ = ["Code", "NoisyCode", "check_model", "nll_bits", "parameters", "prepare"]


def check_model(model):
    """``model`` if it is an MLP or a SparseMLP with a softmax head, else a TypeError:
    the codes here send class labels."""
    if not isinstance(model, (MLP, SparseMLP)):
        raise TypeError(f"model must be an MLP or a SparseMLP, got {type(model).__name__}")
    if model.loss != "softmax":
        raise TypeError(f"description lengths here code class labels under a softmax "
                        f"head; this model's loss is {model.loss!r}")
    return model


def parameters(layer):
    """(kept weights, bias) of a layer as float64 vectors. Kept weights are in CSR-of-
    ``W.T`` order (by output, then input), whatever the layer kind, so that a model and
    its ``to_sparse()`` draw the same noise for the same weight."""
    return layer.kept_values().astype(np.float64), layer.bias.astype(np.float64)


def nll_bits(layers, dtype, xt, y, activation):
    """sum_i -log2 p(y_i | x_i) of feature-major ``xt`` (in, n) under ``layers``
    (``activation`` between them, softmax at the end): log-sum-exp of the logits in
    float64."""
    act = code(activation)
    total = 0.0
    for start, chunk in chunks(xt):
        z = logits_fm(layers, dtype, chunk, act).astype(np.float64)
        top = z.max(axis=0)
        lse = top + np.log(np.exp(z - top).sum(axis=0))
        labels = y[start : start + z.shape[1]]
        total += float(np.sum(lse - z[labels, np.arange(z.shape[1])]))
    return total / LN2


def prepare(model, X, y):
    """(xt, y): X feature-major and y int64 class indices, checked against ``model``."""
    check_model(model)
    xt = model.feature_major(X)
    return xt, model.targets(y, xt.shape[1])


class Code:
    """Totals shared by the codes: ``model_bits + data_bits = total_bits``, read against
    the uniform code. Subclasses hold ``header_bits``, ``layers`` (each with a
    ``total_bits``), ``data_bits``, ``n_samples`` and ``n_classes``."""

    @property
    def model_bits(self):
        return self.header_bits + sum(layer.total_bits for layer in self.layers)

    @property
    def total_bits(self):
        return self.model_bits + self.data_bits

    @property
    def uniform_bits(self):
        """``N log2 K``: the labels sent with no model."""
        return self.n_samples * math.log2(self.n_classes)

    @property
    def compression(self):
        """``uniform_bits / total_bits``: above 1, the code beats sending no model."""
        return self.uniform_bits / self.total_bits

    def as_dict(self):
        """Every field and derived total, JSON-ready."""
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record.update(model_bits=self.model_bits, data_bits=self.data_bits,
                      total_bits=self.total_bits, uniform_bits=self.uniform_bits,
                      compression=self.compression, n_samples=self.n_samples)
        if "layers" in record:
            record["layers"] = [{**asdict(c), "shape": list(c.shape), "total_bits": c.total_bits}
                                for c in self.layers]
        return record


@dataclass(frozen=True)
class NoisyCode(Code):
    """What the codes of noisy weights share (``mdl.bits_back``, ``mdl.variational``):
    ``model_bits`` (header, masks, the KL of each layer's posterior from its prior) +
    the expected ``data_bits`` under weights drawn from the posterior."""

    header_bits: float
    layers: tuple  # each with ``kl_bits`` and ``total_bits``
    data_bits: float  # mean over the draws
    data_bits_sem: float | None  # its standard error (None for a single draw)
    data_bits_at_mean: float  # the misfit of the posterior means, for reference
    n_samples: int
    n_classes: int
    draws: int
    seed: int | None

    @property
    def kl_bits(self):
        return sum(layer.kl_bits for layer in self.layers)

    def as_dict(self):
        return {**super().as_dict(), "kl_bits": self.kl_bits}
