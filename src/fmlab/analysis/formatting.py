"""How the analysis writes its numbers and names: display units, level labels, short factor names, effects
and p-values as text. Pure functions over values; the report, the CLI and the findings all write through them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def unit(metric: str, level: bool = False) -> tuple[float, str]:
    """Display scale: accuracies (fractions) in % (a level) or percentage points (a difference)."""
    if metric.endswith("acc"):
        return 100.0, " %" if level else " pts"
    return 1.0, ""


def level_label(v: Any, boolean: bool = False) -> str:
    """One canonical label per level, so CSV/JSON/SQLite round trips (1 vs 1.0 vs "1e0", True vs "true",
    and with boolean=True also 1/0 as SQLite stores booleans) all give the same label."""
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("true", "false"):
            return low
        try:
            v = float(low)
        except ValueError:
            return v
    if boolean and isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1):
        v = bool(v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


def short_names(factors: list[str]) -> dict[str, str]:
    """'model.batch_norm' -> 'batch_norm' where that stays unique."""
    short = {f: f.rsplit(".", 1)[-1] for f in factors}
    return short if len(set(short.values())) == len(short) else {f: f for f in factors}


def fmt_effect(v: float, metric: str, signed: bool = True) -> str:
    k, u = unit(metric)
    if not np.isfinite(v):
        return "n/a"
    digits = 2 if k == 100 else 4
    return f"{k * v:{'+' if signed else ''}.{digits}f}"


def effect_text(x: float, metric: str) -> str:
    """A size in the metric's display units, unsigned: 0.005 in val_acc -> '0.50 pts', 0.01 in val_loss -> '0.0100'."""
    return fmt_effect(x, metric, False) + unit(metric)[1]


def fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"= {p:.3f}")
