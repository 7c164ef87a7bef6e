"""Tables, built once and rendered for the terminal or for Markdown reports, and the
number formats the applications share."""

from dataclasses import dataclass

__all__ = ["Table", "bits", "kib", "percent"]


def percent(fraction, digits=2):
    """A fraction as a percentage with ``digits`` decimals: 0.9644 -> "96.44%"."""
    return f"{100 * fraction:.{digits}f}%"


def bits(x):
    """A bit count, rounded, with thousands separators."""
    return f"{x:,.0f}"


def kib(n):
    """Bytes in KiB, one decimal."""
    return f"{n / 1024:.1f}"


@dataclass(frozen=True)
class Table:
    """Headers and rows of cells (anything ``str`` renders), right-aligned numbers."""

    headers: tuple
    rows: tuple

    def text(self):
        """A plain-text table: a header line, a rule, one line per row."""
        cells = [[str(h) for h in self.headers]] + [[str(c) for c in row] for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]

        def line(row):
            return "  ".join(c.rjust(w) for c, w in zip(row, widths))

        return "\n".join([line(cells[0]), line(["-" * w for w in widths])]
                         + [line(r) for r in cells[1:]])

    def markdown(self):
        """A GitHub-flavoured Markdown table; every column but the first right-aligned."""
        lines = ["| " + " | ".join(str(h) for h in self.headers) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(self.headers) - 1)) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)
