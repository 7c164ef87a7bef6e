"""``report.md`` of ``sparseprune demo``: its tables, its plots and a reading of them,
all from the ``results`` dict that ``results.json`` holds."""

from ._format import markdown_table

FIGURES = {
    "accuracy_vs_sparsity.png": "Test accuracy against sparsity",
    "accuracy_vs_active.png": "Test accuracy against active parameters",
    "weight_histograms.png": "Weights before and after pruning",
    "masks.png": "Masks of the pruned model",
    "description_length.png": "Description length per pruning step",
}


def _pct(x):
    return f"{100 * x:.2f}%"


def _bits(x):
    return f"{x:,.0f}"


def _step_table(steps):
    rows = [[s["step"], _pct(s["sparsity"]), s["active"], _pct(s["train_accuracy"]),
             _pct(s["val_accuracy"]), s["description_length"]["bits"],
             _bits(s["description_length"]["model_bits"]),
             _bits(s["description_length"]["data_bits"]),
             _bits(s["description_length"]["total_bits"])] for s in steps]
    return markdown_table(["step", "sparsity", "active", "train acc", "test acc", "b",
                           "model bits", "data bits", "total bits"], rows)


def _by_step(steps, step):
    return next(s for s in steps if s["step"] == step)


def reading(results):
    """One paragraph that says what the numbers mean, with the numbers."""
    base, shot, codes, sparse = (results[k] for k in ("baseline", "one_shot", "codes", "sparse"))
    cubic = results["paths"]["cubic"][-1]
    sweep = results["mdl"]["sweep"]
    best = _by_step(sweep, results["mdl"]["preferred_step"])
    accurate = _by_step(sweep, results["mdl"]["most_accurate_step"])
    uniform = codes["uniform_bits"]
    best_dl = best["description_length"]
    base_dl = base["description_length"]["total_bits"]
    n = results["data"]["n_train"]
    parts = [
        f"One-shot pruning of half the weights moved test accuracy from "
        f"{_pct(base['test_accuracy'])} to {_pct(shot['test_accuracy'])}, and fine-tuning "
        f"brought it to {_pct(shot['finetuned_test_accuracy'])}. Pruned gradually along the "
        f"cubic schedule to {_pct(cubic['sparsity'])}, the network keeps "
        f"{_pct(cubic['val_accuracy'])} with {cubic['active']:,} of {base['active']:,} "
        f"parameters.",
        f"As a two-part code the dense network costs {_bits(base_dl)} bits for {n:,} labels "
        f"that take {_bits(uniform)} bits with no model at all"
        + (": its weights cost more than they save. " if base_dl > uniform else ". ")
        + f"Along the pruning sweep the description length is shortest at step "
        f"{best['step']} ({_pct(best['sparsity'])} sparse, {best['active']:,} parameters, "
        f"values at {best_dl['bits']} bits): {_bits(best_dl['total_bits'])} bits.",
    ]
    if best_dl["total_bits"] < uniform:
        parts.append(f"That is {best_dl['compression']:.2f}x shorter than the uniform code: "
                     f"the pruned network pays for itself.")
    else:
        parts.append(f"Even that is {1 / best_dl['compression']:.2f}x the uniform code: on "
                     f"this little data no network of this size pays for itself as a "
                     f"two-part code.")
    if accurate["step"] != best["step"]:
        parts.append(f"MDL does not pick the most accurate step (step {accurate['step']}, "
                     f"{_pct(accurate['val_accuracy'])} against {_pct(best['val_accuracy'])}): "
                     f"it trades accuracy for a shorter description.")
    else:
        parts.append("Here the MDL-preferred step is also the most accurate one.")
    preq, bb = codes["prequential"], codes["bits_back"]
    parts.append(
        f"The prequential code, which sends no weights, needs {_bits(preq['total_bits'])} "
        f"bits ({preq['compression']:.2f}x shorter than uniform). The bits-back code of the dense "
        f"network, its weights sent to a tolerance (sigma {bb['sigma']:g}) rather than to "
        f"b bits, needs {_bits(bb['total_bits'])} bits, "
        + ("less" if bb["total_bits"] < base_dl else "more")
        + " than its two-part code.")
    fastest = max(sparse["timing"], key=lambda t: t["speedup"])
    parts.append(
        f"Stored sparse, the {_pct(sparse['sparsity'])}-sparse network takes "
        f"{sparse['sparse_bytes'] / 1024:.1f} KiB against {sparse['dense_bytes'] / 1024:.1f} "
        f"KiB dense, agrees with the masked model on {_pct(sparse['same_predictions'])} of "
        f"the test predictions, and at best its inference is "
        f"{fastest['speedup']:.2f}x the dense model's (batch {fastest['batch']}).")
    return " ".join(parts)


def markdown(results, figures):
    """The report: a reading, the tables, and ``figures`` (file names in the same
    directory) embedded."""
    d, net, base = results["data"], results["network"], results["baseline"]
    shot, codes, sparse = results["one_shot"], results["codes"], results["sparse"]
    lines = [
        f"# sparseprune demo: {d['name']}",
        "",
        f"{d['n_train']} training and {d['n_test']} test samples, {d['n_features']} features, "
        f"{d['n_classes']} classes; network {net['sizes']}, {net['dtype']}, seed {net['seed']}"
        + (" (quick run: a fifth of the epochs)" if results["settings"]["quick"] else "")
        + f". Took {results['seconds']:.1f} s.",
        "",
        "## Reading",
        "",
        reading(results),
        "",
        "## Pruning",
        "",
        markdown_table(["model", "sparsity", "active params", "test accuracy"], [
            ["baseline (dense)", _pct(0), base["active"], _pct(base["test_accuracy"])],
            ["one-shot magnitude 50%", _pct(shot["sparsity"]), shot["active"],
             _pct(shot["test_accuracy"])],
            ["  + fine-tuned", _pct(shot["sparsity"]), shot["active"],
             _pct(shot["finetuned_test_accuracy"])],
        ]),
        "",
    ]
    for name, steps in results["paths"].items():
        lines += [f"Iterative magnitude pruning, {name} schedule, fine-tuned after each step "
                  f"(description length of the training labels):", "", _step_table(steps), ""]
    m = results["mdl"]
    lines += [
        "## How far to prune: minimum description length",
        "",
        f"Geometric schedule to {_pct(m['target'])} in {m['steps']} steps. Model bits: header, "
        "which weights survive (log2 C(n, k) per layer), every kept weight and bias at b bits "
        "(b chosen per step from 2..16 and 32, per-layer uniform quantization). Data bits: "
        "sum of -log2 p(label) under the model as sent. MDL prefers step "
        f"**{m['preferred_step']}**; the most accurate is step {m['most_accurate_step']}.",
        "",
        _step_table(m["sweep"]),
        "",
        "## Codes against the uniform one",
        "",
        f"Compression = uniform bits / total bits ({_bits(codes['uniform_bits'])} uniform bits "
        "= N log2 K). Bits back: each weight a Gaussian posterior N(w, sigma^2) against a "
        "fitted Gaussian prior per layer; the shortest over sigma in "
        f"{results['settings']['bits_back_sigmas']}, data bits averaged over "
        f"{codes['bits_back']['draws']} weight draws.",
        "",
        markdown_table(["code", "model bits", "data bits", "total bits", "compression"], [
            [name, _bits(c["model_bits"]), _bits(c["data_bits"]), _bits(c["total_bits"]),
             f"{c['compression']:.3f}"]
            for name, c in (("two-part, dense", codes["two_part"]),
                            ("two-part, MDL-preferred", codes["two_part_preferred"]),
                            (f"bits back, dense (sigma {codes['bits_back']['sigma']:g})",
                             codes["bits_back"]),
                            (f"bits back, MDL-preferred "
                             f"(sigma {codes['bits_back_preferred']['sigma']:g})",
                             codes["bits_back_preferred"]))
        ] + [["prequential (no weights sent)", "0", _bits(codes["prequential"]["total_bits"]),
              _bits(codes["prequential"]["total_bits"]),
              f"{codes['prequential']['compression']:.3f}"],
             ["uniform (no model)", "0", _bits(codes["uniform_bits"]),
              _bits(codes["uniform_bits"]), "1.000"]]),
        "",
        "## The pruned model, sparse",
        "",
        f"The cubic path's {_pct(sparse['sparsity'])}-sparse model as a `SparseMLP`: "
        f"predictions agree with the masked model's on {_pct(sparse['same_predictions'])} "
        f"of the test set (largest probability difference "
        f"{sparse['max_abs_proba_difference']:.1e}).",
        "",
        markdown_table(["", "dense", "sparse", "ratio"], [
            ["weights + biases in memory (KiB)", f"{sparse['dense_bytes'] / 1024:.1f}",
             f"{sparse['sparse_bytes'] / 1024:.1f}",
             f"{sparse['sparse_bytes'] / sparse['dense_bytes']:.3f}"],
        ] + [
            [label, f"{sparse[key] / 1024:.1f}", f"{sparse['sparse_file_bytes'] / 1024:.1f}",
             f"{sparse['sparse_file_bytes'] / sparse[key]:.3f}"]
            for label, key in (("file: dense .npz, sparse model.npz (KiB)", "dense_file_bytes"),
                               ("file: dense compressed .npz (KiB)",
                                "dense_compressed_file_bytes"))
            if "sparse_file_bytes" in sparse  # known once demo.write saved the model
        ]),
        "",
        markdown_table(["batch", "dense ms", "sparse ms", "speedup", "layer backends"], [
            [t["batch"], f"{t['dense_ms']:.3f}", f"{t['sparse_ms']:.3f}",
             f"{t['speedup']:.2f}x", " / ".join(sparse["backends"][str(t["batch"])])]
            for t in sparse["timing"]]),
        "",
        "Median times of `predict_proba`; each layer's backend (sparse or dense) is chosen "
        "by measurement at each batch size.",
        "",
    ]
    if figures:
        lines += ["## Plots", ""]
        for name in figures:
            lines += [f"![{FIGURES.get(name, name)}]({name})", ""]
    else:
        lines += ["(No plots: matplotlib is not installed; `pip install 'sparseprune[plot]'`.)",
                  ""]
    return "\n".join(lines)
