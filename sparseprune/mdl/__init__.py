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

from .bits_back import BitsBack, LayerBitsBack, bits_back
from .code import Code
from .pieces import (
    BITS_BACK_SAMPLES, CANDIDATE_BITS, FIELD_BITS, FLOAT_BITS, dequantize, gaussian_kl_bits,
    header_bits, log2_binomial, quantize,
)
from .prequential import Prequential, block_ends, prequential
from .two_part import DescriptionLength, LayerCode, best, description_length
from .noisy_weights import Posterior, VariationalCode, variational

__all__ = [
    "BITS_BACK_SAMPLES", "BitsBack", "CANDIDATE_BITS", "Code", "DescriptionLength",
    "FIELD_BITS", "FLOAT_BITS", "LayerBitsBack", "LayerCode", "Prequential", "best",
    "bits_back", "block_ends", "dequantize", "description_length", "gaussian_kl_bits",
    "header_bits", "log2_binomial", "prequential", "quantize", "Posterior", "VariationalCode",
    "variational",
]
