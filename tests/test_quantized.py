"""Quantized sparse layers and models: the quantizer is the one the two-part code counts,
the uint8 kernels agree with NumPy, files round-trip bit for bit, and bad input gets a
clear error."""

import os
import struct
import zlib

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import reference
import sparseprune as spp
from helpers import KERNEL_PATHS, kernel_path, random_model, random_problem, tol
from sparseprune import compact, ops, quantized_ops
from sparseprune.kernels.dense import IDENTITY, RELU, TANH
from strategies import batches, csr_arrays, csr_cases, scipy_weights, seeds

BITS = st.integers(2, 8)


def original_values(layer, dense, bias):
    """The float64 values a quantized layer was made from, in its order: kept weights
    (CSR of W.T) then biases."""
    inputs, outputs = layer.kept_positions()
    return np.concatenate([dense[inputs, outputs], np.asarray(bias, np.float64)])


# -- the quantizer ------------------------------------------------------------------------


@given(scipy_weights(), BITS, seeds)
def test_values_round_trip_within_half_a_step(case, bits, seed):
    W, dense, nnz = case
    rng = np.random.default_rng(seed)
    bias = rng.uniform(-1, 1, W.shape[1]).astype(W.dtype)
    layer = spp.QuantizedLinear(W, bias, bits=bits)
    values = original_values(layer, dense, bias)
    codes = np.concatenate([layer.codes, layer.bias_codes])

    assert layer.nnz == nnz and layer.dtype == W.dtype and layer.bits == bits
    assert layer.codes.dtype == np.uint8 and layer.bias_codes.dtype == np.uint8
    assert type(layer.step) is np.float32 and type(layer.offset) is np.float32
    assert codes.size == 0 or int(codes.max()) < 2**bits
    exact = reference.dequantize(codes, layer.offset, layer.step)
    assert np.all(np.abs(exact - values) <= float(layer.step) / 2 * (1 + 1e-9))
    # The grid covers the values: from offset <= min to offset + top * step >= max.
    if values.size:
        assert float(layer.offset) <= values.min()
        assert float(layer.offset) + (2**bits - 1) * float(layer.step) >= values.max()
    # Served values: the exact ones rounded once to the dtype.
    assert_array_equal(layer.kept_values(), exact[:nnz].astype(W.dtype))
    assert_array_equal(layer.bias, exact[nnz:].astype(W.dtype))
    assert_array_equal(layer.table, reference.dequantize(np.arange(2**bits), layer.offset,
                                                         layer.step).astype(W.dtype))
    # The quantizer the two-part code counts, over kept weights and biases together.
    q, offset, step = spp.mdl.quantize(values, bits)
    assert_array_equal(codes, q)
    assert offset == layer.offset and step == layer.step


@given(scipy_weights(), BITS, BITS)
def test_quantizing_again_at_the_same_bits_changes_nothing(case, bits, other):
    W, _, _ = case
    layer = spp.QuantizedLinear(W, bits=bits)
    again = spp.QuantizedLinear.from_layer(layer, bits)
    assert_array_equal(again.codes, layer.codes)
    assert_array_equal(again.bias_codes, layer.bias_codes)
    assert (again.step, again.offset) == (layer.step, layer.offset)
    coarser = spp.QuantizedLinear.from_layer(layer, other)
    assert coarser.bits == other and coarser.nnz == layer.nnz


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits", [2, 5, 8])
def test_the_served_model_is_the_one_the_two_part_code_describes(dtype, bits):
    model = random_model([9, 12, 7, 4], dtype, seed=3)
    spp.prune.magnitude(model, 0.6)
    X, y = random_problem(40, 9, 4, 3)
    smodel = model.to_sparse(backend="sparse")
    code = spp.mdl.description_length(smodel, X, y, bits=bits)
    served = smodel.quantize(bits)
    assert served.bits == bits and served.dtype == dtype
    for layer_code, layer in zip(code.layers, served.layers):
        assert (layer_code.step, layer_code.offset) == (float(layer.step), float(layer.offset))
    # Made from the masked model directly: the same codes.
    direct = model.to_sparse(bits=bits)
    for a, b in zip(direct.layers, served.layers):
        assert_array_equal(a.codes, b.codes)
        assert a.step == b.step
    # Coding the served model at its bits sends the same model and, to rounding, the
    # same labels (the two-part code evaluates dequantized values with the float
    # kernels, the served model dequantizes in its own).
    again = spp.mdl.description_length(served, X, y, bits=bits)
    assert again.model_bits == code.model_bits
    assert again.data_bits == pytest.approx(code.data_bits, rel=1e-3, abs=1e-3)
    described = spp.SparseMLP([layer.with_values(layer.kept_values(), layer.bias)
                               for layer in served.layers])
    assert all(type(layer) is spp.SparseLinear for layer in described.layers)
    assert_allclose(served.predict_proba(X), described.predict_proba(X),
                    **tol(dtype, scale=10))


# -- the kernels --------------------------------------------------------------------------


@given(csr_cases(), batches, st.booleans(), BITS, seeds, st.sampled_from(KERNEL_PATHS),
       st.sampled_from([np.int32, np.uint16]), st.booleans())
def test_qcsr_forward_against_numpy(case, batch, relu, bits, seed, path, index, flat):
    """out = dequantized(A) @ x + bias on random patterns (empty rows and columns, zero
    nonzeros, full density), every batch path, both index types and dtypes."""
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_rows, n_cols = A.shape
    indptr, indices, _ = csr_arrays(A)
    codes = rng.integers(0, 2**bits, indices.size).astype(np.uint8)
    offset = np.float32(rng.uniform(-2, 0))
    step = np.float32(0 if flat else rng.uniform(0, 4) / 2**bits)
    table = quantized_ops.dequantization_table(bits, offset, step, dtype)
    bias = rng.uniform(-2, 2, n_rows).astype(dtype)
    x = rng.uniform(-2, 2, (n_cols, batch)).astype(dtype)
    out = np.full((n_rows, batch), np.nan, dtype)

    with kernel_path(path):
        result = quantized_ops.qcsr_forward(
            indptr, indices.astype(index), codes, table, dtype.type(step), dtype.type(offset),
            ops.row_chunks(indptr), bias, relu, x, out)

    assert result is out
    V = sp.csr_array((reference.dequantize(codes, offset, step), indices, indptr),
                     shape=A.shape)
    expected = V @ x.astype(np.float64) + bias[:, None].astype(np.float64)
    if relu:
        expected = np.maximum(expected, 0.0)
    scale = (abs(V) @ np.abs(x.astype(np.float64))).max(initial=0.0) + 2.0
    assert_allclose(out, expected, **tol(dtype, scale=scale))
    empty = np.diff(indptr) == 0  # a row without weights is its bias exactly
    assert_array_equal(out[empty], expected[empty].astype(dtype))


@given(csr_cases(), batches, BITS, seeds, st.sampled_from(KERNEL_PATHS),
       st.sampled_from(["C", "F", "strided"]))
def test_qcsr_forward_sm_against_numpy(case, batch, bits, seed, path, layout):
    """The sample-major entry: X (batch, cols) in any layout, out (batch, rows), on every
    path (batch 1, transposed rows, tiles packed from X's rows), with the finiteness
    flag; against the forward of the transposed X."""
    A, dtype = case
    rng = np.random.default_rng(seed)
    n_rows, n_cols = A.shape
    indptr, indices, _ = csr_arrays(A)
    codes = rng.integers(0, 2**bits, indices.size).astype(np.uint8)
    offset, step = np.float32(rng.uniform(-2, 0)), np.float32(rng.uniform(0, 4) / 2**bits)
    table = quantized_ops.dequantization_table(bits, offset, step, dtype)
    bias = rng.uniform(-2, 2, n_rows).astype(dtype)
    X = rng.uniform(-2, 2, (2 * batch, n_cols)).astype(dtype)
    X = {"C": X[:batch], "F": np.asfortranarray(X[:batch]), "strided": X[::2]}[layout]
    args = (indptr, indices.astype(quantized_ops.index_dtype(n_cols)), codes, table, dtype.type(step),
            dtype.type(offset), ops.row_chunks(indptr), bias, False)
    out = np.full((batch, n_rows), np.nan, dtype)
    expected = np.full((n_rows, batch), np.nan, dtype)

    with kernel_path(path):
        assert quantized_ops.qcsr_forward_sm(*args, X, out) is True
        quantized_ops.qcsr_forward(*args, np.ascontiguousarray(X.T), expected)
        assert_allclose(out, expected.T, **tol(dtype, scale=n_cols + 2.0))
        if n_cols:
            bad = X.copy(order="K")
            bad[batch // 2, n_cols // 2] = np.nan
            assert quantized_ops.qcsr_forward_sm(*args, bad, out) is False


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_batch_one_is_as_precise_as_a_batch(path):
    """Small weights beside a few large ones, positive inputs: the quantizer's offset is
    far from the values, and batch 1 (two sums per row) must not lose what the table
    path (batch 2) keeps. With the raw codes float32 lost 6e-5 of |X||W| here."""
    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.01, (2000, 300))
    W[rng.random(W.shape) > 0.3] = 0
    W[0, :3] = [3, -3, 2.5]
    layer = spp.QuantizedLinear(sp.csc_array(W.astype(np.float32)), bits=8)
    x = rng.uniform(0, 1, (2000, 2)).astype(np.float32)
    x[:, 1] = x[:, 0]
    one, two = (np.empty((300, b), np.float32) for b in (1, 2))
    with kernel_path(path):
        layer.forward_fm(np.ascontiguousarray(x[:, :1]), one, IDENTITY)
        layer.forward_fm(x, two, IDENTITY)
    exact = x[:, 0].astype(np.float64) @ layer.to_dense() + layer.bias
    scale = np.abs(x[:, 0]) @ np.abs(layer.to_dense())
    assert np.max(np.abs(one[:, 0] - exact) / scale.max()) < 2e-6
    assert np.max(np.abs(two[:, 0] - exact) / scale.max()) < 2e-6


@pytest.mark.parametrize("batch", [1, 5, 300])
def test_forward_names_non_finite_input(batch):
    """NaN anywhere in X: a ValueError that names X, on each sample-major path."""
    rng = np.random.default_rng(0)
    W = sp.random(600, 300, density=0.5, random_state=rng, format="csc", dtype=np.float32)
    layer = spp.QuantizedLinear(W, bits=8)
    X = rng.standard_normal((batch, 600)).astype(np.float32)
    X[batch - 1, 599] = np.nan
    with pytest.raises(ValueError, match="X"):
        layer.forward(X)


@given(scipy_weights(), batches, BITS, st.sampled_from(["C", "F", "strided"]),
       st.sampled_from([IDENTITY, RELU, TANH]), seeds)
def test_layer_forward_on_any_layout(case, batch, bits, layout, act, seed):
    """``forward`` takes non-contiguous X; ``forward_fm`` applies any activation."""
    W, _, _ = case
    rng = np.random.default_rng(seed)
    n_in, n_out = W.shape
    layer = spp.QuantizedLinear(W, rng.uniform(-1, 1, n_out), bits=bits)
    X = rng.uniform(-2, 2, (2 * batch, n_in)).astype(W.dtype)
    X = {"C": X[:batch], "F": np.asfortranarray(X[:batch]), "strided": X[::2]}[layout]
    indptr, indices, _ = layer.csr_arrays()
    dense = reference.csr_to_dense(layer.shape, indptr, indices,
                                   reference.dequantize(layer.codes, layer.offset, layer.step))
    bias = reference.dequantize(layer.bias_codes, layer.offset, layer.step)
    z = X.astype(np.float64) @ dense + bias
    scale = (np.abs(X.astype(np.float64)) @ np.abs(dense)).max(initial=0.0) + 1.0

    Y = layer.forward(X)
    assert Y.flags.c_contiguous and Y.shape == (batch, n_out) and Y.dtype == W.dtype
    assert_allclose(Y, z, **tol(W.dtype, scale=scale))
    xt = np.ascontiguousarray(X.T)
    out = np.full((n_out, batch), np.nan, W.dtype)
    layer.forward_fm(xt, out, act)
    expected = {IDENTITY: z, RELU: np.maximum(z, 0), TANH: np.tanh(z)}[act]
    assert_allclose(out.T, expected, **tol(W.dtype, scale=scale))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_quantized_model_predicts_as_its_dequantized_weights(dtype):
    model = random_model([20, 16, 12, 5], dtype, seed=1)
    spp.prune.magnitude(model, 0.8)
    served = model.to_sparse(bits=4)
    X, y = random_problem(70, 20, 5, 1)
    weights, biases = [], []
    for layer in served.layers:
        indptr, indices, _ = layer.csr_arrays()
        weights.append(reference.csr_to_dense(layer.shape, indptr, indices, reference.dequantize(
            layer.codes, layer.offset, layer.step)))
        biases.append(reference.dequantize(layer.bias_codes, layer.offset, layer.step))
    for batch in (1, 7, 70):
        assert_allclose(served.predict_proba(X[:batch]),
                        reference.predict_proba(weights, biases, X[:batch].astype(dtype)),
                        **tol(dtype, scale=10))
    assert served.count_parameters() == model.count_parameters()
    assert served.sparsity == model.sparsity
    # Nothing to measure: the layers always run their kernels, BLAS is never called.
    plans = served.plans()
    assert plans.pop("model") == {"blas": {1: "free", 8: "free", 128: "free"}}
    assert plans == {f"layer {i}": {} for i in range(3)}


def test_memory_narrow_indices_and_no_float_weights():
    """At most 65,536 inputs: uint16 indices; a nonzero costs 3 bytes (float32 CSR: 6)."""
    rng = np.random.default_rng(0)
    W = sp.random(300, 200, density=0.1, random_state=rng, format="csc", dtype=np.float32)
    layer = spp.QuantizedLinear(W, bits=8)
    assert layer.codes.dtype == np.uint8
    # codes and uint16 indices (3 bytes a nonzero), indptr, bias codes, table, quantizer
    expected = layer.nnz * 3 + 201 * 4 + 200 + 256 * 4 + 8
    assert layer.nbytes() == expected
    assert layer.nbytes() < 0.6 * spp.SparseLinear(W).nbytes()
    wide = spp.QuantizedLinear(sp.random(70_000, 2, density=1e-4, random_state=rng,
                                         format="csc"), bits=3)
    # More than 65,536 inputs: int32 indices, 5 bytes a nonzero (the table float64).
    assert wide.nbytes() == wide.nnz * 5 + 3 * 4 + 2 + 8 * 8 + 8


# -- the model and its files --------------------------------------------------------------


def quantized_model(dtype, sizes=(9, 12, 7, 4), sparsity=0.6, bits=5, seed=0, classes=None):
    model = random_model(list(sizes), dtype, seed)
    if classes is not None:
        model = spp.MLP(list(sizes), dtype=dtype, seed=seed, classes=classes)
    spp.prune.magnitude(model, sparsity)
    return model.to_sparse(bits=bits)


def assert_same_quantized(a, b):
    assert type(a) is spp.SparseMLP and a.sizes == b.sizes and a.dtype == b.dtype
    assert (a.activation, a.loss) == (b.activation, b.loss)
    assert (a.classes is None) == (b.classes is None)
    if a.classes is not None:
        assert_array_equal(a.classes, b.classes)
        assert a.classes.dtype == b.classes.dtype
    for x, y in zip(a.layers, b.layers):
        assert type(x) is type(y) and x.shape == y.shape and x.dtype == y.dtype
        for u, v in zip(x.csr_arrays(), y.csr_arrays()):
            assert u.dtype == v.dtype
            assert_array_equal(u, v)
        assert_array_equal(x.bias, y.bias)
        if isinstance(x, spp.QuantizedLinear):
            assert (x.bits, x.step, x.offset) == (y.bits, y.step, y.offset)
            assert_array_equal(x.codes, y.codes)
            assert_array_equal(x.bias_codes, y.bias_codes)


@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.97], ids=["dense", "pruned", "sparse"])
@pytest.mark.parametrize("bits", [2, 3, 8])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_file_round_trip_is_bit_exact(tmp_path, dtype, bits, sparsity):
    served = quantized_model(dtype, sparsity=sparsity, bits=bits)
    path = tmp_path / "model.spp"
    assert served.save(path) == str(path)
    assert path.read_bytes()[:5] == compact.MAGIC + bytes([2])
    loaded = spp.load(path)
    assert_same_quantized(loaded, served)
    X, _ = random_problem(9, 9, 4, 0)
    assert_array_equal(loaded.predict_proba(X), served.predict_proba(X))
    # Saving is deterministic: the same model, the same bytes.
    loaded.save(tmp_path / "again.spp")
    assert (tmp_path / "again.spp").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("classes", [None, ["ant", "bee", "cat", "dog"], [3, 1, 4, 5],
                                     [0.5, 1.5, 2.5, 3.5]], ids=["none", "str", "int", "float"])
def test_round_trip_keeps_the_head(tmp_path, classes):
    model = spp.MLP([6, 5, 4], seed=0, activation="tanh", classes=classes)
    spp.prune.magnitude(model, 0.5)
    served = model.to_sparse(bits=6)
    served.save(tmp_path / "m.spp")
    assert_same_quantized(spp.load(tmp_path / "m.spp"), served)


def test_float_models_in_version_2_and_mixed_layers(tmp_path):
    model = random_model([9, 12, 7, 4], np.float32, 2)
    spp.prune.magnitude(model, 0.7)
    smodel = model.to_sparse(backend="sparse")
    smodel.save(tmp_path / "v1.npz")
    smodel.save(tmp_path / "v2.spp", version=2)
    v2 = spp.load(tmp_path / "v2.spp")
    assert_same_quantized(v2, smodel)
    assert os.path.getsize(tmp_path / "v2.spp") < os.path.getsize(tmp_path / "v1.npz")
    mixed = spp.SparseMLP([smodel.layers[0], spp.QuantizedLinear.from_layer(smodel.layers[1], 4),
                           smodel.layers[2]])
    assert mixed.bits is None
    mixed.save(tmp_path / "mixed")  # a quantized layer: version 2 by default
    assert_same_quantized(spp.load(tmp_path / "mixed"), mixed)


def test_the_file_approaches_the_description_length():
    """At 8 bits the file is within 1.25x of the two-part code's model bits (the mask
    Golomb coded within a few percent of log2 C(n, k), the values at 8 bits or fewer)."""
    model = spp.MLP([64, 128, 10], seed=0)
    spp.prune.magnitude(model, 0.9)
    X, y = random_problem(50, 64, 10, 0)
    served = model.to_sparse(bits=8)
    size = len(compact.encode(np.float32, served.sizes, [
        {"indptr": l.csr_arrays()[0], "indices": l.csr_arrays()[1], "codes": l.codes,
         "bias_codes": l.bias_codes, "bits": 8, "offset": l.offset, "step": l.step}
        for l in served.layers], {"activation": "relu", "loss": "softmax", "classes": None}))
    code = spp.mdl.description_length(model, X, y, bits=8)
    assert 0.8 < 8 * size / code.model_bits < 1.25


# -- what bad input gets ------------------------------------------------------------------


@pytest.mark.parametrize("bits, error", [(1, ValueError), (9, ValueError), (0, ValueError),
                                         (32, ValueError), (2.5, TypeError), (True, TypeError),
                                         ("8", TypeError), (None, TypeError)])
def test_bits_out_of_range(bits, error):
    model = spp.MLP([4, 3], seed=0)
    smodel = model.to_sparse()
    W = sp.random(4, 3, density=0.5, random_state=0, format="csc")
    for call in (lambda: smodel.quantize(bits), lambda: spp.QuantizedLinear(W, bits=bits),
                 lambda: spp.QuantizedLinear.from_layer(smodel.layers[0], bits)):
        with pytest.raises(error, match="bits"):
            call()
    if bits is not None:
        with pytest.raises(error, match="bits"):
            model.to_sparse(bits=bits)


def test_a_model_that_is_not_sparse():
    model = spp.MLP([4, 3], seed=0)
    with pytest.raises(TypeError, match=r"to_sparse\(bits=8\)"):
        model.quantize(8)
    with pytest.raises(ValueError, match="backend='dense' cannot serve quantized"):
        model.to_sparse(backend="dense", bits=8)
    with pytest.raises(TypeError, match="MaskedLinear, SparseLinear or QuantizedLinear"):
        spp.QuantizedLinear.from_layer(np.eye(3), 8)
    with pytest.raises(TypeError, match="SparseLinear or QuantizedLinear"):
        spp.SparseMLP([model.layers[0]])


def test_quantized_values_are_read_only_and_version_1_cannot_hold_them(tmp_path):
    served = spp.MLP([4, 3], seed=0).to_sparse(bits=4)
    layer = served.layers[0]
    with pytest.raises(AttributeError):
        layer.bias = np.zeros(3)
    for view in (layer.bias, layer.codes, layer.bias_codes, layer.table):
        assert not view.flags.writeable
    with pytest.raises(ValueError, match="version 1 files hold float values"):
        served.save(tmp_path / "m.npz", version=1)
    with pytest.raises(ValueError, match="version must be one of"):
        served.save(tmp_path / "m.npz", version=3)
    assert not os.listdir(tmp_path)


def test_values_beyond_float32_cannot_be_quantized():
    W = sp.csc_array(np.array([[1e39], [-1.0]]))
    with pytest.raises(ValueError, match="float32"):
        spp.QuantizedLinear(W, bits=8)


# -- classes in the files ------------------------------------------------------------------


def _invalid_labels():
    """Three one-character labels, the first an invalid code point NumPy stores as is."""
    return np.frombuffer(np.array([0x110000, 98, 99], np.uint32).tobytes(), "<U1")


def test_classes_a_version_2_file_cannot_hold_are_refused_at_save(tmp_path):
    """The writer refuses what the reader would: the save fails, not the next load."""
    model = spp.MLP([4, 6, 3], seed=0, classes=np.array([0.5, 1.5, 2.5], np.float16))
    with pytest.raises(ValueError, match="cannot be saved in format version 2"):
        model.to_sparse(bits=8).save(tmp_path / "m.spp")
    assert not (tmp_path / "m.spp").exists()
    model.to_sparse().save(tmp_path / "m.npz")  # version 1 holds them
    assert spp.load(tmp_path / "m.npz").classes.dtype == np.float16


@pytest.mark.parametrize("version", [1, 2])
def test_labels_that_are_not_unicode_are_refused_at_load(tmp_path, version):
    path = tmp_path / "m.bin"
    spp.MLP([4, 6, 3], seed=0, classes=["a", "b", "c"]).to_sparse().save(path,
                                                                        version=version)
    raw = path.read_bytes()
    if version == 1:
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays["classes"] = _invalid_labels()
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
    else:
        body = bytearray(raw[9:])
        at = body.index(np.array(["abc"]).astype("<U1").tobytes())
        body[at : at + 4] = np.uint32(0x110000).tobytes()
        path.write_bytes(raw[:5] + struct.pack("<I", zlib.crc32(body)) + bytes(body))
    with pytest.raises(ValueError, match="not valid Unicode code points"):
        spp.load(path)
