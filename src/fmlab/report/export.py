"""`fmlab results`: a study's per-trial and per-epoch tables (csv or jsonl), one budget at a time."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from fmlab.config.metrics import EPOCH_ROW
from fmlab.config.metrics import METRICS as METRICS
from fmlab.store.db import Store
from fmlab.study.spec import spec_label as spec_label  # re-exported (watch.py imports it from here)
from fmlab.training.checkpoint import atomic_write

Rows3 = tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]


def tables(store: Store, study: str, budget: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trial rows, epoch rows) of every trial of the study under one budget, whatever its state.
    Arms study: one trial row per arm (a trial shared by several arms appears once for each, with the
    same id), one set of epoch rows per trial (arm = the sharing arms, comma-joined)."""
    info = store.study(study)
    budget = store.pick_budget(study, budget)
    factors = info["factors"]
    arms = info["spec"].get("design") == "arms"
    label = spec_label(info["spec"], budget)
    recs = store.records(study, budget)
    trials, by_id = [], {}
    for r in recs:
        cell = {k: r["cell"].get(k) for k in factors}
        cells = [{"arm": a} for a in [cell["arm"], *r["cell"].get("also", [])]] if arms else [cell]
        tm = r["timings"]
        for c in cells:
            row = {
                "id": r["id"],
                "study": study,
                "budget": budget,
                "label": label,
                "state": r["state"],
                "seed": r["seed"],
                **c,
                **{m: r["metrics"].get(m) for m in METRICS},
                "best_epoch": r["best_epoch"],
                "stop_reason": r["stop_reason"],
                "n_params": r["n_params"],
                "train_s": tm.get("train_s"),
                "total_s": tm.get("total_s"),
                "train_images_per_s": tm.get("train_images_per_s"),
                "precision": r["precision"],
                "error": r["error"],
                "config": json.dumps(r["config"], sort_keys=True),
            }
            trials.append(row)
        by_id[r["id"]] = (r["seed"], {"arm": ",".join(c["arm"] for c in cells)} if arms else cell)
    # by seed, then id: the same tables from any store that holds these trials, whatever order it made them
    trials.sort(key=lambda t: (t["seed"], t["id"]))
    epochs = []
    for e in store.epochs(by_id):
        seed, cell = by_id[e["trial"]]
        epochs.append({"trial_id": e["trial"], "seed": seed, **cell, **{c: e[c] for c in EPOCH_ROW}})
    n_epochs: dict[str, int] = {}
    for e in epochs:
        n_epochs[e["trial_id"]] = n_epochs.get(e["trial_id"], 0) + 1
    for t in trials:
        t["epochs"] = n_epochs.get(t["id"], 0)
    return trials, epochs


def report_inputs(store: Store, study: str, budget: str | None = None) -> Rows3:
    """(trials, epochs, meta) in the contract of fmlab.analysis.driver.analyse / report.build_report, as plain
    rows (pd.DataFrame(rows) them): every trial of one budget, whatever its state, one row each."""
    info = store.study(study)
    budget = store.pick_budget(study, budget)
    trials, epochs = tables(store, study, budget)
    spec = info["spec"]
    meta = {
        "study": study,
        "budget": budget,
        "label": spec_label(spec, budget),
        "select": info["select_metric"],
        "planned": max(len(trials), _spec_rows(spec, budget)),
        "description": info["description"],
        "design": spec.get("design", "grid"),
        "base": spec.get("base", {}),
        # the spec is the last swept budget's: its finding/label apply only to that budget
        "finding": bool(spec.get("finding")) and spec.get("budget") == budget,
        "budget_note": spec.get("budget_note", "") if spec.get("budget") == budget else "",
        "min_effect": spec.get("min_effect", {}),
        "claims": spec.get("claims", []),
        "transform": spec.get("transform", "none"),
    }
    if meta["design"] == "arms":
        from fmlab.study.spec import BASELINE

        arms = _budget_arms(spec, budget, trials)
        meta.update(factors={"arm": [BASELINE, *arms]}, baseline={"arm": BASELINE}, arms=arms)
        return trials, epochs, meta
    from fmlab.study.spec import baseline_values

    levels = {k: list(v) for k, v in spec.get("factors", {}).items()}
    meta.update(factors=levels, baseline=baseline_values(spec.get("base", {}), levels))
    return trials, epochs, meta


def _budget_arms(spec: dict[str, Any], budget: str, trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The arms of one budget: the stored spec's when it is that budget's; else those of the file's tables
    (arm_tables, which a store made before budgets chose arms lacks) that the budget's trial rows name."""
    if spec.get("budget") == budget:
        return dict(spec.get("arms", {}))
    named = {t["arm"] for t in trials}
    return {a: c for a, c in (spec.get("arm_tables") or spec.get("arms", {})).items() if a in named}


def _spec_rows(spec: dict[str, Any], budget: str) -> int:
    """The trial rows the study file plans for budget (an arms study: one per arm and seed), when the stored
    spec is that budget's: a file that gained a cell since the sweep planned its rows counts it as missing."""
    if spec.get("budget") != budget:
        return 0
    cells = (
        1 + len(spec.get("arms") or {})
        if spec.get("design") == "arms"
        else math.prod(len(v) for v in (spec.get("factors") or {}).values())
    )
    return cells * len(spec.get("seeds") or ())


def report_frames(store: Store, study: str, budget: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """report_inputs as (trials, epochs) DataFrames and meta, from an open store (a read-only one, for
    `fmlab watch` and the live report); the epochs frame has its columns even before any epoch ends."""
    import pandas as pd

    trials, epochs, meta = report_inputs(store, study, budget)
    cols = ["trial_id", "seed", *meta["factors"], *EPOCH_ROW]
    return pd.DataFrame(trials), pd.DataFrame(epochs, columns=cols), meta


def write(rows: list[dict[str, Any]], path: Path, fmt: str) -> Path:
    def w(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            if fmt == "jsonl":
                for r in rows:
                    f.write(json.dumps(r, allow_nan=False) + "\n")
            else:
                cols = list(dict.fromkeys(k for r in rows for k in r))
                wr = csv.DictWriter(f, fieldnames=cols)
                wr.writeheader()
                wr.writerows(rows)

    atomic_write(path, w)
    return path


def export(store: Store, study: str, out: str | Path, fmt: str = "csv", budget: str | None = None) -> list[Path]:
    trials, epochs = tables(store, study, budget)
    out = Path(out)
    return [write(trials, out / f"trials.{fmt}", fmt), write(epochs, out / f"epochs.{fmt}", fmt)]
