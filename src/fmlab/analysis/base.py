"""What the grid analysis (analysis.py) and the arms analysis (arms.py) share: the Analysis record, the
per-cell table with t CIs, the ANOVA of the study's fit, counts and warnings, the seed plan, the best
trial, and how effects and p-values are written.

Below both, so that analysis.analyse can hand an arms study to arms.analyse_arms without an import cycle;
analysis.py re-exports these names (``fmlab.analysis.grid.level_label`` etc.) for its callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fmlab.analysis.diagnostics import Diagnostics
from fmlab.analysis.stats import ALPHA, MIN_EFFECT, Fit, fit_model, higher_is_better
from fmlab.config.states import State


def unit(metric: str, level: bool = False) -> tuple[float, str]:
    """Display scale: accuracies (fractions) in % (a level) or percentage points (a difference)."""
    if metric.endswith("acc"):
        return 100.0, " %" if level else " pts"
    return 1.0, ""


def level_label(v: Any, boolean: bool = False) -> str:
    """One canonical label per level, so CSV/JSON/SQLite round trips (1 vs 1.0 vs "1e0", True vs "true",
    and with boolean=True also 1/0 as SQLite stores booleans) all give the same label."""
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("true", "false"):
            return low
        try:
            v = float(low)
        except ValueError:
            return v
    if boolean and isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1):
        v = bool(v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)


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


def short_names(factors: list[str]) -> dict[str, str]:
    """'model.batch_norm' -> 'batch_norm' where that stays unique."""
    short = {f: f.rsplit(".", 1)[-1] for f in factors}
    return short if len(set(short.values())) == len(short) else {f: f for f in factors}


@dataclass
class Analysis:
    """Everything the report shows; DataFrames plus plain lists of strings."""

    label: str  # "seed study (quick: indicative only)"
    study: str
    budget: str
    select: str  # the selection metric, e.g. val_acc
    factors: dict[str, list[str]]  # factor -> level labels, file order
    baseline: dict[str, str]
    counts: dict[str, int]  # rows, complete, failed, waiting, running, planned, missing, seeds
    cells: pd.DataFrame  # one row per cell, ranked by the selection metric
    effects: pd.DataFrame  # main effects: level vs baseline, contrasts of the fit, Holm-adjusted
    interactions: pd.DataFrame  # two-way contrasts of the fit, Holm-adjusted
    anova: pd.DataFrame | None  # type-2 ANOVA of the fit (type2_anova), or None with anova_note saying why
    anova_note: str
    curves: pd.DataFrame  # per cell and epoch: mean/std/n of train_loss, val_loss, val_acc
    complete: pd.DataFrame  # COMPLETE trials, factor columns as level labels, a 'cell' column
    findings: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # id, state, cell of each non-COMPLETE row
    missing_cells: list[str] = field(default_factory=list)
    design: str = "grid"  # or "arms" (fmlab.analysis.arms): factors = {"arm": [baseline, *arms]}, cell = arm name
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> config keys it changes
    test_effects: pd.DataFrame = field(default_factory=pd.DataFrame)  # each effect on test_acc (own Holm family)
    min_effect: dict[str, float] = field(default_factory=lambda: dict(MIN_EFFECT))
    best: dict[str, Any] | None = None  # fmlab.analysis.bestset.best_set: best, set, method, note, cells
    model_note: str = ""  # the fitted model, its residual df
    # fmlab.analysis.claims.check_claims: each with its verdict
    claims: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: Diagnostics | None = None  # residual checks, outliers, seed-level check (fmlab.analysis.diagnostics)
    plan: dict[str, Any] | None = None  # fmlab.analysis.power.plan_seeds: detectable effects, seeds to resolve


def study_budget_label(meta: dict[str, Any]) -> str:
    """'full', 'cpu: full data, bf16 on CPU' (a budget with finding = true, by its label) or
    'quick: indicative only'."""
    budget = meta.get("budget") or "full"
    if budget == "full":
        return "full"
    if meta.get("finding"):
        return f"{budget}: {meta.get('budget_note') or 'a finding'}"
    return f"{budget}: indicative only"


def min_effects(meta: dict[str, Any]) -> dict[str, float]:
    """The smallest effect that matters per metric ([analysis] min_effect over the defaults)."""
    return {**MIN_EFFECT, **{str(k): float(v) for k, v in (meta.get("min_effect") or {}).items()}}


def anova(df: pd.DataFrame, metric: str, factors: list[str], m: Fit | None = None) -> tuple[pd.DataFrame | None, str]:
    """Type-2 ANOVA of the study's fitted model (the same fit the effects are contrasts of); fits it
    when not given. Returns (None, why) when nothing fits."""
    if m is None:
        levels = {f: [str(v) for v in (df[f].cat.categories if hasattr(df[f], "cat") else sorted(df[f].unique()))]
                  for f in factors}  # fmt: skip
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
    cols = {n: set(range(s.start, s.stop)) for n, s in
            FormulaManager().get_term_name_slices(fit.model.data.model_spec).items() if n != "Intercept"}  # fmt: skip

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


def fmt_effect(v: float, metric: str, signed: bool = True) -> str:
    k, u = unit(metric)
    if not np.isfinite(v):
        return "n/a"
    digits = 2 if k == 100 else 4
    return f"{k * v:{'+' if signed else ''}.{digits}f}"


def effect_text(x: float, metric: str) -> str:
    """A size in the metric's display units, unsigned: 0.005 in val_acc -> '0.50 pts', 0.01 in val_loss -> '0.0100'."""
    return fmt_effect(x, metric, False) + unit(metric)[1]


def fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"= {p:.3f}")


def complete_and_counts(t: pd.DataFrame, select: str, meta: dict) -> tuple[pd.DataFrame, dict[str, int]]:
    """The COMPLETE trials with a selection metric, and how many trials are in each state (t's state
    column is upper-cased in place)."""
    t["state"] = t["state"].astype(str).str.upper()
    done = t[t["state"] == State.COMPLETE].dropna(subset=[select]).copy()
    counts = {"rows": len(t), "complete": len(done), **{s.lower(): int((t["state"] == s).sum())
              for s in (State.FAILED, State.WAITING, State.RUNNING)}}  # fmt: skip
    counts["planned"] = int(meta.get("planned") or len(t))
    counts["missing"] = max(0, counts["planned"] - len(t))
    counts["seeds"] = int(done["seed"].nunique())
    return done, counts


def seed_plan(fit: Fit | None, tabs: list[pd.DataFrame], factors: dict[str, list[str]], baseline: dict[str, str],
              n_seeds: int, x: float, best: dict[str, Any] | None, select: str) -> dict[str, Any] | None:  # fmt: skip
    """fmlab.analysis.power's seed plan for the selection metric's family of effects; None when nothing fits."""
    from fmlab.analysis.power import plan_seeds

    rows = [t for t in tabs if len(t)]
    if fit is None or not rows:
        return None
    try:
        return plan_seeds(fit, pd.concat(rows, ignore_index=True), factors, baseline, n_seeds, x, best,
                          higher_is_better(select))  # fmt: skip
    except (ValueError, np.linalg.LinAlgError):  # a grid the planner cannot fit: the report just omits the plan
        return None


def best_line(best: dict[str, Any]) -> str:
    others = [c for c in best["set"] if c != best["best"]]
    return f"best: {best['best']}; not distinguishable from it: {'; '.join(others) if others else 'none'}"


def best_trial(trials: pd.DataFrame, select: str = "val_acc") -> str | None:
    """Id of the COMPLETE trial that is best on the validation selection metric (never a test metric)."""
    if not select.startswith("val_"):
        raise ValueError(f"select metric {select!r}: models are chosen on validation, never on test")
    done = trials[(trials["state"].astype(str).str.upper() == State.COMPLETE) & trials[select].notna()]
    if not len(done):
        return None
    # ties go to the smaller id, as in Store.best (STUDY:best), so both name the same trial
    ranked = done.sort_values([select, "id"], ascending=[not higher_is_better(select), True], kind="stable")
    return str(ranked["id"].iloc[0])


def cell_table(done: pd.DataFrame, factors: list[str], select: str) -> pd.DataFrame:
    """Per cell: mean, std, 95% CI and n of the selection metric and of test accuracy; ranked."""
    rows = []
    for cell, g in done.groupby("cell", sort=False):
        r: dict[str, Any] = {"cell": cell, **{f: g[f].iloc[0] for f in factors}, "n": len(g),
                             "seeds": ",".join(str(s) for s in sorted(g["seed"].unique()))}  # fmt: skip
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
    out = pd.DataFrame(rows).sort_values(f"{select}_mean", ascending=not higher_is_better(select))
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
    out = cells.assign(**{f"{select}_raw_mean": cells[f"{select}_mean"],
                          f"{select}_mean": cells["cell"].map(bc["mean"]).astype(float),
                          f"{select}_lo": cells["cell"].map(bc["lo"]), f"{select}_hi": cells["cell"].map(bc["hi"]),
                          "in_best_set": cells["cell"].map(bc["in_best"]).fillna(False).astype(bool)})  # fmt: skip
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


def warnings_for(a: Analysis, budget: str) -> list[str]:
    """What a reader must know before the numbers: budget, missing or failed trials, one seed, unequal n."""
    c, w = a.counts, []
    if budget == "quick":
        w.append("Quick budget (subset of the data, few epochs): indicative only; rerun with --budget full "
                 "before drawing conclusions.")  # fmt: skip
    if c["complete"] == 0:
        w.append("No complete trials: nothing to analyse.")
    elif c["seeds"] < 2 and a.design == "arms":  # arm + seed block on one seed: as many terms as trials
        w.append("Only one seed per arm: the model arm + seed block has no residual (df 0), so no arm can be "
                 "compared with the baseline yet; run at least 2 seeds.")  # fmt: skip
    elif c["seeds"] < 2:
        w.append("Only one seed per cell: the model's residual is the higher-order interactions (no seed "
                 "replication); run at least 2 seeds to measure noise directly.")  # fmt: skip
    if c["failed"]:
        ids = ", ".join(f"{f['id']} ({f['cell']}, seed {f['seed']})" for f in a.failed if f["state"] == State.FAILED)
        w.append(f"{c['failed']} trial(s) FAILED and are left out: {ids}.")
    if c["waiting"] or c["running"]:
        w.append(f"{c['waiting']} trial(s) WAITING and {c['running']} RUNNING: the study is not finished.")
    if c["missing"]:
        w.append(f"{c['missing']} of {c['planned']} planned trial(s) have no row at all.")
    if a.missing_cells and c["complete"]:
        names = "; ".join(a.missing_cells[:8]) + (" ..." if len(a.missing_cells) > 8 else "")
        w.append(f"{len(a.missing_cells)} of {c['cells_planned']} cells have no complete trial: {names}.")
    if len(a.cells) and a.cells["n"].nunique() > 1:
        w.append(f"Unequal seeds per cell (n from {a.cells['n'].min()} to {a.cells['n'].max()}); the model "
                 "fits the unbalanced data (marginal means weight every cell equally).")  # fmt: skip
    return w
