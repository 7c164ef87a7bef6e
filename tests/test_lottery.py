"""Lottery tickets: iterative magnitude pruning with rewinding, and the reinit control."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import sparseprune as spp
from helpers import params, random_model

FIT = dict(optimizer="sgd", lr=0.05, batch_size=40, seed=5, tol=None)  # blobs: 120 samples


def test_rewinding_to_init_restores_the_initial_weights(blobs):
    X, y, _, _ = blobs
    model = random_model([6, 12, 8, 4], np.float32, 0)  # random biases: rewound too
    weights, biases, _ = params(model)
    ticket = spp.prune.lottery(model, X, y, 0.8, rounds=3, epochs=2, progress=False, **FIT)
    assert ticket.rewind == 0
    for mask, w, b, w0, b0 in zip(ticket.masks, ticket.weights, ticket.biases, weights,
                                  biases):
        assert_array_equal(w[mask], w0[mask])
        assert_array_equal(w[~mask], 0)
        assert_array_equal(b, b0)
        assert not w.flags.writeable and not mask.flags.writeable
    assert ticket.sparsity == pytest.approx(round(0.8 * 200) / 200)


@pytest.mark.parametrize("backend", ["dense", "sparse"])
@pytest.mark.parametrize("k, batch_size", [(1, None), (3, None), (3, 40), (6, 40), (4, 40)])
def test_rewinding_to_iteration_k_restores_its_weights(blobs, backend, k, batch_size):
    """The weights after k updates are those ``fit`` leaves after k steps: with full
    batches one step is one epoch; with 3 batches an epoch, k = 3 and 6 are whole
    epochs, and k = 4 stops mid-epoch (an optimizer that makes only its first k steps
    gives the independent weights)."""
    X, y, _, _ = blobs
    options = dict(FIT, batch_size=batch_size, backend=backend)
    steps_per_epoch = 1 if batch_size is None else 3
    model = random_model([6, 12, 4], np.float32, 1)
    independent = random_model([6, 12, 4], np.float32, 1)
    ticket = spp.prune.lottery(model, X, y, 0.7, rounds=2, epochs=3, rewind=k,
                               progress=False, **options)
    assert ticket.rewind == k
    if k % steps_per_epoch == 0:
        independent.fit(X, y, epochs=k // steps_per_epoch, progress=False, **options)
    else:
        # Mid-epoch: train with an optimizer that stops updating after k steps.
        independent.fit(X, y, epochs=2, progress=False, optimizer=Stopping(k, FIT["lr"]),
                        batch_size=batch_size, seed=FIT["seed"], backend=backend, tol=None)
    for mask, w, b, layer in zip(ticket.masks, ticket.weights, ticket.biases,
                                 independent.layers):
        assert_array_equal(w[mask], layer.weight[mask])
        assert_array_equal(b, layer.bias)


class Stopping(spp.SGD):
    """SGD (momentum 0.9, as fit's default) that makes only its first ``k`` steps."""

    def __init__(self, k, lr):
        super().__init__(lr=lr)
        self.k, self.taken = k, 0

    def step(self, grads):
        if self.taken < self.k:
            super().step(grads)
        self.taken += 1


def test_rewinding_after_the_last_iteration(blobs):
    X, y, _, _ = blobs
    model, independent = (random_model([6, 12, 4], np.float32, 1) for _ in range(2))
    ticket = spp.prune.lottery(model, X, y, 0.5, rounds=1, epochs=2, rewind=6,
                               progress=False, **FIT)
    independent.fit(X, y, epochs=2, progress=False, **FIT)
    for mask, w, layer in zip(ticket.masks, ticket.weights, independent.layers):
        assert_array_equal(w[mask], layer.weight[mask])


def test_rounds_prune_geometrically_and_masks_only_shrink(blobs):
    X, y, Xt, yt = blobs
    model = spp.MLP([6, 12, 8, 4], seed=0)
    masks = []

    class Watch(spp.SGD):
        def bind(self, params, live):
            masks.append(np.concatenate([m.copy() for m in live[::2]]))
            super().bind(params, live)

    ticket = spp.prune.lottery(model, X, y, 0.9, rounds=3, epochs=1, progress=False,
                               optimizer=Watch(lr=0.05), batch_size=40, seed=0,
                               validation_data=(Xt, yt))
    n = 6 * 12 + 12 * 8 + 8 * 4
    assert [r.round for r in ticket.rounds] == [0, 1, 2, 3]
    expected = [0.0] + [spp.prune.geometric(r, 3, 0.9) for r in (1, 2)] + [0.9]
    assert [r.sparsity for r in ticket.rounds] == pytest.approx(
        [round(s * n) / n for s in expected], abs=1e-12)
    for before, after in zip(masks, masks[1:]):
        assert not (after & ~before).any()
    assert ticket.rounds[-1].val_accuracy == model.score(Xt, yt)
    assert ticket.as_dict()["rounds"][-1]["sparsity"] == ticket.sparsity


def test_the_model_ends_as_the_ticket_retrained(blobs):
    """``model`` holds the last round's network: the ticket trained from its rewind
    point, which ``ticket.model()`` retrains to the same weights."""
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=3)
    ticket = spp.prune.lottery(model, X, y, 0.75, rounds=2, epochs=2, rewind=2,
                               progress=False, **FIT)
    again = ticket.model()
    for layer, mask in zip(again.layers, ticket.masks):
        assert_array_equal(layer.mask, mask)
    again.fit(X, y, epochs=2, progress=False, **FIT)
    for a, b in zip(again.layers, model.layers):
        assert_array_equal(a.weight, b.weight)
        assert_array_equal(a.bias, b.bias)


def test_scopes_apply_to_the_pruning_rounds(blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    ticket = spp.prune.lottery(model, X, y, 0.8, rounds=2, epochs=1, scope={1: 0.5},
                               progress=False, **FIT)
    assert [int((~m).sum()) for m in ticket.masks] == [round(0.8 * 72), round(0.5 * 48)]


def test_reinit_keeps_the_mask_and_draws_fresh_weights(blobs):
    X, y, _, _ = blobs
    ticket = spp.prune.lottery(spp.MLP([6, 12, 4], seed=0), X, y, 0.6, rounds=1, epochs=1,
                               progress=False, **FIT)
    control = spp.prune.reinit(ticket, seed=7)
    fresh = spp.MLP([6, 12, 4], seed=7)
    for layer, new, mask, w in zip(control.layers, fresh.layers, ticket.masks, ticket.weights):
        assert_array_equal(layer.mask, mask)
        assert_array_equal(layer.weight, np.where(mask, new.weight, 0))
        assert_array_equal(layer.bias, 0)
        assert not np.array_equal(layer.weight[mask], w[mask])
    assert control.sparsity == ticket.sparsity


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(rewind="start"), ValueError, "rewind must be 'init' or an iteration count"),
    (dict(rewind=-1), ValueError, "rewind must be >= 0"),
    (dict(rewind=7), ValueError, "rewind is iteration 7, but a round trains only 6"),
    (dict(rewind=1.5), TypeError, "rewind must be an integer"),
    (dict(rounds=0), ValueError, "rounds must be >= 1"),
    (dict(target_sparsity=1.0), ValueError, "target_sparsity must be < 1"),
    (dict(scope={2: 0.5}), ValueError, "names layer 2"),
    (dict(progress_bar=True), TypeError, "unexpected keyword arguments"),
])
def test_bad_input(kwargs, error, match, blobs):
    X, y, _, _ = blobs
    model = spp.MLP([6, 12, 4], seed=0)
    before = params(model)
    call = dict(target_sparsity=0.5, rounds=2, epochs=2, progress=False, **FIT)
    call.update(kwargs)
    with pytest.raises(error, match=match):
        spp.prune.lottery(model, X, y, **call)
    for a, b in zip(params(model)[0], before[0]):
        assert_array_equal(a, b)
    with pytest.raises(TypeError, match="ticket must be a Ticket"):
        spp.prune.reinit(model, seed=0)
