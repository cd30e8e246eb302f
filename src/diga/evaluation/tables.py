"""The one way diga lays out a table of already formatted cells: aligned text for the console, CSV, Markdown.

Every table diga prints or writes (per-class IoU of a run, the pipeline's stages, the ablation's rows) goes through
these three, so a column looks the same wherever it appears. Cells are strings; rounding is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence

Rows = Sequence[Sequence[str]]


def text_table(rows: Rows) -> str:
    """Columns padded to their widest cell, two spaces apart: the first (row names) left-aligned, numbers right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)  # fmt: skip


def csv_table(rows: Rows) -> str:
    """Comma-separated lines with a final newline (cells that need quotes arrive quoted)."""
    return "\n".join(",".join(r) for r in rows) + "\n"


def markdown_table(rows: Rows) -> str:
    """A Markdown table: the first row is the header."""
    head, *body = rows
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head), *(f"| {' | '.join(r)} |" for r in body)]
    return "\n".join(lines) + "\n"
