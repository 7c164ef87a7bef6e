"""``sparseprune demo``: the teaching notebook's whole story, on one data set.

Baseline training; one-shot 50% magnitude pruning and fine-tuning; iterative pruning
along the linear and cubic schedules; a deeper pruning sweep with the description
length at every step and the sparsity MDL prefers; the other codes (bits back,
prequential) against the uniform one; the pruning methods side by side
(:mod:`~sparseprune.app.methods`); the pruned model made sparse, its speed and size;
its values quantized, its files beside the description length.
:func:`run` does the work and returns a :class:`~sparseprune.app.results.DemoResult`;
:func:`write` saves it as ``results.json``, ``report.md``, the plots and the sparse
model.
"""

import copy
import dataclasses
import json
import os
import tempfile
import time
import warnings

import numpy as np

from .. import data, mdl, prune
from ..model import MLP
from .methods import compare
from .plots import demo_figures
from .profile import measure
from .report import (
    codes_table, markdown, methods_table, one_shot_table, quantized_table, steps_table,
    structured_table, timing_table,
)
from .results import (
    Baseline, BitsBackSearch, Codes, DataInfo, DemoResult, OneShot, Quantized, ServedFile,
    SparsePayoff, Sweep, Timing,
)

__all__ = ["BATCHES", "NOTEBOOK", "QUANTIZED_BITS", "QUICK_SCALE", "SETUPS", "SIGMAS",
           "TOLERANCE", "VARIATIONAL_EPOCHS", "load", "run", "write"]

# Per data set: the network, the baseline's training, the fine-tuning after each pruning
# step, the iterative paths' target, and the MDL sweep (deep enough that the misfit
# finally outgrows the savings, so the description length has a minimum to find).
# Blobs follow the notebook (one hidden layer, full-batch gradient descent); digits is
# the README's network, trained by SGD with momentum. Both keep these explicit settings
# (and every epoch: tol=None) whatever fit's defaults are.
NOTEBOOK = dict(optimizer="sgd", momentum=0.0, batch_size="full", tol=None)
SETUPS = {
    "blobs": dict(
        sizes=[20, 64, 5], fit=dict(NOTEBOOK, epochs=200, lr=0.1),
        finetune=dict(NOTEBOOK, epochs=50, lr=0.02), target=0.9,
        sweep=dict(target=0.99, steps=12, epochs=50),
    ),
    "digits": dict(
        sizes=[64, 256, 128, 10],
        fit=dict(optimizer="sgd", epochs=50, lr=0.05, batch_size=64, tol=None),
        finetune=dict(optimizer="sgd", epochs=10, lr=0.01, batch_size=64, tol=None),
        target=0.9, sweep=dict(target=0.999, steps=16, epochs=5),
    ),
}
# --quick: this fraction of every epoch count (at least one epoch).
QUICK_SCALE = 0.2
# Posterior widths tried for the bits-back code, four per decade; the report keeps the
# shortest. One width for every weight: the paper learns one per weight by training with
# noise, which this demo does not do, so its bits-back figure is an upper bound.
SIGMAS = (0.01, 0.018, 0.032, 0.056, 0.1, 0.18, 0.32, 0.56)
# Epochs of mdl.variational for the noisy-weight codes (measured on digits: the code
# keeps shortening until about 200).
VARIATIONAL_EPOCHS = 200
# Batch sizes at which dense and sparse inference are timed (plus the whole test set).
BATCHES = (1, 64)
# The precisions the pruned model's files are shown at (the search for the smallest file
# tries every one from 2 to 8), and the accuracy a smaller file may cost: one point of
# the dense baseline's.
QUANTIZED_BITS = (8, 4)
TOLERANCE = 0.01


def load(name, seed):
    """(X_train, y_train, X_test, y_test) of the demo's data set ``name``."""
    if name == "blobs":
        return data.blobs(n_train=1000, n_test=500, n_features=20, n_classes=5, seed=seed)
    return data.digits(seed=seed)


def _epochs(n, quick):
    return max(1, round(n * QUICK_SCALE)) if quick else n


def _baseline(setup, fit, X, y, Xt, yt, seed, progress, say):
    model = MLP(setup["sizes"], seed=seed)
    model.fit(X, y, validation_data=(Xt, yt), progress=progress, **fit)
    total, active = model.count_parameters()
    code = mdl.description_length(model, X, y)
    say(f"baseline: test accuracy {model.score(Xt, yt):.2%}, {active} parameters; "
        f"description length {code.total_bits:,.0f} bits (b = {code.bits}) against "
        f"{code.uniform_bits:,.0f} for the labels alone")
    return model, Baseline(
        train_accuracy=model.score(X, y), test_accuracy=model.score(Xt, yt), active=active,
        total=total, description_length=code,
        description_length_32=mdl.description_length(model, X, y, bits=32))


def _one_shot(base, tune, X, y, Xt, yt):
    model = copy.deepcopy(base)
    prune.magnitude(model, 0.5)
    before = model.score(Xt, yt)
    model.fit(X, y, progress=False, **tune)
    return OneShot(sparsity=model.sparsity, active=model.count_parameters()[1],
                   test_accuracy=before, finetuned_test_accuracy=model.score(Xt, yt))


def _path(base, X, y, Xt, yt, target, steps, schedule, tune, progress, callback=None):
    """Iterative pruning of a copy of ``base``; returns (model, records)."""
    model = copy.deepcopy(base)
    options = {k: v for k, v in tune.items() if k != "epochs"}
    records = prune.iterative(model, X, y, target_sparsity=target, steps=steps,
                              schedule=schedule, finetune_epochs=tune["epochs"],
                              validation_data=(Xt, yt), progress=progress, mdl_bits=None,
                              callback=callback, **options)
    return model, tuple(records)


def _bits_back(model, X, y, draws, seed):
    """The shortest bits-back code over the sigma grid."""
    codes = {s: mdl.bits_back(model, X, y, sigma=s, draws=draws, seed=seed) for s in SIGMAS}
    sigma = min(codes, key=lambda s: codes[s].total_bits)
    return BitsBackSearch(sigma=sigma, code=codes[sigma],
                          by_sigma={s: c.total_bits for s, c in codes.items()})


def _noisy(model, X, y, prior, epochs, draws, seed, progress):
    """The code of noisy weights whose sigmas ``mdl.variational`` learned."""
    post = mdl.variational(model, X, y, epochs=epochs, prior=prior, seed=seed,
                           progress=progress)
    return post.description_length(X, y, draws=draws, seed=seed)


def _codes(base, preferred, two_part, setup, fit, X, y, quick, seed, progress):
    """Bits-back, noisy-weight and prequential codes of the training labels, beside the
    two-part codes already measured (``two_part``: the baseline's and the preferred
    step's)."""
    draws = 4 if quick else mdl.BITS_BACK_SAMPLES
    noisy_epochs = _epochs(VARIATIONAL_EPOCHS, quick)

    def make_model(Xp, yp):
        model = MLP(setup["sizes"], seed=seed)
        model.fit(Xp, yp, progress=False, seed=seed, **fit)
        return model

    preq = mdl.prequential(make_model, X, y, blocks=6 if quick else 8, progress=progress)
    return Codes(uniform_bits=preq.uniform_bits, two_part=two_part[0],
                 two_part_preferred=two_part[1], bits_back=_bits_back(base, X, y, draws, seed),
                 bits_back_preferred=_bits_back(preferred, X, y, draws, seed),
                 prequential=preq,
                 noisy_gaussian=_noisy(preferred, X, y, "gaussian", noisy_epochs, draws, seed,
                                       progress),
                 noisy_mixture=_noisy(preferred, X, y, "mixture", noisy_epochs, draws, seed,
                                      progress))


def _dense_file_bytes(model):
    """Bytes of the dense weights and biases in an .npz, as a dense user would store
    them: (plain, compressed). Compression squeezes the pruned zeros too."""
    arrays = {}
    for i, layer in enumerate(model.layers):
        arrays[f"weight{i}"], arrays[f"bias{i}"] = layer.weight, layer.bias
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for save in (np.savez, np.savez_compressed):
            path = os.path.join(tmp, "dense.npz")
            save(path, **arrays)
            sizes.append(os.path.getsize(path))
    return tuple(sizes)


def _sparse_payoff(model, Xt, budget):
    """The pruned model as a SparseMLP: same predictions, its bytes, its speed (medians
    of interleaved repetitions, as ``sparseprune profile`` times them)."""
    smodel = model.to_sparse()
    dense_proba = model.predict_proba(Xt)
    sparse_proba = smodel.predict_proba(Xt)
    timing = []
    for batch in sorted(set(BATCHES) | {Xt.shape[0]}):
        Xb = np.ascontiguousarray(Xt[:batch])
        times = measure({"dense": lambda Xb=Xb: model.predict_proba(Xb),
                         "sparse": lambda Xb=Xb: smodel.predict_proba(Xb)}, budget)
        timing.append(Timing(batch=batch, dense_ms=times["dense"] * 1e3,
                             sparse_ms=times["sparse"] * 1e3))
    dense_file, dense_compressed = _dense_file_bytes(model)
    payoff = SparsePayoff(
        sparsity=model.sparsity,
        max_abs_proba_difference=float(np.max(np.abs(dense_proba - sparse_proba))),
        same_predictions=float(np.mean(model.predict(Xt) == smodel.predict(Xt))),
        dense_bytes=int(sum(layer.weight.nbytes + layer.bias.nbytes for layer in model.layers)),
        sparse_bytes=int(smodel.nbytes()), dense_file_bytes=dense_file,
        dense_compressed_file_bytes=dense_compressed,
        backends={t.batch: [layer.backend_for(t.batch) for layer in smodel.layers]
                  for t in timing},
        timing=tuple(timing))
    return smodel, payoff


def _file_bytes(smodel, version=None):
    """Bytes of ``smodel``'s file as ``save`` writes it."""
    with tempfile.TemporaryDirectory() as tmp:
        return os.path.getsize(smodel.save(os.path.join(tmp, "model"), version=version))


def _served(name, model, bits, X, y, Xt, yt):
    """A ServedFile of ``model`` (an MLP) with float32 values (``bits`` None, format
    version 1) or ``bits``-bit codes (version 2)."""
    smodel = model.to_sparse(backend="sparse") if bits is None else model.to_sparse(bits=bits)
    code = mdl.description_length(model, X, y, bits=32 if bits is None else bits)
    return ServedFile(name=name, sparsity=model.sparsity, bits=bits,
                      version=1 if bits is None else 2, test_accuracy=smodel.score(Xt, yt),
                      file_bytes=_file_bytes(smodel), memory_bytes=int(smodel.nbytes()),
                      model_bits=code.model_bits)


def _sweep_files(records, states):
    """Per sweep record, the bytes of its model saved at the record's b (None where no
    file holds b: 9 to 16)."""
    sizes = []
    for record, state in zip(records, states):
        b = record.description_length.bits
        if b == 32:
            sizes.append(_file_bytes(state.to_sparse(backend="sparse"), version=2))
        else:
            sizes.append(_file_bytes(state.to_sparse(bits=b)) if b <= 8 else None)
    return tuple(sizes)


def _quantized(pruned, candidates, baseline, X, y, Xt, yt):
    """The cubic path's model at float32 and at QUANTIZED_BITS, and the smallest file of
    ``candidates`` ({name: MLP}) at 2..8 bits within TOLERANCE of the baseline."""
    name = "cubic path's end"
    files = [_served(name, pruned, bits, X, y, Xt, yt) for bits in (None, *QUANTIZED_BITS)]
    floor = baseline.test_accuracy - TOLERANCE - 1e-12
    best = None  # (file bytes, name, bits)
    for label, model in candidates.items():
        for bits in range(2, 9):
            smodel = model.to_sparse(bits=bits)
            if smodel.score(Xt, yt) >= floor:
                size = _file_bytes(smodel)
                if best is None or size < best[0]:
                    best = (size, label, bits)
    smallest = None if best is None else _served(best[1], candidates[best[1]], best[2], X, y,
                                                 Xt, yt)
    dense_bytes = sum(layer.weight.nbytes + layer.bias.nbytes for layer in pruned.layers)
    return Quantized(dense_bytes=int(dense_bytes), baseline_accuracy=baseline.test_accuracy,
                     files=tuple(files), smallest=smallest, tolerance=TOLERANCE,
                     searched=7 * len(candidates))


def run(data_name="blobs", quick=False, seed=0, progress=True, say=print):
    """Run the story, telling it through ``say``; returns ``(result, artifacts)``.

    ``result`` is a :class:`~sparseprune.app.results.DemoResult` holding every number
    the report shows; ``artifacts`` holds what the plots and files need beyond numbers:
    the models, each layer's weights before and after pruning, the masks.
    """
    setup = SETUPS[data_name]
    fit = dict(setup["fit"], epochs=_epochs(setup["fit"]["epochs"], quick))
    tune = dict(setup["finetune"], epochs=_epochs(setup["finetune"]["epochs"], quick))
    X, y, Xt, yt = load(data_name, seed)
    say(f"data: {data_name}, {X.shape[0]} train and {Xt.shape[0]} test samples, "
        f"{X.shape[1]} features, {int(y.max()) + 1} classes")
    say(f"network: {setup['sizes']}, float32, seed {seed}{', quick' if quick else ''}\n")
    started = time.perf_counter()

    base, baseline = _baseline(setup, fit, X, y, Xt, yt, seed, progress, say)
    one_shot = _one_shot(base, tune, X, y, Xt, yt)
    say("\n" + one_shot_table(one_shot).text())

    paths, models = {}, {}
    for schedule in ("linear", "cubic"):
        models[schedule], paths[schedule] = _path(base, X, y, Xt, yt, setup["target"], 5,
                                                  schedule, tune, progress)
        say(f"\niterative magnitude pruning, {schedule} schedule to {setup['target']:.0%} "
            f"(baseline {baseline.test_accuracy:.2%}):")
        say(steps_table(paths[schedule]).text())
    pruned = models["cubic"]  # the model made sparse below

    sweep = setup["sweep"]
    say(f"\nhow far to prune: geometric schedule to {sweep['target']:.1%} in "
        f"{sweep['steps']} steps, description length of the training labels at each:")
    states = []  # every step's model, to code the one MDL prefers
    with warnings.catch_warnings():
        # The sweep goes past the collapse on purpose (its last steps can empty a layer);
        # the table shows it, and MDL is what says where to stop.
        warnings.simplefilter("ignore", prune.EmptyLayerWarning)
        _, records = _path(base, X, y, Xt, yt, sweep["target"], sweep["steps"], "geometric",
                           dict(tune, epochs=_epochs(sweep["epochs"], quick)), progress,
                           callback=lambda record, model: states.append(copy.deepcopy(model)))
    file_bytes = _sweep_files(records, states)
    say(steps_table(records, file_bytes).text())
    best = mdl.best(records)
    accurate = max(records, key=lambda r: (r.val_accuracy, -r.step))
    say(f"MDL prefers step {best.step}: sparsity {best.sparsity:.2%}, {best.active} active "
        f"parameters, {best.total_bits:,.0f} bits, test accuracy {best.val_accuracy:.2%} "
        f"(most accurate: step {accurate.step}, {accurate.val_accuracy:.2%})")
    mdl_sweep = Sweep(schedule="geometric", target=sweep["target"], steps=sweep["steps"],
                      records=records, preferred_step=best.step,
                      most_accurate_step=accurate.step, file_bytes=file_bytes)

    codes_started = time.perf_counter()
    codes = _codes(base, states[best.step - 1],
                   (baseline.description_length, best.description_length),
                   setup, fit, X, y, quick, seed, progress)
    say(f"\ncodes of the {len(y)} training labels (compression = uniform / total; "
        f"{time.perf_counter() - codes_started:.1f} s):")
    say(codes_table(codes).text())

    say("\npruning methods side by side (test accuracy):")
    methods = compare(base, setup["sizes"], X, y, Xt, yt, fit, tune, seed=seed,
                      progress=progress)
    say(methods_table(methods).text())
    say(structured_table(methods).text())

    smodel, sparse = _sparse_payoff(pruned, Xt, 0.05 if quick else 0.3)
    say(f"\nthe {pruned.sparsity:.0%} model as a SparseMLP: weights and biases take "
        f"{sparse.sparse_bytes / 1024:.1f} KiB against {sparse.dense_bytes / 1024:.1f} KiB "
        f"dense; predictions agree on {sparse.same_predictions:.2%} of the test set")
    say(timing_table(sparse).text())

    candidates = {"cubic path's end": pruned,
                  **{f"sweep step {r.step}": m for r, m in zip(records, states)}}
    quantized = _quantized(pruned, candidates, baseline, X, y, Xt, yt)
    say(f"\nits values quantized (files against the two-part code's model bits; dense "
        f"parameters: {quantized.dense_bytes:,} bytes):")
    say(quantized_table(quantized).text())

    elapsed = time.perf_counter() - started
    say(f"\ndone in {elapsed:.1f} s")
    result = DemoResult(
        data=DataInfo(name=data_name, n_train=int(X.shape[0]), n_test=int(Xt.shape[0]),
                      n_features=int(X.shape[1]), n_classes=int(y.max()) + 1),
        sizes=tuple(setup["sizes"]), dtype="float32", seed=seed,
        settings={"fit": fit, "finetune": tune, "target": setup["target"],
                  "sweep": dict(sweep, epochs=_epochs(sweep["epochs"], quick)),
                  "bits_back_sigmas": list(SIGMAS)},
        baseline=baseline, one_shot=one_shot, paths=paths, mdl=mdl_sweep, codes=codes,
        sparse=sparse, seconds=elapsed, quick=quick, methods=methods, quantized=quantized)
    names = [f"layer {i + 1}: {layer.in_features} x {layer.out_features}"
             for i, layer in enumerate(base.layers)]
    artifacts = {
        "base": base, "pruned": pruned, "smodel": smodel, "names": names,
        "quantized": pruned.to_sparse(bits=QUANTIZED_BITS[0]),
        "before": [layer.weight.ravel().copy() for layer in base.layers],
        "after": [layer.weight[layer.mask] for layer in pruned.layers],
        "masks": [layer.mask.copy() for layer in pruned.layers],
    }
    return result, artifacts


def write(result, artifacts, out, say=print):
    """Write ``results.json``, ``model.npz`` (the pruned SparseMLP), ``model-8bit.spp``
    (the same quantized to 8 bits, format version 2), the plots (if matplotlib is
    installed) and ``report.md`` to ``out``; returns ``(result, paths)``: the result with
    the model file's size filled in, and the paths written."""
    os.makedirs(out, exist_ok=True)
    written = [artifacts["quantized"].save(
        os.path.join(out, f"model-{QUANTIZED_BITS[0]}bit.spp"))]
    model_path = os.path.join(out, "model.npz")
    artifacts["smodel"].save(model_path)
    result = dataclasses.replace(result, sparse=dataclasses.replace(
        result.sparse, sparse_file_bytes=os.path.getsize(model_path)))
    written.append(model_path)
    # Serialized before anything else is written, so a value JSON cannot hold fails here.
    document = json.dumps(result.as_dict(), indent=1, allow_nan=False)
    figures = []
    try:
        figures = demo_figures(result, out, artifacts["before"], artifacts["after"],
                               artifacts["masks"], artifacts["names"])
    except ImportError as exc:
        say(f"\nno plots: {exc}")
    written += figures
    path = os.path.join(out, "results.json")
    with open(path, "w") as f:
        f.write(document)
    written.append(path)
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write(markdown(result, [os.path.basename(p) for p in figures]))
    written.append(path)
    return result, written
