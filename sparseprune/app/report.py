"""What ``sparseprune demo`` shows: each of its tables built once (the terminal prints
them as text, ``report.md`` as Markdown), a reading of the numbers, and the report."""

from .plots import FIGURES
from .tables import Table, bits, kib, percent

__all__ = ["bytes_table", "codes_table", "markdown", "methods_table", "one_shot_table",
           "quantized_table", "reading", "steps_table", "structured_table", "timing_table"]


def one_shot_table(shot, baseline=None):
    """The one-shot model before and after fine-tuning (and the baseline above them)."""
    rows = [["baseline (dense)", percent(0), baseline.active,
             percent(baseline.test_accuracy)]] if baseline is not None else []
    rows += [["one-shot magnitude 50%", percent(shot.sparsity), shot.active,
              percent(shot.test_accuracy)],
             ["  + fine-tuned", percent(shot.sparsity), shot.active,
              percent(shot.finetuned_test_accuracy)]]
    return Table(("model", "sparsity", "active params", "test accuracy"), tuple(rows))


def steps_table(records, file_bytes=()):
    """One row per pruning step: sparsity, accuracy and description length; with
    ``file_bytes`` (per record, or None), the model's file in bits beside its model
    bits, at the same b."""
    headers = ("step", "sparsity", "active", "train acc", "test acc", "b", "model bits")
    files = ("file bits",) if file_bytes else ()
    rows = []
    for i, r in enumerate(records):
        code = r.description_length
        row = [r.step, percent(r.sparsity), r.active, percent(r.train_accuracy),
               percent(r.val_accuracy), code.bits, bits(code.model_bits)]
        if file_bytes:
            row.append("-" if file_bytes[i] is None else bits(8 * file_bytes[i]))
        rows.append(row + [bits(code.data_bits), bits(r.total_bits)])
    return Table(headers + files + ("data bits", "total bits"), tuple(rows))


def quantized_table(quantized):
    """The pruned model's files: values as float32 or b-bit codes, accuracy, bytes,
    against the two-part code's model bits and against the dense parameters."""
    rows = []
    for f in quantized.files + ((quantized.smallest,) if quantized.smallest else ()):
        name = f.name if f is not quantized.smallest else f"smallest within " \
            f"{100 * quantized.tolerance:g} point: {f.name}"
        rows.append([name, percent(f.sparsity), "float32" if f.bits is None else f.bits,
                     f.version, percent(f.test_accuracy), f"{f.file_bytes:,}",
                     f"{f.file_vs_model:.3f}", f"{quantized.dense_bytes / f.file_bytes:.1f}x"])
    return Table(("model", "sparsity", "values (bits)", "format", "test acc", "file bytes",
                  "file / model bits", "vs dense"), tuple(rows))


def codes_table(codes):
    """Every code of the training labels against the uniform one."""
    rows = [[name, bits(c.model_bits), bits(c.data_bits), bits(c.total_bits),
             f"{c.compression:.3f}"]
            for name, c in (("two-part, dense", codes.two_part),
                            ("two-part, MDL-preferred", codes.two_part_preferred),
                            (f"bits back, dense (sigma {codes.bits_back.sigma:g})",
                             codes.bits_back.code),
                            (f"bits back, MDL-preferred "
                             f"(sigma {codes.bits_back_preferred.sigma:g})",
                             codes.bits_back_preferred.code))]
    for name, code in (("noisy weights, learned sigmas, Gaussian prior, MDL-preferred",
                        codes.noisy_gaussian),
                       ("noisy weights, learned sigmas, mixture prior, MDL-preferred",
                        codes.noisy_mixture)):
        rows.append([name, bits(code.model_bits), bits(code.data_bits), bits(code.total_bits),
                     f"{code.compression:.3f}"])
    preq = codes.prequential
    rows.append(["prequential (no weights sent)", "0", bits(preq.total_bits),
                 bits(preq.total_bits), f"{preq.compression:.3f}"])
    rows.append(["uniform (no model)", "0", bits(codes.uniform_bits), bits(codes.uniform_bits),
                 "1.000"])
    return Table(("code", "model bits", "data bits", "total bits", "compression"),
                 tuple(rows))


def methods_table(methods):
    """Test accuracy of each pruning method (a row) at each sparsity (a column)."""
    columns = methods.settings["sparsities"]
    return Table(("method",) + tuple(percent(s, 0) for s in columns),
                 tuple([c.name] + [percent(a) for a in c.test_accuracy]
                       for c in methods.curves))


def structured_table(methods):
    """Structured pruning: units removed, the weights they took along, test accuracy."""
    curve = methods.structured
    return Table(("units removed", "weights removed", "test accuracy"),
                 tuple([percent(f, 0), percent(s), percent(a)] for f, s, a in zip(
                     methods.settings["unit_fractions"], curve.sparsity, curve.test_accuracy)))


def timing_table(sparse):
    """Median ``predict_proba`` times, dense against sparse, and each layer's backend."""
    return Table(("batch", "dense ms", "sparse ms", "speedup", "layer backends"),
                 tuple([t.batch, f"{t.dense_ms:.3f}", f"{t.sparse_ms:.3f}",
                        f"{t.speedup:.2f}x", " / ".join(sparse.backends[t.batch])]
                       for t in sparse.timing))


def bytes_table(sparse):
    """Bytes in memory and on disk, dense against sparse (the files once saved)."""
    rows = [["weights + biases in memory (KiB)", kib(sparse.dense_bytes),
             kib(sparse.sparse_bytes), f"{sparse.sparse_bytes / sparse.dense_bytes:.3f}"]]
    if sparse.sparse_file_bytes is not None:
        for label, dense in (("file: dense .npz, sparse model.npz (KiB)",
                              sparse.dense_file_bytes),
                             ("file: dense compressed .npz (KiB)",
                              sparse.dense_compressed_file_bytes)):
            rows.append([label, kib(dense), kib(sparse.sparse_file_bytes),
                         f"{sparse.sparse_file_bytes / dense:.3f}"])
    return Table(("", "dense", "sparse", "ratio"), tuple(rows))


def reading(result):
    """One paragraph that says what the numbers mean, with the numbers."""
    base, shot, codes, sparse = result.baseline, result.one_shot, result.codes, result.sparse
    cubic = result.paths["cubic"][-1]
    best, accurate = result.mdl.preferred, result.mdl.most_accurate
    uniform = codes.uniform_bits
    best_dl = best.description_length
    base_dl = base.description_length.total_bits
    parts = [
        f"One-shot pruning of half the weights moved test accuracy from "
        f"{percent(base.test_accuracy)} to {percent(shot.test_accuracy)}, and fine-tuning "
        f"brought it to {percent(shot.finetuned_test_accuracy)}. Pruned gradually along the "
        f"cubic schedule to {percent(cubic.sparsity)}, the network keeps "
        f"{percent(cubic.val_accuracy)} with {cubic.active:,} of {base.active:,} "
        f"parameters.",
        f"As a two-part code the dense network costs {bits(base_dl)} bits for "
        f"{result.data.n_train:,} labels that take {bits(uniform)} bits with no model at all"
        + (": its weights cost more than they save. " if base_dl > uniform else ". ")
        + f"Along the pruning sweep the description length is shortest at step "
        f"{best.step} ({percent(best.sparsity)} sparse, {best.active:,} parameters, "
        f"values at {best_dl.bits} bits): {bits(best_dl.total_bits)} bits.",
    ]
    if best_dl.total_bits < uniform:
        parts.append(f"That is {best_dl.compression:.2f}x shorter than the uniform code: "
                     f"the pruned network pays for itself.")
    else:
        parts.append(f"Even that is {1 / best_dl.compression:.2f}x the uniform code: on "
                     f"this little data no network of this size pays for itself as a "
                     f"two-part code.")
    if accurate.step != best.step:
        parts.append(f"MDL does not pick the most accurate step (step {accurate.step}, "
                     f"{percent(accurate.val_accuracy)} against "
                     f"{percent(best.val_accuracy)}): it trades accuracy for a shorter "
                     f"description.")
    else:
        parts.append("Here the MDL-preferred step is also the most accurate one.")
    preq, bb = codes.prequential, codes.bits_back
    parts.append(
        f"The prequential code, which sends no weights, needs {bits(preq.total_bits)} "
        f"bits ({preq.compression:.2f}x shorter than uniform). The bits-back code of the dense "
        f"network, its weights sent to a tolerance (sigma {bb.sigma:g}) rather than to "
        f"b bits, needs {bits(bb.code.total_bits)} bits, "
        + ("less" if bb.code.total_bits < base_dl else "more")
        + " than its two-part code.")
    fastest = max(sparse.timing, key=lambda t: t.speedup)
    parts.append(
        f"Stored sparse, the {percent(sparse.sparsity)}-sparse network takes "
        f"{kib(sparse.sparse_bytes)} KiB against {kib(sparse.dense_bytes)} "
        f"KiB dense, agrees with the masked model on {percent(sparse.same_predictions)} of "
        f"the test predictions, and at best its inference is "
        f"{fastest.speedup:.2f}x the dense model's (batch {fastest.batch}).")
    q = result.quantized
    if q is not None:
        for f in q.files:
            if f.bits is not None:
                parts.append(
                    f"At {f.bits} bits a value it scores {percent(f.test_accuracy)} and its "
                    f"file takes {f.file_bytes:,} bytes, {q.dense_bytes / f.file_bytes:.1f}x "
                    f"less than the dense parameters and {f.file_vs_model:.2f}x the model "
                    f"bits of its two-part code.")
        if q.smallest is not None:
            parts.append(
                f"The smallest file within {100 * q.tolerance:g} point of the baseline is "
                f"{q.smallest.name} at {q.smallest.bits} bits: {q.smallest.file_bytes:,} "
                f"bytes, {q.dense_bytes / q.smallest.file_bytes:.1f}x smaller than dense.")
    return " ".join(parts)


def _quantized_section(result):
    q = result.quantized
    if q is None:
        return []
    smallest = (
        f"The smallest file within {100 * q.tolerance:g} point of the dense baseline's "
        f"{percent(q.baseline_accuracy)} ({q.searched} candidates: the cubic path's model "
        f"and every sweep step, at 2 to 8 bits): {q.smallest.name} at {q.smallest.bits} "
        f"bits, {q.smallest.file_bytes:,} bytes, {percent(q.smallest.test_accuracy)}, "
        f"{q.dense_bytes / q.smallest.file_bytes:.1f}x smaller than the dense parameters "
        "(Deep Compression's bar on LeNet-300-100: 40x)." if q.smallest is not None else
        f"No candidate stays within {100 * q.tolerance:g} point of the dense baseline.")
    return [
        "## Sparse and quantized",
        "",
        f"The dense {result.dtype} weights and biases take {q.dense_bytes:,} bytes. "
        "Quantized, a layer's kept weights and biases are b-bit codes of the two-part "
        "code's own quantizer (one per layer), served by the uint8 CSR kernels and saved "
        "in format version 2 (the mask Golomb coded, the codes packed or compressed); "
        "`file / model bits` compares the file with the model bits of "
        "`mdl.description_length` at the same b (b = 32 for float32).",
        "",
        quantized_table(q).markdown(),
        "",
        smallest,
        "",
    ]


def _methods_section(result):
    methods = result.methods
    if methods is None:
        return []
    return [
        "## Pruning methods side by side",
        "",
        f"Test accuracy (dense baseline {percent(methods.baseline_accuracy)}), one seed; "
        "after-training methods start from the baseline and fine-tune as above, SNIP "
        "prunes at initialization and trains for the baseline's and the fine-tuning's "
        "epochs, the lottery ticket comes from "
        f"{methods.settings['lottery_rounds']} rounds of iterative magnitude pruning "
        "rewound to the initialization. The README's table has the spread over seeds.",
        "",
        methods_table(methods).markdown(),
        "",
        "Structured pruning removes whole hidden units (the same fraction of every hidden "
        "layer, lowest L2 norm first) and fine-tunes; the layers shrink, so the network "
        "stays dense and fast:",
        "",
        structured_table(methods).markdown(),
        "",
    ]


def markdown(result, figures):
    """The report: a reading, the tables, and ``figures`` (file names in the same
    directory, titled as :data:`~sparseprune.app.plots.FIGURES` names them) embedded."""
    d, codes, sparse, m = result.data, result.codes, result.sparse, result.mdl
    lines = [
        f"# sparseprune demo: {d.name}",
        "",
        f"{d.n_train} training and {d.n_test} test samples, {d.n_features} features, "
        f"{d.n_classes} classes; network {list(result.sizes)}, {result.dtype}, "
        f"seed {result.seed}"
        + (" (quick run: a fifth of the epochs)" if result.quick else "")
        + f". Took {result.seconds:.1f} s.",
        "",
        "## Reading",
        "",
        reading(result),
        "",
        "## Pruning",
        "",
        one_shot_table(result.one_shot, result.baseline).markdown(),
        "",
    ]
    for name, records in result.paths.items():
        lines += [f"Iterative magnitude pruning, {name} schedule, fine-tuned after each step "
                  f"(description length of the training labels):", "",
                  steps_table(records).markdown(), ""]
    lines += [
        "## How far to prune: minimum description length",
        "",
        f"Geometric schedule to {percent(m.target)} in {m.steps} steps. Model bits: header, "
        "which weights survive (log2 C(n, k) per layer), every kept weight and bias at b bits "
        "(b chosen per step from 2..16 and 32, per-layer uniform quantization). Data bits: "
        "sum of -log2 p(label) under the model as sent. MDL prefers step "
        f"**{m.preferred_step}**; the most accurate is step {m.most_accurate_step}."
        + (" File bits: the step's model saved at the same b (`SparseMLP.quantize(b)`, "
           "format version 2), beside the model bits it approaches." if m.file_bytes
           else ""),
        "",
        steps_table(m.records, m.file_bytes).markdown(),
        "",
        "## Codes against the uniform one",
        "",
        f"Compression = uniform bits / total bits ({bits(codes.uniform_bits)} uniform bits "
        "= N log2 K). Bits back: each weight a Gaussian posterior N(w, sigma^2) against a "
        "fitted Gaussian prior per layer; the shortest over sigma in "
        f"{list(result.settings['bits_back_sigmas'])}, data bits averaged over "
        f"{codes.bits_back.code.draws} weight draws. Noisy weights: the paper's own code, "
        "a sigma per weight and bias learned by `mdl.variational` (expected misfit + KL, "
        "local reparameterization) from the MDL-preferred step, against a Gaussian prior "
        "per layer or one learned mixture of Gaussians.",
        "",
        codes_table(codes).markdown(),
        "",
        *_methods_section(result),
        "## The pruned model, sparse",
        "",
        f"The cubic path's {percent(sparse.sparsity)}-sparse model as a `SparseMLP`: "
        f"predictions agree with the masked model's on {percent(sparse.same_predictions)} "
        f"of the test set (largest probability difference "
        f"{sparse.max_abs_proba_difference:.1e}).",
        "",
        bytes_table(sparse).markdown(),
        "",
        timing_table(sparse).markdown(),
        "",
        "Median times of `predict_proba`; each layer's backend (sparse or dense) is chosen "
        "by measurement at each batch size.",
        "",
        *_quantized_section(result),
    ]
    if figures:
        lines += ["## Plots", ""]
        for name in figures:
            lines += [f"![{FIGURES.get(name, name)}]({name})", ""]
    else:
        lines += ["(No plots: matplotlib is not installed; `pip install 'sparseprune[plot]'`.)",
                  ""]
    return "\n".join(lines)
