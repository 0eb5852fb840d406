"""Grid studies: every combination of the factors' levels, each cell run at every seed.

What a grid supplies to the analysis driver (fmlab.analysis.driver runs the pipeline; this module calls no
step of it): the cells named by their factor levels, the model's effects and the findings grouped by verdict.

How effects are estimated: one OLS fit per study and metric over every COMPLETE trial (all main
effects, all two-way interactions, the seed as a block; fmlab.analysis.stats). A main effect is the difference
of estimated marginal means (level vs baseline), an interaction the difference of differences, each
with a 95% CI from the model's residual and df. Holm over one family (tests of 0 and TOST equivalence
tests against [analysis] min_effect) gives four verdicts (fmlab.analysis.stats.VERDICTS).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.design import Contrasts, Design
from fmlab.analysis.formatting import effect_text, fmt_effect, fmt_p, level_label, short_names, unit
from fmlab.analysis.stats import VERDICTS, Fit, effects_table, fit_model, holm_verdicts


def _cell_name(row: Any, factors: list[str], short: dict[str, str]) -> str:
    return ", ".join(f"{short[f]}={row[f]}" for f in factors)


def model_effects(
    done: pd.DataFrame,
    metric: str,
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    x: float,
    interactions: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, Fit | None]:
    """Main effects and two-way interactions as contrasts of one OLS fit (fmlab.analysis.stats), Holm and
    verdicts over their family; empty tables when nothing fits."""
    # a factor the COMPLETE trials hold at one level (a study in progress) is left out of the fit: its
    # all-zero columns would make the design rank-deficient and its ANOVA row noise; its effects are untested
    varies = {f: len(v) > 1 and len(done) and done[f].astype(str).nunique() > 1 for f, v in factors.items()}
    used = {f: v for f, v in factors.items() if varies[f]}
    m = fit_model(done, metric, used, baseline, interactions) if len(done) and used else None
    if m is None:
        return pd.DataFrame(), pd.DataFrame(), None
    tab = effects_table(m, metric, x)
    held = [
        {
            "kind": "main",
            "factor": f,
            "level": lv,
            "baseline": baseline[f],
            "metric": metric,
            "term": f"{f}: {lv} vs {baseline[f]}",
            "estimate": math.nan,
            "se": math.nan,
            "lo": math.nan,
            "hi": math.nan,
            "df": m.df_resid,
            "p": math.nan,
            "p_tost": math.nan,
        }
        for f, v in factors.items()
        if len(v) > 1 and not varies[f]
        for lv in v
        if lv != baseline[f]
    ]
    if held:
        tab = pd.concat([tab, pd.DataFrame(held)], ignore_index=True)
    n_seeds = int(done["seed"].nunique())
    tab["n_seeds"] = n_seeds
    for i, r in tab.iterrows():
        if r["kind"] == "main":
            tab.loc[i, "n_level"] = int((done[r["factor"]].astype(str) == r["level"]).sum())
            tab.loc[i, "n_baseline"] = int((done[r["factor"]].astype(str) == r["baseline"]).sum())
    order = {f: i for i, f in enumerate(factors)}
    eff = tab[tab["kind"] == "main"].sort_values("factor", key=lambda c: c.map(order), kind="stable")
    eff = eff.reset_index(drop=True)
    inter = tab[tab["kind"] == "interaction"].reset_index(drop=True)
    holm_verdicts([eff, inter], x)
    return eff, inter, m


def finding_text(r: pd.Series, metric: str) -> str:
    """'model.pool: max vs avg: +0.42 pts [0.21, 0.63] in val_acc, Holm p = 0.001 (df 32): matters'."""
    _, u = unit(metric)
    ci = f"[{fmt_effect(r['lo'], metric, False)}, {fmt_effect(r['hi'], metric, False)}]"
    return (
        f"{r['term']}: {fmt_effect(r['estimate'], metric)}{u} {ci} in {metric}, "
        f"Holm p {fmt_p(r['p_holm'])} (df {r['df']:.0f}): {r['verdict']}"
    )


def grouped_findings(tabs: list[pd.DataFrame], metric: str, x: float, anova_tab: pd.DataFrame | None) -> list[str]:
    """'matters' one line each (largest first, with the term's share of the ANOVA sum of squares), then
    one line per other verdict listing its terms."""
    rows = pd.concat([t for t in tabs if len(t)], ignore_index=True) if any(len(t) for t in tabs) else None
    if rows is None:
        return []
    share = anova_tab["share_ss"].to_dict() if anova_tab is not None else {}
    out = []
    m = rows[rows["verdict"] == VERDICTS[0]]
    for _, r in m.reindex(m["estimate"].abs().sort_values(ascending=False).index).iterrows():
        sh = share.get(r["factor"])
        out.append(
            f"matters: {finding_text(r, metric).rsplit(': ', 1)[0]}"
            + (f"; {100 * sh:.0f}% of the variance" if sh is not None and np.isfinite(sh) else "")
        )
    xs = effect_text(x, metric)
    for v in [*VERDICTS[1:], *sorted(set(rows["verdict"]) - set(VERDICTS))]:
        terms = rows.loc[rows["verdict"] == v, "term"].tolist()
        if terms:
            out.append(f"{v.replace('X', xs)} ({len(terms)}): " + "; ".join(terms))
    n = int(rows["m_tests"].iloc[0])
    out.append(
        f"Holm over {n} tests (each effect's test of 0 and its TOST against +-{xs}); 95% CIs per effect "
        f"from the fitted model's residual (df {rows['df'].iloc[0]:.0f})."
    )
    return out


class GridDesign(Design):
    """A grid study: meta factors {key: [levels in file order]}, baseline {key: level}; a cell is one
    combination of levels, named 'batch_norm=true, dropout=0.3, ...'."""

    name = "grid"

    def __init__(self, meta: dict[str, Any]):
        given = meta["factors"]
        self.factors = {f: [level_label(v) for v in lv] for f, lv in given.items()}
        self.baseline = {f: level_label(meta.get("baseline", {}).get(f, lv[0])) for f, lv in given.items()}
        self.booleans = {f: all(isinstance(v, (bool, np.bool_)) for v in lv) for f, lv in given.items()}
        self.short = short_names(list(self.factors))
        self.cells_planned = math.prod(len(v) for v in self.factors.values())
        self.arms = {}

    def check_columns(self, t: pd.DataFrame, select: str) -> None:
        missing_cols = [c for c in ["id", "state", "seed", *self.factors] if c not in t.columns]
        if missing_cols:
            raise ValueError(
                f"trials table lacks columns {missing_cols}; see fmlab.analysis.driver.analyse for the contract"
            )
        if select not in t.columns:
            raise ValueError(f"trials table has no {select!r} column (the selection metric)")

    def label(self, t: pd.DataFrame) -> pd.DataFrame:
        for f, levels in self.factors.items():
            labels = t[f].map(lambda v, b=self.booleans[f]: level_label(v, b))
            stray = sorted(set(labels[t[f].notna()]) - set(levels))
            if stray:
                raise ValueError(f"{f}: trial values {stray} are not among the study's levels {levels}")
            t[f] = pd.Categorical(labels, categories=levels, ordered=True)
        t["cell"] = [_cell_name(r, list(self.factors), self.short) for _, r in t.iterrows()]
        return t

    def missing_cells(self, observed: set[str]) -> list[str]:
        names = list(self.factors)
        grid = [dict(zip(names, c, strict=True)) for c in itertools.product(*self.factors.values())]
        return [n for n in (_cell_name(g, names, self.short) for g in grid) if n not in observed]

    def contrasts(self, done: pd.DataFrame, select: str, min_effect: dict[str, float], x: float) -> Contrasts:
        eff, inter, fit = model_effects(done, select, self.factors, self.baseline, x)
        test = pd.DataFrame()
        if "test_acc" in done and done["test_acc"].notna().sum() > 2:
            te, ti, _ = model_effects(
                done.dropna(subset=["test_acc"]), "test_acc", self.factors, self.baseline, min_effect["test_acc"]
            )
            test = pd.concat([te, ti], ignore_index=True) if len(te) else pd.DataFrame()
        return Contrasts(eff, inter, test, fit)

    def findings(
        self, c: Contrasts, done: pd.DataFrame, select: str, x: float, anova_tab: pd.DataFrame | None
    ) -> list[str]:
        return grouped_findings([c.effects, c.interactions], select, x, anova_tab)
