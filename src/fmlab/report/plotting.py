"""What every report figure shares: pyplot on the Agg backend, and saving a figure with the study label
(with "indicative only" for quick budgets, in a warning colour) so a PNG copied out of the report keeps its
caveat."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """pyplot on the Agg backend (no display needed); imported late so analysis stays light."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, label: str) -> Path:
    """Write fig to path as PNG under the study label, close it; returns path."""
    fig.suptitle(label, fontsize=11, color="#b3541e" if "indicative" in label else "black")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path
