"""Saving a matplotlib figure: rendered in memory, then written atomically (a killed run never leaves half a PNG)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from diga.utils.io import atomic_write_bytes


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Write `fig` to `path` as a PNG and close it (figures left open accumulate in long runs)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
