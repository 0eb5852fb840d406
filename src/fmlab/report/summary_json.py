"""The report as data: the JSON-safe dict `fmlab report` prints (build_report returns it) and summary.json.

report_dict assembles it from an Analysis (paths, counts, findings, effects, the tables' rows, the best set,
the claims, the diagnostics, the seeds planned and the plain answer of fmlab.report.answer); write_summary
keeps the part of it that summary.json carries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fmlab.analysis import arms as farms
from fmlab.analysis.record import Analysis
from fmlab.analysis.stats import json_safe
from fmlab.report import answer as fanswer
from fmlab.report.tables import cell_header, cell_rows, effect_header, effect_rows

EFFECT_KEYS = ("kind", "term", "estimate", "lo", "hi", "df", "n_seeds", "p", "p_holm", "p_tost_holm", "verdict")
SUMMARY_KEYS = (
    "label",
    "select",
    "answer",
    "effects",
    "best_set",
    "claims",
    "min_effect",
    "anova_note",
    "counts",
    "diagnostics",
    "seeds_planned",
)


def report_dict(
    a: Analysis, out: Path, figs: dict[str, str], best: dict | None, tables: dict[str, str]
) -> dict[str, Any]:
    """summary_dict with the best set, the claims, the diagnostics, the seeds planned and the answer added."""
    rep = summary_dict(a, out, figs, best, tables)
    rep["best_set"] = best_set_dict(a)
    rep["min_effect"] = a.min_effect
    rep["claims"] = [{k: json_safe(v) for k, v in c.items()} for c in a.claims]
    rep["diagnostics"] = a.diagnostics.to_dict() if a.diagnostics is not None else None
    rep["seeds_planned"] = a.plan
    rep["answer"] = fanswer.compose(rep)  # the plain answer, from the same dict summary.json carries
    return rep


def write_summary(rep: dict[str, Any], out: Path) -> Path:
    """summary.json: SUMMARY_KEYS of the report's dict."""
    path = out / "summary.json"
    path.write_text(json.dumps({k: rep[k] for k in SUMMARY_KEYS}, indent=1, default=str))
    return path


def best_set_dict(a: Analysis) -> dict[str, Any] | None:
    """The best cell, the cells not distinguishable from it, the method and its note (JSON-safe)."""
    if a.best is None:
        return None
    return {
        "best": a.best["best"],
        "set": a.best["set"],
        "method": a.best["method"],
        "note": a.best["note"],
        "critical_value": json_safe(a.best["critical"]),
        "df": json_safe(a.best["df"]),
    }


def summary_dict(
    a: Analysis, out: Path, figs: dict[str, str], best: dict | None, tables: dict[str, str]
) -> dict[str, Any]:
    top = []
    for _, r in a.cells.head(10).iterrows():
        top.append({k: json_safe(r[k]) for k in a.cells.columns if not isinstance(r[k], pd.Categorical)})
    effects = []
    for tbl in (a.effects, a.interactions, a.test_effects):
        for _, r in tbl.iterrows():
            effects.append({k: json_safe(r.get(k)) for k in EFFECT_KEYS} | {"metric": r.get("metric", a.select)})
    return {
        "label": a.label,
        "select": a.select,
        "out_dir": str(out),
        "index": str(out / "index.html"),
        "summary_md": str(out / "summary.md"),
        "hiplot": str(out / "hiplot.html"),
        "figures": {k: str(out / v) for k, v in figs.items()},
        "tables": {k: str(out / v) for k, v in tables.items()},
        "counts": a.counts,
        "warnings": a.warnings,
        "findings": a.findings,
        "effects": effects,
        "top_cells": [{k: (str(v) if k in a.factors else v) for k, v in c.items()} for c in top],
        "failed": [{k: json_safe(v) for k, v in f.items()} for f in a.failed],
        "missing_cells": a.missing_cells,
        "anova_note": a.anova_note,
        "design": a.design,
        "arms": a.arms,
        "cells_table": {"header": cell_header(a), "rows": cell_rows(a, 10)}
        if a.design == "grid"
        else {"header": farms.ranked_header(a), "rows": farms.ranked_rows(a)},
        "effects_table": {"header": effect_header(a), "rows": effect_rows(a)}
        if a.design == "grid"
        else {"header": farms.effect_header(a), "rows": farms.effect_rows(a)},
        "best": None
        if best is None
        else {k: best[k] for k in ("trial_id", "ckpt", "test_acc", "n_test", "classes", "per_class_acc")},
    }
