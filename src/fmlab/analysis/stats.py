"""The statistical engine shared by grid (fmlab.analysis.grid) and arms (fmlab.analysis.arms) studies.

Pure functions over DataFrames; nothing here prints or writes. One OLS fit per study and metric
(statsmodels): grid ``metric ~ (factors)^2 + C(seed)``, arms ``metric ~ C(arm) + C(seed)``; the seed block
is left out with one seed (the higher-order interactions are then the error). Every trial enters.

- Effects are contrasts of that fit: a main effect is the difference of estimated marginal means (level
  vs baseline, averaged with equal weight over the other factors' levels and the seeds), a two-way
  interaction the difference of differences. Estimates, 95% CIs and p-values come from ``fit.t_test``
  with the model's residual df.
- Verdicts: Holm over one family holding each effect's test of 0 and its TOST against +-min_effect;
  matters (differs from 0, CI not inside +-X), real but smaller than X (differs, CI inside), no effect
  larger than X (TOST rejects), undecided (the rest).
- Best set: fmlab.analysis.bestset (Hsu's multiple comparisons with the best on the cell-means model, with
  Dunnett's one-sided critical value from scipy's multivariate t), on this module's fit.

The same computation vectorised over many responses: fmlab.analysis.fastfit; TOST and Holm's adjustment:
fmlab.analysis.pvalues.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.pvalues import holm_adjust, tost_p
from fmlab.analysis.ranking import higher_is_better as higher_is_better  # owned by ranking; kept importable here

ALPHA = 0.05
MIN_EFFECT = {"val_loss": 0.01, "val_acc": 0.005, "test_acc": 0.005, "test_loss": 0.01}
VERDICTS = ("matters", "real but smaller than X", "no effect larger than X", "undecided")
MCB = "Hsu's multiple comparisons with the best (Dunnett's one-sided critical value from scipy's multivariate t)"


def json_safe(v: Any) -> Any:
    """A value for JSON: numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class Fit:
    """One fitted model and the contrasts that name the study's effects."""

    fit: Any  # statsmodels RegressionResults
    formula: str
    df_resid: float
    sigma: float
    names: list[str]  # effect term names, same order as L's rows
    L: np.ndarray  # contrast matrix over fit.params
    meta: list[dict[str, Any]]  # per effect: kind, factor, level, baseline
    note: str
    alias: dict[str, str]  # factor -> column name in the model frame
    grid: pd.DataFrame | None = None  # the balanced reference grid (every cell x every seed) the EMMs average
    X_ref: np.ndarray | None = None  # its design rows

    def mean_at(self, cond: dict[str, str]) -> np.ndarray:
        """The contrast row of the estimated marginal mean at cond ({factor: level})."""
        assert self.grid is not None and self.X_ref is not None
        return emm_row(self.grid, self.X_ref, cond)


def emm_row(grid: pd.DataFrame, X: np.ndarray, cond: dict[str, str]) -> np.ndarray:
    """The reference grid's design rows where cond holds, averaged: equal weight over the other factors'
    levels and the seeds."""
    m = np.ones(len(grid), bool)
    for f, v in cond.items():
        m &= grid[f].astype(str).to_numpy() == str(v)
    return X[m].mean(axis=0)


def _frame(df: pd.DataFrame, metric: str, factors: dict[str, list[str]]) -> tuple[pd.DataFrame, dict[str, str]]:
    alias = {f: f"f{i}" for i, f in enumerate(factors)}
    d = pd.DataFrame(
        {a: pd.Categorical(df[f].astype(str), categories=[str(v) for v in factors[f]]) for f, a in alias.items()}
    )
    d["seed"] = pd.Categorical(df["seed"].astype(int))
    d["y"] = df[metric].astype(float).to_numpy()
    return d.reset_index(drop=True), alias


def _terms(alias: dict[str, str], factors: dict[str, list[str]], interactions: bool, block: bool) -> list[str]:
    used = [a for f, a in alias.items() if len(factors[f]) > 1]
    mains = [f"C({a}, Treatment(0))" for a in used]
    pairs = [f"{x}:{y}" for x, y in itertools.combinations(mains, 2)] if interactions else []
    return mains + pairs + (["C(seed)"] if block else [])


def _contrasts(
    design_info: Any,
    factors: dict[str, list[str]],
    alias: dict[str, str],
    baseline: dict[str, str],
    seeds: list[Any],
    interactions: bool,
    all_pairs: bool = True,
) -> tuple[list[str], np.ndarray, list[dict[str, Any]], pd.DataFrame, np.ndarray]:
    """Contrast rows over the params: EMMs over a balanced reference grid (every cell x every seed); also
    the grid and its design rows (Fit.mean_at)."""
    keys = list(factors)
    grid = pd.DataFrame(list(itertools.product(*[factors[f] for f in keys], seeds)), columns=[*keys, "seed"])
    ref = pd.DataFrame(
        {alias[f]: pd.Categorical(grid[f].astype(str), categories=[str(v) for v in factors[f]]) for f in keys}
    )
    ref["seed"] = pd.Categorical(grid["seed"], categories=seeds)
    X = design_matrix(design_info, ref)
    names, rows, meta = [], [], []
    for name, info, parts in effect_terms(factors, baseline, interactions, all_pairs):
        names.append(name)
        rows.append(sum(sign * emm_row(grid, X, cond) for sign, cond in parts))
        meta.append(info)
    return names, np.array(rows).reshape(len(rows), X.shape[1]), meta, grid, X


def effect_terms(
    factors: dict[str, list[str]], baseline: dict[str, str], interactions: bool = True, all_pairs: bool = True
) -> list[tuple[str, dict[str, Any], list[tuple[float, dict[str, str]]]]]:
    """Every effect a grid study's model names, in table order: (name, kind/factor/level/baseline, the
    marginal means it combines as (sign, {factor: level})). A main effect is level minus baseline (with 3+
    levels and all_pairs, also each other pair of levels); a two-way interaction the difference of
    differences. Study files' claims are checked against these names."""
    keys = list(factors)
    out: list[tuple[str, dict[str, Any], list[tuple[float, dict[str, str]]]]] = []
    for f in keys:
        b = baseline.get(f, factors[f][0])
        others = [x for x in factors[f] if x != b]
        # each level vs the baseline, then (3+ levels) the other pairs, so that a factor whose levels differ
        # only between two non-baseline levels (batch 32 vs 128) shows it as an effect, as its ANOVA term does
        pairs = [(lv, b) for lv in others] + (
            [(hi, lo) for lo, hi in itertools.combinations(others, 2)] if all_pairs else []
        )  # arms: each arm against the baseline only
        for lv, ref in pairs:
            out.append(
                (
                    f"{f}: {lv} vs {ref}",
                    {"kind": "main", "factor": f, "level": lv, "baseline": ref},
                    [(1.0, {f: lv}), (-1.0, {f: ref})],
                )
            )
    if interactions:
        for fa, fb in itertools.combinations(keys, 2):
            a0, b0 = baseline.get(fa, factors[fa][0]), baseline.get(fb, factors[fb][0])
            for a in (x for x in factors[fa] if x != a0):
                for b in (x for x in factors[fb] if x != b0):
                    out.append(
                        (
                            f"{fa} x {fb}: ({a} vs {a0}) at {b} minus at {b0}",
                            {
                                "kind": "interaction",
                                "factor": f"{fa} x {fb}",
                                "level": f"{a}, {b}",
                                "baseline": f"{a0}, {b0}",
                            },
                            [
                                (1.0, {fa: a, fb: b}),
                                (-1.0, {fa: a0, fb: b}),
                                (-1.0, {fa: a, fb: b0}),
                                (1.0, {fa: a0, fb: b0}),
                            ],
                        )
                    )
    return out


def design_matrix(spec: Any, frame: pd.DataFrame) -> np.ndarray:
    """The fitted model's design matrix for new rows (statsmodels' formula machinery)."""
    from statsmodels.formula._manager import FormulaManager

    return np.asarray(FormulaManager().get_matrices(spec, frame, pandas=False), dtype=float)


def fit_model(
    df: pd.DataFrame,
    metric: str,
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    interactions: bool = True,
    all_pairs: bool = True,
) -> Fit | None:
    """OLS of metric on the factors (and their two-way interactions) with the seed as a block; all_pairs:
    a 3+ level factor's effects include the pairs of non-baseline levels (False: each level vs baseline).
    Falls back to main effects when the two-way model leaves no residual df; None when nothing fits."""
    from statsmodels.formula.api import ols

    d, alias = _frame(df.dropna(subset=[metric]), metric, factors)
    if len(d) < 3:
        return None
    seeds = sorted(d["seed"].unique())
    block = len(seeds) > 1
    tries = [(True, "main effects and two-way interactions"), (False, "main effects only (too few trials)")]
    for inter, what in tries if interactions else tries[1:]:
        terms = _terms(alias, factors, inter, block)
        if not terms:
            return None
        formula = "y ~ " + " + ".join(terms)
        fit = ols(formula, data=d).fit()
        if fit.df_resid < 1:
            continue
        names, L, meta, grid, X = _contrasts(
            fit.model.data.model_spec, factors, alias, baseline, seeds, inter, all_pairs
        )
        why = "seed as a block" if block else "one seed, so the residual is the higher-order interactions"
        note = f"{metric} ~ {what}; {why}; residual df {fit.df_resid:.0f}"
        return Fit(fit, formula, float(fit.df_resid), float(np.sqrt(fit.scale)), names, L, meta, note, alias, grid, X)
    return None


def estimable(fit: Any, L: np.ndarray) -> np.ndarray:
    """Rows of L that the data identify (in the row space of the design; missing cells can break that)."""
    X = np.asarray(fit.model.exog)
    proj = L @ np.linalg.pinv(X) @ X
    return np.all(np.isclose(proj, L, atol=1e-8), axis=1)


def contrast(m: Fit, row: np.ndarray, good: bool | None = None) -> dict[str, float]:
    """One contrast of the fit: estimate, se, 95% CI, df, p (t-test with the residual df); NaN when the
    trials do not identify it (good: estimable, if already known)."""
    L = row[None, :]
    if not (estimable(m.fit, L).all() if good is None else good):
        return {"estimate": math.nan, "se": math.nan, "lo": math.nan, "hi": math.nan, "df": m.df_resid, "p": math.nan}
    tt = m.fit.t_test(L)
    lo, hi = (float(v) for v in np.squeeze(tt.conf_int(alpha=ALPHA)))
    return {
        "estimate": float(np.squeeze(tt.effect)),
        "se": float(np.squeeze(tt.sd)),
        "lo": lo,
        "hi": hi,
        "df": m.df_resid,
        "p": float(np.squeeze(tt.pvalue)),
    }


def effects_table(m: Fit, metric: str, min_effect: float) -> pd.DataFrame:
    """One row per effect: estimate, se, lo, hi, df, p, p_tost (then Holm and verdicts)."""
    rows = []
    ok = estimable(m.fit, m.L)
    for name, row, info, good in zip(m.names, m.L, m.meta, ok, strict=True):
        rows.append({**info, "term": name, "metric": metric, **contrast(m, row, good)})
    tab = pd.DataFrame(rows)
    tab["p_tost"] = tost_p(tab["estimate"].to_numpy(), tab["se"].to_numpy(), m.df_resid, min_effect)
    return tab


def holm_verdicts(tabs: list[pd.DataFrame], min_effect: float) -> None:
    """Holm over one family (every effect's test of 0 and its TOST, across the tables), then verdicts;
    in place: columns p_holm, p_tost_holm, m_tests, verdict."""
    p = np.concatenate([np.r_[t["p"].to_numpy(float), t["p_tost"].to_numpy(float)] for t in tabs if len(t)] or [[]])
    adj = holm_adjust(p)
    i = 0
    for t in tabs:
        if not len(t):
            continue
        n = len(t)
        t["p_holm"], t["p_tost_holm"] = adj[i : i + n], adj[i + n : i + 2 * n]
        i += 2 * n
        t["m_tests"] = int(np.isfinite(p).sum())
        t["verdict"] = verdicts(
            t["lo"].to_numpy(float),
            t["hi"].to_numpy(float),
            t["p_holm"].to_numpy(float),
            t["p_tost_holm"].to_numpy(float),
            min_effect,
        )


def verdicts(lo: np.ndarray, hi: np.ndarray, p_holm: np.ndarray, p_tost_holm: np.ndarray, x: float) -> list[str]:
    out = []
    for a, b, p, q in zip(lo, hi, p_holm, p_tost_holm, strict=True):
        if not np.isfinite(p):
            out.append("untested (not estimable from these trials)")
        elif p < ALPHA:
            out.append(VERDICTS[1] if (-x < a and b < x) else VERDICTS[0])
        elif np.isfinite(q) and q < ALPHA:
            out.append(VERDICTS[2])
        else:
            out.append(VERDICTS[3])
    return out
