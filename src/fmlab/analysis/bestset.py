"""The best set: Hsu's multiple comparisons with the best (MCB) on the cell-means model (cell + seed block),
with Dunnett's one-sided critical value from scipy's multivariate t; with one seed, the raw cell means with
the two-way model's residual variance (fmlab.analysis.stats fits that model). Pure functions, as fmlab.analysis.stats.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fmlab.analysis.ranking import higher_is_better
from fmlab.analysis.stats import ALPHA, MCB, Fit, design_matrix


def dunnett_one_sided(corr: np.ndarray, df: float, alpha: float = ALPHA, draws: int = 100_000) -> float:
    """Critical value d with P(max_i T_i <= d) = 1 - alpha for T ~ multivariate t (corr, df): the
    1 - alpha quantile of the maximum over draws from scipy's multivariate t (fixed random state, so
    the same study always gets the same value; Monte Carlo error about 0.01)."""
    k = corr.shape[0]
    if k == 1:
        return float(stats.t.ppf(1 - alpha, df))
    t = stats.multivariate_t(loc=np.zeros(k), shape=corr, df=df, allow_singular=True)
    return float(np.quantile(t.rvs(size=draws, random_state=12345).reshape(draws, k).max(axis=1), 1 - alpha))


def mcb(
    means: np.ndarray, cov: np.ndarray, df: float, higher: bool, d: float | None = None
) -> tuple[np.ndarray, float]:
    """Hsu's MCB: a boolean mask of the cells not distinguishable from the best, and the critical value.
    Cell i stays when mean_i + d * se(i - j) >= mean_j for every other j (signs flipped when lower is
    better); d is Dunnett's one-sided value for comparisons with the observed best's correlation."""
    s = means if higher else -means
    k = len(s)
    if k == 1:
        return np.array([True]), math.nan
    if d is None:
        b = int(np.argmax(s))
        others = [j for j in range(k) if j != b]
        D = np.zeros((k - 1, k))
        for r, j in enumerate(others):
            D[r, j], D[r, b] = 1.0, -1.0
        c = D @ cov @ D.T
        sd = np.sqrt(np.diag(c))
        d = dunnett_one_sided(c / np.outer(sd, sd), df)
    var = np.diag(cov)
    se = np.sqrt(np.maximum(var[:, None] + var[None, :] - 2 * cov, 0.0))
    gap = s[None, :] - s[:, None] - d * se  # gap[i, j] > 0: j beats i beyond doubt
    np.fill_diagonal(gap, -np.inf)
    return ~(gap > 0).any(axis=1), float(d)


def cell_means(
    df: pd.DataFrame, metric: str, factors: list[str], two_way: Fit | None
) -> tuple[pd.DataFrame, np.ndarray, float, str] | None:
    """Cell-means model metric ~ C(cell) + C(seed): per cell its seed-adjusted mean, the covariance of
    those means and the residual df. With no residual df left (one seed), the raw cell means with the
    two-way model's residual variance, and the note says so."""
    from statsmodels.formula.api import ols

    d = df.dropna(subset=[metric]).copy()
    if not len(d):
        return None
    cells = list(dict.fromkeys(d["cell"]))
    d = pd.DataFrame(
        {
            "cell": pd.Categorical(d["cell"], categories=cells),
            "seed": pd.Categorical(d["seed"]),
            "y": d[metric].astype(float).to_numpy(),
        }
    )
    seeds = list(d["seed"].cat.categories)
    n = d.groupby("cell", observed=False).size().to_numpy()
    if len(seeds) > 1 and len(cells) > 1:
        fit = ols("y ~ C(cell) + C(seed)", data=d).fit()
        if fit.df_resid >= 1:
            ref = pd.DataFrame(list(itertools.product(cells, seeds)), columns=["cell", "seed"])
            ref["cell"] = pd.Categorical(ref["cell"], categories=cells)
            ref["seed"] = pd.Categorical(ref["seed"], categories=seeds)
            X = design_matrix(fit.model.data.model_spec, ref)
            L = np.array([X[(ref["cell"] == c).to_numpy()].mean(axis=0) for c in cells])
            means, cov = L @ fit.params.to_numpy(), L @ fit.cov_params().to_numpy() @ L.T
            note = f"cell-means model {metric} ~ cell + seed block; residual df {fit.df_resid:.0f}"
            return pd.DataFrame({"cell": cells, "mean": means, "n": n}), cov, float(fit.df_resid), note
    means = d.groupby("cell", observed=False)["y"].mean().to_numpy()
    if two_way is None:
        return None
    cov = np.diag(two_way.sigma**2 / n)
    note = (
        f"raw cell means with the two-way model's residual SD (no replication left for a cell-means "
        f"model); residual df {two_way.df_resid:.0f}"
    )
    return pd.DataFrame({"cell": cells, "mean": means, "n": n}), cov, two_way.df_resid, note


def best_set(df: pd.DataFrame, metric: str, factors: list[str], two_way: Fit | None) -> dict[str, Any] | None:
    """The best cell, the cells not distinguishable from it (MCB, 95% simultaneous) and per-cell CIs
    from the pooled residual SD."""
    cm = cell_means(df, metric, factors, two_way)
    if cm is None:
        return None
    tab, cov, dfr, note = cm
    keep, d = mcb(tab["mean"].to_numpy(), cov, dfr, higher_is_better(metric))
    se = np.sqrt(np.diag(cov))
    q = stats.t.ppf(1 - ALPHA / 2, dfr)
    tab = tab.assign(se=se, lo=tab["mean"] - q * se, hi=tab["mean"] + q * se, in_best=keep)
    tab = tab.sort_values("mean", ascending=not higher_is_better(metric)).reset_index(drop=True)
    return {
        "best": str(tab["cell"].iloc[0]),
        "set": [str(c) for c in tab.loc[tab["in_best"], "cell"]],
        "method": MCB,
        "critical": d,
        "df": dfr,
        "note": note,
        "cells": tab,
    }


# --- the same computation vectorised over many responses (simulation tests) ---
