"""Figures (matplotlib, an optional extra: ``pip install sparseprune[plot]``).

matplotlib is imported only when a figure is drawn, and figures are drawn on the Agg
canvas directly (no pyplot), so nothing here touches the user's backend or open figures.
"""

import math
import os


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
    """Bytes of each case's weights against sparsity: dense, CSR and the entropy bound
    (which weights survive at log2 C(n, k) bits, plus the values); log scale."""
    Figure, FigureCanvasAgg = _matplotlib()
    cases = _cases(report["rows"])
    fig, axes = _grid(Figure, max(1, len(cases)), "weight memory against sparsity")
    series = (("dense_bytes", "dense", "-"), ("sparse_bytes", "CSR (data + indices + indptr)", "-"),
              ("entropy_bound_bytes", "entropy bound (mask + values)", "--"),
              ("mask_entropy_bytes", "entropy bound, mask only", ":"))
    for ax, (case, rows) in zip(axes, cases.items()):
        by_sparsity = {r["sparsity"]: r for r in rows}
        xs = sorted(by_sparsity)
        for key, label, style in series:
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
