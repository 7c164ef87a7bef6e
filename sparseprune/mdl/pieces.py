"""The pieces every code is built from: which weights survive (a binomial index),
values sent to a tolerance (a Gaussian KL), values sent at ``b`` bits (a uniform
quantizer), and the header that says how to read the rest."""

import math

import numpy as np

from .._validation import check_int

__all__ = ["BITS_BACK_SAMPLES", "CANDIDATE_BITS", "FIELD_BITS", "FLOAT_BITS", "LN2",
           "check_bits", "dequantize", "gaussian_kl_bits", "header_bits", "log2_binomial",
           "quantize"]

#: Every header field (a layer width, a count of kept weights, ``b``) is a 32-bit integer.
FIELD_BITS = 32
#: Bits of a float sent as-is: quantizer steps and offsets, prior parameters.
FLOAT_BITS = 32
#: ``bits=None`` chooses the value precision among these.
CANDIDATE_BITS = tuple(range(2, 17)) + (32,)
#: Monte Carlo draws of the weights in :func:`bits_back` unless told otherwise.
BITS_BACK_SAMPLES = 16

#: ln 2: nats per bit.
LN2 = math.log(2.0)


def log2_binomial(n, k):
    """log2 C(n, k): the bits that say which ``k`` of ``n`` weights survive, when every
    such choice is equally likely. Through lgamma, so stable for any n; 0 when k = n."""
    n = check_int(n, "n", minimum=0)
    k = check_int(k, "k", minimum=0)
    if k > n:
        raise ValueError(f"k must be in [0, n={n}], got {k}")
    if k in (0, n):
        return 0.0
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / LN2


def gaussian_kl_bits(mean_q, std_q, mean_p, std_p):
    """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)) in bits, elementwise (broadcasts).

    ``log(std_p / std_q) + (std_q^2 + (mean_q - mean_p)^2) / (2 std_p^2) - 1/2`` nats,
    over ln 2. Standard deviations must be positive.
    """
    mean_q, std_q, mean_p, std_p = (np.asarray(a, dtype=np.float64)
                                    for a in (mean_q, std_q, mean_p, std_p))
    ratio = std_q / std_p
    nats = (-np.log(ratio) + 0.5 * (ratio * ratio + ((mean_q - mean_p) / std_p) ** 2) - 0.5)
    return nats / LN2


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


def check_bits(bits, name="bits"):
    """``bits`` as an int in 1..32: a value precision in bits."""
    bits = check_int(bits, name, minimum=1)
    if bits > 32:
        raise ValueError(f"{name} must be in 1..32 (or None to choose), got {bits}")
    return bits
