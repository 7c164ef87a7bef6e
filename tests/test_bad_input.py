"""Bad input: a ValueError or TypeError naming the argument, before anything changes."""

import numpy as np
import pytest

import sparseprune as spp
from helpers import params


@pytest.fixture
def model():
    return spp.MLP([4, 5, 3], seed=0)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(10, 4)).astype(np.float32), rng.integers(0, 3, 10)


def assert_untouched(model, before):
    for old, new in zip(before, params(model)):
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)


# -- X and y ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fit", "predict", "predict_proba", "score", "evaluate",
                                    "loss_and_gradients"])
@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((10, 5)), ValueError, "X has 5 features.*expects 4"),
    (np.zeros(4), ValueError, "X must be 2-D"),
    (np.zeros((0, 4)), ValueError, "X must hold at least one sample"),
    (np.full((10, 4), np.nan), ValueError, "X contains NaN or infinity"),
    (np.pad(np.zeros((9, 4)), ((0, 1), (0, 0)), constant_values=np.inf), ValueError,
     "X contains NaN or infinity"),
    (np.full((10, 4), "a"), TypeError, "X must be a 2-D numeric array"),
    (np.zeros((10, 4), complex), TypeError, "X must be real"),
], ids=["features", "1-D", "empty", "nan", "inf", "strings", "complex"])
def test_bad_X(model, data, method, bad, error, match):
    _, y = data
    before = params(model)
    call = getattr(model, method)
    args = (bad,) if method in ("predict", "predict_proba") else (bad, y)
    kwargs = dict(progress=False) if method == "fit" else {}
    with pytest.raises(error, match=match):
        call(*args, **kwargs)
    assert_untouched(model, before)


@pytest.mark.parametrize("method", ["fit", "score", "evaluate", "loss_and_gradients"])
@pytest.mark.parametrize("bad, error, match", [
    (np.array([0, 1, 2, 3] * 2 + [0, 1]), ValueError, r"y must hold labels in \[0, 3\)"),
    (-np.ones(10, int), ValueError, r"y must hold labels in \[0, 3\)"),
    (np.array([0.5] * 10), ValueError, "y must hold integer class labels"),
    (np.array([np.nan] * 10), ValueError, "y must hold integer class labels"),
    (np.array(["a"] * 10), TypeError, "y must hold integer class labels"),
    (np.ones(10, bool), TypeError, "y must hold integer class labels"),
    (np.zeros(9, int), ValueError, "y has 9 labels, X has 10 samples"),
    (np.zeros((10, 1), int), ValueError, "y must be 1-D"),
], ids=["too-big", "negative", "fractional", "nan", "strings", "bool", "length", "2-D"])
def test_bad_y(model, data, method, bad, error, match):
    X, _ = data
    before = params(model)
    kwargs = dict(progress=False) if method == "fit" else {}
    with pytest.raises(error, match=match):
        getattr(model, method)(X, bad, **kwargs)
    assert_untouched(model, before)


# -- fit options ------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(optimizer="rmsprop"), ValueError, "optimizer must be one of 'sgd', 'adam'"),
    (dict(optimizer=None), ValueError, "optimizer must be one of"),
    (dict(backend="gpu"), ValueError, "backend must be one of 'auto', 'sparse', 'dense', got 'gpu'"),
    (dict(lr=0.0), ValueError, "lr must be > 0"),
    (dict(lr="fast"), TypeError, "lr must be a real number"),
    (dict(lr=np.nan), ValueError, "lr must be finite"),
    (dict(optimizer="sgd", momentum=1.0), ValueError, "momentum must be < 1"),
    (dict(weight_decay=-1e-4), ValueError, "weight_decay must be >= 0"),
    (dict(epochs=-1), ValueError, "epochs must be >= 0"),
    (dict(epochs=2.5), TypeError, "epochs must be an integer"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=True), TypeError, "batch_size must be an integer"),
    (dict(validation_data=np.zeros((3, 4))), TypeError, r"validation_data must be a pair"),
    (dict(validation_data=(np.zeros((3, 4)),) * 3), TypeError, r"validation_data must be a pair"),
    (dict(validation_data=(np.zeros((3, 2)), np.zeros(3, int))), ValueError,
     r"validation_data\[0\] has 2 features"),
    (dict(validation_data=(np.full((3, 4), np.nan), np.zeros(3, int))), ValueError,
     r"validation_data\[0\] contains NaN"),
    (dict(validation_data=(np.zeros((3, 4)), np.full(3, 7))), ValueError,
     r"validation_data\[1\] must hold labels in \[0, 3\)"),
    (dict(validation_data=(np.zeros((3, 4)), np.zeros(2, int))), ValueError,
     r"validation_data\[1\] has 2 labels"),
], ids=lambda v: None if not isinstance(v, dict) else "-".join(v))
def test_bad_fit_options(model, data, kwargs, error, match):
    X, y = data
    before = params(model)
    with pytest.raises(error, match=match):
        model.fit(X, y, progress=False, **kwargs)
    assert_untouched(model, before)


# -- the network ------------------------------------------------------------------------


@pytest.mark.parametrize("sizes, error, match", [
    ([4], ValueError, "sizes must have at least two entries"),
    ([], ValueError, "sizes must have at least two entries"),
    (4, TypeError, "sizes must be a sequence"),
    ("45", TypeError, "sizes must be a sequence"),
    ([4, 2.5, 3], TypeError, r"sizes\[1\] must be an integer"),
    ([4, 5.0, 3], TypeError, r"sizes\[1\] must be an integer"),
    ([4, True, 3], TypeError, r"sizes\[1\] must be an integer"),
    ([4, 0, 3], ValueError, r"sizes\[1\] must be >= 1"),
    ([0, 3], ValueError, r"sizes\[0\] must be >= 1"),
    ([4, -2, 3], ValueError, r"sizes\[1\] must be >= 1"),
    ([4, 1], ValueError, r"sizes\[-1\] is the number of classes and must be >= 2"),
])
def test_bad_sizes(sizes, error, match):
    with pytest.raises(error, match=match):
        spp.MLP(sizes)


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex128", "nonsense", object])
def test_bad_dtype(dtype):
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        spp.MLP([4, 3], dtype=dtype)


def test_numpy_integer_sizes_are_fine():
    assert spp.MLP(np.array([4, 5, 3])).sizes == (4, 5, 3)


@pytest.mark.parametrize("attribute, value, error, match", [
    ("mask", np.ones((5, 4), bool), ValueError, r"mask must have shape \(4, 5\)"),
    ("mask", np.ones((4, 5)), TypeError, "mask must be a bool array"),
    ("mask", np.ones((4, 5), int), TypeError, "mask must be a bool array"),
    ("weight", np.ones((5, 4)), ValueError, r"weight must have shape \(4, 5\)"),
    ("weight", np.ones(20), ValueError, r"weight must have shape \(4, 5\)"),
    ("weight", np.ones((4, 5), complex), TypeError, "weight must be a real numeric array"),
    ("weight", np.ones((4, 5), bool), TypeError, "weight must be a real numeric array"),
    ("weight", np.full((4, 5), np.nan), ValueError, "weight contains NaN"),
    ("bias", np.ones(4), ValueError, r"bias must have shape \(5,\)"),
    ("bias", np.array(["x"] * 5), TypeError, "bias must be a real numeric array"),
])
def test_bad_layer_parameters(model, attribute, value, error, match):
    layer = model.layers[0]
    before = params(model)
    with pytest.raises(error, match=match):
        setattr(layer, attribute, value)
    assert_untouched(model, before)


def test_layer_setters_convert_and_apply_the_mask(model):
    layer = model.layers[0]
    layer.mask = np.eye(4, 5, dtype=bool)
    ints = np.arange(20).reshape(4, 5)
    layer.weight = np.asfortranarray(ints)  # any layout and numeric dtype: converted
    assert layer.weight.dtype == np.float32 and layer.weight.flags.c_contiguous
    np.testing.assert_array_equal(layer.weight, np.where(np.eye(4, 5), ints, 0))
    assert layer.weight is not ints


# -- pruning ----------------------------------------------------------------------------

BAD_SPARSITIES = [
    (1.0, ValueError, "must be < 1"),
    (1, ValueError, "must be < 1"),
    (-0.1, ValueError, "must be >= 0"),
    (np.nan, ValueError, "must be finite"),
    (np.inf, ValueError, "must be finite"),
    (True, TypeError, "must be a real number"),
    (np.bool_(False), TypeError, "must be a real number"),
    ("0.5", TypeError, "must be a real number"),
    (None, TypeError, "must be a real number"),
]


@pytest.mark.parametrize("sparsity, error, match", BAD_SPARSITIES)
@pytest.mark.parametrize("prune", [spp.prune.magnitude, spp.prune.random])
def test_bad_sparsity(model, sparsity, error, match, prune):
    before = params(model)
    with pytest.raises(error, match="sparsity " + match):
        prune(model, sparsity)
    assert_untouched(model, before)


@pytest.mark.parametrize("sparsity, error, match", BAD_SPARSITIES)
def test_bad_target_sparsity(model, data, sparsity, error, match):
    X, y = data
    before = params(model)
    with pytest.raises(error, match="target_sparsity " + match):
        spp.prune.iterative(model, X, y, sparsity, progress=False)
    assert_untouched(model, before)


def test_numpy_float_sparsity_is_fine(model):
    spp.prune.magnitude(model, np.float32(0.5))
    assert model.sparsity == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scope="neuron"), ValueError, "scope must be one of 'global', 'layer'"),
    (dict(criterion="gradient"), ValueError, "criterion must be one of 'magnitude', 'random'"),
    (dict(schedule="exponential"), ValueError,
     "schedule must be one of 'linear', 'cubic', 'constant', 'geometric'"),
    (dict(steps=0), ValueError, "steps must be >= 1"),
    (dict(steps=2.0), TypeError, "steps must be an integer"),
    (dict(finetune_epochs=-1), ValueError, "finetune_epochs must be >= 0"),
    (dict(epochs=3), TypeError, r"unexpected keyword arguments \['epochs'\]"),
    (dict(validation_data=(np.zeros((3, 2)), np.zeros(3, int))), ValueError,
     r"validation_data\[0\] has 2 features"),
    # fit options are checked before the first step prunes anything
    (dict(optimizer="rmsprop"), ValueError, "optimizer must be one of 'sgd', 'adam'"),
    (dict(backend="gpu"), ValueError, "backend must be one of 'auto', 'sparse', 'dense', got 'gpu'"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(lr=-0.1), ValueError, "lr must be > 0"),
    (dict(optimizer="sgd", momentum=1.5), ValueError, "momentum must be < 1"),
], ids=lambda v: None if not isinstance(v, dict) else "-".join(v))
def test_bad_iterative_options(model, data, kwargs, error, match):
    X, y = data
    before = params(model)
    with pytest.raises(error, match=match):
        spp.prune.iterative(model, X, y, 0.5, **{"steps": 2, "finetune_epochs": 1,
                                                 "progress": False, **kwargs})
    assert_untouched(model, before)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scope="neuron"), ValueError, "scope must be one of 'global', 'layer'"),
    (dict(criterion="gradient"), ValueError, "criterion must be one of 'magnitude', 'random'"),
    (dict(criterion=None), ValueError, "criterion must be one of"),
])
def test_bad_unstructured_options(model, kwargs, error, match):
    before = params(model)
    with pytest.raises(error, match=match):
        spp.prune.unstructured(model, 0.5, **kwargs)
    assert_untouched(model, before)


def test_target_sparsity_below_the_current_sparsity(model, data):
    X, y = data
    spp.prune.magnitude(model, 0.6)
    before = params(model)
    with pytest.raises(ValueError, match="target_sparsity 0.3 is below the model's current"):
        spp.prune.iterative(model, X, y, 0.3, progress=False)
    assert_untouched(model, before)


@pytest.mark.parametrize("not_a_model", [None, object(), [1, 2]])
def test_pruning_something_else(not_a_model):
    with pytest.raises(TypeError, match="model must be a sparseprune MLP"):
        spp.prune.magnitude(not_a_model, 0.5)


# -- data -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_train=0), ValueError, "n_train must be >= 1"),
    (dict(n_test=1.5), TypeError, "n_test must be an integer"),
    (dict(n_classes=1), ValueError, "n_classes must be >= 2"),
    (dict(n_features=0), ValueError, "n_features must be >= 1"),
    (dict(center_scale=-1.0), ValueError, "center_scale must be >= 0"),
    (dict(dtype="int8"), TypeError, "dtype must be float32 or float64"),
])
def test_bad_blobs_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        spp.data.blobs(**kwargs)


@pytest.mark.parametrize("test_size", [0.0, 1.0, -0.5, "a"])
def test_bad_digits_test_size(test_size):
    with pytest.raises((ValueError, TypeError), match="test_size"):
        spp.data.digits(test_size=test_size)
