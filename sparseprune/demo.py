"""``sparseprune demo``: the teaching notebook's whole story, on one data set.

Baseline training; one-shot 50% magnitude pruning and fine-tuning; iterative pruning
along the linear and cubic schedules; a deeper pruning sweep with the description
length at every step and the sparsity MDL prefers; the other codes (bits back,
prequential) against the uniform one; the pruned model made sparse, its speed and size.
:func:`run` does the work and returns every number; :func:`write` saves them as
``results.json``, ``report.md``, the plots and the sparse model.
"""

import copy
import json
import os
import tempfile
import time

import numpy as np

from . import data, mdl, prune
from ._format import text_table
from .model import MLP

# Per data set: the network, the baseline's training, the fine-tuning after each pruning
# step, the iterative paths' target, and the MDL sweep (deep enough that the misfit
# finally outgrows the savings, so the description length has a minimum to find).
# Blobs follow the notebook (one hidden layer, full-batch descent); digits is the
# README's network.
SETUPS = {
    "blobs": dict(
        sizes=[20, 64, 5], fit=dict(epochs=200, lr=0.1, momentum=0.0),
        finetune=dict(epochs=50, lr=0.02, momentum=0.0), target=0.9,
        sweep=dict(target=0.99, steps=12, epochs=50),
    ),
    "digits": dict(
        sizes=[64, 256, 128, 10], fit=dict(epochs=50, lr=0.05, batch_size=64),
        finetune=dict(epochs=10, lr=0.01, batch_size=64), target=0.9,
        sweep=dict(target=0.999, steps=16, epochs=5),
    ),
}
# --quick: this fraction of every epoch count (at least one epoch).
QUICK_SCALE = 0.2
# Posterior widths tried for the bits-back code, four per decade; the report keeps the
# shortest. One width for every weight: the paper learns one per weight by training with
# noise, which this demo does not do, so its bits-back figure is an upper bound.
SIGMAS = (0.01, 0.018, 0.032, 0.056, 0.1, 0.18, 0.32, 0.56)
# Batch sizes at which dense and sparse inference are timed (plus the whole test set).
BATCHES = (1, 64)


def load(name, seed):
    """(X_train, y_train, X_test, y_test) of the demo's data set ``name``."""
    if name == "blobs":
        return data.blobs(n_train=1000, n_test=500, n_features=20, n_classes=5, seed=seed)
    return data.digits(seed=seed)


def _epochs(n, quick):
    return max(1, round(n * QUICK_SCALE)) if quick else n


def _pct(x):
    return f"{x:.2%}"


def _step_rows(records):
    return [[r.step, f"{r.sparsity:.2%}", r.active, _pct(r.train_accuracy),
             _pct(r.val_accuracy), r.description_length.bits,
             f"{r.description_length.model_bits:,.0f}", f"{r.description_length.data_bits:,.0f}",
             f"{r.total_bits:,.0f}"] for r in records]


STEP_HEADERS = ["step", "sparsity", "active", "train acc", "test acc", "b", "model bits",
                "data bits", "total bits"]


def _baseline(setup, fit, X, y, Xt, yt, seed, progress, say):
    model = MLP(setup["sizes"], seed=seed)
    model.fit(X, y, validation_data=(Xt, yt), progress=progress, **fit)
    total, active = model.count_parameters()
    code = mdl.description_length(model, X, y)
    say(f"baseline: test accuracy {model.score(Xt, yt):.2%}, {active} parameters; "
        f"description length {code.total_bits:,.0f} bits (b = {code.bits}) against "
        f"{code.uniform_bits:,.0f} for the labels alone")
    return model, {
        "train_accuracy": model.score(X, y), "test_accuracy": model.score(Xt, yt),
        "active": active, "total": total, "sparsity": 0.0,
        "description_length": code.as_dict(),
        "description_length_32": mdl.description_length(model, X, y, bits=32).as_dict(),
    }


def _one_shot(base, tune, X, y, Xt, yt, say):
    model = copy.deepcopy(base)
    prune.magnitude(model, 0.5)
    before = model.score(Xt, yt)
    model.fit(X, y, progress=False, **tune)
    result = {"sparsity": model.sparsity, "active": model.count_parameters()[1],
              "test_accuracy": before, "finetuned_test_accuracy": model.score(Xt, yt)}
    say("\n" + text_table(
        ["model", "sparsity", "active params", "test accuracy"],
        [["one-shot magnitude 50%", _pct(result["sparsity"]), result["active"], _pct(before)],
         ["  + fine-tuned", _pct(result["sparsity"]), result["active"],
          _pct(result["finetuned_test_accuracy"])]]))
    return result


def _path(base, X, y, Xt, yt, target, steps, schedule, tune, progress, callback=None):
    """Iterative pruning of a copy of ``base``; returns (model, records)."""
    model = copy.deepcopy(base)
    options = {k: v for k, v in tune.items() if k != "epochs"}
    records = prune.iterative(model, X, y, target_sparsity=target, steps=steps,
                              schedule=schedule, finetune_epochs=tune["epochs"],
                              validation_data=(Xt, yt), progress=progress, mdl_bits=None,
                              callback=callback, **options)
    return model, records


def _bits_back(model, X, y, draws, seed):
    """The shortest bits-back code over the sigma grid."""
    codes = {s: mdl.bits_back(model, X, y, sigma=s, draws=draws, seed=seed) for s in SIGMAS}
    sigma = min(codes, key=lambda s: codes[s].total_bits)
    return {"sigma": sigma, **codes[sigma].as_dict(),
            "by_sigma": {str(s): c.total_bits for s, c in codes.items()}}


def _codes(base, preferred, two_part, setup, fit, X, y, quick, seed, progress, say):
    """Bits-back and prequential codes of the training labels, beside the two-part codes
    already measured (``two_part``: the baseline's and the preferred step's, as dicts)."""
    draws = 4 if quick else mdl.BITS_BACK_SAMPLES

    def make_model(Xp, yp):
        model = MLP(setup["sizes"], seed=seed)
        model.fit(Xp, yp, progress=False, seed=seed, **fit)
        return model

    started = time.perf_counter()
    preq = mdl.prequential(make_model, X, y, blocks=6 if quick else 8, progress=progress)
    codes = {
        "uniform_bits": preq.uniform_bits,
        "two_part": two_part[0],
        "two_part_preferred": two_part[1],
        "bits_back": _bits_back(base, X, y, draws, seed),
        "bits_back_preferred": _bits_back(preferred, X, y, draws, seed),
        "prequential": preq.as_dict(),
    }
    rows = [[name, f"{c['model_bits']:,.0f}", f"{c['data_bits']:,.0f}",
             f"{c['total_bits']:,.0f}", f"{c['compression']:.3f}"]
            for name, c in (("two-part, dense", codes["two_part"]),
                            ("two-part, MDL-preferred", codes["two_part_preferred"]),
                            ("bits back, dense", codes["bits_back"]),
                            ("bits back, MDL-preferred", codes["bits_back_preferred"]))]
    rows.append(["prequential (no weights sent)", "0", f"{preq.total_bits:,.0f}",
                 f"{preq.total_bits:,.0f}", f"{preq.compression:.3f}"])
    rows.append(["uniform (no model)", "0", f"{preq.uniform_bits:,.0f}",
                 f"{preq.uniform_bits:,.0f}", "1.000"])
    say(f"\ncodes of the {len(y)} training labels (compression = uniform / total; "
        f"{time.perf_counter() - started:.1f} s):")
    say(text_table(["code", "model bits", "data bits", "total bits", "compression"], rows))
    return codes


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


def _sparse_payoff(model, Xt, budget, say):
    """The pruned model as a SparseMLP: same predictions, its bytes, its speed (medians
    of interleaved repetitions, as ``sparseprune profile`` times them)."""
    from .profile import measure

    smodel = model.to_sparse()
    dense_proba = model.predict_proba(Xt)
    sparse_proba = smodel.predict_proba(Xt)
    timing = []
    for batch in sorted(set(BATCHES) | {Xt.shape[0]}):
        Xb = np.ascontiguousarray(Xt[:batch])
        times = measure({"dense": lambda Xb=Xb: model.predict_proba(Xb),
                         "sparse": lambda Xb=Xb: smodel.predict_proba(Xb)}, budget)
        dense_s, sparse_s = times["dense"], times["sparse"]
        timing.append({"batch": batch, "dense_ms": dense_s * 1e3, "sparse_ms": sparse_s * 1e3,
                       "speedup": dense_s / sparse_s})
    dense_bytes = sum(layer.weight.nbytes + layer.bias.nbytes for layer in model.layers)
    dense_file, dense_compressed = _dense_file_bytes(model)
    result = {
        "sparsity": model.sparsity,
        "max_abs_proba_difference": float(np.max(np.abs(dense_proba - sparse_proba))),
        "same_predictions": float(np.mean(model.predict(Xt) == smodel.predict(Xt))),
        "dense_bytes": int(dense_bytes), "sparse_bytes": int(smodel.nbytes()),
        "dense_file_bytes": dense_file, "dense_compressed_file_bytes": dense_compressed,
        "backends": {str(t["batch"]): [layer.backend_for(t["batch"]) for layer in smodel.layers]
                    for t in timing},
        "timing": timing,
    }
    say(f"\nthe {model.sparsity:.0%} model as a SparseMLP: weights and biases take "
        f"{result['sparse_bytes'] / 1024:.1f} KiB against {dense_bytes / 1024:.1f} KiB dense; "
        f"predictions agree on {result['same_predictions']:.2%} of the test set")
    say(text_table(["batch", "dense ms", "sparse ms", "speedup", "backends"],
                   [[t["batch"], f"{t['dense_ms']:.3f}", f"{t['sparse_ms']:.3f}",
                     f"{t['speedup']:.2f}x", "/".join(result["backends"][str(t["batch"])])]
                    for t in timing]))
    return smodel, result


def run(data_name="blobs", quick=False, seed=0, progress=True, say=print):
    """Run the story; returns ``(results, artifacts)``.

    ``results`` is a JSON-ready dict of every number the report shows; ``artifacts``
    holds what the plots and files need beyond numbers: the models, each layer's weights
    before and after pruning, the masks.
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
    one_shot = _one_shot(base, tune, X, y, Xt, yt, say)

    paths, models = {}, {}
    for schedule in ("linear", "cubic"):
        models[schedule], records = _path(base, X, y, Xt, yt, setup["target"], 5, schedule,
                                          tune, progress)
        paths[schedule] = [r.as_dict() for r in records]
        say(f"\niterative magnitude pruning, {schedule} schedule to {setup['target']:.0%} "
            f"(baseline {baseline['test_accuracy']:.2%}):")
        say(text_table(STEP_HEADERS, _step_rows(records)))
    pruned = models["cubic"]  # the model made sparse below

    sweep = setup["sweep"]
    say(f"\nhow far to prune: geometric schedule to {sweep['target']:.1%} in "
        f"{sweep['steps']} steps, description length of the training labels at each:")
    states = []  # every step's model, to code the one MDL prefers
    _, records = _path(base, X, y, Xt, yt, sweep["target"], sweep["steps"], "geometric",
                       dict(tune, epochs=_epochs(sweep["epochs"], quick)), progress,
                       callback=lambda record, model: states.append(copy.deepcopy(model)))
    say(text_table(STEP_HEADERS, _step_rows(records)))
    best = mdl.best(records)
    accurate = max(records, key=lambda r: (r.val_accuracy, -r.step))
    say(f"MDL prefers step {best.step}: sparsity {best.sparsity:.2%}, {best.active} active "
        f"parameters, {best.total_bits:,.0f} bits, test accuracy {best.val_accuracy:.2%} "
        f"(most accurate: step {accurate.step}, {accurate.val_accuracy:.2%})")
    preferred = states[best.step - 1]
    mdl_result = {"schedule": "geometric", "target": sweep["target"], "steps": sweep["steps"],
                  "sweep": [r.as_dict() for r in records], "preferred_step": best.step,
                  "most_accurate_step": accurate.step}

    codes = _codes(base, preferred, (baseline["description_length"],
                                     best.description_length.as_dict()),
                   setup, fit, X, y, quick, seed, progress, say)
    smodel, sparse = _sparse_payoff(pruned, Xt, 0.05 if quick else 0.3, say)

    elapsed = time.perf_counter() - started
    say(f"\ndone in {elapsed:.1f} s")
    results = {
        "data": {"name": data_name, "n_train": int(X.shape[0]), "n_test": int(Xt.shape[0]),
                 "n_features": int(X.shape[1]), "n_classes": int(y.max()) + 1},
        "network": {"sizes": list(setup["sizes"]), "dtype": "float32", "seed": seed},
        "settings": {"quick": quick, "fit": fit, "finetune": tune, "target": setup["target"],
                     "sweep": dict(sweep, epochs=_epochs(sweep["epochs"], quick)),
                     "bits_back_sigmas": list(SIGMAS)},
        "baseline": baseline, "one_shot": one_shot, "paths": paths, "mdl": mdl_result,
        "codes": codes, "sparse": sparse, "seconds": elapsed,
    }
    names = [f"layer {i + 1}: {layer.in_features} x {layer.out_features}"
             for i, layer in enumerate(base.layers)]
    artifacts = {
        "base": base, "pruned": pruned, "smodel": smodel, "names": names,
        "before": [layer.weight.ravel().copy() for layer in base.layers],
        "after": [layer.weight[layer.mask] for layer in pruned.layers],
        "masks": [layer.mask.copy() for layer in pruned.layers],
    }
    return results, artifacts


def write(results, artifacts, out, say=print):
    """Write ``results.json``, ``model.npz`` (the pruned SparseMLP), the plots (if
    matplotlib is installed) and ``report.md`` to ``out``; returns the paths written."""
    from .report import markdown

    os.makedirs(out, exist_ok=True)
    written = []
    model_path = os.path.join(out, "model.npz")
    artifacts["smodel"].save(model_path)
    results["sparse"]["sparse_file_bytes"] = os.path.getsize(model_path)
    written.append(model_path)
    # Serialized before anything else is written, so a value JSON cannot hold fails here.
    document = json.dumps(results, indent=1, allow_nan=False)
    figures = []
    try:
        from .plots import demo_figures

        figures = demo_figures(results, out, artifacts["before"], artifacts["after"],
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
        f.write(markdown(results, [os.path.basename(p) for p in figures]))
    written.append(path)
    return written
