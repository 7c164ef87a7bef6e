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
from sparseprune.kernels.dense import (
    dense_bias_act,
    dense_mask_grad,
    dense_relu_backward,
    dense_softmax,
    dense_softmax_xent,
)
from strategies import dims, dtypes, logits_and_labels, matrices


@st.composite
def z_and_bias(draw):
    dtype = draw(dtypes)
    n_out, batch = draw(dims), draw(dims)
    return draw(matrices(dtype, (n_out, batch))), draw(matrices(dtype, (n_out,)))


@given(z_and_bias(), st.booleans())
def test_dense_bias_act(case, relu):
    z, bias = case
    expected = z + bias[:, None]
    if relu:
        expected = np.maximum(expected, 0)
    dense_bias_act(z, bias, relu)
    # One correctly rounded addition per entry, in the same dtype: bit-exact.
    assert_array_equal(z, expected)
    if relu:
        assert (z >= 0).all()


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
def test_dense_relu_backward(case):
    a, da, dtype = case
    a_before = a.copy()
    expected = da * (a > 0)
    grad_bias = np.full(a.shape[0], np.nan, dtype)
    dense_relu_backward(a, da, grad_bias)
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
        dense_bias_act(z[:, ::2], np.zeros(4, dtype), True)
    with pytest.raises(TypeError):
        dense_softmax(np.asfortranarray(z))
