"""The prequential (online) code of Blier & Ollivier (2018): no parameters sent; every
block of labels coded by a model trained on the blocks before it."""

import math
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from .._validation import check_int, check_labels
from .code import Code, check_model, nll_bits, prepare

__all__ = ["Prequential", "block_ends", "prequential"]


@dataclass(frozen=True)
class Prequential(Code):
    """The online code: ``block_bits[i]`` codes labels ``ends[i-1]:ends[i]`` (the first
    block at the uniform cost). No model is sent: ``model_bits`` is 0 and ``data_bits``
    the sum of the blocks."""

    ends: tuple
    block_bits: tuple
    n_classes: int

    @property
    def n_samples(self):
        return self.ends[-1]

    @property
    def model_bits(self):
        return 0.0

    @property
    def data_bits(self):
        return float(sum(self.block_bits))

    def as_dict(self):
        record = super().as_dict()
        record.update(ends=list(self.ends), block_bits=list(self.block_bits))
        return record


def block_ends(n_samples, blocks):
    """Block boundaries: an int ``m`` gives ``m`` blocks whose ends double up to
    ``n_samples`` (ends ``n / 2^(m-1), ..., n / 2, n``, as Blier & Ollivier's), or a
    strictly increasing sequence of ends, the last being ``n_samples``."""
    if isinstance(blocks, (list, tuple, np.ndarray)):
        ends = [check_int(e, f"blocks[{i}]", minimum=1) for i, e in enumerate(blocks)]
        if any(b <= a for a, b in zip(ends[:-1], ends[1:])):
            raise ValueError(f"blocks must be strictly increasing, got {ends}")
        if not ends or ends[-1] != n_samples:
            raise ValueError(f"the last block must end at n_samples={n_samples}, got {ends}")
        return tuple(ends)
    m = check_int(blocks, "blocks", minimum=2)
    ends = sorted({max(1, round(n_samples / 2 ** (m - 1 - i))) for i in range(m)})
    if len(ends) < m:
        raise ValueError(f"{n_samples} samples cannot make {m} doubling blocks (the first "
                         f"would be empty); ask for fewer or pass the block ends")
    return tuple(ends)


def prequential(make_model, X, y, blocks=8, n_classes=None, progress=False):
    """The prequential (online) code length of labels ``y`` given ``X``, in bits.

    Labels are sent in blocks, in the given order (shuffle first if the order means
    something): the first block at the uniform cost ``log2 K`` per label, then each
    next block ``X[start:end]`` coded by ``make_model(X[:start], y[:start])``, a model
    trained on every label sent before it. No parameters are sent: the receiver trains
    the same model.

    Parameters
    ----------
    make_model : callable (X, y) -> trained MLP or SparseMLP
        Must be deterministic (seeded) for the receiver to rebuild it.
    X : array (n_samples, n_features)
    y : int array (n_samples,)
    blocks : int or sequence of int
        See :func:`block_ends`; default 8 doubling blocks.
    n_classes : int, optional
        K; default ``max(y) + 1``.
    progress : bool
        A progress bar over the blocks.

    Returns
    -------
    Prequential
    """
    if not callable(make_model):
        raise TypeError(f"make_model must be callable (X, y) -> model, got {make_model!r}")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if n_classes is None:
        y_arr = np.asarray(y)
        if y_arr.size == 0 or y_arr.dtype.kind not in "iu":
            raise ValueError("y must be a non-empty integer array")
        n_classes = int(y_arr.max()) + 1
    n_classes = check_int(n_classes, "n_classes", minimum=2)
    y = check_labels(y, X.shape[0], n_classes)
    ends = block_ends(X.shape[0], blocks)
    bits = [ends[0] * math.log2(n_classes)]
    pairs = list(zip(ends[:-1], ends[1:]))
    for start, end in tqdm(pairs, desc="prequential", unit="block", disable=not progress):
        model = make_model(X[:start], y[:start])
        check_model(model)
        if model.n_classes != n_classes:
            raise ValueError(f"make_model gave a model of {model.n_classes} classes, "
                             f"expected {n_classes}")
        xt, labels = prepare(model, X[start:end], y[start:end])
        bits.append(nll_bits(model.layers, model.dtype, xt, labels, model.activation))
    return Prequential(ends=ends, block_bits=tuple(bits), n_classes=n_classes)
