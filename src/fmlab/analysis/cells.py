"""Per-cell summaries of a study's trials: counts by state, the t interval of a mean, the ranked cell table
(with the best set's fit marked on it) and the learning curves per cell. Pure functions over DataFrames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fmlab.analysis.ranking import higher_is_better
from fmlab.analysis.stats import ALPHA
from fmlab.config.states import State


def t_ci(x: Any) -> dict[str, float]:
    """Mean, sample std, n and the t-based 95% CI of the mean (NaN bounds when n < 2)."""
    a = np.asarray(x, dtype=float)
    a = a[np.isfinite(a)]
    n = len(a)
    mean = float(a.mean()) if n else math.nan
    std = float(a.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n, "lo": mean - half, "hi": mean + half}


def t_test(x: Any) -> float:
    """Two-sided one-sample t-test of mean 0; NaN when untestable (n < 2 or no spread)."""
    a = np.asarray(x, dtype=float)
    a = a[np.isfinite(a)]
    if len(a) < 2 or a.std(ddof=1) == 0:
        return math.nan
    return float(stats.ttest_1samp(a, 0.0).pvalue)


def complete_and_counts(t: pd.DataFrame, select: str, meta: dict) -> tuple[pd.DataFrame, dict[str, int]]:
    """The COMPLETE trials with a selection metric, and how many trials are in each state (t's state
    column is upper-cased in place). COMPLETE trials with no selection metric but a test accuracy trained with
    no validation split (data.val_size = 0): when no trial validated they are the ones returned (each tested at
    its last epoch; nothing to choose on), counted as no_validation; beside trials that validated they are left
    out, counted as left_out_no_validation (each key only when there are some)."""
    t["state"] = t["state"].astype(str).str.upper()
    complete = t[t["state"] == State.COMPLETE]
    done = complete.dropna(subset=[select]).copy()
    blind = complete[complete[select].isna()].dropna(subset=["test_acc"]) if "test_acc" in t else complete[:0]
    validated = bool(len(done))
    if not validated and len(blind):
        done = blind.copy()
    counts = {
        "rows": len(t),
        "complete": len(done),
        **{s.value.lower(): int((t["state"] == s).sum()) for s in (State.FAILED, State.WAITING, State.RUNNING)},
    }
    counts["planned"] = int(meta.get("planned") or len(t))
    counts["missing"] = max(0, counts["planned"] - len(t))
    counts["seeds"] = int(done["seed"].nunique())
    if len(blind):
        counts["left_out_no_validation" if validated else "no_validation"] = len(blind)
    return done, counts


def cell_table(done: pd.DataFrame, factors: list[str], select: str) -> pd.DataFrame:
    """Per cell: mean, std, 95% CI and n of the selection metric and of test accuracy; ranked."""
    rows = []
    for cell, g in done.groupby("cell", sort=False):
        r: dict[str, Any] = {
            "cell": cell,
            **{f: g[f].iloc[0] for f in factors},
            "n": len(g),
            "seeds": ",".join(str(s) for s in sorted(g["seed"].unique())),
        }
        for m in dict.fromkeys([select, "test_acc"]):
            if m in g:
                ci = t_ci(g[m])
                r.update({f"{m}_{k}": ci[k] for k in ("mean", "std", "lo", "hi")})
        for m in ("best_epoch", "total_s"):
            if m in g:
                r[f"{m}_mean"] = float(g[m].mean())
        rows.append(r)
    if not rows:
        return pd.DataFrame(columns=["rank", "cell", *factors, "n"])
    out = pd.DataFrame(rows)
    if out[f"{select}_mean"].notna().any():  # else nothing validated (data.val_size = 0): no ranking, file order
        out = out.sort_values(f"{select}_mean", ascending=not higher_is_better(select))
    out.insert(0, "rank", range(1, len(out) + 1))
    return out.reset_index(drop=True)


def mark_best_set(cells: pd.DataFrame, best: dict[str, Any] | None, select: str) -> pd.DataFrame:
    """The cell table with the best set's fit on it: each cell's mean of the selection metric from the
    cell-means model (bestset.best_set; seed-adjusted, so a cell missing a seed is not ranked on the seeds it
    has), its simultaneous interval (select_lo, select_hi), membership (in_best_set), and the ranks from those
    means; the plain average of its trials stays as select_raw_mean. Unchanged when there is no best set."""
    if best is None or not len(cells):
        return cells
    bc = best["cells"].set_index("cell")
    out = cells.assign(
        **{
            f"{select}_raw_mean": cells[f"{select}_mean"],
            f"{select}_mean": cells["cell"].map(bc["mean"]).astype(float),
            f"{select}_lo": cells["cell"].map(bc["lo"]),
            f"{select}_hi": cells["cell"].map(bc["hi"]),
            "in_best_set": cells["cell"].map(bc["in_best"]).fillna(False).astype(bool),
        }
    )
    out = out.sort_values(f"{select}_mean", ascending=not higher_is_better(select), kind="stable")
    return out.assign(rank=range(1, len(out) + 1)).reset_index(drop=True)


def curve_table(done: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cell and epoch: mean, std and n over seeds (n shrinks where early stopping ended runs)."""
    if epochs is None or not len(epochs) or not len(done):
        return pd.DataFrame(columns=["cell", "epoch"])
    e = epochs.merge(done[["id", "cell"]].rename(columns={"id": "trial_id"}), on="trial_id")
    cols = [c for c in ("train_loss", "val_loss", "val_acc", "train_acc") if c in e]
    g = e.groupby(["cell", "epoch"])[cols].agg(["mean", "std", "count"])
    g.columns = [f"{m}_{s}" for m, s in g.columns]
    return g.reset_index()
