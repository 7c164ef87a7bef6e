"""The dense Numba kernels against plain NumPy (tests/reference.py).

Kernels take feature-major arrays (features, batch); the reference is sample-major, so
expected values are transposed back.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

import reference as ref
from helpers import tol
from sparseprune.activations import ACTIVATIONS
from sparseprune.kernels.dense import (
    IDENTITY,
    RELU,
    dense_act_backward,
    dense_act_into,
    dense_bias_act,
    dense_mask_grad,
    dense_sigmoid,
    dense_sigmoid_xent,
    dense_softmax,
    dense_softmax_xent,
    dense_squared_error,
)
from strategies import dims, dtypes, logits_and_labels, matrices

NAMES = sorted(ACTIVATIONS)


@st.composite
def z_and_bias(draw):
    dtype = draw(dtypes)
    n_out, batch = draw(dims), draw(dims)
    return draw(matrices(dtype, (n_out, batch))), draw(matrices(dtype, (n_out,)))


@given(z_and_bias(), st.sampled_from(["relu", "identity"]), st.booleans())
def test_dense_bias_act_relu_and_identity_are_exact(case, name, with_bias):
    z, bias = case
    if not with_bias:
        bias = np.empty(0, z.dtype)
    expected = z + bias[:, None] if with_bias else z.copy()
    if name == "relu":
        expected = np.maximum(expected, 0)
    dense_bias_act(z, bias, ACTIVATIONS[name])
    # One correctly rounded addition per entry, in the same dtype: bit-exact.
    assert_array_equal(z, expected)
    if name == "relu":
        assert (z >= 0).all()


@given(z_and_bias(), st.sampled_from(NAMES))
def test_dense_bias_act_every_activation(case, name):
    z, bias = case
    pre = z.astype(np.float64) + bias.astype(np.float64)[:, None]
    expected = ref.ACTIVATIONS[name][0](pre)
    dense_bias_act(z, bias, ACTIVATIONS[name])
    assert_allclose(z, expected, **tol(z.dtype, scale=np.abs(expected).max(initial=0) + 1))


@given(z_and_bias(), st.sampled_from(NAMES))
def test_dense_act_into_keeps_its_input(case, name):
    z, _ = case
    before = z.copy()
    a = np.full_like(z, np.nan)
    dense_act_into(z, a, ACTIVATIONS[name])
    assert_array_equal(z, before)
    expected = ref.ACTIVATIONS[name][0](z.astype(np.float64))
    assert_allclose(a, expected, **tol(z.dtype, scale=np.abs(expected).max(initial=0) + 1))


@given(z_and_bias(), st.sampled_from(NAMES))
def test_dense_act_backward_every_activation(case, name):
    """dZ = dA * act'(Z), from the output a (and z for GELU), against the analytic
    derivative of the pre-activation."""
    z = case[0]
    dtype = z.dtype
    da = np.linspace(-2, 2, z.size).reshape(z.shape).astype(dtype)
    a = np.empty_like(z)
    dense_act_into(z, a, ACTIVATIONS[name])
    expected = da.astype(np.float64) * ref.ACTIVATIONS[name][1](z.astype(np.float64))
    grad_bias = np.full(z.shape[0], np.nan, dtype)
    pre = z if name.startswith("gelu") else np.empty((0, 0), dtype)
    dense_act_backward(a, pre, da, grad_bias, ACTIVATIONS[name])
    # tanh and the logistic take their derivative from the rounded output.
    scale = 10 * (np.abs(expected).max(initial=0) + 1)
    assert_allclose(da, expected, **tol(dtype, scale=scale))
    assert_allclose(grad_bias, expected.sum(axis=1), **tol(dtype, scale=scale * z.shape[1]))


@given(logits_and_labels())
def test_dense_softmax(case):
    z, _, dtype = case
    expected = ref.softmax(z.T).T
    dense_softmax(z)
    assert_allclose(z, expected, **tol(dtype))
    assert_allclose(z.sum(axis=0), 1.0, **tol(dtype))


@given(logits_and_labels(), st.sampled_from(["mean", "one", "half"]))
def test_dense_softmax_xent(case, scale_kind):
    z, y, dtype = case
    batch = z.shape[1]
    scale = {"mean": 1.0 / batch, "one": 1.0, "half": 0.5}[scale_kind]
    grad = np.full_like(z, np.nan)
    grad_bias = np.full(z.shape[0], np.nan, dtype)
    z_before = z.copy()

    loss, correct = dense_softmax_xent(z, y, scale, grad, grad_bias)

    assert_array_equal(z, z_before)  # read only when grad is another array
    logits = z.T.astype(np.float64)
    # The loss sums `batch` terms of size up to 2 * max|z|, each rounded in dtype.
    assert_allclose(loss, ref.cross_entropy_sum(logits, y),
                    **tol(dtype, scale=batch * (1 + 2 * np.abs(logits).max())))
    # Ties in the argmax go to the lowest class, like numpy.argmax: an exact count.
    assert correct == np.sum(np.argmax(z, axis=0) == y)
    expected_grad = scale * (ref.softmax(logits) - ref.onehot(y, z.shape[0])).T
    assert_allclose(grad, expected_grad, **tol(dtype, scale=scale))
    assert_allclose(grad_bias, expected_grad.sum(axis=1), **tol(dtype, scale=scale * batch))


@given(logits_and_labels())
def test_dense_softmax_xent_grad_may_alias_logits(case):
    z, y, dtype = case
    grad, grad_bias = np.empty_like(z), np.empty(z.shape[0], dtype)
    expected = dense_softmax_xent(z, y, 0.25, grad, grad_bias)

    out_bias = np.empty_like(grad_bias)
    loss, correct = dense_softmax_xent(z, y, 0.25, z, out_bias)
    # Not bit-identical: LLVM vectorizes the sums only when the arrays do not overlap
    # (a runtime alias check), so the order of additions, and the rounding, may differ.
    assert correct == expected[1]
    assert_allclose(loss, expected[0], **tol(dtype, scale=z.shape[1]))
    assert_allclose(z, grad, **tol(dtype, scale=0.25))
    assert_allclose(out_bias, grad_bias, **tol(dtype, scale=0.25 * z.shape[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("big", [1e4, 1e30])
def test_dense_softmax_xent_huge_logits_are_stable(dtype, big):
    # Column 0: the label has the huge logit (loss 0); column 1: the label is 2*big
    # below the max (loss 2*big); column 2: all equal (loss log 3).
    z = np.array([[big, big, big], [0, 0, big], [-big, -big, big]], dtype)
    y = np.array([0, 2, 1])
    grad, grad_bias = np.empty_like(z), np.empty(3, dtype)
    loss, correct = dense_softmax_xent(z, y, 1.0, grad, grad_bias)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert_allclose(loss, 2 * big + np.log(3), rtol=1e-6)
    assert correct == 1  # column 2 ties go to class 0, label is 1
    assert_allclose(grad[:, 1], [1, 0, -1], atol=1e-6)
    assert_allclose(grad[:, 2], [1 / 3, -2 / 3, 1 / 3], rtol=1e-6)

    probs = z.copy()
    dense_softmax(probs)
    assert np.isfinite(probs).all()
    assert_allclose(probs[:, 0], [1, 0, 0], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_softmax_xent_one_class(dtype):
    """With a single class every sample is certain: loss 0, gradient 0, all correct."""
    z = np.array([[3.0, -2.0, 0.0]], dtype)
    grad, grad_bias = np.empty_like(z), np.empty(1, dtype)
    loss, correct = dense_softmax_xent(z, np.zeros(3, np.int64), 1.0, grad, grad_bias)
    assert (loss, correct) == (0.0, 3.0)
    assert_array_equal(grad, 0)
    assert_array_equal(grad_bias, 0)


@st.composite
def relu_backward_case(draw):
    dtype = draw(dtypes)
    shape = (draw(dims), draw(dims))
    # `a` is a ReLU output: non-negative, with exact zeros where the unit was off.
    a = np.maximum(draw(matrices(dtype, shape)), 0)
    return a, draw(matrices(dtype, shape)), dtype


@given(relu_backward_case())
def test_dense_act_backward_relu_is_a_select(case):
    a, da, dtype = case
    a_before = a.copy()
    expected = da * (a > 0)
    grad_bias = np.full(a.shape[0], np.nan, dtype)
    dense_act_backward(a, np.empty((0, 0), dtype), da, grad_bias, RELU)
    assert_array_equal(da, expected)  # a select, no arithmetic
    assert_array_equal(a, a_before)
    assert_allclose(grad_bias, expected.astype(np.float64).sum(axis=1),
                    **tol(dtype, scale=np.abs(expected).sum(axis=1).max()))


@st.composite
def grad_and_mask(draw):
    dtype = draw(dtypes)
    shape = (draw(dims), draw(dims))
    return draw(matrices(dtype, shape)), draw(hnp.arrays(bool, shape))


@given(grad_and_mask())
def test_dense_mask_grad(case):
    grad, mask = case
    expected = np.where(mask, grad, 0)
    dense_mask_grad(grad, mask)
    assert_array_equal(grad, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_refuse_non_contiguous_arrays(dtype):
    """The signatures are C-contiguous only: a strided view must not be accepted (the
    kernels would read it as if it were contiguous)."""
    z = np.zeros((4, 6), dtype)
    with pytest.raises(TypeError):
        dense_bias_act(z[:, ::2], np.zeros(4, dtype), RELU)
    with pytest.raises(TypeError):
        dense_softmax(np.asfortranarray(z))


@st.composite
def outputs_and_targets(draw, binary):
    dtype = draw(dtypes)
    k, batch = draw(dims), draw(dims)
    z = draw(matrices(dtype, (k, batch)))
    if binary:
        t = draw(hnp.arrays(bool, (k, batch))).astype(dtype)
    else:
        t = draw(matrices(dtype, (k, batch)))
    return z, t


@given(outputs_and_targets(binary=True), st.sampled_from([1.0, 0.25]))
def test_dense_sigmoid_xent(case, scale):
    z, t = case
    dtype = z.dtype
    zs, ts = z.T.astype(np.float64), t.T.astype(np.float64)
    expected_loss = ref.head_loss(zs, ts, "sigmoid") * zs.shape[0]
    expected_grad = (ref.head_grad(zs, ts, "sigmoid") * zs.shape[0] * scale).T
    expected_correct = np.sum(np.all((zs > 0) == (ts > 0.5), axis=1))
    grad = np.full_like(z, np.nan)
    grad_bias = np.full(z.shape[0], np.nan, dtype)
    loss, correct = dense_sigmoid_xent(z, t, scale, grad, grad_bias)
    assert_allclose(loss, expected_loss, **tol(dtype, scale=expected_loss + z.size))
    assert correct == expected_correct
    assert_allclose(grad, expected_grad, **tol(dtype))
    assert_allclose(grad_bias, expected_grad.sum(axis=1), **tol(dtype, scale=z.shape[1]))


def test_dense_sigmoid_xent_is_stable_and_matches_torch():
    torch = pytest.importorskip("torch")
    z = np.array([[-800.0, -30.0, 0.0, 30.0, 800.0]])
    t = np.array([[1.0, 0.0, 1.0, 1.0, 0.0]])
    grad, grad_bias = np.empty_like(z), np.empty(1)
    loss, _ = dense_sigmoid_xent(z, t, 1.0, grad, grad_bias)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(z), torch.tensor(t), reduction="sum").item()
    assert np.isfinite(loss) and loss == pytest.approx(expected, rel=1e-12)
    assert np.isfinite(grad).all()


@given(outputs_and_targets(binary=False), st.sampled_from([1.0, 0.25]))
def test_dense_squared_error(case, scale):
    z, t = case
    dtype = z.dtype
    zs, ts = z.T.astype(np.float64), t.T.astype(np.float64)
    expected_loss = ref.head_loss(zs, ts, "squared") * zs.shape[0]
    expected_grad = (ref.head_grad(zs, ts, "squared") * zs.shape[0] * scale).T
    grad = np.full_like(z, np.nan)
    grad_bias = np.full(z.shape[0], np.nan, dtype)
    loss, correct = dense_squared_error(z, t, scale, grad, grad_bias)
    assert correct == 0.0
    assert_allclose(loss, expected_loss, **tol(dtype, scale=expected_loss + 1))
    assert_allclose(grad, expected_grad, **tol(dtype, scale=4))
    assert_allclose(grad_bias, expected_grad.sum(axis=1), **tol(dtype, scale=4 * z.shape[1]))


@given(outputs_and_targets(binary=False))
def test_dense_sigmoid(case):
    z, _ = case
    expected = 1 / (1 + np.exp(-z.astype(np.float64)))
    dense_sigmoid(z)
    assert_allclose(z, expected, **tol(z.dtype))


def test_gelu_derivative_matches_torch_autograd():
    """The kernels' GELU (exact and tanh) and their derivatives against torch's."""
    torch = pytest.importorskip("torch")
    z = np.linspace(-6, 6, 97).reshape(1, -1)
    for name, approximate in (("gelu", "none"), ("gelu_tanh", "tanh")):
        zt = torch.tensor(z, requires_grad=True)
        out = torch.nn.functional.gelu(zt, approximate=approximate)
        out.sum().backward()
        a = np.empty_like(z)
        dense_act_into(z, a, ACTIVATIONS[name])
        assert_allclose(a, out.detach().numpy(), rtol=1e-12, atol=1e-14)
        da, grad_bias = np.ones_like(z), np.empty(1)
        dense_act_backward(a, z, da, grad_bias, ACTIVATIONS[name])
        assert_allclose(da, zt.grad.numpy(), rtol=1e-12, atol=1e-14)
    assert IDENTITY == ACTIVATIONS["identity"]
