"""The ANOVA of a study's fitted model: type-2 sums of squares by their definition, each term's share of
the variance. Pure functions over the fit (fmlab.analysis.stats), the same fit the effects are contrasts of."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fmlab.analysis.stats import Fit, fit_model


def anova(df: pd.DataFrame, metric: str, factors: list[str], m: Fit | None = None) -> tuple[pd.DataFrame | None, str]:
    """Type-2 ANOVA of the study's fitted model (the same fit the effects are contrasts of); fits it
    when not given. Returns (None, why) when nothing fits."""
    if m is None:
        levels = {
            f: [str(v) for v in (df[f].cat.categories if hasattr(df[f], "cat") else sorted(df[f].unique()))]
            for f in factors
        }
        levels = {f: v for f, v in levels.items() if df[f].nunique() > 1}
        m = fit_model(df, metric, levels, {}) if len(df) and levels else None
    if m is None:
        return None, "not enough complete trials or varying factors for an ANOVA"
    try:
        tab = type2_anova(m.fit)
    except (ValueError, np.linalg.LinAlgError) as e:
        return None, f"ANOVA not possible: {e}"
    tab = tab[tab["df"] > 0]  # a term no trial identifies yet has no test
    back = {v: k for k, v in m.alias.items()}
    tab.index = [_unalias(str(i), back) for i in tab.index]
    tab["share_ss"] = tab["sum_sq"] / tab["sum_sq"].sum()
    return tab, f"{m.note}; type-2 sums of squares"


def type2_anova(fit: Any) -> pd.DataFrame:
    """Type-2 ANOVA of an OLS fit by its definition: a term's sum of squares is the rise in residual SS when
    it is dropped from the model less the terms that contain it, its df the rank it adds. statsmodels'
    anova_lm counts a term's columns instead: while a level or a pair of levels has no trial (an arm not yet
    run), it gives that term too many df and sum of squares, or a NaN F."""
    from statsmodels.formula._manager import FormulaManager

    X, y = np.asarray(fit.model.exog), np.asarray(fit.model.endog)
    cols = {
        n: set(range(s.start, s.stop))
        for n, s in FormulaManager().get_term_name_slices(fit.model.data.model_spec).items()
        if n != "Intercept"
    }

    def rss(c: set[int]) -> tuple[float, int]:
        Xc = X[:, sorted(c)]
        r = y - Xc @ np.linalg.lstsq(Xc, y, rcond=None)[0]
        return float(r @ r), int(np.linalg.matrix_rank(Xc))

    rows = {}
    for term, own in cols.items():
        parts = set(term.split(":"))
        keep = set(range(X.shape[1])).difference(*(c for t, c in cols.items() if parts <= set(t.split(":"))))
        (ss0, r0), (ss1, r1) = rss(keep), rss(keep | own)
        rows[term] = (ss0 - ss1, r1 - r0)
    tab = pd.DataFrame([(ss, df) for ss, df in rows.values()], index=list(rows), columns=["sum_sq", "df"])
    tab["F"] = tab["sum_sq"] / tab["df"] / fit.scale
    tab["PR(>F)"] = stats.f.sf(tab["F"], tab["df"], fit.df_resid)
    tab.loc["Residual"] = [fit.ssr, fit.df_resid, math.nan, math.nan]
    return tab


def _unalias(term: str, back: dict[str, str]) -> str:
    for a, f in sorted(back.items(), key=lambda kv: -len(kv[0])):
        term = term.replace(f"C({a}, Treatment(0))", f).replace(f"C({a})", f)
    return term.replace("C(seed)", "seed").replace(":", " x ")
