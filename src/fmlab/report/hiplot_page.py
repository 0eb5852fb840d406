"""HiPlot's view of a study: one row per trial (every state), and the standalone hiplot.html the report links.

hiplot_experiment builds the hip.Experiment (fmlab.api.handles's StudyHandle.hiplot() returns it);
write_hiplot writes it as a page with a banner naming the study and linking back to index.html.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TRIAL_COLS = ("val_acc", "val_loss", "test_acc", "test_loss", "epochs", "best_epoch", "train_s", "total_s", "n_params")


def hiplot_experiment(trials: pd.DataFrame, meta: dict[str, Any]) -> Any:
    """The study's hip.Experiment (one row per trial, every state), coloured by the selection metric;
    the report writes it to hiplot.html and fmlab.api.handles's StudyHandle.hiplot() returns it."""
    from fmlab.analysis.formatting import level_label

    levels = {f: [level_label(v) for v in lv] for f, lv in meta["factors"].items()}
    bools = [f for f, lv in levels.items() if set(lv) == {"true", "false"}]
    return _experiment(trials, list(levels), meta.get("select", "val_acc"), bools)


def _experiment(trials: pd.DataFrame, factors: list[str], color_by: str, bools: list[str]) -> Any:
    """Factors with non-numeric levels (bool, str), the state and the seed are declared categorical;
    numeric factors keep a numeric, ordered axis. bools: from the study's levels (the store may hand
    booleans over as 0/1)."""
    import hiplot as hip

    from fmlab.analysis.formatting import level_label

    def numeric(c: str) -> bool:
        vals = trials[c].dropna()
        return bool(len(vals)) and all(
            isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in vals
        )

    cat = [c for c in factors if c in bools or not numeric(c)]
    metrics = [c for c in TRIAL_COLS if c in trials]
    rows = []
    for _, r in trials.iterrows():
        row: dict[str, Any] = {}
        for c in ["id", "state", "seed", *factors, *metrics]:
            v = r.get(c)
            if isinstance(v, np.generic):
                v = v.item()
            if c in cat or c == "state":
                v = level_label(v, boolean=c in bools)
            elif v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
                v = None  # JSON has no NaN; HiPlot shows a missing value
            elif isinstance(v, float):
                v = round(v, 6)
            row[c] = v
        rows.append(row)
    exp = hip.Experiment.from_iterable(rows)
    for c in ("state", "seed", *cat):
        exp.parameters_definition[c].type = hip.ValueType.CATEGORICAL
    for c in (c for c in factors if c not in cat):  # HiPlot would guess categorical for few distinct values
        exp.parameters_definition[c].type = hip.ValueType.NUMERIC
    if color_by in metrics:
        exp.colorby = color_by
    order = ["state", "seed", *factors, *metrics][::-1]  # HiPlot lays out this list right to left
    exp.display_data(hip.Displays.PARALLEL_PLOT).update({"hide": ["uid", "id", "from_uid"], "order": order})
    exp.display_data(hip.Displays.TABLE).update({"hide": ["uid", "from_uid"], "order_by": [["id", "asc"]]})
    return exp


def write_hiplot(exp: Any, path: Path, label: str = "") -> Path:
    """A standalone HiPlot page of exp; with label, a banner naming the study and linking the report."""
    page = exp.to_html()
    if label:  # the study and its caveat on this page too ("quick: indicative only")
        banner = (
            f"<div style='font:14px system-ui,sans-serif;padding:6px 12px;background:#fff4e0;"
            f"border-bottom:1px solid #f0b45b'>{html.escape(label)}: {len(exp.datapoints)} trials, one row "
            "each. <a href='index.html'>Back to the report</a></div>"
        )
        page = page.replace("<title>HiPlot</title>", f"<title>HiPlot: {html.escape(label)}</title>", 1)
        page = page.replace('<body style="margin:0px">', f'<body style="margin:0px">{banner}', 1)
    path.write_text(page)
    return path
