"""spp.from_torch and model.to_torch against PyTorch itself: the imported model's
outputs equal the module's (float64 to 1e-10, float32 to 1e-5) for every activation and
head; masks of torch-pruned modules equal ``weight_mask``; round trips are exact both
ways, in both dtypes; bad input names the layer, and the module is never changed."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from torch import nn
from torch.nn.utils import prune

import sparseprune as spp
from strategies import dtypes, seeds

TOL = {np.float32: 1e-5, np.float64: 1e-10}
TORCH = {np.float32: torch.float32, np.float64: torch.float64}
#: sparseprune's activation -> a torch module computing it (None: nothing between).
ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid,
    "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "identity": lambda: None,
}
#: The head's link on the logits, as torch computes it.
LINKS = {"softmax": lambda z: torch.softmax(z, 1), "sigmoid": torch.sigmoid,
         "squared": lambda z: z}


def sequential(sizes, activation, dtype, seed, bias=True):
    """An nn.Sequential MLP, torch's own initialization, random nonzero biases."""
    torch.manual_seed(seed)
    modules = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            act = ACTIVATIONS[activation]()
            if act is not None:
                modules.append(act)
        modules.append(nn.Linear(n_in, n_out, bias=bias))
    module = nn.Sequential(*modules).to(TORCH[dtype])
    with torch.no_grad():
        for m in module:
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_(0.0, 0.5)
    return module.eval()


def torch_outputs(module, X, loss):
    with torch.no_grad():
        return LINKS[loss](module(torch.from_numpy(X))).numpy()


def our_outputs(model, X):
    """The head's outputs: probabilities (one column per output) or values."""
    if model.loss == "squared":
        return model.predict(X).reshape(len(X), -1)
    proba = model.predict_proba(X)
    return proba[:, 1:] if model.loss == "sigmoid" and model.n_outputs == 1 else proba


def linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def effective(linear):
    """(weight (out, in), mask (out, in) bool, bias (out,)) as the forward pass uses them."""
    if hasattr(linear, "weight_mask"):
        mask = linear.weight_mask.bool()
        weight = torch.where(mask, linear.weight_orig, torch.zeros_like(linear.weight_orig))
    else:
        weight, mask = linear.weight, torch.ones_like(linear.weight, dtype=torch.bool)
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features,
                                                                    dtype=weight.dtype)
    return weight.detach(), mask, bias.detach()


def state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_module(a, b):
    """Linear by Linear: the weights the forward pass uses, masks and biases, exactly."""
    la, lb = linears(a), linears(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        for u, v in zip(effective(x), effective(y)):
            assert u.dtype == v.dtype and torch.equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["softmax", "sigmoid", "squared"])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_outputs_equal_the_modules(activation, loss, dtype):
    sizes = [7, 9, 6, 3]
    module = sequential(sizes, activation, dtype, seed=1)
    model = spp.from_torch(module, loss=loss)
    assert model.sizes == tuple(sizes) and model.dtype == dtype
    assert model.activation == activation and model.loss == loss
    X = np.random.default_rng(0).normal(size=(13, 7)).astype(dtype)
    assert_allclose(our_outputs(model, X), torch_outputs(module, X, loss),
                    rtol=TOL[dtype], atol=TOL[dtype])


def test_a_binary_head_is_one_sigmoid_output():
    module = sequential([4, 5, 1], "relu", np.float64, seed=2)
    model = spp.from_torch(module, loss="bce", classes=["no", "yes"])
    X = np.random.default_rng(0).normal(size=(20, 4))
    p = torch_outputs(module, X, "sigmoid")[:, 0]
    assert_allclose(model.predict_proba(X), np.column_stack([1 - p, p]), rtol=1e-10,
                    atol=1e-10)
    assert_array_equal(model.predict(X), np.where(p > 0.5, "yes", "no"))


def pruned_module(dtype, seed=3):
    """Pruned three ways (global, per layer by L1, random), one bias-less layer, then
    trained a step in torch so that weight_orig moves and ``weight`` is stale."""
    module = sequential([8, 12, 10, 4], "tanh", dtype, seed)
    module[2] = nn.Linear(12, 10, bias=False).to(TORCH[dtype])
    a, b, c = linears(module)
    prune.global_unstructured([(a, "weight"), (b, "weight")],
                              pruning_method=prune.L1Unstructured, amount=0.5)
    prune.l1_unstructured(c, "weight", amount=0.3)
    prune.random_unstructured(a, "weight", amount=0.2)  # a second mask, combined
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    X = torch.randn(16, 8, dtype=TORCH[dtype])
    module(X).square().sum().backward()
    opt.step()
    return module


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_torch_pruned_module_brings_its_masks(dtype):
    module = pruned_module(dtype)
    before = state(module)
    model = spp.from_torch(module, loss="softmax")
    for layer, linear in zip(model.layers, linears(module)):
        assert_array_equal(layer.mask, linear.weight_mask.numpy().T != 0)
        weight, _, bias = effective(linear)
        assert_array_equal(layer.weight, weight.numpy().T)
        assert_array_equal(layer.bias, bias.numpy())
    assert model.layers[1].bias.tolist() == [0.0] * 10  # the bias-less layer
    X = np.random.default_rng(0).normal(size=(11, 8)).astype(dtype)
    assert_allclose(our_outputs(model, X), torch_outputs(module, X, "softmax"),
                    rtol=TOL[dtype], atol=TOL[dtype])
    for key, value in state(module).items():
        assert torch.equal(value, before[key]), key  # the module is not changed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_from_torch_is_exact(dtype):
    """to_torch(from_torch(m)) == m: weights, masks, biases, outputs."""
    module = pruned_module(dtype)
    back = spp.from_torch(module, loss="softmax").to_torch()
    assert_same_module(back, module)
    for linear in linears(back):
        assert linear.weight_orig.dtype == TORCH[dtype]
    X = torch.randn(9, 8, dtype=TORCH[dtype])
    with torch.no_grad():
        assert torch.equal(back(X), module(X))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [False, True])
def test_round_trip_to_torch_is_exact(dtype, sparse):
    """from_torch(to_torch(model)) == model: weights, masks, biases, for an MLP and for
    a SparseMLP (whose stored pattern is the mask)."""
    model = spp.MLP([6, 10, 8, 3], dtype=dtype, seed=4, activation="gelu")
    for layer in model.layers:
        layer.bias = np.random.default_rng(5).normal(size=layer.out_features)
    spp.prune.magnitude(model, 0.6)
    source = model.to_sparse() if sparse else model
    back = spp.from_torch(source.to_torch(), loss=model.loss)
    assert back.activation == "gelu" and back.dtype == dtype
    for ours, theirs in zip(model.layers, back.layers):
        assert_array_equal(theirs.mask, ours.mask)
        assert_array_equal(theirs.weight, ours.weight)
        assert_array_equal(theirs.bias, ours.bias)
    X = np.random.default_rng(1).normal(size=(5, 6)).astype(dtype)
    assert_allclose(our_outputs(model, X), torch_outputs(source.to_torch(), X, "softmax"),
                    rtol=TOL[dtype], atol=TOL[dtype])


def test_to_torch_masks_keep_pruned_weights_at_zero_in_torch_training():
    model = spp.MLP([5, 7, 3], dtype="float64", seed=0, activation="logistic")
    spp.prune.magnitude(model, 0.5)
    module = model.to_torch()
    assert [type(m).__name__ for m in module] == ["Linear", "Sigmoid", "Linear"]
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        module(torch.randn(8, 5, dtype=torch.float64)).square().sum().backward()
        opt.step()
    for layer, linear in zip(model.layers, linears(module)):
        assert_array_equal(linear.weight_mask.numpy().T != 0, layer.mask)
        assert not linear(torch.eye(linear.in_features, dtype=torch.float64)).isnan().any()
        assert (linear.weight.detach().numpy().T[~layer.mask] == 0).all()


def test_to_torch_without_masks_is_plain():
    model = spp.MLP([5, 7, 3], dtype="float32", seed=0, activation="identity")
    spp.prune.magnitude(model, 0.5)
    module = model.to_torch(masks=False)
    assert [type(m).__name__ for m in module] == ["Linear", "Identity", "Linear"]
    for layer, linear in zip(model.layers, linears(module)):
        assert not hasattr(linear, "weight_mask")
        assert_array_equal(linear.weight.detach().numpy().T, layer.weight)


def test_no_ops_and_nesting_are_read_through():
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Flatten(), nn.Dropout(0.3),
        nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate="tanh"), nn.Dropout(0.1)),
        nn.Sequential(nn.Sequential(nn.Linear(8, 5, bias=False)), nn.Identity(),
                      nn.GELU(approximate="tanh")),
        nn.Linear(5, 2), nn.Dropout(0.2)).double().eval()
    model = spp.from_torch(module, loss="mse")
    assert model.sizes == (6, 8, 5, 2) and model.activation == "gelu_tanh"
    X = np.random.default_rng(0).normal(size=(10, 6))
    assert_allclose(model.predict(X), torch_outputs(module, X, "squared"), rtol=1e-10,
                    atol=1e-10)


def test_linear_layers_with_nothing_between_are_identity():
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    model = spp.from_torch(module, loss="squared")
    assert model.activation == "identity"
    X = np.random.default_rng(0).normal(size=(4, 3))
    assert_allclose(model.predict(X), torch_outputs(module, X, "squared"), rtol=1e-10,
                    atol=1e-10)


def test_dtype_is_the_modules_unless_given():
    assert spp.from_torch(nn.Sequential(nn.Linear(3, 2)), "softmax").dtype == np.float32
    assert spp.from_torch(nn.Sequential(nn.Linear(3, 2)).double(), "softmax").dtype == \
        np.float64
    assert spp.from_torch(nn.Sequential(nn.Linear(3, 2)).half(), "softmax").dtype == \
        np.float32
    assert spp.from_torch(nn.Sequential(nn.Linear(3, 2)), "softmax",
                          dtype="float64").dtype == np.float64


@settings(max_examples=40)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=4), st.sampled_from(list(ACTIVATIONS)),
       st.sampled_from(["sigmoid", "squared"]), dtypes, seeds, st.integers(1, 7),
       st.floats(0.0, 0.95))
def test_random_shapes(sizes, activation, loss, dtype, seed, batch, amount):
    module = sequential(sizes, activation, dtype, seed % 2**31)
    prune.global_unstructured([(m, "weight") for m in linears(module)],
                              pruning_method=prune.L1Unstructured, amount=amount)
    model = spp.from_torch(module, loss=loss)
    wide = np.random.default_rng(seed).normal(size=(batch, 2 * sizes[0])).astype(dtype)
    X = wide[:, ::2]  # non-contiguous
    assert_allclose(our_outputs(model, X), torch_outputs(module, np.ascontiguousarray(X), loss),
                    rtol=TOL[dtype], atol=TOL[dtype])
    assert_same_module(model.to_torch(), module)


# -- bad input ---------------------------------------------------------------------------

BAD = [
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Conv2d(1, 1, 1),
                   nn.Linear(8, 2)),
     ValueError, "layer 3: Conv2d is not supported; sparseprune imports Linear and "
                 "ReLU/Tanh/Sigmoid/GELU/Identity"),
    (nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.BatchNorm1d(8))),
     ValueError, "layer 1.1: BatchNorm1d is not supported"),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(7, 2)),
     ValueError, "layer 2: Linear takes 7 inputs, layer 0 gives 8: the shapes do not chain"),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)),
     ValueError, r"mixes activations \(relu at layer 1, tanh at layer 3\)"),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Linear(2, 2)),
     ValueError, r"mixes activations \(relu at layer 1, identity at layer 3\)"),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Tanh(), nn.Linear(8, 2)),
     ValueError, r"layer 3: 2 activations \(ReLU, Tanh\) between it and layer 0"),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Sigmoid()),
     ValueError, r"layer 3: Sigmoid after the last Linear \(layer 2\) is not supported"),
    (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Softmax(dim=1)),
     ValueError, "layer 3: Softmax is not supported; the module must end in logits"),
    (nn.Sequential(nn.ReLU(), nn.Linear(4, 2)),
     ValueError, "layer 0: ReLU before the first Linear is not supported"),
    (nn.Sequential(nn.Linear(4, 8), nn.Flatten(), nn.Linear(8, 2)),
     ValueError, "layer 1: Flatten is not supported"),
    (nn.Sequential(nn.Dropout()), ValueError, "module holds no Linear layer"),
    (nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2).double()),
     TypeError, "module mixes parameter dtypes"),
    (nn.Linear(4, 2), TypeError, "module must be a torch.nn.Sequential of Linear layers "
                                 "and activations, got Linear"),
    ("model", TypeError, "module must be a torch.nn.Sequential"),
]


@pytest.mark.parametrize("module, error, message", BAD)
def test_bad_modules_are_named(module, error, message):
    before = state(module) if isinstance(module, nn.Module) else None
    with pytest.raises(error, match=message):
        spp.from_torch(module, loss="softmax")
    if before is not None:
        for key, value in state(module).items():
            assert torch.equal(value, before[key])


def test_bad_values_name_the_layer():
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    with torch.no_grad():
        module[2][0].weight[0, 1] = float("nan")
    with pytest.raises(ValueError, match="layer 2.0: weight contains NaN"):
        spp.from_torch(module, loss="softmax")


@pytest.mark.parametrize("loss, message", [
    ("hinge", "loss must be one of 'softmax', 'sigmoid', 'squared'"),
    (None, "loss must be one of"),
])
def test_an_unknown_loss_is_named(loss, message):
    with pytest.raises(ValueError, match=message):
        spp.from_torch(nn.Sequential(nn.Linear(3, 2)), loss=loss)


def test_the_head_must_fit_the_outputs():
    with pytest.raises(ValueError, match="must be >= 2 for the softmax loss"):
        spp.from_torch(nn.Sequential(nn.Linear(3, 1)), loss="softmax")


def test_a_bad_dtype_is_named():
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        spp.from_torch(nn.Sequential(nn.Linear(3, 2)), loss="softmax", dtype="float16")
