"""Tables for the terminal and for Markdown reports."""


def text_table(headers, rows):
    """A right-aligned plain-text table: a header line, a rule, one line per row."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(c.rjust(w) for c, w in zip(row, widths))

    return "\n".join([line(cells[0]), line(["-" * w for w in widths])]
                     + [line(r) for r in cells[1:]])


def markdown_table(headers, rows):
    """A GitHub-flavoured Markdown table, numbers right-aligned."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
