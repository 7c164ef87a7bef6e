"""Description lengths: exact known answers, independent recomputation, and the codes'
properties (bits=None never worse than 32, bits back, prequential)."""

import copy
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate

import reference as ref
import sparseprune as spp
from helpers import random_model, random_problem
from sparseprune import mdl

LN2 = math.log(2.0)


def pruned_model(sizes, sparsity, dtype="float64", seed=0):
    model = random_model(sizes, dtype, seed)
    spp.prune.magnitude(model, sparsity)
    return model


def nll_bits(model, X, y):
    """sum -log2 p(y | x) from the model's weights, in plain NumPy float64."""
    weights = [layer.weight.astype(np.float64) for layer in model.layers]
    biases = [layer.bias.astype(np.float64) for layer in model.layers]
    logp = ref.log_softmax(ref.forward(weights, biases, np.asarray(X, np.float64))[-1])
    return float(-logp[np.arange(len(y)), y].sum() / LN2)


# -- log2 C(n, k) --------------------------------------------------------------------------

def test_log2_binomial_known_value():
    assert mdl.log2_binomial(4, 2) == pytest.approx(2.585, abs=5e-4)
    assert mdl.log2_binomial(4, 2) == pytest.approx(math.log2(6), rel=1e-14)
    assert mdl.log2_binomial(10, 0) == 0.0
    assert mdl.log2_binomial(10, 10) == 0.0
    assert mdl.log2_binomial(0, 0) == 0.0


@pytest.mark.parametrize("n", [1, 2, 7, 30, 100, 400])
def test_log2_binomial_against_math_comb(n):
    for k in range(n + 1):
        assert mdl.log2_binomial(n, k) == pytest.approx(math.log2(math.comb(n, k)),
                                                        rel=1e-12, abs=1e-9)


def test_log2_binomial_large_n():
    # 2^24 weights, 1% kept: exact through math.comb's big integer, and near n H(p).
    n, k = 1 << 24, 167772
    exact = math.log2(math.comb(n, k))
    assert mdl.log2_binomial(n, k) == pytest.approx(exact, rel=1e-12)
    p = k / n
    assert exact == pytest.approx(-n * (p * math.log2(p) + (1 - p) * math.log2(1 - p)),
                                  rel=1e-3)


@pytest.mark.parametrize("n, k, error, match", [
    (10, 11, ValueError, r"k must be in \[0, n=10\], got 11"),
    (-1, 0, ValueError, "n must be >= 0, got -1"), (5, -1, ValueError, "k must be >= 0, got -1"),
    (5.0, 2, TypeError, "n must be an integer"),
])
def test_log2_binomial_bad_input(n, k, error, match):
    with pytest.raises(error, match=match):
        mdl.log2_binomial(n, k)


# -- Gaussian KL ---------------------------------------------------------------------------

def test_gaussian_kl_known_values():
    assert mdl.gaussian_kl_bits(1.0, 1.0, 0.0, 1.0) == pytest.approx(0.72135, abs=5e-6)
    assert mdl.gaussian_kl_bits(1.0, 1.0, 0.0, 1.0) == pytest.approx(0.5 / LN2, rel=1e-15)
    assert mdl.gaussian_kl_bits(0.3, 2.0, 0.3, 2.0) == 0.0
    # Same mean, std halved: ln 2 - 3/8 nats.
    assert mdl.gaussian_kl_bits(0.0, 1.0, 0.0, 2.0) == pytest.approx(
        (LN2 + 1 / 8 - 0.5) / LN2, rel=1e-14)


@given(st.floats(-3, 3), st.floats(0.05, 3), st.floats(-3, 3), st.floats(0.05, 3))
def test_gaussian_kl_against_quadrature(mq, sq, mp, sp):
    def integrand(x):
        log_q = -0.5 * ((x - mq) / sq) ** 2 - math.log(sq)
        log_p = -0.5 * ((x - mp) / sp) ** 2 - math.log(sp)
        return math.exp(log_q) / math.sqrt(2 * math.pi) * (log_q - log_p) / LN2

    expected, _ = integrate.quad(integrand, mq - 12 * sq, mq + 12 * sq, limit=200,
                                 epsabs=1e-11, epsrel=1e-10)
    assert mdl.gaussian_kl_bits(mq, sq, mp, sp) == pytest.approx(expected, rel=1e-6,
                                                                 abs=1e-8)


# -- the quantizer -------------------------------------------------------------------------

@given(st.integers(1, 24), st.integers(1, 200), st.floats(1e-6, 1e6), st.integers(0, 2**32 - 1))
def test_quantizer_round_trip_within_half_a_step(bits, n, scale, seed):
    values = np.random.default_rng(seed).normal(0.1 * scale, scale, n)
    codes, offset, step = mdl.quantize(values, bits)
    assert offset.dtype == np.float32 and step.dtype == np.float32
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    error = np.abs(mdl.dequantize(codes, offset, step) - values)
    # Half a step, plus float64 rounding of offset + step * code.
    assert error.max() <= 0.5 * float(step) + 1e-12 * (abs(offset) + np.abs(values).max())


def test_quantizer_edge_cases():
    codes, offset, step = mdl.quantize(np.full(5, 0.25), 4)
    assert step == 0 and np.all(mdl.dequantize(codes, offset, step) == 0.25)
    codes, offset, step = mdl.quantize([-1.0, 1.0], 1)
    assert list(codes) == [0, 1]
    assert mdl.dequantize(codes, offset, step).tolist() == [-1.0, 1.0]
    assert mdl.quantize([], 8)[0].size == 0
    with pytest.raises(ValueError, match="finite"):
        mdl.quantize([0.0, np.nan], 8)
    with pytest.raises(ValueError, match="bits"):
        mdl.quantize([0.0], 32)


# -- the two-part code ---------------------------------------------------------------------

@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.93])
def test_model_bits_at_32_recomputed_independently(sparsity):
    sizes = [7, 13, 6, 3]
    model = pruned_model(sizes, sparsity, dtype="float32")
    X, y = random_problem(40, 7, 3, seed=1)
    code = spp.mdl.description_length(model, X, y, bits=32)
    mask_bits = sum(math.log2(math.comb(layer.n_weights, layer.n_active))
                    for layer in model.layers)
    values = sum(layer.n_active + layer.out_features for layer in model.layers)
    # Header: the number of widths, the widths, the kept count per layer, b.
    header = 32 * (1 + len(sizes) + (len(sizes) - 1) + 1)
    assert code.header_bits == header
    assert code.model_bits == pytest.approx(mask_bits + 32 * values + header, rel=1e-12)
    assert code.total_bits == pytest.approx(code.model_bits + code.data_bits, rel=1e-15)
    assert code.bits == 32 and code.candidates == {}
    assert all(layer.quantizer_bits == 0 for layer in code.layers)
    if sparsity == 0:
        assert all(layer.mask_bits == 0 for layer in code.layers)


def test_uniform_predictor_costs_n_log2_k():
    model = spp.MLP([5, 8, 7], dtype="float64", seed=0)
    model.layers[-1].weight = np.zeros((8, 7))
    X, y = random_problem(33, 5, 7, seed=2)
    for bits in (32, 8, 3, None):
        code = spp.mdl.description_length(model, X, y, bits=bits)
        assert code.data_bits == pytest.approx(33 * math.log2(7), rel=1e-13)
        assert code.uniform_bits == 33 * math.log2(7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_data_bits_equal_minus_log2_predict_proba(dtype):
    model = pruned_model([6, 10, 4], 0.6, dtype=dtype, seed=3)
    X, y = random_problem(50, 6, 4, seed=3)
    proba = model.predict_proba(X).astype(np.float64)
    expected = -np.log2(proba[np.arange(len(y)), y]).sum()
    rel = 1e-5 if dtype == "float32" else 1e-12
    # The misfit of the weights as they are: bits-back's reference point, and the
    # two-part code at 32 bits when the model is float32 (float64 is rounded to it).
    at_mean = spp.mdl.bits_back(model, X, y, sigma=0.1, draws=1).data_bits_at_mean
    assert at_mean == pytest.approx(expected, rel=rel)
    if dtype == "float32":
        code = spp.mdl.description_length(model, X, y, bits=32)
        assert code.data_bits == pytest.approx(expected, rel=rel)


def test_quantized_code_is_the_model_as_sent():
    model = pruned_model([6, 10, 4], 0.5, seed=4)
    X, y = random_problem(30, 6, 4, seed=4)
    code = spp.mdl.description_length(model, X, y, bits=3)
    coded = copy.deepcopy(model)
    for layer, layer_code in zip(coded.layers, code.layers):
        values = np.concatenate([layer.weight[layer.mask], layer.bias])
        q = np.rint((values - layer_code.offset) / layer_code.step)
        assert q.min() >= 0 and q.max() <= 7
        sent = layer_code.offset + layer_code.step * q
        weight = np.zeros(layer.shape)
        weight[layer.mask] = sent[: layer.n_active]
        layer.weight, layer.bias = weight, sent[layer.n_active :]
        assert layer_code.value_bits == 3 * values.size
        assert layer_code.quantizer_bits == 64
    assert code.data_bits == pytest.approx(nll_bits(coded, X, y), rel=1e-10)
    header = 32 * (1 + 3 + 2 + 1)
    mask_bits = sum(mdl.log2_binomial(layer.n_weights, layer.n_active)
                    for layer in model.layers)
    n_values = sum(layer.n_active + layer.out_features for layer in model.layers)
    assert code.model_bits == pytest.approx(header + mask_bits + 3 * n_values + 2 * 64)


def test_float64_model_at_32_bits_is_coded_as_float32():
    model = pruned_model([6, 10, 4], 0.5, dtype="float64", seed=5)
    X, y = random_problem(30, 6, 4, seed=5)
    rounded = copy.deepcopy(model)
    for layer in rounded.layers:
        layer.weight = layer.weight.astype(np.float32)
        layer.bias = layer.bias.astype(np.float32)
    code = spp.mdl.description_length(model, X, y, bits=32)
    assert code.data_bits == pytest.approx(nll_bits(rounded, X, y), rel=1e-12)


def test_choosing_bits_is_never_worse_than_32(digits):
    X, y = digits[0][:300], digits[1][:300]
    model = spp.MLP([64, 32, 10], seed=0)
    model.fit(X, y, epochs=5, lr=0.05, batch_size=32, progress=False)
    for sparsity in (0.0, 0.8):
        spp.prune.magnitude(model, sparsity)
        chosen = spp.mdl.description_length(model, X, y)
        at_32 = spp.mdl.description_length(model, X, y, bits=32)
        assert chosen.total_bits <= at_32.total_bits
        assert set(chosen.candidates) == set(range(2, 17)) | {32}
        assert chosen.total_bits == min(chosen.candidates.values())
        assert chosen.candidates[chosen.bits] == chosen.total_bits
        assert chosen.candidates[32] == pytest.approx(at_32.total_bits, rel=1e-12)
        fixed = spp.mdl.description_length(model, X, y, bits=chosen.bits)
        assert fixed.total_bits == pytest.approx(chosen.total_bits, rel=1e-12)


@pytest.mark.parametrize("bits", [32, 6])
def test_sparse_model_codes_like_the_masked_one(bits):
    model = pruned_model([9, 12, 5], 0.7, dtype="float32", seed=6)
    X, y = random_problem(64, 9, 5, seed=6)
    dense = spp.mdl.description_length(model, X, y, bits=bits)
    sparse = spp.mdl.description_length(model.to_sparse(), X, y, bits=bits)
    assert sparse.model_bits == dense.model_bits
    assert sparse.data_bits == pytest.approx(dense.data_bits, rel=1e-5)


def test_as_dict_is_json_ready():
    import json

    model = pruned_model([4, 6, 3], 0.5, seed=7)
    X, y = random_problem(20, 4, 3, seed=7)
    record = spp.mdl.description_length(model, X, y).as_dict()
    again = json.loads(json.dumps(record, allow_nan=False))
    assert again["total_bits"] == pytest.approx(again["model_bits"] + again["data_bits"])
    assert len(again["layers"]) == 2 and str(again["bits"]) in again["candidates"]


@pytest.mark.parametrize("bits, error", [(0, ValueError), (33, ValueError), (8.0, TypeError),
                                         (True, TypeError), ("8", TypeError)])
def test_description_length_bad_bits(bits, error):
    model = spp.MLP([3, 2], seed=0)
    with pytest.raises(error, match="bits"):
        spp.mdl.description_length(model, np.zeros((2, 3)), [0, 1], bits=bits)


def test_description_length_bad_model_and_data():
    with pytest.raises(TypeError, match="model"):
        spp.mdl.description_length("model", np.zeros((2, 3)), [0, 1])
    model = spp.MLP([3, 2], seed=0)
    with pytest.raises(ValueError, match="X"):
        spp.mdl.description_length(model, np.zeros((2, 4)), [0, 1])
    with pytest.raises(ValueError, match="y"):
        spp.mdl.description_length(model, np.zeros((2, 3)), [0, 2])


# -- MDL along a pruning path --------------------------------------------------------------

def test_iterative_records_carry_description_length_and_best_picks_the_shortest(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 16, 4], seed=0)
    model.fit(X, y, epochs=20, lr=0.1, progress=False)
    records = spp.prune.iterative(model, X, y, target_sparsity=0.95, steps=4,
                                  finetune_epochs=2, lr=0.05, progress=False, mdl_bits=None)
    totals = [r.total_bits for r in records]
    for record in records:
        code = record.description_length
        assert isinstance(code, mdl.DescriptionLength) and code.n_samples == len(y)
        assert record.as_dict()["description_length"]["total_bits"] == code.total_bits
    # The last step is the model as it stands: its code is recomputable.
    again = spp.mdl.description_length(model, X, y)
    assert again.total_bits == pytest.approx(totals[-1], rel=1e-12)
    best = spp.mdl.best(records)
    assert best.total_bits == min(totals)
    assert best is records[int(np.argmin(totals))]
    assert spp.mdl.best([r.description_length for r in records]) is best.description_length


def test_iterative_mdl_bits_fixed(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 16, 4], seed=0)
    records = spp.prune.iterative(model, X, y, 0.5, steps=2, finetune_epochs=0,
                                  progress=False, mdl_bits=7)
    assert [r.description_length.bits for r in records] == [7, 7]
    with pytest.raises(ValueError, match="bits"):
        spp.prune.iterative(model, X, y, 0.6, steps=1, progress=False, mdl_bits=40)


def test_best_bad_input():
    with pytest.raises(ValueError, match="empty"):
        spp.mdl.best([])
    with pytest.raises(TypeError, match="DescriptionLength"):
        spp.mdl.best([object()])


# -- bits back -----------------------------------------------------------------------------

def test_bits_back_kl_with_the_optimal_prior():
    model = pruned_model([5, 7, 3], 0.4, seed=8)
    X, y = random_problem(25, 5, 3, seed=8)
    sigma = 0.05
    code = spp.mdl.bits_back(model, X, y, sigma=sigma, draws=4, seed=1)
    for layer, layer_code in zip(model.layers, code.layers):
        means = np.concatenate([layer.weight[layer.mask], layer.bias])
        mu = means.mean()
        s = math.sqrt(np.mean(sigma**2 + (means - mu) ** 2))
        assert layer_code.prior_mean == pytest.approx(mu, rel=1e-12, abs=1e-15)
        assert layer_code.prior_std == pytest.approx(s, rel=1e-12)
        def kl(m, v, means=means):
            return float(np.sum(mdl.gaussian_kl_bits(means, sigma, m, v)))

        assert layer_code.kl_bits == pytest.approx(kl(mu, s), rel=1e-12)
        # The closed form is the optimum: moving the prior only costs more.
        for dm, ds in ((0.01, 0), (-0.01, 0), (0, 1.05), (0, 0.95)):
            assert kl(mu + dm, s * (ds or 1)) > layer_code.kl_bits
        assert layer_code.mask_bits == mdl.log2_binomial(layer.n_weights, layer.n_active)
    header = 32 * (1 + 3 + 2)
    assert code.model_bits == pytest.approx(
        header + sum(c.mask_bits + c.kl_bits + 64 for c in code.layers), rel=1e-12)
    assert code.total_bits == pytest.approx(code.model_bits + code.data_bits)


def test_bits_back_data_cost_is_the_expected_misfit():
    model = pruned_model([5, 7, 3], 0.4, seed=9)
    X, y = random_problem(25, 5, 3, seed=9)
    # A negligible sigma recovers the point misfit; the estimate is seeded.
    tiny = spp.mdl.bits_back(model, X, y, sigma=1e-9, draws=3)
    assert tiny.data_bits == pytest.approx(nll_bits(model, X, y), rel=1e-6)
    assert tiny.data_bits_at_mean == pytest.approx(nll_bits(model, X, y), rel=1e-12)
    a = spp.mdl.bits_back(model, X, y, sigma=0.3, draws=8, seed=3)
    b = spp.mdl.bits_back(model, X, y, sigma=0.3, draws=8, seed=3)
    assert a.data_bits == b.data_bits and a.data_bits_sem > 0
    # The draws by hand: N(w, sigma^2) on every kept weight and bias, pruned ones stay 0.
    rng = np.random.default_rng(3)
    draws = []
    for _ in range(8):
        noisy = copy.deepcopy(model)
        for layer in noisy.layers:
            weight_t = layer.weight.T.copy()
            mask_t = layer.mask.T
            weight_t[mask_t] += 0.3 * rng.standard_normal(int(mask_t.sum()))
            bias = layer.bias + 0.3 * rng.standard_normal(layer.out_features)
            layer.weight, layer.bias = weight_t.T, bias
        draws.append(nll_bits(noisy, X, y))
    assert a.data_bits == pytest.approx(np.mean(draws), rel=1e-10)
    # Wider posteriors cost fewer model bits.
    assert a.kl_bits < tiny.kl_bits


def test_bits_back_sigma_per_layer_and_per_weight():
    model = pruned_model([4, 6, 3], 0.5, seed=10)
    X, y = random_problem(20, 4, 3, seed=10)
    scalar = spp.mdl.bits_back(model, X, y, sigma=0.1, draws=2)
    per_layer = spp.mdl.bits_back(model, X, y, sigma=[0.1, 0.1], draws=2)
    per_weight = spp.mdl.bits_back(
        model, X, y, sigma=[(np.full((4, 6), 0.1), np.full(6, 0.1)), (0.1, 0.1)], draws=2)
    assert scalar.total_bits == per_layer.total_bits == per_weight.total_bits
    sparse = spp.mdl.bits_back(model.to_sparse(), X, y, sigma=[(np.full((4, 6), 0.1), 0.1),
                                                               0.1], draws=2)
    assert sparse.model_bits == pytest.approx(scalar.model_bits, rel=1e-12)
    assert sparse.data_bits == pytest.approx(scalar.data_bits, rel=1e-10)
    # One weight given a wider posterior: only its KL term changes.
    w_sigma = np.full((4, 6), 0.1)
    w_sigma[np.argwhere(model.layers[0].mask)[0][0], np.argwhere(model.layers[0].mask)[0][1]] = 1
    wide = spp.mdl.bits_back(model, X, y, sigma=[(w_sigma, 0.1), 0.1], draws=2)
    assert wide.layers[1].kl_bits == scalar.layers[1].kl_bits
    assert wide.layers[0].kl_bits != scalar.layers[0].kl_bits


@pytest.mark.parametrize("sigma, match", [
    (0.0, "sigma"), (-1.0, "sigma"), (float("nan"), "sigma"), ([0.1], "one entry per layer"),
    ([0.1, (0.1, 0.1, 0.1)], r"sigma\[1\]"), ([np.full((3, 3), 0.1), 0.1], r"sigma\[0\]"),
    ([0.1, -0.1], r"sigma\[1\]"),
])
def test_bits_back_bad_sigma(sigma, match):
    model = spp.MLP([4, 6, 3], seed=0)
    with pytest.raises(ValueError, match=match):
        spp.mdl.bits_back(model, np.zeros((2, 4)), [0, 1], sigma=sigma)


# -- prequential ---------------------------------------------------------------------------

def test_block_ends():
    assert mdl.block_ends(1000, 4) == (125, 250, 500, 1000)
    assert mdl.block_ends(10, [3, 10]) == (3, 10)
    for blocks, match in (([3, 3, 10], "increasing"), ([3, 9], "end at"), (1, "blocks"),
                          ([0, 10], r"blocks\[0\]")):
        with pytest.raises(ValueError, match=match):
            mdl.block_ends(10, blocks)


def test_prequential_with_a_uniform_model_is_the_uniform_code():
    def uniform(X, y):
        model = spp.MLP([5, 4], dtype="float64", seed=0)
        model.layers[0].weight = np.zeros((5, 4))
        return model

    X, y = random_problem(100, 5, 4, seed=11)
    code = spp.mdl.prequential(uniform, X, y, blocks=4)
    assert code.ends == (12, 25, 50, 100)
    assert code.total_bits == pytest.approx(100 * 2.0, rel=1e-13)
    assert code.uniform_bits == 200.0 and code.compression == pytest.approx(1.0)


def test_prequential_codes_each_block_with_the_model_of_the_past():
    X, y = random_problem(60, 5, 3, seed=12)
    seen = []

    def make(Xp, yp):
        seen.append(len(yp))
        model = spp.MLP([5, 6, 3], dtype="float64", seed=len(yp))
        model.fit(Xp, yp, epochs=3, lr=0.1, progress=False, seed=0)
        return model

    code = spp.mdl.prequential(make, X, y, blocks=[10, 30, 60])
    assert seen == [10, 30]
    assert code.block_bits[0] == pytest.approx(10 * math.log2(3))
    for i, (start, end) in enumerate([(10, 30), (30, 60)]):
        model = make(X[:start], y[:start])
        assert code.block_bits[i + 1] == pytest.approx(nll_bits(model, X[start:end],
                                                                y[start:end]), rel=1e-10)
    assert code.as_dict()["total_bits"] == pytest.approx(sum(code.block_bits))


def test_prequential_bad_input():
    X, y = random_problem(20, 3, 3, seed=13)
    with pytest.raises(TypeError, match="make_model"):
        spp.mdl.prequential(None, X, y)
    with pytest.raises(TypeError, match="model"):
        spp.mdl.prequential(lambda X, y: "model", X, y, blocks=2)
    with pytest.raises(ValueError, match="classes"):
        spp.mdl.prequential(lambda X, y: spp.MLP([3, 5]), X, y, blocks=2)
    with pytest.raises(ValueError, match="y"):
        spp.mdl.prequential(lambda X, y: spp.MLP([3, 3]), X, y[:-1], blocks=2)


def test_edge_cases_found_in_review():
    model = pruned_model([4, 6, 3], 0.5, seed=11)
    X, y = random_problem(20, 4, 3, seed=11)
    # One draw has no standard error, and the record stays JSON-ready.
    import json

    one = spp.mdl.bits_back(model, X, y, sigma=0.1, draws=1)
    assert one.data_bits_sem is None
    json.dumps(one.as_dict(), allow_nan=False)
    with pytest.raises(TypeError, match="seed"):
        spp.mdl.bits_back(model, X, y, sigma=0.1, seed="0")
    # Asking for more doubling blocks than the samples allow is an error, not fewer blocks.
    with pytest.raises(ValueError, match="cannot make 8 doubling blocks"):
        mdl.block_ends(10, 8)
    with pytest.raises(ValueError, match="float32's range"):
        mdl.quantize([0.0, 1e300], 8)
    # iterative() names its own argument.
    with pytest.raises(ValueError, match="mdl_bits must be in 1..32"):
        spp.prune.iterative(model, X, y, 0.6, steps=1, progress=False, mdl_bits=40)
    with pytest.raises(ValueError, match="mdl_bits must be >= 1"):
        spp.prune.iterative(model, X, y, 0.6, steps=1, progress=False, mdl_bits=0)
