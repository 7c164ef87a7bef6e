"""Magnitude and random pruning, schedules and the iterative driver."""

import warnings

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import reference as ref
import sparseprune as spp
from helpers import params, random_problem
from sparseprune.prune import schedules
from strategies import dtypes, mlp_sizes, seeds, sparsities

SCOPES = ["global", "layer"]


def n_weights(model):
    return sum(layer.n_weights for layer in model.layers)


def n_pruned(model):
    return sum(int((~layer.mask).sum()) for layer in model.layers)


def masks(model):
    return [layer.mask.copy() for layer in model.layers]


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


# -- one-shot magnitude pruning ---------------------------------------------------------


@given(mlp_sizes(max_width=8), dtypes, seeds, sparsities)
def test_global_count_is_exact_and_smallest_go_first(sizes, dtype, seed, sparsity):
    model = spp.MLP(sizes, dtype=dtype, seed=seed)
    weights = flat(params(model)[0])
    assert spp.prune.magnitude(model, sparsity) is model
    mask = flat(masks(model))
    assert (~mask).sum() == round(sparsity * n_weights(model))
    if 0 < mask.sum() < mask.size:
        assert np.abs(weights[~mask]).max() <= np.abs(weights[mask]).min()
    assert_array_equal(flat(params(model)[0]), np.where(mask, weights, 0))


@given(mlp_sizes(max_width=8), dtypes, seeds, sparsities)
def test_layer_count_is_exact_in_every_layer(sizes, dtype, seed, sparsity):
    model = spp.MLP(sizes, dtype=dtype, seed=seed)
    weights = [layer.weight.copy() for layer in model.layers]
    spp.prune.magnitude(model, sparsity, scope="layer")
    for layer, w in zip(model.layers, weights):
        mask = layer.mask
        assert (~mask).sum() == round(sparsity * layer.n_weights)
        if 0 < mask.sum() < mask.size:
            assert np.abs(w[~mask]).max() <= np.abs(w[mask]).min()


@pytest.mark.parametrize("scope", SCOPES)
@given(sizes=mlp_sizes(max_width=8), seed=seeds, sparsity=sparsities)
def test_matches_torch_unstructured_on_distinct_weights(scope, sizes, seed, sparsity):
    """He-normal float64 weights are distinct (ties have probability 0), so torch's
    topk has a unique answer."""
    model = spp.MLP(sizes, dtype="float64", seed=seed)
    weights = params(model)[0]
    expected = ref.torch_unstructured_mask(weights, sparsity, scope)
    spp.prune.magnitude(model, sparsity, scope=scope)
    for got, want in zip(masks(model), expected):
        assert_array_equal(got, want)


def test_ties_go_to_the_lower_index():
    """All |w| equal (signs alternate): the first k weights in layer order, then row-major
    order, are pruned; the same call gives the same mask every time."""
    model = spp.MLP([3, 4, 2], dtype="float64", seed=0)
    for layer in model.layers:
        layer.weight = np.where(np.arange(layer.n_weights).reshape(layer.shape) % 2, 1.0, -1.0)
    n = n_weights(model)  # 12 + 8
    spp.prune.magnitude(model, 0.5)
    assert_array_equal(flat(masks(model)), np.arange(n) >= 10)

    model.layers[0].mask = np.ones((3, 4), bool)
    model.layers[1].mask = np.ones((4, 2), bool)
    for layer in model.layers:
        layer.weight = np.ones(layer.shape)
    spp.prune.magnitude(model, 0.25, scope="layer")
    assert_array_equal(model.layers[0].mask.ravel(), np.arange(12) >= 3)
    assert_array_equal(model.layers[1].mask.ravel(), np.arange(8) >= 2)


def test_ties_between_a_live_zero_and_a_pruned_weight():
    """A weight that is exactly 0 but live is still pruned after the already-pruned ones."""
    model = spp.MLP([2, 2], dtype="float64", seed=0)
    layer = model.layers[0]
    layer.weight = np.array([[0.0, 5.0], [3.0, 4.0]])
    layer.mask = np.array([[True, True], [True, False]])  # 4.0 is pruned (becomes 0)
    spp.prune.magnitude(model, 0.5)
    assert_array_equal(layer.mask, [[False, True], [True, False]])


@pytest.mark.parametrize("scope", SCOPES)
def test_already_pruned_weights_count(scope):
    model = spp.MLP([6, 10, 4], seed=0)
    spp.prune.magnitude(model, 0.5, scope=scope)
    half = masks(model)
    weights = params(model)[0]

    spp.prune.magnitude(model, 0.3, scope=scope)  # less than already pruned: no change
    for got, want, layer, w in zip(masks(model), half, model.layers, weights):
        assert_array_equal(got, want)
        assert_array_equal(layer.weight, w)

    spp.prune.magnitude(model, 0.7, scope=scope)
    assert n_pruned(model) == (round(0.7 * n_weights(model)) if scope == "global" else
                               sum(round(0.7 * layer.n_weights) for layer in model.layers))
    for got, before in zip(masks(model), half):
        assert not (got & ~before).any()  # nothing restored: a subset


@pytest.mark.parametrize("scope", SCOPES)
def test_biases_are_never_pruned(scope):
    model = spp.MLP([5, 7, 3], seed=0)
    for layer in model.layers:
        layer.bias = np.full(layer.out_features, 1e-9)  # smaller than every weight
    spp.prune.magnitude(model, 0.9, scope=scope)
    for layer in model.layers:
        assert_array_equal(layer.bias, np.float32(1e-9))


@given(mlp_sizes(max_width=8), sparsities)
def test_count_parameters(sizes, sparsity):
    model = spp.MLP(sizes, seed=0)
    n_bias = sum(sizes[1:])
    n = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    assert model.count_parameters() == (n + n_bias, n + n_bias)
    spp.prune.magnitude(model, sparsity)
    assert model.count_parameters() == (n + n_bias, n - round(sparsity * n) + n_bias)
    assert model.sparsity == pytest.approx(round(sparsity * n) / n, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("scope", SCOPES)
def test_random_criterion(scope):
    model = spp.MLP([8, 16, 4], dtype="float64", seed=0)
    a, b, c = (spp.MLP([8, 16, 4], dtype="float64", seed=0) for _ in range(3))
    spp.prune.random(a, 0.5, scope=scope, seed=1)
    spp.prune.random(b, 0.5, scope=scope, seed=1)
    spp.prune.random(c, 0.5, scope=scope, seed=2)
    spp.prune.magnitude(model, 0.5, scope=scope)
    assert n_pruned(a) == n_pruned(c) == n_pruned(model)
    assert_array_equal(flat(masks(a)), flat(masks(b)))
    assert not np.array_equal(flat(masks(a)), flat(masks(c)))
    assert not np.array_equal(flat(masks(a)), flat(masks(model)))
    # Random pruning ignores magnitude: some large weight goes, some small one stays.
    weights = flat(params(spp.MLP([8, 16, 4], dtype="float64", seed=0))[0])
    mask = flat(masks(a))
    assert np.abs(weights[~mask]).max() > np.abs(weights[mask]).min()


def test_custom_criterion():
    class Smallest(spp.prune.Criterion):
        """Prefers to keep small weights: the reverse of magnitude."""

        def scores(self, model):
            return [-np.abs(layer.weight.astype(np.float64)) for layer in model.layers]

    model = spp.MLP([4, 6, 3], dtype="float64", seed=0)
    weights = flat(params(model)[0])
    spp.prune.unstructured(model, 0.5, criterion=Smallest())
    mask = flat(masks(model))
    assert np.abs(weights[~mask]).min() >= np.abs(weights[mask]).max()


class Transposed(spp.prune.Criterion):
    """A buggy criterion: scores of shape (out, in), the same size as the weight."""

    def scores(self, model):
        return [np.abs(layer.weight.T).astype(np.float64) for layer in model.layers]


class NotANumber(spp.prune.Criterion):
    def scores(self, model):
        return [np.full(layer.shape, np.nan) for layer in model.layers]


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("criterion", [Transposed(), NotANumber()], ids=repr)
def test_criterion_scores_are_checked(criterion, scope):
    """Scores of the wrong shape (but the right size) or NaN would silently prune the
    wrong weights; a custom criterion is user input like any other."""
    model = spp.MLP([3, 4, 2], dtype="float64", seed=0)
    with pytest.raises(ValueError, match="criterion|scores"):
        spp.prune.unstructured(model, 0.5, criterion=criterion, scope=scope)
    assert model.sparsity == 0


# -- schedules --------------------------------------------------------------------------

SCHEDULE_NAMES = ["linear", "cubic", "constant", "geometric"]


@st.composite
def schedule_case(draw):
    steps = draw(st.integers(1, 12))
    target = draw(sparsities)
    initial = draw(st.floats(0.0, target)) if draw(st.booleans()) else 0.0
    return steps, target, initial


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(case=schedule_case())
def test_schedules_end_at_the_target_and_never_decrease(name, case):
    steps, target, initial = case
    schedule = spp.prune.get_schedule(name)
    values = [schedule(t, steps, target, initial) for t in range(1, steps + 1)]
    # To rounding: the driver must reach the exact count anyway (tested below).
    assert values[-1] == pytest.approx(target, rel=1e-12, abs=1e-15)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert all(initial - 1e-15 <= v <= target + 1e-15 for v in values)


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_schedule_formulas_from_zero(steps):
    t = np.arange(1, steps + 1)
    s_f = 0.9
    values = {name: np.array([spp.prune.get_schedule(name)(i, steps, s_f, 0.0) for i in t])
              for name in SCHEDULE_NAMES}
    np.testing.assert_allclose(values["linear"], s_f * t / steps, rtol=1e-12)
    np.testing.assert_allclose(values["cubic"], s_f * (1 - (1 - t / steps) ** 3), rtol=1e-12)
    np.testing.assert_allclose(values["constant"], s_f)
    # Geometric: every step keeps the same fraction of what was left.
    kept = 1 - np.concatenate([[0.0], values["geometric"]])
    np.testing.assert_allclose(kept[1:] / kept[:-1], (1 - s_f) ** (1 / steps), rtol=1e-12)


def test_geometric_from_an_already_pruned_start():
    values = [schedules.geometric(t, 2, 0.91, 0.1) for t in (1, 2)]
    np.testing.assert_allclose(1 - np.array(values), [0.9 * 0.1**0.5, 0.9 * 0.1], rtol=1e-12)


# -- the iterative driver ---------------------------------------------------------------


class Recording:
    """A callable schedule that delegates and records the masks it is called with: the
    masks after the previous step's pruning and fine-tuning."""

    def __init__(self, model, schedule):
        self.model, self.schedule, self.seen = model, spp.prune.get_schedule(schedule), []

    def __call__(self, step, steps, target, initial):
        self.seen.append(masks(self.model))
        return self.schedule(step, steps, target, initial)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_iterative_follows_the_schedule(name, blobs):
    X, y, Xt, yt = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    n = n_weights(model)
    recording = Recording(model, name)
    steps, target = 4, 0.8
    records = spp.prune.iterative(model, X, y, target, steps=steps, schedule=recording,
                                  finetune_epochs=2, lr=0.01, batch_size=32,
                                  validation_data=(Xt, yt), progress=False)
    assert [r.step for r in records] == [1, 2, 3, 4]
    schedule = spp.prune.get_schedule(name)
    for r in records:
        assert r.target == pytest.approx(schedule(r.step, steps, target, 0.0), rel=1e-12)
        assert r.sparsity == pytest.approx(round(r.target * n) / n, rel=1e-12)
        assert r.total == model.count_parameters()[0]
        assert r.active == r.total - round(r.target * n)
        assert np.isfinite(r.loss) and 0 <= r.train_accuracy <= 1 and 0 <= r.val_accuracy <= 1
        assert set(r.as_dict()) == {"step", "target", "sparsity", "active", "total", "loss",
                                    "train_accuracy", "val_accuracy", "description_length",
                                    "sizes"}
        assert r.sizes == (6, 12, 4)
    assert n_pruned(model) == round(target * n)
    assert records[-1].val_accuracy == model.score(Xt, yt)
    assert records[-1].train_accuracy == model.score(X, y)
    # Masks only ever lose entries, and pruned weights stayed 0 through fine-tuning.
    history = recording.seen + [masks(model)]
    for before, after in zip(history, history[1:]):
        for b, a in zip(before, after):
            assert not (a & ~b).any()
    for layer in model.layers:
        assert_array_equal(layer.weight[~layer.mask], 0)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@given(sizes=mlp_sizes(max_width=6), target=sparsities, steps=st.integers(1, 6),
       pre=st.sampled_from([0.0, 0.1, 0.3]))
@example(sizes=[5, 2], target=0.35, steps=3, pre=0.0)  # linear ends at 0.34999...
@example(sizes=[5, 3], target=0.1, steps=3, pre=0.0)   # geometric ends at 0.09999...
@example(sizes=[5, 3], target=0.9, steps=3, pre=0.3)   # linear from 5/15 ends at 0.8999...
def test_iterative_reaches_the_target_count(name, sizes, target, steps, pre):
    """After the last step exactly round(target * n) weights are pruned, whatever the
    floating-point rounding of the schedule's last value. The examples are cases where
    target * n is an exact half and the schedule's last value is 1 ulp below target."""
    model = spp.MLP(sizes, seed=0)
    n = n_weights(model)
    # Start at least one weight below the target (a start at the target itself is
    # test_iterative_accepts_the_sparsity_magnitude_just_reached).
    spp.prune.magnitude(model, max(0, min(round(pre * n), int(target * n) - 1)) / n)
    X, y = random_problem(6, sizes[0], sizes[-1], 0)
    records = spp.prune.iterative(model, X, y, target, steps=steps, schedule=name,
                                  finetune_epochs=0, progress=False)
    assert len(records) == steps
    assert n_pruned(model) == round(target * n)
    assert records[-1].sparsity == pytest.approx(round(target * n) / n, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("sizes, sparsity", [
    ([5, 2], 0.3),  # 3 of 10 pruned: model.sparsity = 1 - 7/10 = 0.30000000000000004
    ([2, 3], 0.25),  # round(1.5) = 2 of 6 pruned: 0.333
    ([64, 256, 128, 10], 0.9),  # round(45388.8) = 45389 of 50432 pruned: 0.900004
], ids=["float-noise", "rounded-up", "digits-net"])
def test_iterative_accepts_the_sparsity_magnitude_just_reached(sizes, sparsity):
    """A model pruned one-shot to s must still be fine-tunable with
    iterative(..., s, schedule="constant"), which asks for the very same count of pruned
    weights; the check against the current sparsity must compare counts, not floats."""
    model = spp.MLP(sizes, seed=0)
    spp.prune.magnitude(model, sparsity)
    pruned = masks(model)
    X, y = random_problem(4, sizes[0], sizes[-1], 0)
    spp.prune.iterative(model, X, y, sparsity, steps=1, schedule="constant",
                        finetune_epochs=0, progress=False)
    for got, want in zip(masks(model), pruned):
        assert_array_equal(got, want)


def test_iterative_with_a_callable_schedule(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    n = n_weights(model)

    def halves(step, steps, target, initial):
        return target * (1 - 0.5 ** step) / (1 - 0.5 ** steps)

    records = spp.prune.iterative(model, X, y, 0.6, steps=3, schedule=halves,
                                  finetune_epochs=1, progress=False)
    assert [r.target for r in records] == pytest.approx([halves(t, 3, 0.6, 0.0)
                                                         for t in (1, 2, 3)], rel=1e-12)
    assert [n - r.active + sum(model.sizes[1:]) for r in records] == \
        [round(halves(t, 3, 0.6, 0.0) * n) for t in (1, 2, 3)]


def test_iterative_with_the_random_criterion_and_layer_scope(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    records = spp.prune.iterative(model, X, y, 0.5, steps=2, criterion="random",
                                  scope="layer", finetune_epochs=1, progress=False)
    for layer in model.layers:
        assert (~layer.mask).sum() == round(0.5 * layer.n_weights)
    assert len(records) == 2


def test_iterative_starts_from_the_current_sparsity(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    spp.prune.magnitude(model, 0.4)
    n = n_weights(model)
    initial = model.sparsity
    records = spp.prune.iterative(model, X, y, 0.8, steps=2, schedule="linear",
                                  finetune_epochs=0, progress=False)
    assert [r.target for r in records] == pytest.approx([(initial + 0.8) / 2, 0.8],
                                                        rel=1e-12)
    assert np.isnan(records[0].loss)  # no fine-tuning epochs, no training loss
    assert n_pruned(model) == round(0.8 * n)


def test_iterative_is_deterministic(blobs):
    X, y, _, _ = blobs
    results = []
    for _ in range(2):
        model = spp.MLP([6, 12, 4], seed=3)
        records = spp.prune.iterative(model, X, y, 0.7, steps=3, finetune_epochs=2,
                                      batch_size=16, progress=False)
        results.append((records, params(model)))
    (ra, pa), (rb, pb) = results
    assert ra == rb
    for a, b in zip(flat(pa[0]), flat(pb[0])):
        assert a == b


def test_iterative_callback_sees_every_step(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    seen = []
    records = spp.prune.iterative(
        model, X, y, 0.75, steps=3, finetune_epochs=1, progress=False,
        callback=lambda record, m: seen.append((record, m.sparsity, m is model)))
    assert [s[0] for s in seen] == records
    assert [s[1] for s in seen] == [r.sparsity for r in records]
    assert all(s[2] for s in seen)
    with pytest.raises(TypeError, match="callback"):
        spp.prune.iterative(model, X, y, 0.8, steps=1, progress=False, callback=3)
    assert model.sparsity == records[-1].sparsity  # refused before pruning anything


def test_random_criterion_by_name_is_seeded_like_the_model(blobs):
    X, y, _, _ = blobs

    def masks(model_seed, fit_seed=None, one_shot=False):
        model = spp.MLP([6, 12, 4], seed=model_seed)
        if one_shot:
            spp.prune.unstructured(model, 0.5, criterion="random")
        else:
            spp.prune.iterative(model, X, y, 0.5, steps=2, criterion="random",
                                finetune_epochs=0, progress=False, seed=fit_seed)
        return np.concatenate([layer.mask.ravel() for layer in model.layers])

    for one_shot in (False, True):
        assert np.array_equal(masks(3, one_shot=one_shot), masks(3, one_shot=one_shot))
        assert not np.array_equal(masks(3, one_shot=one_shot), masks(4, one_shot=one_shot))
    # The fit seed, when given, is the one that counts.
    assert np.array_equal(masks(3, fit_seed=9), masks(4, fit_seed=9))


def test_prune_random_is_seeded_like_criterion_random():
    """prune.random without a seed draws from the model's, as criterion="random" does."""
    def mask(seed, how):
        model = spp.MLP([6, 12, 4], seed=seed)
        if how == "function":
            spp.prune.random(model, 0.5)
        else:
            spp.prune.unstructured(model, 0.5, criterion="random")
        return np.concatenate([layer.mask.ravel() for layer in model.layers])

    assert np.array_equal(mask(3, "function"), mask(3, "criterion"))
    assert not np.array_equal(mask(3, "function"), mask(4, "function"))


def test_emptying_a_layer_warns_and_names_it():
    """One global ranking over layers of different scales can take a whole layer, as
    torch's global_unstructured does: the masks stay torch's, and a warning says so."""
    model = spp.MLP([2, 100, 3], seed=0)
    model.layers[1].weight = model.layers[1].weight * 1e-6
    with pytest.warns(spp.prune.EmptyLayerWarning, match=r"every weight of layer\(s\) \[1\]"):
        spp.prune.magnitude(model, 0.7)
    assert not model.layers[1].mask.any() and model.layers[0].mask.any()
    # Already empty: no second warning, and a layer-wise budget keeps both layers.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spp.prune.magnitude(model, 0.8)
        other = spp.prune.magnitude(spp.MLP([2, 100, 3], seed=0), 0.7, scope="layer")
    assert all(layer.mask.any() for layer in other.layers)
