"""The two-part code: the model as a message of its own (header, which weights survive,
every surviving value and bias at ``b`` bits), then the labels under its predictions."""

from dataclasses import dataclass, field

import numpy as np

from .code import Code, nll_bits, parameters, prepare
from .pieces import (
    CANDIDATE_BITS, FLOAT_BITS, check_bits, dequantize, header_bits, log2_binomial, quantize,
)

__all__ = ["DescriptionLength", "LayerCode", "best", "description_length",
           "description_length_fm"]


@dataclass(frozen=True)
class LayerCode:
    """One layer's share of a two-part code."""

    shape: tuple  # (in, out)
    n_weights: int
    n_kept: int
    n_bias: int
    mask_bits: float  # log2 C(n_weights, n_kept)
    value_bits: float  # (n_kept + n_bias) * b
    quantizer_bits: float  # step and offset, 2 x 32 bits, when b < 32
    step: float | None = None  # the quantizer's, when b < 32
    offset: float | None = None

    @property
    def total_bits(self):
        return self.mask_bits + self.value_bits + self.quantizer_bits


@dataclass(frozen=True)
class DescriptionLength(Code):
    """A two-part code length: ``model_bits + data_bits = total_bits``.

    ``bits`` is the value precision b; ``candidates`` maps every b tried to its total
    when it was chosen (``bits=None``), and is empty otherwise.
    """

    bits: int
    header_bits: float
    layers: tuple
    data_bits: float
    n_samples: int
    n_classes: int
    candidates: dict = field(default_factory=dict)

    def as_dict(self):
        record = super().as_dict()
        record["candidates"] = {str(b): t for b, t in self.candidates.items()}
        return record


def _two_part(model, xt, y, bits):
    """The code with values at ``bits`` bits; ``xt``, ``y`` already validated."""
    layers, codes = [], []
    # A float32 model sent at 32 bits is the model itself: no copy to make.
    unchanged = model.dtype == np.float32 and bits == 32
    for layer in model.layers:
        kept, bias = parameters(layer)
        step = offset = None
        if bits == 32:
            # Sent as float32, exactly as a float32 model stores them.
            new_kept, new_bias = (v.astype(np.float32).astype(np.float64) for v in (kept, bias))
            quantizer_bits = 0.0
        else:
            q, offset, step = quantize(np.concatenate([kept, bias]), bits)
            values = dequantize(q, offset, step)
            new_kept, new_bias = values[: kept.size], values[kept.size :]
            quantizer_bits = 2.0 * FLOAT_BITS
            step, offset = float(step), float(offset)
        layers.append(layer if unchanged else layer.with_values(new_kept, new_bias))
        codes.append(LayerCode(
            shape=layer.shape, n_weights=layer.n_weights, n_kept=kept.size, n_bias=bias.size,
            mask_bits=log2_binomial(layer.n_weights, kept.size),
            value_bits=float(bits * (kept.size + bias.size)), quantizer_bits=quantizer_bits,
            step=step, offset=offset,
        ))
    return DescriptionLength(
        bits=bits, header_bits=float(header_bits(len(model.layers))), layers=tuple(codes),
        data_bits=nll_bits(layers, model.dtype, xt, y, model.activation), n_samples=xt.shape[1],
        n_classes=model.n_classes,
    )


def description_length_fm(model, xt, y, bits):
    """:func:`description_length` of feature-major ``xt`` and int64 labels ``y``, already
    validated."""
    if bits is not None:
        return _two_part(model, xt, y, check_bits(bits))
    tried = {b: _two_part(model, xt, y, b) for b in CANDIDATE_BITS}
    best = min(tried.values(), key=lambda code: code.total_bits)  # ties: fewer bits
    return DescriptionLength(
        bits=best.bits, header_bits=best.header_bits, layers=best.layers,
        data_bits=best.data_bits, n_samples=best.n_samples, n_classes=best.n_classes,
        candidates={b: code.total_bits for b, code in tried.items()},
    )


def description_length(model, X, y, bits=None):
    """The two-part description length of labels ``y`` given ``X``, in bits.

    The model is sent first:

    * a header: the layer widths, the number of kept weights per layer and ``b``, as
      32-bit integers (:func:`header_bits`);
    * per layer, which weights survive: ``log2 C(n, k)`` bits for ``k`` kept of ``n``
      (0 for a dense layer);
    * per layer, the kept weights and all biases at ``b`` bits each. With ``b = 32`` they
      are sent as float32 (exactly as a float32 model stores them; a float64 model is
      rounded to float32 and coded as such). With ``b < 32`` each layer's values are
      uniformly quantized to ``2**b`` levels over their range (:func:`quantize`); the
      step and offset cost two 32-bit floats per layer.

    Then the labels, under the model as sent: ``sum_i -log2 p(y_i | x_i)``.

    Parameters
    ----------
    model : MLP or SparseMLP
    X : array (n_samples, n_features)
    y : int array (n_samples,)
    bits : int in 1..32 or None
        Value precision ``b``. None tries 2..16 and 32 and keeps the shortest total
        (``result.bits`` says which; ``result.candidates`` has every total).

    Returns
    -------
    DescriptionLength
        ``model_bits``, ``data_bits``, ``total_bits``, a per-layer breakdown in
        ``layers``, and ``uniform_bits`` (``N log2 K``) and ``compression`` to read them by.
    """
    xt, y = prepare(model, X, y)
    return description_length_fm(model, xt, y, bits)


def best(records):
    """The record with the shortest description length: the step MDL prefers.

    ``records`` are :class:`sparseprune.prune.PruneStep` (from ``prune.iterative``) or
    :class:`DescriptionLength` objects, or anything with a ``description_length``
    attribute. Ties go to the earliest.
    """
    records = list(records)
    if not records:
        raise ValueError("records must not be empty")

    def total(record):
        code = record if isinstance(record, DescriptionLength) else getattr(
            record, "description_length", None)
        if not isinstance(code, DescriptionLength):
            raise TypeError(f"records must carry a DescriptionLength, got {record!r}")
        return code.total_bits

    totals = [total(record) for record in records]
    return records[int(np.argmin(totals))]
