"""The figures of ``sparseprune demo``'s report, drawn from hand-made results."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread

from fake_results import result, step
from sparseprune.app import methods, plots
from sparseprune.app.results import MethodCurve, Methods

SIZES = [20, 64, 5]  # blobs-like
SHAPES = list(itertools.pairwise(SIZES))
N_WEIGHTS = sum(a * b for a, b in SHAPES)
N_BIAS = sum(SIZES[1:])


def _results():
    densities = np.geomspace(0.5, 0.01, 8)
    sweep = [step(i, 1 - d, 0.99 - 0.5 * (1 - d / 0.5) ** 8, 3600 * d / 0.5 + 80,
                  30 + 600 * (1 - d / 0.5) ** 8, n_weights=N_WEIGHTS, n_bias=N_BIAS, bits=2)
             for i, d in enumerate(densities, start=1)]
    best = min(sweep, key=lambda s: s.description_length.total_bits).step
    paths = {name: tuple(step(i, f(i / 4), 0.99 - 0.01 * i, 1000, 50, n_weights=N_WEIGHTS,
                              n_bias=N_BIAS) for i in range(1, 5))
             for name, f in (("linear", lambda t: 0.9 * t),
                             ("cubic", lambda t: 0.9 * (1 - (1 - t) ** 3)))}
    return result(sweep, best, paths=paths, n_train=200, base_active=N_WEIGHTS + N_BIAS)


@pytest.fixture
def layers(rng):
    """(before, after, masks, names) of a 20-64-5 net pruned to 90% by magnitude."""
    before, after, masks = [], [], []
    for a, b in SHAPES:
        w = rng.normal(0, math.sqrt(2 / a), size=(a, b))
        mask = np.abs(w) >= np.quantile(np.abs(w), 0.9)
        before.append(w.ravel())
        after.append(w[mask] * 1.1)
        masks.append(mask)
    return before, after, masks, [f"layer {i}: {a} x {b}" for i, (a, b) in enumerate(SHAPES, 1)]


def _check_png(path, min_width=600, min_height=300):
    image = imread(str(path))
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height, (width, height)
    assert width <= 4000 and height <= 3000, (width, height)
    assert image.std() > 0  # something was drawn


# -- each figure ---------------------------------------------------------------------------

def test_accuracy_vs_sparsity(tmp_path):
    path = tmp_path / "a.png"
    assert plots.demo_accuracy_vs_sparsity(_results(), str(path)) == str(path)
    _check_png(path)


def test_accuracy_vs_active(tmp_path):
    path = tmp_path / "a.png"
    assert plots.demo_accuracy_vs_active(_results(), str(path)) == str(path)
    _check_png(path)


def test_accuracy_figures_without_a_sweep(tmp_path):
    results = dataclasses.replace(_results(), paths={})
    results = dataclasses.replace(results, mdl=dataclasses.replace(results.mdl, records=()))
    _check_png(plots.demo_accuracy_vs_sparsity(results, str(tmp_path / "s.png")))
    _check_png(plots.demo_accuracy_vs_active(results, str(tmp_path / "a.png")))


def test_weight_histograms(tmp_path, layers):
    before, after, _, names = layers
    path = plots.demo_weight_histograms(before, after, str(tmp_path / "h.png"), names=names)
    _check_png(path)
    # an all-pruned layer and default names
    _check_png(plots.demo_weight_histograms([before[0]], [np.array([])],
                                            str(tmp_path / "h0.png")))


def test_masks(tmp_path, layers):
    masks, names = layers[2], layers[3]
    _check_png(plots.demo_masks(masks, str(tmp_path / "m.png"), names=names))
    # thin, empty and large masks, default names
    big = np.random.default_rng(0).random((600, 700)) < 0.05
    _check_png(plots.demo_masks([np.ones((128, 10), bool), np.zeros((3, 2), bool), big],
                                str(tmp_path / "m2.png")))


def test_description_length(tmp_path):
    results = _results()
    sweep = results.mdl.records
    path = plots.demo_description_length(sweep, str(tmp_path / "d.png"),
                                         np.float32(results.codes.uniform_bits),
                                         results.mdl.preferred_step, title="blobs")
    _check_png(path)
    _check_png(plots.demo_description_length(sweep, str(tmp_path / "d2.png"), 500.0, 3))


def _methods():
    """A hand-made methods comparison: every method of the demo, five sparsities."""
    grid = (0.5, 0.8, 0.9, 0.95, 0.98)
    curves = tuple(MethodCurve(name=name, sparsity=grid,
                               test_accuracy=tuple(0.99 - (0.02 + 0.01 * i) * k
                                                   for k in range(len(grid))))
                   for i, name in enumerate(methods.METHODS))
    structured = MethodCurve(name=methods.STRUCTURED, sparsity=(0.25, 0.5, 0.75, 0.9),
                             test_accuracy=(0.99, 0.98, 0.95, 0.6))
    return Methods(baseline_accuracy=0.99, curves=curves, structured=structured,
                   settings={"sparsities": list(grid), "unit_fractions": [0.25, 0.5, 0.75, 0.9],
                             "lottery_rounds": 3, "seed": 0})


def test_methods_figure(tmp_path):
    results = dataclasses.replace(_results(), methods=_methods())
    _check_png(plots.demo_methods(results, str(tmp_path / "m.png")), min_width=1200)
    with pytest.raises(ValueError, match="no methods comparison"):
        plots.demo_methods(_results(), str(tmp_path / "none.png"))


def test_demo_figures_writes_the_six_files(tmp_path, layers):
    before, after, masks, names = layers
    out = tmp_path / "report"  # created if missing
    results = dataclasses.replace(_results(), methods=_methods())
    paths = plots.demo_figures(results, str(out), before, after, masks, names)
    assert [p.rsplit("/", 1)[-1] for p in paths] == list(plots.FIGURES) == [
        "accuracy_vs_sparsity.png", "accuracy_vs_active.png", "weight_histograms.png",
        "masks.png", "description_length.png", "methods.png"]
    for path in paths:
        assert (out / path.rsplit("/", 1)[-1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        _check_png(path)
    # Without a methods comparison, the figure is not drawn (nor named).
    paths = plots.demo_figures(_results(), str(tmp_path / "old"), before, after, masks, names)
    assert [p.rsplit("/", 1)[-1] for p in paths] == list(plots.FIGURES)[:5]
    assert not (tmp_path / "old" / "methods.png").exists()


# -- bad input -----------------------------------------------------------------------------

def test_masks_rejects_bad_input(tmp_path):
    path = str(tmp_path / "m.png")
    with pytest.raises(ValueError, match="masks must not be empty"):
        plots.demo_masks([], path)
    with pytest.raises(ValueError, match="2-D"):
        plots.demo_masks([np.ones(5, bool)], path)
    with pytest.raises(ValueError, match="names has 2 entries for 1 layers"):
        plots.demo_masks([np.ones((2, 2), bool)], path, names=["a", "b"])


def test_weight_histograms_rejects_bad_input(tmp_path):
    path = str(tmp_path / "h.png")
    with pytest.raises(ValueError, match="one array per layer"):
        plots.demo_weight_histograms([], [], path)
    with pytest.raises(ValueError, match="one array per layer"):
        plots.demo_weight_histograms([np.ones(3)], [np.ones(3), np.ones(2)], path)
    with pytest.raises(ValueError, match="finite"):
        plots.demo_weight_histograms([np.array([1.0, np.nan])], [np.ones(1)], path)


def test_description_length_rejects_bad_input(tmp_path):
    sweep = list(_results().mdl.records)
    path = str(tmp_path / "d.png")
    with pytest.raises(ValueError, match=r"preferred_step 99 is not among the steps \[1, 2,"):
        plots.demo_description_length(sweep, path, 464.0, 99)
    with pytest.raises(ValueError, match="steps must not be empty"):
        plots.demo_description_length([], path, 464.0, 1)
    with pytest.raises(ValueError, match="uniform_bits must be a positive number"):
        plots.demo_description_length(sweep, path, 0, 1)
    with pytest.raises(ValueError, match="uniform_bits must be a positive number"):
        plots.demo_description_length(sweep, path, "many", 1)
    sweep[1] = dataclasses.replace(sweep[1], description_length=None)
    with pytest.raises(ValueError, match="every step needs its description_length"):
        plots.demo_description_length(sweep, path, 464.0, 1)


def test_accuracy_figures_reject_bad_input(tmp_path):
    path = str(tmp_path / "a.png")
    results = _results()
    results = dataclasses.replace(results, mdl=dataclasses.replace(results.mdl,
                                                                   preferred_step=42))
    for draw in (plots.demo_accuracy_vs_sparsity, plots.demo_accuracy_vs_active):
        with pytest.raises(ValueError, match="preferred_step 42 is not among the steps"):
            draw(results, path)
    results = _results()
    linear = list(results.paths["linear"])
    linear[0] = dataclasses.replace(linear[0], val_accuracy=None)
    results = dataclasses.replace(results, paths={**results.paths, "linear": tuple(linear)})
    with pytest.raises(ValueError, match="step 1 has no test accuracy"):
        plots.demo_accuracy_vs_sparsity(results, path)


def test_demo_figures_refuse_a_bad_result_before_drawing(tmp_path, layers):
    results = _results()
    results = dataclasses.replace(results, mdl=dataclasses.replace(results.mdl,
                                                                   preferred_step=42))
    with pytest.raises(ValueError, match="preferred_step 42"):
        plots.demo_figures(results, str(tmp_path), *layers)
    assert not list(tmp_path.iterdir())  # nothing drawn
