"""Figures (matplotlib, an optional extra: ``pip install sparseprune[plot]``).

matplotlib is imported only when a figure is drawn, and figures are drawn on the Agg
canvas directly (no pyplot), so nothing here touches the user's backend or open figures.
"""

import math
import os

import numpy as np

__all__ = ["DEMO_DPI", "FIGURES", "demo_accuracy_vs_active", "demo_accuracy_vs_sparsity",
           "demo_description_length", "demo_figures", "demo_masks", "demo_methods",
           "demo_weight_histograms", "profile_bytes", "profile_figures", "profile_speedup"]


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: pip install 'sparseprune[plot]'") from exc
    return Figure, FigureCanvasAgg


def _cases(rows):
    """Case names in the order they were measured, with their rows."""
    cases = {}
    for row in rows:
        cases.setdefault(row["case"], []).append(row)
    return cases


def _grid(Figure, n, title):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=13)
    return fig, axes


def _speedup_axis(ax):
    """Log y axis labelled 0.5x, 1x, 2x, ... rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter

    def label(value, _pos, steps=(1, 2, 5)):
        if value <= 0:
            return ""
        lead = round(value / 10 ** math.floor(math.log10(value)), 6)
        return f"{value:g}x" if lead in steps else ""

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, p: label(v, p, steps=(1,))))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: label(v, p, steps=(2, 5))))


def _against_sparsity(ax, title, ylabel):
    """Title, axis labels, grid and legend of a panel plotted against sparsity."""
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("sparsity (fraction of weights pruned)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)


def _save(fig, FigureCanvasAgg, path):
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def profile_speedup(report, path):
    """Speedup of CSR over dense NumPy against sparsity: a line per batch size, a
    subplot per case, a dashed line at 1x and each batch's crossover marked."""
    Figure, FigureCanvasAgg = _matplotlib()
    cases = _cases(report["rows"])
    dtype = report["rows"][0]["dtype"] if report["rows"] else ""
    fig, axes = _grid(Figure, max(1, len(cases)),
                      f"sparseprune CSR vs dense NumPy ({dtype}): speedup against sparsity")
    for ax, (case, rows) in zip(axes, cases.items()):
        batches = sorted({row["batch"] for row in rows})
        for batch in batches:
            points = sorted((r["sparsity"], r["speedup"]) for r in rows if r["batch"] == batch)
            xs, ys = zip(*points)
            (line,) = ax.plot(xs, ys, marker="o", markersize=4, label=f"batch {batch}")
            cross = report["crossover_by_case"].get(case, {}).get(str(batch))
            if cross is not None:
                ax.axvline(cross, color=line.get_color(), linestyle=":", linewidth=1)
                ax.plot([cross], [dict(points)[cross]], marker="*", markersize=13,
                        color=line.get_color(), linestyle="none")
        ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="1x (dense)")
        _speedup_axis(ax)
        _against_sparsity(ax, f"{case}  (dotted/star: crossover)", "speedup over dense (x)")
    return _save(fig, FigureCanvasAgg, path)


def profile_bytes(report, path):
    """Bytes of each case's weights against sparsity: dense, CSR, 8-bit codes and the
    entropy bound (which weights survive at log2 C(n, k) bits, plus the values at their
    itemsize); log scale. Rows without ``quantized_bytes`` (older reports) skip it."""
    Figure, FigureCanvasAgg = _matplotlib()
    cases = _cases(report["rows"])
    fig, axes = _grid(Figure, max(1, len(cases)), "weight memory against sparsity")
    series = (("dense_bytes", "dense", "-"), ("sparse_bytes", "CSR (data + indices + indptr)", "-"),
              ("quantized_bytes", "8-bit codes (codes + uint16 indices + indptr)", "-"),
              ("entropy_bound_bytes", "entropy bound (mask + values)", "--"),
              ("mask_entropy_bytes", "entropy bound, mask only", ":"))
    for ax, (case, rows) in zip(axes, cases.items()):
        by_sparsity = {r["sparsity"]: r for r in rows}
        xs = sorted(by_sparsity)
        for key, label, style in series:
            if key not in rows[0]:
                continue
            # A log axis cannot show 0 (the mask costs nothing when all or none survive).
            ys = [by_sparsity[x][key] if by_sparsity[x][key] > 0 else math.nan for x in xs]
            ax.plot(xs, ys, linestyle=style, marker="o", markersize=4, label=label)
        ax.set_yscale("log")
        _against_sparsity(ax, case, "bytes")
    return _save(fig, FigureCanvasAgg, path)


def profile_figures(report, directory):
    """Write ``speedup.png`` and ``bytes.png`` into ``directory``; return their paths."""
    return [profile_speedup(report, os.path.join(directory, "speedup.png")),
            profile_bytes(report, os.path.join(directory, "bytes.png"))]


# -- sparseprune demo's report -------------------------------------------------------------

# Sharper than the profile figures' 100: the demo's panels carry more small text.
DEMO_DPI = 120
#: The demo's figures, each named once: {file name: title}, in the report's order.
FIGURES = {
    "accuracy_vs_sparsity.png": "Test accuracy against sparsity",
    "accuracy_vs_active.png": "Test accuracy against active parameters",
    "weight_histograms.png": "Weights before and after pruning",
    "masks.png": "Masks of the pruned model",
    "description_length.png": "Description length per pruning step",
    "methods.png": "Pruning methods side by side",
}


def _save_demo(fig, FigureCanvasAgg, path):
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DEMO_DPI)
    return path


def _percent(fraction, digits=4):
    """A fraction as a short percentage that still tells 99.85% from 99.9%."""
    return f"{100 * fraction:.{digits}g}%"


def _test_accuracy(step):
    """A pruning step's test accuracy: its ``val_accuracy`` (the demo validates on the
    test set)."""
    if step.val_accuracy is None:
        raise ValueError(f"step {step.step} has no test accuracy: prune with validation_data")
    return step.val_accuracy


def _preferred(steps, preferred_step):
    """The record whose ``step`` is ``preferred_step``."""
    for step in steps:
        if step.step == preferred_step:
            return step
    raise ValueError(f"preferred_step {preferred_step!r} is not among the steps "
                     f"{[step.step for step in steps]}")


def _accuracy_series(ax, result, x_of, base_x):
    """Baseline, iterative paths, MDL sweep and one-shot points of the demo's result,
    each record at x = ``x_of(record)`` and test accuracy in % on y."""
    base_acc = 100 * result.baseline.test_accuracy
    ax.axhline(base_acc, color="0.35", linestyle="--", linewidth=1.2, label="baseline (dense)")
    ax.plot([base_x], [base_acc], marker="D", markersize=6, color="0.35", linestyle="none")
    for name, steps in result.paths.items():
        ax.plot([x_of(s) for s in steps], [100 * _test_accuracy(s) for s in steps],
                marker="o", markersize=5, label=f"{name} schedule")
    sweep = result.mdl.records
    if sweep:
        best = _preferred(sweep, result.mdl.preferred_step)
        (line,) = ax.plot([x_of(s) for s in sweep], [100 * _test_accuracy(s) for s in sweep],
                          marker=".", markersize=7, linewidth=1.2, label="MDL sweep")
        ax.plot([x_of(best)], [100 * _test_accuracy(best)], marker="*", markersize=17,
                color=line.get_color(), markeredgecolor="black", linestyle="none",
                label=f"MDL-preferred (step {best.step})", zorder=5)
    shot = result.one_shot
    x = x_of(shot)
    # The small X on top of the big + so both show when fine-tuning changed little.
    ax.plot([x], [100 * shot.test_accuracy], marker="X", markersize=8, color="black",
            markeredgecolor="white", linestyle="none", label=f"one-shot {_percent(shot.sparsity)}",
            zorder=6)
    ax.plot([x], [100 * shot.finetuned_test_accuracy], marker="P", markersize=13,
            color="tab:red", markeredgecolor="black", linestyle="none",
            label="one-shot + fine-tuning", zorder=4)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="major", alpha=0.35)
    ax.legend(fontsize=9, loc="lower left", framealpha=0.9)


def _density_axis(ax, densities):
    """x = 1 - sparsity (the fraction kept) on a reversed log axis, ticks labelled as
    sparsity: 50%, 90%, 99% and 99.9% get equal room, where a linear sparsity axis
    would crush everything past 90% into its right edge."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    # 1-2-5 ticks per decade fit up to 99.99%; past that (a fully pruned step clipped to
    # 1e-6) they would overlap, so keep the decades and 50%.
    decades = -math.log10(min(densities))
    steps = (1, 0.5, 0.2) if decades <= 4 else (1,)
    ticks = sorted({0.5} | {m * 10.0 ** e for e in range(0, -7, -1) for m in steps})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: _percent(1 - v, digits=6)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(1.25, min(densities) / 1.6)  # reversed: more pruning to the right
    ax.set_xlabel("sparsity (% of weights pruned; log scale of the fraction kept)")


def demo_accuracy_vs_sparsity(result, path):
    """Test accuracy against sparsity: the dense baseline (dashed), a line per iterative
    schedule, the one-shot model before and after fine-tuning, and the MDL sweep with
    its preferred step starred.

    The x axis is the fraction of weights kept, 1 - sparsity, on a reversed log scale
    with ticks labelled in sparsity (50%, 90%, 99%, 99.9%), so the sweep's steps past
    99% stay apart; a linear axis would pile them up at the right edge.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(9.5, 5.6), layout="constrained")
    ax = fig.subplots()

    def density(record):
        # A log axis cannot show 0: a fully pruned step sits at 1e-6 kept (99.9999%).
        return max(1.0 - record.sparsity, 1e-6)

    _accuracy_series(ax, result, density, base_x=1.0)
    _density_axis(ax, [density(r) for r in _demo_records(result)])
    ax.set_title("sparseprune demo: test accuracy against sparsity", fontsize=12)
    return _save_demo(fig, FigureCanvasAgg, path)


def _demo_records(result):
    """Every step and one-shot record of the demo's result (to size the x axis)."""
    records = [s for steps in result.paths.values() for s in steps]
    return records + list(result.mdl.records) + [result.one_shot]


def _count_label(value, _pos=None):
    """Parameter counts as 500, 2k, 50k: short enough for every 1-2-5 tick."""
    if value <= 0:
        return ""
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def demo_accuracy_vs_active(result, path):
    """Test accuracy against active parameters (weights and biases kept), the same
    series as :func:`demo_accuracy_vs_sparsity`, the baseline's diamond at its full count.

    The x axis is logarithmic and reversed (fewer parameters to the right), so the curves
    run the same way as in the sparsity figure.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(9.5, 5.6), layout="constrained")
    ax = fig.subplots()
    _accuracy_series(ax, result, lambda record: record.active, base_x=result.baseline.active)
    _log_counts(ax, "x")
    counts = [r.active for r in _demo_records(result)] + [result.baseline.active]
    ax.set_xlim(max(counts) * 1.3, min(counts) / 1.6)
    ax.set_xlabel("active parameters (weights + biases kept; log scale, fewer to the right)")
    ax.set_title("sparseprune demo: test accuracy against active parameters", fontsize=12)
    return _save_demo(fig, FigureCanvasAgg, path)


def _log_counts(ax, which):
    """A log axis labelled 1, 2, 5, 10, ..., 2k, 5k (not 10^3) on ``which`` ("x" or "y")."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(_count_label))
    axis.set_minor_formatter(NullFormatter())


def _layer_names(n, names, shapes=None):
    """``names`` checked against ``n`` layers, or "layer i: in x out" (or "layer i")."""
    if names is None:
        return [f"layer {i}: {s[0]} x {s[1]}" if shapes else f"layer {i}"
                for i, s in enumerate(shapes or [None] * n, start=1)]
    names = [str(name) for name in names]
    if len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} layers")
    return names


def demo_weight_histograms(before, after, path, names=None):
    """A panel per layer: the histogram of all the dense baseline's weights and, over
    the same bins, of the pruned model's active weights (the gap at zero is what
    magnitude pruning removed). Counts on a log y axis, so the few large weights that
    survive are as visible as the many small ones that do not.

    ``before`` and ``after`` are lists of 1-D arrays, one per layer; ``names`` titles
    the panels (default "layer i").
    """
    Figure, FigureCanvasAgg = _matplotlib()
    before = [np.ravel(np.asarray(w, dtype=np.float64)) for w in before]
    after = [np.ravel(np.asarray(w, dtype=np.float64)) for w in after]
    if not before or len(before) != len(after):
        raise ValueError(f"before and after need one array per layer, at least one, got "
                         f"{len(before)} and {len(after)}")
    if not all(np.isfinite(w).all() for w in before + after):
        raise ValueError("weights must be finite")
    names = _layer_names(len(before), names)
    fig, axes = _grid(Figure, len(before), "weights before and after pruning")
    for ax, name, full, kept in zip(axes, names, before, after):
        # Shared bins, over both: fine-tuning can move survivors past the dense range.
        # About 2 sqrt(n) of them, so a 320-weight layer is not all single counts.
        n_bins = int(np.clip(2 * math.sqrt(full.size), 15, 60))
        bins = np.histogram_bin_edges(np.concatenate([full, kept]), bins=n_bins)
        ax.hist(full, bins=bins, color="tab:blue", alpha=0.5,
                label=f"before pruning (all {full.size:,})")
        ax.hist(kept, bins=bins, color="tab:orange", alpha=0.75, histtype="stepfilled",
                edgecolor="tab:red", linewidth=0.8, label=f"after pruning (active {kept.size:,})")
        _log_counts(ax, "y")
        # Down to 0.7 so a bin of one weight still shows; up a decade for the legend.
        ax.set_ylim(0.7, 10 * np.histogram(full, bins=bins)[0].max())
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("weight value")
        ax.set_ylabel("count (log scale)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=9, loc="upper right")
    return _save_demo(fig, FigureCanvasAgg, path)


def demo_masks(masks, path, names=None):
    """Each layer's pruning mask as an image, a panel per layer: a row per input unit, a
    column per output unit, kept weights dark and pruned ones white; the title gives the
    shape and the fraction kept. Aspect 'auto' stretches thin layers (128 x 10) to the
    panel so their columns stay visible.

    ``masks`` are boolean arrays of shape (in, out); ``names`` titles the panels
    (default "layer i: in x out").
    """
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    Figure, FigureCanvasAgg = _matplotlib()
    masks = [np.asarray(mask) != 0 for mask in masks]
    if not masks:
        raise ValueError("masks must not be empty: one (in, out) array per layer")
    if any(mask.ndim != 2 or mask.size == 0 for mask in masks):
        raise ValueError(f"every mask must be a non-empty 2-D (in, out) array, got shapes "
                         f"{[mask.shape for mask in masks]}")
    names = _layer_names(len(masks), names, [mask.shape for mask in masks])
    fig, axes = _grid(Figure, len(masks),
                      "pruning masks (rows: input units, columns: output units)")
    for ax, name, mask in zip(axes, names, masks):
        # Nearest keeps every kept weight a crisp dark cell while a panel has a pixel or
        # more per unit; past that, nearest would drop whole rows, so average instead.
        crisp = max(mask.shape) <= 400
        ax.imshow(mask, cmap="Greys", vmin=0, vmax=1, aspect="auto",
                  interpolation="nearest" if crisp else "antialiased")
        # Units come in powers of two (64, 256): ticks at multiples of 8, 16, 32 read best.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 4, 8, 10]))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 4, 8, 10]))
        ax.set_title(f"{name}\n{mask.sum():,} of {mask.size:,} kept ({_percent(mask.mean(), 3)})",
                     fontsize=11)
        ax.set_xlabel("output unit")
        ax.set_ylabel("input unit")
    fig.legend(handles=[Patch(facecolor="black", label="kept (active weight)"),
                        Patch(facecolor="white", edgecolor="0.3", label="pruned")],
               loc="outside lower center", ncols=2, fontsize=10)
    return _save_demo(fig, FigureCanvasAgg, path)


def demo_description_length(steps, path, uniform_bits, preferred_step, title=None):
    """The two-part description length of each step as a stacked bar, model bits under
    data bits, with the uniform code (``N log2 K``) dashed and the MDL-preferred step
    (``preferred_step``, a step's ``"step"``) outlined and starred.

    Totals span two orders of magnitude (a half-pruned net costs ~100k bits, the best a
    few thousand), so y is logarithmic: the totals read exactly, though the upper
    (data) segment looks thinner than its share. Tick labels give each step's sparsity
    and value precision b.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    steps = list(steps)
    if not steps:
        raise ValueError("steps must not be empty")
    try:
        uniform_bits = float(uniform_bits)
    except (TypeError, ValueError):
        raise ValueError(f"uniform_bits must be a positive number, got {uniform_bits!r}") from None
    if not (math.isfinite(uniform_bits) and uniform_bits > 0):
        raise ValueError(f"uniform_bits must be a positive number, got {uniform_bits!r}")
    best = steps.index(_preferred(steps, preferred_step))
    codes = [s.description_length for s in steps]
    if any(code is None for code in codes):
        raise ValueError("every step needs its description_length (prune.iterative with "
                         "mdl_bits)")
    model = np.array([c.model_bits for c in codes], float)
    data = np.array([c.data_bits for c in codes], float)
    xs = np.arange(len(steps))
    fig = Figure(figsize=(max(8.0, 2.5 + 0.6 * len(steps)), 5.8), layout="constrained")
    ax = fig.subplots()
    low = ax.bar(xs, model, color="tab:blue", label="model bits (mask, values, header)")
    high = ax.bar(xs, data, bottom=model, color="tab:orange",
                  label="data bits (training labels given the model)")
    ax.axhline(uniform_bits, color="0.25", linestyle="--", linewidth=1.3,
               label=f"uniform code (N log2 K = {uniform_bits:,.0f} bits)")
    star = _mark_preferred(ax, low[best], high[best], model[best] + data[best],
                           steps[best].step)
    _log_counts(ax, "y")
    ax.set_ylim(min(model.min(), uniform_bits) / 2, (model + data).max() * 3)
    ax.set_xticks(xs, [_bar_label(s, c) for s, c in zip(steps, codes)], fontsize=9)
    ax.set_xlabel("pruning step: sparsity, value precision b")
    ax.set_ylabel("bits (log scale)")
    ax.set_title(title or "description length of the training labels per step", fontsize=12)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(handles=[low, high, ax.get_lines()[0], star], fontsize=9, loc="upper right",
              framealpha=0.9)
    return _save_demo(fig, FigureCanvasAgg, path)


def _bar_label(step, code):
    """"99.85%" over "b=2"."""
    return f"{_percent(step.sparsity)}\nb={code.bits}"


def _mark_preferred(ax, low, high, total, step):
    """Outline the preferred bar, star it and say why; return the star (for the legend)."""
    for bar in (low, high):
        bar.set_edgecolor("black")
        bar.set_linewidth(2.2)
    x = low.get_x() + low.get_width() / 2
    (star,) = ax.plot([x], [total * 1.35], marker="*", markersize=17, color="gold",
                      markeredgecolor="black", linestyle="none",
                      label="MDL-preferred (shortest total)")
    ax.annotate(f"MDL-preferred (step {step})\n{total:,.0f} bits", (x, total * 1.35),
                xytext=(0, 14), textcoords="offset points", ha="center", fontsize=9)
    return star


# The methods figure's zoom: this many points of accuracy below the dense baseline.
ZOOM_POINTS = 8.0
# One look per method: the lottery ticket's control shares its colour, dashed; the
# structured method, on a different footing (units, not weights), is drawn apart.
_METHOD_STYLES = {
    "one-shot magnitude": dict(color="tab:blue", marker="o"),
    "one-shot magnitude, ERK": dict(color="tab:cyan", marker="v"),
    "gradual magnitude (cubic)": dict(color="tab:green", marker="s"),
    "one-shot Taylor": dict(color="tab:orange", marker="^"),
    "SNIP at init": dict(color="tab:purple", marker="D"),
    "movement (cubic)": dict(color="tab:brown", marker="P"),
    "lottery ticket": dict(color="tab:red", marker="*", markersize=11),
    "lottery ticket, random reinit": dict(color="tab:red", marker="x", linestyle="--"),
}


def demo_methods(result, path):
    """Test accuracy against sparsity, one line per pruning method of the demo's
    methods comparison (``result.methods``), the dense baseline dashed, and structured
    pruning at the fraction of the weights its removed units took along (thick grey).

    Two panels share the lines: the whole range (where the methods that collapse
    show), and a zoom on the few points below the baseline where most methods sit
    and differ. The x axis is that of :func:`demo_accuracy_vs_sparsity` (the fraction
    kept, on a reversed log scale, labelled in sparsity).
    """
    methods = result.methods
    if methods is None:
        raise ValueError("result has no methods comparison (result.methods is None)")
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(15.0, 6.2), layout="constrained")
    axes = fig.subplots(1, 2)
    base = 100 * methods.baseline_accuracy
    curves = methods.curves + (methods.structured,)
    densities = [max(1.0 - s, 1e-6) for c in curves for s in c.sparsity]
    for ax in axes:
        ax.axhline(base, color="0.35", linestyle="--", linewidth=1.2,
                   label=f"dense baseline ({_percent(methods.baseline_accuracy)})")
        for curve in curves:
            style = _METHOD_STYLES.get(curve.name, dict(marker="o"))
            if curve is methods.structured:
                style = dict(color="0.3", marker="s", linewidth=3.0, alpha=0.8)
            ax.plot([max(1.0 - s, 1e-6) for s in curve.sparsity],
                    [100 * a for a in curve.test_accuracy], label=curve.name,
                    **{"markersize": 7, "linewidth": 1.6, **style})
        _density_axis(ax, densities)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="major", alpha=0.35)
    axes[0].set_ylim(0, 102)
    axes[0].set_title("the whole range", fontsize=11)
    axes[1].set_ylim(base - ZOOM_POINTS, min(base + 1.5, 100.5))
    axes[1].set_title(f"zoom: within {ZOOM_POINTS:g} points of the baseline", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9, framealpha=0.9)
    fig.suptitle(f"pruning methods side by side ({result.data.name}, seed "
                 f"{methods.settings['seed']}): test accuracy against sparsity", fontsize=12)
    return _save_demo(fig, FigureCanvasAgg, path)


def demo_figures(result, out_dir, before, after, masks, names):
    """Draw the demo report's figures into ``out_dir`` (created if missing) under the
    names of :data:`FIGURES`; return their paths in that order (the methods figure
    only if the result has a methods comparison)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name) for name in FIGURES]
    demo_accuracy_vs_sparsity(result, paths[0])
    demo_accuracy_vs_active(result, paths[1])
    demo_weight_histograms(before, after, paths[2], names)
    demo_masks(masks, paths[3], names)
    demo_description_length(result.mdl.records, paths[4], result.codes.uniform_bits,
                            result.mdl.preferred_step)
    if result.methods is None:
        return paths[:5]
    demo_methods(result, paths[5])
    return paths
