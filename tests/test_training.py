"""fit(): the optimizers' steps, masks, determinism, history and input handling."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

import reference as ref
import sparseprune as spp
from helpers import params, random_model, random_problem
from strategies import mlp_sizes, seeds


def assert_same_params(model, weights, biases, **kwargs):
    for layer, w, b in zip(model.layers, weights, biases):
        assert_allclose(layer.weight, w, **kwargs)
        assert_allclose(layer.bias, b, **kwargs)


def prune_half(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.mask = rng.random(layer.shape) < 0.5


@given(mlp_sizes(), seeds, st.sampled_from([1e-3, 0.1, 1.0]))
def test_one_epoch_of_plain_sgd_is_one_gradient_step(sizes, seed, lr):
    """Full batch, momentum 0, no decay: w -= lr * grad. Not bit-exact: the epoch's
    shuffle reorders the sums over samples, so float64 to rounding (1e-12)."""
    model = random_model(sizes, np.float64, seed)
    X, y = random_problem(8, sizes[0], sizes[-1], seed)
    loss, grads = model.loss_and_gradients(X, y)
    weights, biases, _ = params(model)
    history = model.fit(X, y, epochs=1, lr=lr, optimizer="sgd", momentum=0.0,
                        weight_decay=0.0, batch_size=None, progress=False)
    assert_same_params(model, [w - lr * gw for w, (gw, _) in zip(weights, grads)],
                       [b - lr * gb for b, (_, gb) in zip(biases, grads)],
                       rtol=1e-12, atol=1e-12)
    # The epoch's loss is measured before its (only) update.
    assert_allclose(history.loss, [loss], rtol=1e-12)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_mini_batches_are_mean_gradient_steps(batch_size):
    """Five copies of one sample: every batch, the smaller last one included, has the
    full-batch mean gradient whatever the shuffle, so an epoch of ceil(5 / b) batches is
    ceil(5 / b) plain gradient steps."""
    model = random_model([3, 4, 3], np.float64, 0)
    X, y = np.repeat(random_problem(1, 3, 3, 0)[0], 5, axis=0), np.full(5, 2)
    weights, biases, masks = params(model)
    model.fit(X, y, epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, batch_size=batch_size,
              progress=False)
    steps = -(-5 // batch_size)
    exp_w, exp_b = ref.train_full_batch(weights, biases, masks, X, y, ref.TorchSGD(0.1), steps)
    assert_same_params(model, exp_w, exp_b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer, options, torch_optimizer", [
    ("sgd", dict(lr=0.1, momentum=0.9), lambda: ref.TorchSGD(0.1, momentum=0.9)),
    ("sgd", dict(lr=0.1, momentum=0.5, weight_decay=0.01),
     lambda: ref.TorchSGD(0.1, momentum=0.5, weight_decay=0.01)),
    ("adam", dict(lr=0.01), lambda: ref.TorchAdam(0.01)),
    ("adam", dict(lr=0.01, weight_decay=0.1), lambda: ref.TorchAdam(0.01, weight_decay=0.1)),
], ids=["sgd-momentum", "sgd-decay", "adam", "adam-decay"])
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_full_batch_training_matches_torch_reference(optimizer, options, torch_optimizer,
                                                     pruned):
    """Five full-batch epochs in float64 are five steps of the torch-defined optimizer.
    Rounding differences (shuffled sums, fastmath) stay near 1e-13; Adam divides by
    sqrt(v) + eps, which can amplify them for gradients near 0, hence 1e-9."""
    model = random_model([4, 6, 5, 3], np.float64, 3)
    if pruned:
        prune_half(model)
    X, y = random_problem(10, 4, 3, 3)
    weights, biases, masks = params(model)
    model.fit(X, y, epochs=5, optimizer=optimizer, progress=False, **options)
    exp_w, exp_b = ref.train_full_batch(weights, biases, masks, X, y, torch_optimizer(), 5)
    assert_same_params(model, exp_w, exp_b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("options", [
    dict(optimizer="sgd", momentum=0.9),
    dict(optimizer="sgd", momentum=0.9, weight_decay=0.1),
    dict(optimizer="adam"),
    dict(optimizer="adam", weight_decay=0.1),
], ids=["sgd-momentum", "sgd-decay", "adam", "adam-decay"])
def test_masks_survive_training_and_pruned_weights_stay_zero(options, blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 16, 4], seed=0)
    spp.prune.magnitude(model, 0.6)
    masks = [layer.mask.copy() for layer in model.layers]
    before = [layer.weight.copy() for layer in model.layers]
    model.fit(X, y, epochs=3, lr=0.05, batch_size=16, progress=False, **options)
    for layer, mask, old in zip(model.layers, masks, before):
        assert_array_equal(layer.mask, mask)
        assert_array_equal(layer.weight[~mask], 0)
        assert not np.array_equal(layer.weight[mask], old[mask])  # it did train
    assert model.sparsity == pytest.approx(0.6, abs=1e-3)


def fitted(seed, fit_seed=None, **options):
    X, y = random_problem(40, 5, 3, 0)
    model = spp.MLP([5, 8, 3], seed=seed)
    history = model.fit(X, y, epochs=3, lr=0.1, batch_size=8, progress=False, seed=fit_seed,
                        **options)
    return model, history


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_gives_bit_identical_training(optimizer):
    (a, ha), (b, hb) = fitted(0, optimizer=optimizer), fitted(0, optimizer=optimizer)
    for la, lb in zip(a.layers, b.layers):
        assert_array_equal(la.weight, lb.weight)
        assert_array_equal(la.bias, lb.bias)
    assert ha.history == hb.history


def test_different_seeds_differ():
    a, _ = fitted(0)
    b, _ = fitted(1)
    assert not np.array_equal(a.layers[0].weight, b.layers[0].weight)
    # Same initialization, different shuffling seed passed to fit.
    c, hc = fitted(0, fit_seed=1)
    d, hd = fitted(0, fit_seed=2)
    assert not np.array_equal(c.layers[0].weight, d.layers[0].weight)
    assert hc.loss != hd.loss


def test_history_fields(blobs):
    X, y, Xt, yt = blobs
    model = spp.MLP([6, 8, 4], seed=0)
    history = model.fit(X, y, epochs=4, lr=0.05, batch_size=32, progress=False)
    assert isinstance(history, spp.History)
    assert len(history) == 4 and history.epoch == [1, 2, 3, 4]
    assert len(history.loss) == len(history.accuracy) == 4
    assert history.val_loss == [] and history.val_accuracy == []
    assert all(0 <= a <= 1 for a in history.accuracy)
    assert history["loss"] == history.loss
    assert set(history.history) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}

    history = model.fit(X, y, epochs=3, lr=0.05, batch_size=32, validation_data=(Xt, yt),
                        progress=False)
    assert len(history) == len(history.loss) == len(history.accuracy) == 3
    assert len(history.val_loss) == len(history.val_accuracy) == 3
    # Validation metrics are measured after the epoch: the last equals the model's now.
    val_loss, val_acc = model.evaluate(Xt, yt)
    assert history.val_accuracy[-1] == val_acc
    assert history.val_loss[-1] == pytest.approx(val_loss, rel=1e-12)


def test_history_loss_and_accuracy_cover_the_whole_epoch():
    """Training loss and accuracy average over every sample of the epoch, the last
    smaller batch included: with a learning rate too small to change any weight they
    equal evaluate() on the data. (Random biases: zero biases leave exact ties between
    logits of samples whose hidden units are all off, and a 1e-300 step breaks those.)"""
    model = random_model([5, 8, 3], np.float64, 0)
    X, y = random_problem(40, 5, 3, 0)
    loss, acc = model.evaluate(X, y)
    history = model.fit(X, y, epochs=1, lr=1e-300, batch_size=7, progress=False)
    assert history.accuracy == [acc]
    assert history.loss[0] == pytest.approx(loss, rel=1e-12)


def big(X):
    """X as a strided view into a bigger array: every other column of twice the width."""
    wide = np.zeros((X.shape[0], 2 * X.shape[1]), X.dtype)
    wide[:, ::2] = X
    return wide[:, ::2]


@pytest.mark.parametrize("convert", [
    big, np.asfortranarray, lambda X: X[::-1][::-1], lambda X: X.astype(np.float64),
    lambda X: np.round(X * 4).astype(np.int32), lambda X: X.tolist(),
], ids=["strided", "fortran", "negative-strides", "float64", "int32", "list"])
def test_any_layout_and_dtype_trains_like_the_converted_input(convert, blobs):
    X, y, Xt, _ = blobs
    weird = convert(X)
    plain = np.ascontiguousarray(np.asarray(weird), dtype=np.float32)
    a, b = spp.MLP([6, 8, 4], seed=0), spp.MLP([6, 8, 4], seed=0)
    ha = a.fit(weird, y, epochs=2, lr=0.05, batch_size=32, progress=False)
    hb = b.fit(plain, y, epochs=2, lr=0.05, batch_size=32, progress=False)
    assert ha.history == hb.history
    for la, lb in zip(a.layers, b.layers):
        assert_array_equal(la.weight, lb.weight)
    assert_array_equal(a.predict_proba(weird), b.predict_proba(plain))
    assert a.score(weird, y) == b.score(plain, y)


def test_read_only_input_trains_like_a_writable_one(blobs):
    X, y, _, _ = blobs
    frozen = X.copy()
    frozen.flags.writeable = False
    a, b = spp.MLP([6, 8, 4], seed=0), spp.MLP([6, 8, 4], seed=0)
    for backend in ("dense", "sparse"):
        ha = a.fit(frozen, y, epochs=2, batch_size=32, progress=False, backend=backend)
        hb = b.fit(X, y, epochs=2, batch_size=32, progress=False, backend=backend)
        assert ha.history == hb.history
    for la, lb in zip(a.layers, b.layers):
        assert_array_equal(la.weight, lb.weight)


def test_fit_leaves_the_input_unchanged(blobs):
    X, y, _, _ = blobs
    X_f = np.asfortranarray(X)  # its transpose is C-contiguous: used without a copy
    before = X_f.copy()
    spp.MLP([6, 8, 4], seed=0).fit(X_f, y, epochs=1, progress=False)
    assert_array_equal(X_f, before)


def test_float_labels_with_integral_values_are_accepted(blobs):
    X, y, _, _ = blobs
    a, b = spp.MLP([6, 8, 4], seed=0), spp.MLP([6, 8, 4], seed=0)
    a.fit(X, y.astype(np.float64), epochs=1, progress=False)
    b.fit(X, y, epochs=1, progress=False)
    assert_array_equal(a.layers[0].weight, b.layers[0].weight)


def test_progress_false_prints_nothing(capsys, blobs):
    X, y, Xt, yt = blobs
    model = spp.MLP([6, 8, 4], seed=0)
    model.fit(X, y, epochs=2, validation_data=(Xt, yt), progress=False)
    spp.prune.iterative(model, X, y, 0.5, steps=2, finetune_epochs=1, progress=False)
    assert capsys.readouterr() == ("", "")


def test_zero_epochs_changes_nothing(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 8, 4], seed=0)
    weights, _, _ = params(model)
    history = model.fit(X, y, epochs=0, progress=False)
    assert len(history) == 0
    assert_array_equal(model.layers[0].weight, weights[0])


def test_an_optimizer_object_trains_like_its_name(blobs):
    X, y, _, _ = blobs
    by_name, by_object = spp.MLP([6, 8, 4], seed=0), spp.MLP([6, 8, 4], seed=0)
    by_name.fit(X, y, epochs=3, lr=0.05, optimizer="sgd", momentum=0.5, weight_decay=1e-3,
                seed=1, progress=False)
    by_object.fit(X, y, epochs=3, optimizer=spp.SGD(0.05, momentum=0.5, weight_decay=1e-3),
                  seed=1, progress=False)
    for a, b in zip(by_name.layers, by_object.layers):
        assert_array_equal(a.weight, b.weight)
    # iterative() leaves lr to the object too.
    spp.prune.iterative(by_object, X, y, 0.5, steps=1, finetune_epochs=1, progress=False,
                        optimizer=spp.Adam(1e-3))


@pytest.mark.parametrize("options, match", [
    (dict(optimizer=spp.SGD(0.1), lr=0.1), "lr cannot be given with an optimizer object"),
    (dict(optimizer=spp.Adam(0.1), momentum=0.5, weight_decay=0.1),
     "momentum, weight_decay cannot be given"),
    (dict(optimizer="adam", momentum=0.9), "momentum is an SGD option"),
])
def test_options_that_would_be_ignored_are_refused(options, match, blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 8, 4], seed=0)
    before = [layer.weight.copy() for layer in model.layers]
    with pytest.raises(ValueError, match=match):
        model.fit(X, y, epochs=1, progress=False, **options)
    for layer, weight in zip(model.layers, before):
        assert_array_equal(layer.weight, weight)


@pytest.mark.parametrize("make", [lambda: spp.SGD(0.1, momentum=0.9), lambda: spp.Adam(0.01)])
def test_remap_keeps_the_state_of_surviving_entries(make):
    """A parameter replaced by one of another pattern: entries that continue an old one
    step exactly as they would have, new entries step as if fresh (for Adam, fresh
    moments at the global step count)."""
    rng = np.random.default_rng(0)
    old = rng.normal(size=6)
    grads = [rng.normal(size=6) for _ in range(3)]
    source = np.array([4, -1, 0, 2, -1], np.int64)
    new_grad = np.array([1.5, -0.5])
    # The reference goes on with the old array; `fresh` steps the new entries alone.
    reference, opt, fresh = make(), make(), make()
    ref_param, param, entries = old.copy(), old.copy(), np.zeros(2)
    reference.bind([ref_param], [np.ones(6, bool)])
    opt.bind([param], [np.ones(6, bool)])
    fresh.bind([entries], [np.ones(2, bool)])
    for g in grads[:2]:
        reference.step([g.copy()])
        opt.step([g.copy()])
    new = np.where(source >= 0, param[np.maximum(source, 0)], 0.0)
    opt.remap(0, new, np.ones(5, bool), source)
    g_new = grads[2][np.maximum(source, 0)]
    g_new[source < 0] = new_grad
    opt.step([g_new])
    reference.step([grads[2].copy()])
    if isinstance(fresh, spp.Adam):
        fresh._t = 2  # the step count is global: bias correction as at step 3
    fresh.step([new_grad.copy()])
    assert_allclose(new[source >= 0], ref_param[source[source >= 0]], rtol=1e-15)
    assert_allclose(new[source < 0], entries, rtol=1e-15)
