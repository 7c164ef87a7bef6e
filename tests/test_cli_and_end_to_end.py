"""The README's digits result end to end."""

import numpy as np

import sparseprune as spp


def test_digits_baseline_and_iterative_pruning_to_90_percent(digits):
    """The README's claim: 64-256-128-10 reaches >= 96% and keeps it within 2 points at
    90% sparsity after cubic iterative pruning (about 2 s)."""
    X, y, Xt, yt = digits
    model = spp.MLP([64, 256, 128, 10], dtype="float32", seed=0)
    model.fit(X, y, epochs=50, lr=0.05, batch_size=64, progress=False)
    baseline = model.score(Xt, yt)
    assert baseline >= 0.96

    records = spp.prune.iterative(model, X, y, 0.9, steps=5, schedule="cubic",
                                  finetune_epochs=10, lr=0.01, batch_size=64, progress=False)
    n = sum(layer.n_weights for layer in model.layers)
    assert sum(int((~layer.mask).sum()) for layer in model.layers) == round(0.9 * n)
    assert records[-1].sparsity == model.sparsity
    for layer in model.layers:
        assert not layer.weight[~layer.mask].any()
    assert model.score(Xt, yt) >= baseline - 0.02
    assert np.isfinite([r.loss for r in records]).all()
