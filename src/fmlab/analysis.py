"""Statistics over one study's trials: per-cell summaries, effects paired by seed, interactions, ANOVA.

Pure functions over DataFrames; nothing here prints or writes. The input contract (what the store
hands over, one row per trial) is documented on :func:`analyse`.

How a factor's effect is estimated: within each seed, the selection metric is averaged over the other
factors' combinations that exist at both levels, giving one paired difference per seed; the mean of
those differences gets a t-based 95% CI and a one-sample t-test. A factor with more than two levels
compares each level with the baseline level this way. Two-way interactions are the paired
difference-of-differences contrast. All p-values are Holm-adjusted together.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

METRICS = ("val_loss", "val_acc", "test_loss", "test_acc")
ALPHA = 0.05


def higher_is_better(metric: str) -> bool:
    return not metric.endswith("loss")


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
    effects: pd.DataFrame  # main effects: level vs baseline, paired by seed, Holm-adjusted
    interactions: pd.DataFrame  # two-way contrasts, paired by seed, Holm-adjusted
    anova: pd.DataFrame | None  # statsmodels anova_lm typ 2, or None with anova_note saying why
    anova_note: str
    curves: pd.DataFrame  # per cell and epoch: mean/std/n of train_loss, val_loss, val_acc
    complete: pd.DataFrame  # COMPLETE trials, factor columns as level labels, a 'cell' column
    findings: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # id, state, cell of each non-COMPLETE row
    missing_cells: list[str] = field(default_factory=list)
    design: str = "grid"  # or "arms" (fmlab.arms): factors = {"arm": [baseline, *arms]}, cell = arm name
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> config keys it changes
    test_effects: pd.DataFrame = field(default_factory=pd.DataFrame)  # arms: each arm vs baseline on test_acc


def _cell_name(row: Any, factors: list[str], short: dict[str, str]) -> str:
    return ", ".join(f"{short[f]}={row[f]}" for f in factors)


def _contrast(df: pd.DataFrame, metric: str, cols: list[str], weights: dict[tuple, float],
              others: list[str]) -> list[float]:  # fmt: skip
    """One value per seed: sum of weight x mean(metric) over the keyed levels of cols, taken only
    over the other factors' combinations where every keyed level exists (so pairs stay balanced)."""
    out = []
    for _, g in df.groupby("seed", sort=True):
        idx = others or ["_all"]
        g = g.assign(_all=0) if not others else g
        p = g.pivot_table(index=idx, columns=cols, values=metric, aggfunc="mean", observed=True)
        if p.empty:
            continue
        keys = [k if len(cols) > 1 else k[0] for k in weights]
        if any(k not in p.columns for k in keys):
            continue
        sub = p[keys].dropna()
        if len(sub):
            out.append(float(sum(w * sub[k] for k, w in zip(keys, weights.values(), strict=True)).mean()))
    return out


def _row(kind: str, name: str, per_seed: list[float], extra: dict[str, Any]) -> dict[str, Any]:
    ci = t_ci(per_seed)
    return {"kind": kind, "term": name, **extra, "estimate": ci["mean"], "lo": ci["lo"], "hi": ci["hi"],
            "n_seeds": ci["n"], "p": t_test(per_seed)}  # fmt: skip


def main_effects(df: pd.DataFrame, metric: str, factors: dict[str, list[str]],
                 baseline: dict[str, str]) -> pd.DataFrame:  # fmt: skip
    rows = []
    for f, levels in factors.items():
        base = baseline.get(f, levels[0])
        others = [o for o in factors if o != f]
        for lv in levels:
            if lv == base:
                continue
            per_seed = _contrast(df, metric, [f], {(lv,): 1.0, (base,): -1.0}, others)
            rows.append(_row("main", f"{f}: {lv} vs {base}", per_seed, {
                "factor": f, "level": lv, "baseline": base,
                "n_level": int((df[f] == lv).sum()), "n_baseline": int((df[f] == base).sum())}))  # fmt: skip
    return pd.DataFrame(rows)


def interaction_effects(df: pd.DataFrame, metric: str, factors: dict[str, list[str]],
                        baseline: dict[str, str]) -> pd.DataFrame:  # fmt: skip
    """(a - a0) at b  minus  (a - a0) at b0, for each non-baseline a, b: paired by seed."""
    rows = []
    for fa, fb in itertools.combinations(factors, 2):
        a0, b0 = baseline.get(fa, factors[fa][0]), baseline.get(fb, factors[fb][0])
        others = [o for o in factors if o not in (fa, fb)]
        for a in (x for x in factors[fa] if x != a0):
            for b in (x for x in factors[fb] if x != b0):
                w = {(a, b): 1.0, (a0, b): -1.0, (a, b0): -1.0, (a0, b0): 1.0}
                per_seed = _contrast(df, metric, [fa, fb], w, others)
                rows.append(_row("interaction", f"{fa} x {fb}: ({a} vs {a0}) at {b} minus at {b0}", per_seed,
                                 {"factor": f"{fa} x {fb}", "level": f"{a}, {b}", "baseline": f"{a0}, {b0}"}))
    return pd.DataFrame(rows)


def holm(*tables: pd.DataFrame) -> None:
    """Holm-adjust the p-values of all rows of all tables together (in place: column p_holm)."""
    from statsmodels.stats.multitest import multipletests

    ps = [(t, i, p) for t in tables if len(t) for i, p in t["p"].items() if np.isfinite(p)]
    adj = multipletests([p for _, _, p in ps], method="holm")[1] if ps else []
    for t in tables:
        if len(t):
            t["p_holm"] = math.nan
    for (t, i, _), a in zip(ps, adj, strict=True):
        t.loc[i, "p_holm"] = float(a)
    for t in tables:
        if len(t):
            t["m_tests"] = len(ps)
            t["verdict"] = [_verdict(r) for _, r in t.iterrows()]


def _verdict(r: pd.Series) -> str:
    if r["n_seeds"] < 2 or not np.isfinite(r["p_holm"]):
        return "untested (fewer than 2 seeds paired)" if r["n_seeds"] < 2 else "untested (no spread)"
    if r["lo"] <= 0 <= r["hi"] or r["p_holm"] >= ALPHA:
        return "not distinguishable from noise"
    return "distinguishable"


def anova(df: pd.DataFrame, metric: str, factors: list[str]) -> tuple[pd.DataFrame | None, str]:
    """Type-2 ANOVA of per-trial results: factors categorical, all two-way interactions, seed as a
    block when there are several. Falls back to main effects when the residual has no degrees of
    freedom left; returns (None, why) when even that is impossible."""
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    usable = [f for f in factors if df[f].nunique() > 1]
    if len(df) < 3 or not usable:
        return None, "not enough complete trials or varying factors for an ANOVA"
    alias = {f: f"f{i}" for i, f in enumerate(usable)}
    d = df.rename(columns=alias)[[*alias.values(), "seed", metric]].rename(columns={metric: "y"})
    mains = [f"C({a})" for a in alias.values()]
    pairs = [f"C({a}):C({b})" for a, b in itertools.combinations(alias.values(), 2)]
    block = ["C(seed)"] if d["seed"].nunique() > 1 else []
    back = {v: k for k, v in alias.items()}
    why = "no residual degrees of freedom"
    for terms, note in ((mains + pairs + block, "main effects and two-way interactions"),
                        (mains + block, "main effects only (too few trials for interactions)")):  # fmt: skip
        try:
            fit = ols("y ~ " + " + ".join(terms), data=d).fit()
            if fit.df_resid < 1:
                continue
            tab = anova_lm(fit, typ=2)
        except (ValueError, np.linalg.LinAlgError) as e:
            why = str(e)
            continue
        tab.index = [_unalias(str(i), back) for i in tab.index]
        tab["share_ss"] = tab["sum_sq"] / tab["sum_sq"].sum()
        seeds = "; seed as a block" if block else "; one seed, so the residual is the higher-order interactions"
        return tab, f"{metric} ~ {note}{seeds}; type-2 sums of squares, residual df {fit.df_resid:.0f}"
    return None, f"ANOVA not possible: {why}"


def _unalias(term: str, back: dict[str, str]) -> str:
    for a, f in sorted(back.items(), key=lambda kv: -len(kv[0])):
        term = term.replace(f"C({a})", f)
    return term.replace("C(seed)", "seed").replace(":", " x ")


def fmt_effect(v: float, metric: str, signed: bool = True) -> str:
    k, u = unit(metric)
    if not np.isfinite(v):
        return "n/a"
    digits = 2 if k == 100 else 4
    return f"{k * v:{'+' if signed else ''}.{digits}f}"


def fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"= {p:.3f}")


def finding_text(r: pd.Series, metric: str) -> str:
    """'model.pool: max vs avg: +0.42 pts [0.21, 0.63] in val_acc, Holm p = 0.001 (...) : verdict'."""
    _, u = unit(metric)
    ci = f"[{fmt_effect(r['lo'], metric, False)}, {fmt_effect(r['hi'], metric, False)}]"
    n = f"n = {r['n_seeds']} seeds paired"
    if "n_level" in r and np.isfinite(r.get("n_level", math.nan)):
        n += f"; {int(r['n_level'])} vs {int(r['n_baseline'])} trials"
    verdict = r["verdict"]
    if verdict == "distinguishable":
        good = (r["estimate"] > 0) == higher_is_better(metric)
        verdict = f"{'better' if good else 'worse'} {metric}"
    return (f"{r['term']}: {fmt_effect(r['estimate'], metric)}{u} {ci} in {metric}, "
            f"Holm p {fmt_p(r['p_holm'])} ({n}): {verdict}")  # fmt: skip


def complete_and_counts(t: pd.DataFrame, select: str, meta: dict) -> tuple[pd.DataFrame, dict[str, int]]:
    """The COMPLETE trials with a selection metric, and how many trials are in each state (t's state
    column is upper-cased in place)."""
    t["state"] = t["state"].astype(str).str.upper()
    done = t[t["state"] == "COMPLETE"].dropna(subset=[select]).copy()
    counts = {"rows": len(t), "complete": len(done), **{s.lower(): int((t["state"] == s).sum())
              for s in ("FAILED", "WAITING", "RUNNING")}}  # fmt: skip
    counts["planned"] = int(meta.get("planned") or len(t))
    counts["missing"] = max(0, counts["planned"] - len(t))
    counts["seeds"] = int(done["seed"].nunique())
    return done, counts


def analyse(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict[str, Any]) -> Analysis:
    """The whole analysis of one study.

    trials: one row per trial: id, state (COMPLETE/FAILED/WAITING/RUNNING), seed, one column per
        factor named by its config key (values bool/str/int/float), val_loss, val_acc, test_loss,
        test_acc (accuracies as fractions), epochs, best_epoch, train_s, total_s, n_params.
    epochs: trial_id, epoch, train_loss, train_acc, val_loss, val_acc, epoch_s, lr.
    meta: study (name), budget ("quick" labels everything "indicative only"), factors {key: [levels
        in file order]}, baseline {key: level}, select (val_acc or val_loss), planned (trial count).
    Only COMPLETE trials enter the statistics; the others are counted and named.
    An arms study (meta design "arms") is analysed by fmlab.arms.analyse_arms.
    """
    if meta.get("design") == "arms":
        from .arms import analyse_arms

        return analyse_arms(trials, epochs, meta)
    select = meta.get("select", "val_acc")
    if select not in ("val_acc", "val_loss"):
        raise ValueError(f"select metric {select!r}: use a validation metric (val_acc or val_loss), never test")
    fac_levels = {f: [level_label(v) for v in lv] for f, lv in meta["factors"].items()}
    factors = list(fac_levels)
    baseline = {f: level_label(meta.get("baseline", {}).get(f, lv[0])) for f, lv in meta["factors"].items()}
    short = short_names(factors)
    budget = meta.get("budget") or "full"
    tag = meta.get("label") if meta.get("finding") else f"{budget}: indicative only" if budget == "quick" else budget
    label = f"{meta.get('study', 'study')} study ({tag or budget})"

    t = trials.copy()
    missing_cols = [c for c in ["id", "state", "seed", *factors] if c not in t.columns]
    if missing_cols:
        raise ValueError(f"trials table lacks columns {missing_cols}; see fmlab.analysis.analyse for the contract")
    if select not in t.columns:
        raise ValueError(f"trials table has no {select!r} column (the selection metric)")
    for f in factors:
        is_bool = all(isinstance(v, (bool, np.bool_)) for v in meta["factors"][f])
        labels = t[f].map(lambda v, b=is_bool: level_label(v, b))
        stray = sorted(set(labels[t[f].notna()]) - set(fac_levels[f]))
        if stray:
            raise ValueError(f"{f}: trial values {stray} are not among the study's levels {fac_levels[f]}")
        t[f] = pd.Categorical(labels, categories=fac_levels[f], ordered=True)
    t["cell"] = [_cell_name(r, factors, short) for _, r in t.iterrows()]
    done, counts = complete_and_counts(t, select, meta)
    counts["cells_planned"] = math.prod(len(v) for v in fac_levels.values())

    cells = cell_table(done, factors, select)
    observed = set(cells["cell"]) if len(cells) else set()
    grid = [dict(zip(factors, c, strict=True)) for c in itertools.product(*fac_levels.values())]
    missing_cells = [n for n in (_cell_name(g, factors, short) for g in grid) if n not in observed]
    counts["cells_complete"] = len(observed)

    eff = main_effects(done, select, fac_levels, baseline) if len(done) else pd.DataFrame()
    inter = interaction_effects(done, select, fac_levels, baseline) if len(done) else pd.DataFrame()
    holm(eff, inter)
    tab, note = anova(done, select, factors) if len(done) else (None, "no complete trials")

    a = Analysis(label=label, study=str(meta.get("study", "study")), budget=budget, select=select,
                 factors=fac_levels, baseline=baseline, counts=counts, cells=cells,
                 effects=eff, interactions=inter, anova=tab, anova_note=note,
                 curves=curve_table(done, epochs), complete=done, missing_cells=missing_cells)  # fmt: skip
    a.failed = [{"id": str(r["id"]), "state": r["state"], "cell": r["cell"], "seed": r["seed"]}
                for _, r in t[t["state"] != "COMPLETE"].iterrows()]  # fmt: skip
    a.warnings = _warnings(a, budget)
    m = sum(int(np.isfinite(tb["p"]).sum()) for tb in (eff, inter) if len(tb))
    a.findings = [finding_text(r, select) for tbl in (eff, inter) if len(tbl) for _, r in tbl.iterrows()]
    if m:
        a.findings.append(f"p-values are Holm-adjusted over all {m} comparisons above; the 95% CIs are per "
                          "comparison (t over per-seed paired differences).")  # fmt: skip
    return a


def best_trial(trials: pd.DataFrame, select: str = "val_acc") -> str | None:
    """Id of the COMPLETE trial that is best on the validation selection metric (never a test metric)."""
    if not select.startswith("val_"):
        raise ValueError(f"select metric {select!r}: models are chosen on validation, never on test")
    done = trials[(trials["state"].astype(str).str.upper() == "COMPLETE") & trials[select].notna()]
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


def curve_table(done: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cell and epoch: mean, std and n over seeds (n shrinks where early stopping ended runs)."""
    if epochs is None or not len(epochs) or not len(done):
        return pd.DataFrame(columns=["cell", "epoch"])
    e = epochs.merge(done[["id", "cell"]].rename(columns={"id": "trial_id"}), on="trial_id")
    cols = [c for c in ("train_loss", "val_loss", "val_acc", "train_acc") if c in e]
    g = e.groupby(["cell", "epoch"])[cols].agg(["mean", "std", "count"])
    g.columns = [f"{m}_{s}" for m, s in g.columns]
    return g.reset_index()


def _warnings(a: Analysis, budget: str) -> list[str]:
    c, w = a.counts, []
    if budget == "quick":
        w.append("Quick budget (subset of the data, few epochs): indicative only; rerun with --budget full "
                 "before drawing conclusions.")  # fmt: skip
    if c["complete"] == 0:
        w.append("No complete trials: nothing to analyse.")
    elif c["seeds"] < 2:
        w.append("Only one seed per cell: effects are untested (no replication to measure noise); "
                 "run at least 2 seeds, better 3 or more.")  # fmt: skip
    if c["failed"]:
        ids = ", ".join(f"{f['id']} ({f['cell']}, seed {f['seed']})" for f in a.failed if f["state"] == "FAILED")
        w.append(f"{c['failed']} trial(s) FAILED and are left out: {ids}.")
    if c["waiting"] or c["running"]:
        w.append(f"{c['waiting']} trial(s) WAITING and {c['running']} RUNNING: the study is not finished.")
    if c["missing"]:
        w.append(f"{c['missing']} of {c['planned']} planned trial(s) have no row at all.")
    if a.missing_cells and c["complete"]:
        names = "; ".join(a.missing_cells[:8]) + (" ..." if len(a.missing_cells) > 8 else "")
        w.append(f"{len(a.missing_cells)} of {c['cells_planned']} cells have no complete trial: {names}.")
    if len(a.cells) and a.cells["n"].nunique() > 1:
        w.append(f"Unequal seeds per cell (n from {a.cells['n'].min()} to {a.cells['n'].max()}); paired "
                 "effects use only the combinations present at both levels.")  # fmt: skip
    return w
