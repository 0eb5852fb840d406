"""Durations as a person reads them: `45 s`, `3 min 20 s`, `3 h 10 min`, `2 d 4 h` (one formatter for every
duration fmlab prints: the dry-run's estimate, the sweep's progress, fmlab watch, the report's setup)."""

from __future__ import annotations

import math


def duration(s: float | None) -> str:
    """Seconds in the two largest units that matter, rounded to the smaller one; "?" when unknown."""
    if s is None or math.isnan(s):
        return "?"
    if math.isinf(s):
        return "forever"
    s = max(float(s), 0.0)
    if s < 9.95:
        return f"{s:.1f} s"
    if s < 59.5:
        return f"{round(s)} s"
    if s < 599.5:
        m, r = divmod(round(s), 60)
        return f"{m} min {r} s" if r else f"{m} min"
    m = round(s / 60)
    if m < 60:
        return f"{m} min"
    if m < 24 * 60:
        h, r = divmod(m, 60)
        return f"{h} h {r} min" if r else f"{h} h"
    d, r = divmod(round(s / 3600), 24)
    return f"{d} d {r} h" if r else f"{d} d"
