"""The bit-level codes of the compact format (``sparseprune.coding``): round trips,
lengths against the entropy bound, and decoders that refuse what they should."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from sparseprune import coding
from strategies import seeds


def log2_binomial(n, k):
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def golomb_reference(gaps, m):
    """The Golomb code as a list of bit strings, one codeword per gap, written the
    textbook way: q ones and a zero, then r in truncated binary (MSB first)."""
    b = math.ceil(math.log2(m)) if m > 1 else 0
    u = 2**b - m
    words = []
    for g in gaps:
        q, r = divmod(int(g), m)
        rem = "" if m == 1 else (format(r, f"0{b - 1}b") if r < u and b > 1 else
                                 "" if r < u else format(r + u, f"0{b}b"))
        words.append("1" * q + "0" + rem)
    return words


@st.composite
def masks(draw):
    n = draw(st.integers(1, 3000))
    density = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0, 1)))
    rng = np.random.default_rng(draw(seeds))
    return np.flatnonzero(rng.random(n) < density), n


@given(masks())
def test_positions_round_trip(mask):
    positions, n = mask
    complement, m, unary, data = coding.encode_positions(positions, n)
    assert complement == (positions.size > n // 2)
    back = coding.decode_positions(complement, m, unary, data, n, positions.size)
    assert back.dtype == np.int64
    assert_array_equal(back, positions)
    # Any other count of kept positions is refused: the unary run would end elsewhere.
    for k in {positions.size - 1, positions.size + 1, positions.size + 9} - {-1}:
        if k <= n:
            with pytest.raises(ValueError):
                coding.decode_positions(complement, m, unary, data, n, k)


@given(masks())
def test_the_code_is_the_golomb_code_in_three_runs(mask):
    """Each gap's codeword has the textbook length; the stream is their total, padded
    to whole bytes, and close to the entropy bound log2 C(n, k)."""
    positions, n = mask
    complement, m, unary, data = coding.encode_positions(positions, n)
    coded = np.setdiff1d(np.arange(n), positions) if complement else positions
    gaps = np.diff(coded, prepend=-1) - 1
    words = golomb_reference(gaps, m)
    total = sum(map(len, words))
    assert coding.golomb_bits(gaps, m) == total
    assert len(data) == math.ceil(total / 8)
    # The unary run is the codewords' unary parts in order.
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    run = "".join(w[: w.index("0") + 1] for w in words)
    assert "".join(map(str, bits[: len(run)])) == run and unary == len(run)
    k = coded.size
    if k >= 50 and 0.01 < k / n < 0.5:
        assert 8 * len(data) <= 1.1 * log2_binomial(n, k) + 8


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 13])
def test_every_parameter_decodes(m, monkeypatch):
    rng = np.random.default_rng(m)
    positions = np.flatnonzero(rng.random(2000) < 0.2)
    monkeypatch.setattr(coding, "golomb_parameter", lambda n, k: m + 2)
    complement, chosen, unary, data = coding.encode_positions(positions, 2000)
    assert m <= chosen <= m + 4
    assert_array_equal(coding.decode_positions(complement, chosen, unary, data, 2000,
                                               positions.size), positions)


def test_a_sparse_layer_costs_about_its_entropy():
    rng = np.random.default_rng(0)
    n = 256 * 128
    positions = np.sort(rng.choice(n, n // 10, replace=False))
    _, _, _, data = coding.encode_positions(positions, n)
    assert 8 * len(data) / log2_binomial(n, n // 10) < 1.02


@pytest.mark.parametrize("mutate, message", [
    (lambda c, m, r, d, n, k: (c, m, r, d[:-1], n, k), "ends inside|must end"),
    (lambda c, m, r, d, n, k: (c, m, r, d + b"\x00", n, k), "must end in its last byte"),
    (lambda c, m, r, d, n, k: (c, m, r, d[:-1] + bytes([d[-1] | 0x80]), n, k),
     "padded with zeros"),
    (lambda c, m, r, d, n, k: (c, m, r, d, n, k + 1), "disagrees"),
    (lambda c, m, r, d, n, k: (c, m, r, d, n, k - 1), "disagrees"),
    (lambda c, m, r, d, n, k: (c, m, r + 1, d, n, k), "disagrees"),
    (lambda c, m, r, d, n, k: (c, m, r, d, 30, k), "past the 30 positions"),
    (lambda c, m, r, d, n, k: (c, 0, r, d, n, k), "Golomb parameter 0"),
    (lambda c, m, r, d, n, k: (c, n + 1, r, d, n, k), "out of range"),
    (lambda c, m, r, d, n, k: (c, m, r, b"\xff" * 40, n, k), "ends after"),
    (lambda c, m, r, d, n, k: (c, m, r, d[:1], n, k), "cannot hold"),
    (lambda c, m, r, d, n, k: (True, m, r, d, n, n + 1), "kept of"),
    (lambda c, m, r, d, n, k: (c, m, r, d, n, 0), "where no gap"),
])
def test_position_decoder_refuses(mutate, message):
    positions = [3, 10, 11, 40, 77, 78, 79, 150, 199]
    complement, m, unary, data = coding.encode_positions(np.array(positions), 200)
    assert m > 1 and data[-1] & 0x80 == 0  # the cases assume a remainder and a free bit
    with pytest.raises(ValueError, match=message):
        coding.decode_positions(*mutate(complement, m, unary, data, 200, len(positions)))


@given(st.integers(1, 8), st.integers(0, 200), seeds)
def test_codes_pack_at_b_bits(bits, count, seed):
    codes = np.random.default_rng(seed).integers(0, 2**bits, count).astype(np.uint8)
    data = coding.pack_codes(codes, bits)
    assert len(data) == math.ceil(count * bits / 8)
    # LSB first: code i occupies bits i*b .. i*b + b - 1 of the stream.
    as_int = int.from_bytes(data, "little")
    assert [(as_int >> (i * bits)) & (2**bits - 1) for i in range(count)] == codes.tolist()
    assert_array_equal(coding.unpack_codes(data, count, bits), codes)


def test_code_unpacker_refuses():
    data = coding.pack_codes(np.array([1, 2, 3], np.uint8), 3)  # 9 bits in 2 bytes
    with pytest.raises(ValueError, match="expected 2"):
        coding.unpack_codes(data[:1], 3, 3)
    with pytest.raises(ValueError, match="expected 2"):
        coding.unpack_codes(data + b"\x00", 3, 3)
    with pytest.raises(ValueError, match="padding"):
        coding.unpack_codes(data[:1] + bytes([data[1] | 0x80]), 3, 3)


@pytest.mark.parametrize("method", coding.STREAM_METHODS)
def test_streams_round_trip_and_refuse_other_sizes(method):
    raw = np.random.default_rng(0).integers(0, 9, 5000).astype(np.uint8).tobytes()
    stored = coding.compress(raw, method)
    assert coding.decompress(stored, method, len(raw)) == raw
    for size in (len(raw) - 1, len(raw) + 1):
        with pytest.raises(ValueError):
            coding.decompress(stored, method, size)
    if method != "raw":
        with pytest.raises(ValueError, match="corrupt|exactly"):
            coding.decompress(stored[: len(stored) // 2], method, len(raw))
        with pytest.raises(ValueError, match="cannot hold"):
            coding.decompress(stored[:10], method, 10 * coding.MAX_INFLATION + 5000)
        with pytest.raises(ValueError):
            coding.decompress(stored + b"\x00\x01", method, len(raw))


def test_varints_and_the_reader():
    for value in (0, 1, 127, 128, 300, 2**31 - 1, 2**62):
        reader = coding.Reader(coding.varint(value) + b"!")
        assert reader.varint("v", 2**63) == value and reader.remaining() == 1
    with pytest.raises(ValueError, match="above its limit 10"):
        coding.Reader(coding.varint(11)).varint("v", 10)
    with pytest.raises(ValueError, match="superfluous zero"):
        coding.Reader(b"\x81\x00").varint("v", 100)
    with pytest.raises(ValueError, match="longer than 9 bytes"):
        coding.Reader(b"\xff" * 12).varint("v", 2**64)
    with pytest.raises(ValueError, match="needs 1 bytes, 0 remain"):
        coding.Reader(b"\x80").varint("v", 100)
    with pytest.raises(ValueError, match="not ASCII"):
        coding.Reader(b"\x02\xc3\xa9").string("name")
    with pytest.raises(ValueError, match="varint is non-negative"):
        coding.varint(-1)
