"""The seed-level check of a study's main effects: does the fitted model's verdict survive without the model?

Per seed, the level minus the baseline averaged over the other factors' cells (those observed at both
levels in that seed), then a t-interval over seeds (df = seeds - 1) and Holm over the main effects. Where
"differs from 0 at Holm" is not the same for the model and the check, the verdict depends on the model.
Pure functions over the COMPLETE trials and the model's effects table (fmlab.analysis.diagnostics runs it
with 3 or more seeds); nothing here prints or writes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from fmlab.analysis.pvalues import holm_adjust
from fmlab.analysis.stats import ALPHA

MIN_SEEDS = 3
SEED_METHOD = (
    "seed-paired estimate: per seed, the level minus the baseline averaged over the other factors' "
    "cells; a t-interval over seeds (df = seeds - 1); Holm over the main effects"
)


def seed_paired(
    done: pd.DataFrame, metric: str, factor: str, level: str, baseline: str, others: list[str]
) -> np.ndarray:
    """Per seed: the mean over the other factors' cells (those observed at both levels in that seed) of
    level minus baseline. One value per seed that has such a pair."""
    d = done[done[factor].astype(str).isin([level, baseline])].dropna(subset=[metric])
    if not len(d):
        return np.array([])
    keys = ["seed", *others]
    d = d.assign(_lv=d[factor].astype(str), **{k: d[k].astype(str) for k in others})
    cm = d.groupby([*keys, "_lv"])[metric].mean().unstack("_lv")
    if level not in cm or baseline not in cm:
        return np.array([])
    diff = (cm[level] - cm[baseline]).dropna()
    return diff.groupby(level="seed").mean().to_numpy(float)


def seed_check(done: pd.DataFrame, metric: str, effects: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """The seed-paired check of each tested main effect (rows with a finite model p), beside the model's
    Holm p: estimate, lo, hi, df, p, p_holm (over these rows), and both verdict classes."""
    rows = []
    for _, r in effects.iterrows():
        if not np.isfinite(r.get("p", math.nan)):
            continue  # not tested by the model (held at one level, or an arm with another's trials)
        f = str(r["factor"])
        level = str(r["arm"] if f == "arm" and "arm" in r else r["level"])
        base = str(r["baseline"]) if "baseline" in r and isinstance(r["baseline"], str) else "baseline"
        diffs = seed_paired(done, metric, f, level, base, [g for g in factors if g != f])
        n = len(diffs)
        est = float(diffs.mean()) if n else math.nan
        sd = float(diffs.std(ddof=1)) if n > 1 else math.nan
        half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
        p = float(stats.ttest_1samp(diffs, 0.0).pvalue) if n > 1 and sd > 0 else math.nan
        rows.append(
            {
                "term": r["term"],
                "estimate": est,
                "lo": est - half,
                "hi": est + half,
                "df": n - 1,
                "p": p,
                "n_seeds": n,
                "model_estimate": float(r["estimate"]),
                "model_p_holm": float(r["p_holm"]),
                "model_df": float(r["df"]),
            }
        )
    tab = pd.DataFrame(rows)
    if not len(tab):
        return tab
    tab["p_holm"] = holm_adjust(tab["p"].to_numpy(float))
    tab["model_differs"] = tab["model_p_holm"] < ALPHA
    tab["check_differs"] = tab["p_holm"] < ALPHA
    tab["agree"] = ~np.isfinite(tab["p_holm"]) | (tab["model_differs"] == tab["check_differs"])
    return tab


def disagreement_lines(tab: pd.DataFrame) -> list[str]:
    def says(yes: bool, p: float, df: float) -> str:
        ps = "< 0.001" if p < 0.001 else f"= {p:.3f}"
        return f"{'differs from 0' if yes else 'does not differ from 0'} (Holm p {ps}, df {df:.0f})"

    return [
        f"verdict depends on the model: {r['term']}: the fitted model says it "
        f"{says(r['model_differs'], r['model_p_holm'], r['model_df'])}; the seed-paired check says it "
        f"{says(r['check_differs'], r['p_holm'], r['df'])}"
        for _, r in tab.iterrows()
        if not r["agree"]
    ]
