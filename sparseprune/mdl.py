"""Description length in bits: how many bits it takes to send the labels of a data set
with the help of a network, counting the network too (Hinton & van Camp 1993).

Three codes, each reported against the uniform code, ``N log2 K`` bits for N labels of K
classes, which needs no model at all:

* :func:`description_length` (the two-part code): the model as a message of its own
  (header, which weights survive, every surviving value and bias at ``b`` bits), then
  the labels coded by the model's predicted probabilities.
* :func:`bits_back` (the noisy-weights code of the paper): each weight sent to a
  tolerance, as a Gaussian posterior, at the price of its KL divergence from a prior.
* :func:`prequential` (the online code of Blier & Ollivier 2018): no parameters sent;
  every block of labels coded by a model trained on the blocks before it.

Bits are base-2 throughout; the data bits are computed from the logits in float64, so a
confident wrong prediction costs many bits but never infinitely many.
"""

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from tqdm.auto import tqdm

from ._validation import check_int, check_labels, check_real
from .model import MLP, SparseMLP
from .passes import chunks, logits_fm

#: Every header field (a layer width, a count of kept weights, ``b``) is a 32-bit integer.
FIELD_BITS = 32
#: Bits of a float sent as-is: quantizer steps and offsets, prior parameters.
FLOAT_BITS = 32
#: ``bits=None`` chooses the value precision among these.
CANDIDATE_BITS = tuple(range(2, 17)) + (32,)
#: Monte Carlo draws of the weights in :func:`bits_back` unless told otherwise.
BITS_BACK_SAMPLES = 16

_LN2 = math.log(2.0)


# -- pieces --------------------------------------------------------------------------------

def log2_binomial(n, k):
    """log2 C(n, k): the bits that say which ``k`` of ``n`` weights survive, when every
    such choice is equally likely. Through lgamma, so stable for any n; 0 when k = n."""
    n = check_int(n, "n", minimum=0)
    k = check_int(k, "k", minimum=0)
    if k > n:
        raise ValueError(f"k must be in [0, n={n}], got {k}")
    if k in (0, n):
        return 0.0
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / _LN2


def gaussian_kl_bits(mean_q, std_q, mean_p, std_p):
    """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)) in bits, elementwise (broadcasts).

    ``log(std_p / std_q) + (std_q^2 + (mean_q - mean_p)^2) / (2 std_p^2) - 1/2`` nats,
    over ln 2. Standard deviations must be positive.
    """
    mean_q, std_q, mean_p, std_p = (np.asarray(a, dtype=np.float64)
                                    for a in (mean_q, std_q, mean_p, std_p))
    ratio = std_q / std_p
    nats = (-np.log(ratio) + 0.5 * (ratio * ratio + ((mean_q - mean_p) / std_p) ** 2) - 0.5)
    return nats / _LN2


def quantize(values, bits):
    """Uniform quantization of ``values`` to ``2**bits`` levels over their range.

    Returns ``(codes, offset, step)``: ``codes`` int64 in ``[0, 2**bits - 1]``, and
    ``offset`` and ``step`` float32, as they would be sent. ``offset`` is the minimum
    rounded down to float32 and ``step`` is rounded up, so that the grid
    ``offset + step * [0, 2**bits - 1]`` covers every value and the round trip
    :func:`dequantize` errs by at most half a step. Equal values get ``step`` 0.
    """
    bits = check_int(bits, "bits", minimum=1)
    if bits > 31:
        raise ValueError(f"bits must be at most 31 for quantization, got {bits}")
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(0, np.int64), np.float32(0), np.float32(0)
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite")
    lo, hi = float(v.min()), float(v.max())
    if max(-lo, hi) > float(np.finfo(np.float32).max):
        raise ValueError("values must lie within float32's range: the step and offset "
                         "are sent as float32")
    offset = np.float32(lo)
    if float(offset) > lo:
        offset = np.nextafter(offset, np.float32(-np.inf))
    top = (1 << bits) - 1
    if hi == float(offset):
        return np.zeros(v.size, np.int64), offset, np.float32(0)
    step = np.float32((hi - float(offset)) / top)
    while float(offset) + top * float(step) < hi:
        step = np.nextafter(step, np.float32(np.inf))
    codes = np.rint((v - float(offset)) / float(step))
    return np.clip(codes, 0, top).astype(np.int64), offset, step


def dequantize(codes, offset, step):
    """The values ``offset + step * codes`` (float64) that :func:`quantize` codes stand for."""
    return float(offset) + float(step) * np.asarray(codes, dtype=np.float64)


def header_bits(n_layers, bits=True):
    """Bits of the header: the number of widths, the ``n_layers + 1`` widths, the count
    of kept weights per layer and, when values are quantized, ``b``; 32 bits each."""
    return FIELD_BITS * (1 + (n_layers + 1) + n_layers + (1 if bits else 0))


# -- the model's parameters, as a code sees them -------------------------------------------

def _check_model(model):
    if not isinstance(model, (MLP, SparseMLP)):
        raise TypeError(f"model must be an MLP or a SparseMLP, got {type(model).__name__}")


def _parameters(layer):
    """(kept weights, bias) of a layer as float64 vectors. Kept weights are in CSR-of-
    ``W.T`` order (by output, then input), whatever the layer kind, so that a model and
    its ``to_sparse()`` draw the same noise for the same weight."""
    return layer.kept_values().astype(np.float64), layer.bias.astype(np.float64)


def _with_parameters(layer, kept, bias):
    """A copy of ``layer`` with new kept weights and bias (float64, cast to its dtype);
    the pattern is shared or copied, never changed."""
    return layer.with_values(kept, bias)


def _nll_bits(layers, dtype, xt, y):
    """sum_i -log2 p(y_i | x_i) of feature-major ``xt`` (in, n) under ``layers``
    (ReLU between them, softmax at the end): log-sum-exp of the logits in float64."""
    total = 0.0
    for start, chunk in chunks(xt):
        z = logits_fm(layers, dtype, chunk).astype(np.float64)
        top = z.max(axis=0)
        lse = top + np.log(np.exp(z - top).sum(axis=0))
        labels = y[start : start + z.shape[1]]
        total += float(np.sum(lse - z[labels, np.arange(z.shape[1])]))
    return total / _LN2


def _prepare(model, X, y):
    _check_model(model)
    xt = model.feature_major(X)
    return xt, check_labels(y, xt.shape[1], model.n_classes)


# -- what every code reports --------------------------------------------------------------

class _Code:
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


# -- the two-part code ---------------------------------------------------------------------

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
class DescriptionLength(_Code):
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


def check_bits(bits, name="bits"):
    """``bits`` as an int in 1..32: a value precision in bits."""
    bits = check_int(bits, name, minimum=1)
    if bits > 32:
        raise ValueError(f"{name} must be in 1..32 (or None to choose), got {bits}")
    return bits


def _two_part(model, xt, y, bits):
    """The code with values at ``bits`` bits; ``xt``, ``y`` already validated."""
    layers, codes = [], []
    # A float32 model sent at 32 bits is the model itself: no copy to make.
    unchanged = model.dtype == np.float32 and bits == 32
    for layer in model.layers:
        kept, bias = _parameters(layer)
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
        layers.append(layer if unchanged else _with_parameters(layer, new_kept, new_bias))
        codes.append(LayerCode(
            shape=layer.shape, n_weights=layer.n_weights, n_kept=kept.size, n_bias=bias.size,
            mask_bits=log2_binomial(layer.n_weights, kept.size),
            value_bits=float(bits * (kept.size + bias.size)), quantizer_bits=quantizer_bits,
            step=step, offset=offset,
        ))
    return DescriptionLength(
        bits=bits, header_bits=float(header_bits(len(model.layers))), layers=tuple(codes),
        data_bits=_nll_bits(layers, model.dtype, xt, y), n_samples=xt.shape[1],
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
    xt, y = _prepare(model, X, y)
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


# -- bits back -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerBitsBack:
    """One layer's share of the bits-back code."""

    shape: tuple
    n_kept: int
    n_bias: int
    mask_bits: float
    kl_bits: float  # sum over kept weights and biases of KL(posterior || prior)
    prior_bits: float  # the prior's mean and std, 2 x 32 bits
    prior_mean: float
    prior_std: float

    @property
    def total_bits(self):
        return self.mask_bits + self.kl_bits + self.prior_bits


@dataclass(frozen=True)
class BitsBack(_Code):
    """The noisy-weights code: ``model_bits`` (header, masks, KL, priors) + expected
    ``data_bits`` under weights drawn from the posterior = ``total_bits``."""

    header_bits: float
    layers: tuple
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


def _sigma_for(entry, layer, index):
    """(std of kept weights (k,), std of biases (out,)) from one layer's ``sigma`` entry."""
    name = f"sigma[{index}]"
    if isinstance(entry, tuple):
        if len(entry) != 2:
            raise ValueError(f"{name} must be a std or a (weight_std, bias_std) pair, "
                             f"got a tuple of {len(entry)}")
        w_sigma, b_sigma = entry
    else:
        w_sigma = b_sigma = entry
    out = []
    for value, shape, part in ((w_sigma, layer.shape, "weight"),
                               (b_sigma, (layer.out_features,), "bias")):
        try:
            a = np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
        except (ValueError, TypeError):
            raise ValueError(f"{name} ({part} std) must broadcast to {shape}, got "
                             f"{np.shape(value)}") from None
        if not np.all(np.isfinite(a)) or not np.all(a > 0):
            raise ValueError(f"{name} ({part} std) must be finite and > 0")
        out.append(a)
    w_std, b_std = out
    return w_std[layer.kept_positions()], b_std


def bits_back(model, X, y, sigma, draws=BITS_BACK_SAMPLES, seed=0):
    """The bits-back description length of Hinton & van Camp: weights sent to a tolerance.

    Every kept weight and bias ``w`` is sent as a Gaussian posterior ``N(w, sigma^2)``
    against a Gaussian prior ``N(m_l, s_l^2)`` per layer, fitted at its closed-form
    optimum (Graves 2011): ``m_l`` the mean of the layer's posterior means and
    ``s_l^2`` the mean of ``sigma^2 + (w - m_l)^2``. The model costs the KL divergence of
    the posteriors from the prior, plus the header and which weights survive
    (``log2 C(n, k)``, as in :func:`description_length`, header without ``b``) and the
    priors' two 32-bit floats per layer. The data cost is the expected misfit
    ``E[sum_i -log2 p(y_i | x_i, w)]`` over weights drawn from the posterior, estimated
    with ``draws`` Monte Carlo draws from ``numpy.random.default_rng(seed)``.

    How it differs from the quantized count: :func:`description_length` charges every
    value the same ``b`` bits, however little the data cares about it. Here a weight
    costs about ``log2(s_l / sigma)`` bits plus its distance from the prior: a weight
    the misfit tolerates with a wide posterior is nearly free, and the random bits used
    to pick it within its tolerance are given back (the "bits back"). A narrow sigma
    everywhere recovers the quantized picture (``sigma`` near ``step / sqrt(12)``
    costs about ``b`` bits a value), at the price of being exactly as wasteful; the
    noise also raises the data cost above the misfit at the posterior means
    (``data_bits_at_mean``), which is the trade the paper's training minimizes.

    Parameters
    ----------
    model : MLP or SparseMLP
    X, y : the data, (n_samples, n_features) and (n_samples,) int labels
    sigma : float, or a sequence with one entry per layer
        The posterior std. An entry is a float, or a pair ``(weight_std, bias_std)`` of
        arrays broadcastable to the weight (in, out) and the bias (out,): per layer or
        per weight. Must be > 0.
    draws : int
        Monte Carlo draws for the expected misfit (default 16).
    seed : int or None

    Returns
    -------
    BitsBack
    """
    xt, y = _prepare(model, X, y)
    draws = check_int(draws, "draws", minimum=1)
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0)
    n_layers = len(model.layers)
    if isinstance(sigma, (list, tuple)):
        if len(sigma) != n_layers:
            raise ValueError(f"sigma must have one entry per layer ({n_layers}), "
                             f"got {len(sigma)}")
        entries = list(sigma)
    else:
        entries = [check_real(sigma, "sigma", low=0.0, low_open=True)] * n_layers

    params, stds, codes = [], [], []
    for i, (layer, entry) in enumerate(zip(model.layers, entries)):
        kept, bias = _parameters(layer)
        w_std, b_std = _sigma_for(entry, layer, i)
        means = np.concatenate([kept, bias])
        std = np.concatenate([w_std, b_std])
        prior_mean = float(means.mean())
        prior_std = math.sqrt(float(np.mean(std * std + (means - prior_mean) ** 2)))
        params.append((kept, bias))
        stds.append((w_std, b_std))
        codes.append(LayerBitsBack(
            shape=layer.shape, n_kept=kept.size, n_bias=bias.size,
            mask_bits=log2_binomial(layer.n_weights, kept.size),
            kl_bits=float(np.sum(gaussian_kl_bits(means, std, prior_mean, prior_std))),
            prior_bits=2.0 * FLOAT_BITS, prior_mean=prior_mean, prior_std=prior_std,
        ))

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        noisy = [_with_parameters(layer, kept + w_std * rng.standard_normal(kept.size),
                                  bias + b_std * rng.standard_normal(bias.size))
                 for layer, (kept, bias), (w_std, b_std) in zip(model.layers, params, stds)]
        samples.append(_nll_bits(noisy, model.dtype, xt, y))
    samples = np.asarray(samples)
    sem = float(samples.std(ddof=1) / math.sqrt(draws)) if draws > 1 else None
    return BitsBack(
        header_bits=float(header_bits(n_layers, bits=False)), layers=tuple(codes),
        data_bits=float(samples.mean()), data_bits_sem=sem,
        data_bits_at_mean=_nll_bits(model.layers, model.dtype, xt, y),
        n_samples=xt.shape[1], n_classes=model.n_classes, draws=draws, seed=seed,
    )


# -- the prequential code ------------------------------------------------------------------

@dataclass(frozen=True)
class Prequential(_Code):
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
        _check_model(model)
        if model.n_classes != n_classes:
            raise ValueError(f"make_model gave a model of {model.n_classes} classes, "
                             f"expected {n_classes}")
        xt, labels = _prepare(model, X[start:end], y[start:end])
        bits.append(_nll_bits(model.layers, model.dtype, xt, labels))
    return Prequential(ends=ends, block_bits=tuple(bits), n_classes=n_classes)
