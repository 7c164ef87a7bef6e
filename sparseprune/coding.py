"""Bit-level codes for the compact file format (``compact.py``): variable-length
integers, a byte cursor, Golomb codes of sorted positions, b-bit code packing and
general-purpose compressed streams.

Encoders take validated arrays. Decoders read untrusted bytes: they check every length
and every value, never read past what they were given, never inflate a stream beyond
MAX_INFLATION times its stored bytes, and raise ValueError saying what is wrong. What a
count allows them to allocate is bounded by the counts a file may claim: a mask of n
positions, whatever its coded length (an all-kept mask costs no bytes), takes about
n bytes plus 8 a kept position while it is decoded, and its kept count is bounded by
the values stream, MAX_INFLATION times its bytes.
"""

import lzma
import math
import struct
import zlib

import numpy as np

__all__ = ["LZMA_FILTERS", "MAX_INFLATION", "Reader", "STREAM_METHODS", "compress",
           "decode_positions", "decompress", "encode_positions", "golomb_bits",
           "golomb_parameter", "pack_codes", "unpack_codes", "varint", "within_inflation"]

# Deflate cannot expand data by more than about 1032:1; no stream may claim more than
# this (a decoder refuses it before inflating anything, an encoder never writes it).
MAX_INFLATION = 1100


def within_inflation(size, stored):
    """Whether ``size`` decoded bytes may come from ``stored`` stored bytes (a margin of
    4 KiB for the stream formats' own overhead on tiny inputs)."""
    return size <= MAX_INFLATION * stored + 4096
#: How a stream's bytes are stored: as they are ("raw": for codes, packed at b bits),
#: raw deflate (zlib) or raw LZMA1 (lzma), of the codes one per byte or of the values.
STREAM_METHODS = ("raw", "zlib", "lzma")
#: LZMA1 with no literal context (codes are not text) and a 4 MiB dictionary, so that
#: the decoder's allocation is bounded; raw, with an end marker.
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME,
                 "dict_size": 1 << 22, "lc": 0, "lp": 0, "pb": 0}]


# -- integers ----------------------------------------------------------------------------

def varint(value):
    """A non-negative int as LEB128 bytes: 7 bits a byte, low bits first."""
    if value < 0:
        raise ValueError(f"a varint is non-negative, got {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    """A cursor over untrusted bytes: every read is bounds-checked and names ``what``."""

    def __init__(self, data):
        self.data = memoryview(data)
        self.pos = 0

    def remaining(self):
        return len(self.data) - self.pos

    def take(self, n, what):
        """The next ``n`` bytes."""
        if n < 0 or n > self.remaining():
            raise ValueError(f"{what}: needs {n} bytes, {self.remaining()} remain")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(chunk)

    def u8(self, what):
        return self.take(1, what)[0]

    def f32(self, what):
        return np.float32(struct.unpack("<f", self.take(4, what))[0])

    def varint(self, what, limit):
        """A LEB128 integer in [0, limit]; at most 9 bytes, no superfluous zero bytes."""
        value = shift = 0
        for i in range(9):
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise ValueError(f"{what}: a varint with a superfluous zero byte")
                if value > limit:
                    raise ValueError(f"{what}: {value} is above its limit {limit}")
                return value
        raise ValueError(f"{what}: a varint longer than 9 bytes")

    def string(self, what, limit=64):
        """A varint length, then that many ASCII bytes."""
        raw = self.take(self.varint(f"{what} length", limit), what)
        if not raw.isascii():
            raise ValueError(f"{what}: not ASCII")
        return raw.decode("ascii")


# -- Golomb codes of positions -------------------------------------------------------------

def golomb_parameter(n, k):
    """The Golomb parameter m for ``k`` of ``n`` positions spread at random (Gallager
    and van Voorhis 1975: optimal for geometric gaps), at least 1."""
    if k == 0 or k >= n:
        return 1
    theta = 1.0 - k / n
    return max(1, math.ceil(math.log(1.0 + theta) / -math.log(theta)))


def _split(gaps, m):
    """(quotients, remainders, b, u) of Golomb parameter m: remainders in truncated
    binary, those below u in b - 1 bits, the others in b (m = 1: none, b = 0)."""
    b = (m - 1).bit_length()
    return gaps // m, gaps % m, b, (1 << b) - m


def _long(values, b, u):
    """Which remainders (or, decoding, prefixes) take b bits rather than b - 1."""
    return values >= u if b else np.zeros(values.shape, bool)


def golomb_bits(gaps, m):
    """Bits of the Golomb code of ``gaps`` (int64) with parameter m."""
    q, r, b, u = _split(gaps, m)
    remainders = gaps.size * b - int(np.count_nonzero(r < u)) if b else 0
    return int(q.sum()) + gaps.size + remainders


def encode_positions(positions, n):
    """Sorted distinct positions (int64 (k,), in [0, n)) as (complement, m, unary,
    bytes), ``unary`` the bit length of the unary run (see below).

    The gaps between consecutive positions (the zeros between ones of the n-bit mask)
    are Golomb coded: quotient in unary (q ones, a zero), remainder in truncated binary.
    Above half density the positions left out are coded instead (``complement``), so a
    dense layer costs nothing. m is the best of a few around :func:`golomb_parameter`.
    Within 1-2% of log2 C(n, k) on the digits models; zlib and lzma on varint gaps were
    8-19% above it (``benchmarks/quantized_digits.py --codes``).

    The bit stream, LSB first: every unary quotient, then the first b - 1 bits of every
    remainder, then the last bit of those remainders that have b bits; zero-padded.
    Three runs rather than interleaved codewords, so that decoding is vectorized. The
    length of the first run is sent too: the decoder finds it from the count of gaps,
    so a count that disagrees with the code is always caught (the run's length grows
    strictly with the count).
    """
    positions = np.asarray(positions, np.int64)
    complement = positions.size > n // 2
    if complement:
        keep = np.ones(n, bool)
        keep[positions] = False
        positions = np.flatnonzero(keep)
    k = positions.size
    if k == 0:
        return complement, 1, 0, b""
    gaps = np.diff(positions, prepend=-1) - 1
    m0 = golomb_parameter(n, k)
    m = min(range(max(1, m0 - 2), m0 + 3), key=lambda c: (golomb_bits(gaps, c), c))
    q, r, b, u = _split(gaps, m)
    unary = np.ones(int(q.sum()) + k, np.uint8)
    unary[np.cumsum(q + 1) - 1] = 0
    long = _long(r, b, u)
    prefix = np.where(long, (r + u) >> 1, r)
    prefix_bits = ((prefix[:, None] >> np.arange(b - 1)) & 1).astype(np.uint8).ravel() \
        if b > 1 else np.zeros(0, np.uint8)
    extra = ((r + u)[long] & 1).astype(np.uint8)
    bits = np.concatenate([unary, prefix_bits, extra])
    return complement, m, unary.size, np.packbits(bits, bitorder="little").tobytes()


def decode_positions(complement, m, unary, data, n, k):
    """The sorted positions (int64 (k,), in [0, n)) that :func:`encode_positions`
    coded as (complement, m, unary, data), for a mask of ``k`` of ``n`` positions.

    Refused: a code whose unary run does not end after exactly its gaps at ``unary``
    bits (a count that disagrees), that ends early or runs on past its last padding
    byte, nonzero padding, positions at or beyond n, and m above n.
    """
    k_coded = n - k if complement else k
    if k_coded < 0:
        raise ValueError(f"{k} kept of {n}")
    if not 1 <= m <= max(n, 1):
        raise ValueError(f"Golomb parameter {m} is out of range [1, {max(n, 1)}]")
    if k_coded == 0:
        if data or unary:
            raise ValueError(f"{len(data)} bytes and a unary run of {unary} bits where no "
                             f"gap is coded")
        coded = np.zeros(0, np.int64)
    else:
        if k_coded > 8 * len(data):
            raise ValueError(f"{len(data)} bytes cannot hold {k_coded} gaps")
        bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        ends = np.flatnonzero(bits == 0)[:k_coded]
        if ends.size < k_coded:
            raise ValueError(f"the code ends after {ends.size} of its {k_coded} gaps")
        if int(ends[-1]) + 1 != unary:
            raise ValueError(f"{k_coded} gaps end their unary run at bit {int(ends[-1]) + 1}, "
                             f"the code says {unary}: the count of kept weights disagrees "
                             f"with the code")
        q = np.diff(ends, prepend=-1) - 1
        b = (m - 1).bit_length()
        u = (1 << b) - m
        start = int(ends[-1]) + 1
        width = max(b - 1, 0)
        stop = start + k_coded * width
        if stop > bits.size:
            raise ValueError("the code ends inside its remainders")
        prefix = np.zeros(k_coded, np.int64)
        if width:
            chunk = bits[start:stop].reshape(k_coded, width).astype(np.int64)
            prefix = chunk @ (np.int64(1) << np.arange(width, dtype=np.int64))
        long = _long(prefix, b, u)
        n_extra = int(np.count_nonzero(long))
        end = stop + n_extra
        if end > bits.size:
            raise ValueError("the code ends inside its remainders")
        if len(data) != -(-end // 8) or bits[end:].any():
            raise ValueError(f"{len(data)} bytes for a code of {end} bits (it must end in "
                             f"its last byte, padded with zeros)")
        r = prefix.copy()
        r[long] = ((prefix[long] << 1) | bits[stop:end]) - u
        if int(q.max()) > (n - 1) // m:
            raise ValueError(f"a gap runs past the {n} positions")
        gaps = q * m + r
        if float(np.sum(gaps, dtype=np.float64)) + k_coded > n * (1 + 1e-9) + 1:
            raise ValueError(f"the gaps run past the {n} positions")
        coded = np.cumsum(gaps + 1) - 1
        if coded[-1] >= n:
            raise ValueError(f"the gaps run past the {n} positions")
    if not complement:
        return coded
    keep = np.ones(n, bool)
    keep[coded] = False
    return np.flatnonzero(keep)


# -- codes at b bits -----------------------------------------------------------------------

def pack_codes(codes, bits):
    """Codes (uint8, each below 2**bits) at ``bits`` bits each, LSB first, zero-padded."""
    codes = np.asarray(codes, np.uint8)
    if not codes.size:
        return b""
    spread = (codes[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(spread.ravel(), bitorder="little").tobytes()


def unpack_codes(data, count, bits):
    """``count`` codes of ``bits`` bits from :func:`pack_codes`' bytes: exactly
    ceil(count * bits / 8) of them, with zero padding."""
    n_bits = count * bits
    if len(data) != -(-n_bits // 8):
        raise ValueError(f"{len(data)} bytes for {count} codes of {bits} bits, expected "
                         f"{-(-n_bits // 8)}")
    flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    if flat[n_bits:].any():
        raise ValueError("nonzero padding after the last code")
    weights = (1 << np.arange(bits)).astype(np.uint8)
    return (flat[:n_bits].reshape(count, bits) @ weights).astype(np.uint8)


# -- compressed streams --------------------------------------------------------------------

def compress(data, method):
    """``data`` (bytes) stored by ``method`` ("raw", "zlib" or "lzma")."""
    if method == "raw":
        return bytes(data)
    if method == "zlib":
        c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        return c.compress(data) + c.flush()
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)


def decompress(stored, method, size):
    """The ``size`` bytes that ``stored`` holds by ``method``: exactly that many, the
    stream ending where they do. A claim beyond MAX_INFLATION times the stored bytes
    is refused before anything is inflated."""
    if method == "raw":
        if len(stored) != size:
            raise ValueError(f"{len(stored)} stored bytes, expected {size}")
        return stored
    if not within_inflation(size, len(stored)):
        raise ValueError(f"{len(stored)} {method} bytes cannot hold {size}")
    try:
        if method == "zlib":
            d = zlib.decompressobj(-15)
            out = d.decompress(stored, size)
            ended = d.eof and not d.unconsumed_tail and not d.unused_data
        else:
            d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
            out = d.decompress(stored, max_length=size)
            ended = d.eof and not d.unused_data
    except (zlib.error, lzma.LZMAError) as exc:
        raise ValueError(f"corrupt {method} stream: {exc}") from exc
    if len(out) != size or not ended:
        raise ValueError(f"the {method} stream does not decode to exactly {size} bytes")
    return out
