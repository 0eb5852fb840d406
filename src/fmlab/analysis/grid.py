"""Statistics over one study's trials: per-cell summaries, effects and interactions of one fitted model, ANOVA.

Pure functions over DataFrames; nothing here prints or writes. The input contract (what the store
hands over, one row per trial) is documented on :func:`analyse`.

How effects are estimated: one OLS fit per study and metric over every COMPLETE trial (all main
effects, all two-way interactions, the seed as a block; fmlab.analysis.stats). A main effect is the difference
of estimated marginal means (level vs baseline), an interaction the difference of differences, each
with a 95% CI from the model's residual and df. Holm over one family (tests of 0 and TOST equivalence
tests against [analysis] min_effect) gives four verdicts (fmlab.analysis.stats.VERDICTS). The best set is Hsu's
MCB on the cell-means model. A one-cell study keeps the seed t-interval (t_ci). An arms study goes to
fmlab.analysis.arms; what both designs share lives in fmlab.analysis.base (its names are re-exported here).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.arms import analyse_arms
from fmlab.analysis.base import ALPHA as ALPHA
from fmlab.analysis.base import Analysis as Analysis
from fmlab.analysis.base import anova as anova
from fmlab.analysis.base import best_line as best_line
from fmlab.analysis.base import best_trial as best_trial
from fmlab.analysis.base import cell_table as cell_table
from fmlab.analysis.base import complete_and_counts as complete_and_counts
from fmlab.analysis.base import curve_table as curve_table
from fmlab.analysis.base import effect_text as effect_text
from fmlab.analysis.base import fmt_effect as fmt_effect
from fmlab.analysis.base import fmt_p as fmt_p
from fmlab.analysis.base import level_label as level_label
from fmlab.analysis.base import mark_best_set, warnings_for
from fmlab.analysis.base import min_effects as min_effects
from fmlab.analysis.base import seed_plan as seed_plan
from fmlab.analysis.base import short_names as short_names
from fmlab.analysis.base import study_budget_label as study_budget_label
from fmlab.analysis.base import t_ci as t_ci
from fmlab.analysis.base import t_test as t_test
from fmlab.analysis.base import unit as unit
from fmlab.analysis.bestset import best_set
from fmlab.analysis.claims import check_claims, simple_effects
from fmlab.analysis.diagnostics import apply_transform, diagnose, limit_lines
from fmlab.analysis.stats import MIN_EFFECT, VERDICTS, Fit, effects_table, fit_model, holm_verdicts
from fmlab.analysis.stats import higher_is_better as higher_is_better
from fmlab.config.metrics import METRICS as METRICS
from fmlab.config.states import State


def _cell_name(row: Any, factors: list[str], short: dict[str, str]) -> str:
    return ", ".join(f"{short[f]}={row[f]}" for f in factors)


def model_effects(done: pd.DataFrame, metric: str, factors: dict[str, list[str]], baseline: dict[str, str],
                  x: float, interactions: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, Fit | None]:  # fmt: skip
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
    held = [{"kind": "main", "factor": f, "level": lv, "baseline": baseline[f], "metric": metric,
             "term": f"{f}: {lv} vs {baseline[f]}", "estimate": math.nan, "se": math.nan, "lo": math.nan,
             "hi": math.nan, "df": m.df_resid, "p": math.nan, "p_tost": math.nan}
            for f, v in factors.items() if len(v) > 1 and not varies[f] for lv in v if lv != baseline[f]]  # fmt: skip
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
    return (f"{r['term']}: {fmt_effect(r['estimate'], metric)}{u} {ci} in {metric}, "
            f"Holm p {fmt_p(r['p_holm'])} (df {r['df']:.0f}): {r['verdict']}")  # fmt: skip


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
        out.append(f"matters: {finding_text(r, metric).rsplit(': ', 1)[0]}"
                   + (f"; {100 * sh:.0f}% of the variance" if sh is not None and np.isfinite(sh) else ""))  # fmt: skip
    xs = effect_text(x, metric)
    for v in [*VERDICTS[1:], *sorted(set(rows["verdict"]) - set(VERDICTS))]:
        terms = rows.loc[rows["verdict"] == v, "term"].tolist()
        if terms:
            out.append(f"{v.replace('X', xs)} ({len(terms)}): " + "; ".join(terms))
    n = int(rows["m_tests"].iloc[0])
    out.append(f"Holm over {n} tests (each effect's test of 0 and its TOST against +-{xs}); 95% CIs per effect "
               f"from the fitted model's residual (df {rows['df'].iloc[0]:.0f}).")  # fmt: skip
    return out


def analyse(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict[str, Any]) -> Analysis:
    """The whole analysis of one study.

    trials: one row per trial: id, state (COMPLETE/FAILED/WAITING/RUNNING), seed, one column per
        factor named by its config key (values bool/str/int/float), val_loss, val_acc, test_loss,
        test_acc (accuracies as fractions), epochs, best_epoch, train_s, total_s, n_params.
    epochs: trial_id, epoch, train_loss, train_acc, val_loss, val_acc, epoch_s, lr.
    meta: study (name), budget ("quick" labels everything "indicative only"), factors {key: [levels
        in file order]}, baseline {key: level}, select (val_acc or val_loss), planned (trial count).
    Only COMPLETE trials enter the statistics; the others are counted and named.
    An arms study (meta design "arms") is analysed by fmlab.analysis.arms.analyse_arms.
    statsmodels' rank-deficiency warnings are silenced: a study in progress often lacks cells, and the
    analysis itself says which effects are not estimable ("untested") instead.
    """
    import warnings

    from statsmodels.tools.sm_exceptions import SingularMatrixWarning, ValueWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularMatrixWarning)
        warnings.simplefilter("ignore", ValueWarning)
        return _analyse(trials, epochs, meta)


def _analyse(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict[str, Any]) -> Analysis:
    if meta.get("design") == "arms":
        return analyse_arms(trials, epochs, meta)
    select = meta.get("select", "val_acc")
    if select not in ("val_acc", "val_loss"):
        raise ValueError(f"select metric {select!r}: use a validation metric (val_acc or val_loss), never test")
    fac_levels = {f: [level_label(v) for v in lv] for f, lv in meta["factors"].items()}
    factors = list(fac_levels)
    baseline = {f: level_label(meta.get("baseline", {}).get(f, lv[0])) for f, lv in meta["factors"].items()}
    short = short_names(factors)
    budget = meta.get("budget") or "full"
    label = f"{meta.get('study', 'study')} study ({study_budget_label(meta)})"

    t = trials.copy()
    missing_cols = [c for c in ["id", "state", "seed", *factors] if c not in t.columns]
    if missing_cols:
        raise ValueError(f"trials table lacks columns {missing_cols}; see fmlab.analysis.grid.analyse for the contract")
    if select not in t.columns:
        raise ValueError(f"trials table has no {select!r} column (the selection metric)")
    t, transform_notes = apply_transform(t, meta, select)  # [analysis] transform = "log": log(loss) throughout
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

    me = min_effects(meta)
    x = me.get(select, MIN_EFFECT[select])
    eff, inter, fit = model_effects(done, select, fac_levels, baseline, x)
    tab, note = anova(done, select, factors, fit) if fit is not None else (None, "no model could be fitted")
    test_eff = pd.DataFrame()
    if "test_acc" in done and done["test_acc"].notna().sum() > 2:
        te, ti, _ = model_effects(done.dropna(subset=["test_acc"]), "test_acc", fac_levels, baseline,
                                  me["test_acc"])  # fmt: skip
        test_eff = pd.concat([te, ti], ignore_index=True) if len(te) else pd.DataFrame()
    best = best_set(done, select, factors, fit) if len(done) and fit is not None else None
    cells = mark_best_set(cells, best, select)

    a = Analysis(label=label, study=str(meta.get("study", "study")), budget=budget, select=select,
                 factors=fac_levels, baseline=baseline, counts=counts, cells=cells,
                 effects=eff, interactions=inter, anova=tab, anova_note=note,
                 curves=curve_table(done, epochs), complete=done, missing_cells=missing_cells,
                 test_effects=test_eff, min_effect=me, best=best, model_note=fit.note if fit else "")  # fmt: skip
    a.failed = [{"id": str(r["id"]), "state": r["state"], "cell": r["cell"], "seed": r["seed"]}
                for _, r in t[t["state"] != State.COMPLETE].iterrows()]  # fmt: skip
    a.warnings = warnings_for(a, budget)
    a.diagnostics = diagnose(fit, done, select, eff, factors, notes=transform_notes)
    a.warnings += transform_notes + limit_lines(a.diagnostics)
    a.findings = grouped_findings([eff, inter], select, x, tab)
    if best is not None:
        a.findings.insert(0, best_line(best))
    claims = list(meta.get("claims") or [])
    simple = simple_effects(fit, claims, fac_levels, baseline, select, x)  # claims' own family, not the table's
    a.claims = check_claims(claims, [eff, inter, simple], select, effect_text(x, select), best, cells)
    a.plan = seed_plan(fit, [eff, inter], fac_levels, baseline, counts["seeds"], x, best, select)
    return a
