"""Statistics for an arms study: each arm (a variant of the baseline config) against the baseline.

Pure functions over DataFrames, like analysis.py, whose Analysis they fill in (design "arms") so the
report and the CLI treat both designs alike. Each arm minus the baseline is a contrast of one OLS fit
metric ~ arm + seed block over every complete trial (fmlab.analysis.stats; the seed block keeps the pairing of
init and data order), with its 95% CI from the model's residual. Holm (tests of 0 and TOSTs) over the
arms, separately for the selection metric (the question the study asks) and for test accuracy (evaluated
only, a check that the validation result carries over); the best set among baseline and arms is Hsu's
MCB. An arm whose trials are the baseline's own (its keys are unused
under the base config, e.g. momentum with adam) is named, not tested.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.base import (
    Analysis,
    anova,
    best_line,
    cell_table,
    complete_and_counts,
    curve_table,
    effect_text,
    fmt_effect,
    fmt_p,
    higher_is_better,
    mark_best_set,
    min_effects,
    seed_plan,
    study_budget_label,
    unit,
    warnings_for,
)
from fmlab.analysis.bestset import best_set
from fmlab.analysis.claims import check_claims, simple_effects
from fmlab.analysis.diagnostics import apply_transform, diagnose, limit_lines
from fmlab.analysis.stats import MIN_EFFECT, effects_table, fit_model, holm_verdicts
from fmlab.config.states import State

BASELINE = "baseline"
TEST = "test_acc"


def changes_text(changes: dict[str, Any]) -> str:
    """{'train.schedule': 'cosine'} -> 'train.schedule=cosine'."""
    def v(x: Any) -> str:
        if isinstance(x, bool):
            return str(x).lower()
        if isinstance(x, list):
            return ",".join(str(i) for i in x)
        return str(x)

    return ", ".join(f"{k}={v(x)}" for k, x in changes.items()) or "(the [base] config)"


def arm_effects(done: pd.DataFrame, metric: str, arms: dict[str, dict[str, Any]], same_as_base: set[str],
                x: float | None = None) -> tuple[pd.DataFrame, Any]:  # fmt: skip
    """Each arm minus the baseline on metric: contrasts of one OLS fit metric ~ C(arm) + C(seed) over the
    trials (each once); Holm and verdicts over the arms (fmlab.analysis.stats). An arm whose trials another arm
    already holds gets that arm's row; an arm with the baseline's own trials is named, not tested."""
    x = MIN_EFFECT.get(metric, 0.01) if x is None else x
    names = [BASELINE, *arms]
    if metric not in done or not len(done):
        return pd.DataFrame(), None
    ids = {n: frozenset(done.loc[done["arm"].astype(str) == n, "id"]) for n in names}
    first = {n: next((m for m in names if ids[m] and ids[m] == ids[n]), n) for n in names}
    own = [n for n in names if first[n] == n]
    once = done[done["arm"].astype(str).isin(own)].drop_duplicates("id").astype({"arm": str})
    m = fit_model(once.dropna(subset=[metric]), metric, {"arm": own}, {"arm": BASELINE}, interactions=False,
                  all_pairs=False)
    if m is None or len(own) < 2:
        return pd.DataFrame(), m
    tab = effects_table(m, metric, x).set_index("level")
    rows = []
    for name, changes in arms.items():
        src = first[name]
        r = tab.loc[src].to_dict() if src in tab.index else {"estimate": math.nan, "lo": math.nan, "hi": math.nan,
                                                              "se": math.nan, "p": math.nan, "p_tost": math.nan,
                                                              "df": m.df_resid}  # fmt: skip
        if name in same_as_base or src != name:
            r["p"], r["p_tost"] = math.nan, math.nan
        rows.append({"kind": "arm", "term": f"{name} vs {BASELINE}", "arm": name, "changes": changes_text(changes),
                     "metric": metric, **{k: r[k] for k in ("estimate", "se", "lo", "hi", "df", "p", "p_tost")},
                     "n_seeds": int(once.loc[once["arm"] == src, "seed"].nunique()),  # this arm's, not the study's
                     "n_level": int((done["arm"] == name).sum()),
                     "n_baseline": int((done["arm"] == BASELINE).sum()), "factor": "arm"})  # fmt: skip
    out = pd.DataFrame(rows)
    holm_verdicts([out], x)
    for name in arms:  # twins share the verdict of the arm they duplicate
        if first[name] != name and first[name] != BASELINE:
            out.loc[out["arm"] == name, ["p_holm", "p_tost_holm", "verdict"]] = \
                out.loc[out["arm"] == first[name], ["p_holm", "p_tost_holm", "verdict"]].to_numpy()  # fmt: skip
    out.loc[out["arm"].isin(same_as_base), "verdict"] = "same trials as the baseline: not a comparison"
    return out, m


def _shared(done: pd.DataFrame, names: list[str]) -> tuple[set[str], list[str]]:
    """Arms whose complete trials are exactly the baseline's, and notes on arms sharing trials."""
    ids = {n: frozenset(done.loc[done["arm"] == n, "id"]) for n in names}
    same_base = {n for n in names[1:] if ids[n] and ids[n] == ids[names[0]]}
    notes, seen = [], set()
    for n in names[1:]:
        twins = [m for m in names[1:] if m != n and ids[m] and ids[m] == ids[n]]
        if twins and n not in seen:
            seen.update([n, *twins])
            notes.append(f"Arms {', '.join([n, *twins])} resolve to the same configs (same trials): one result, "
                         "reported under each name.")  # fmt: skip
    if same_base:
        notes.append(f"Arm(s) {', '.join(sorted(same_base))} resolve to the baseline's own config (the keys they "
                     "set are unused or already the base values): not compared.")  # fmt: skip
    return same_base, notes


def finding(r: pd.Series, t: pd.Series | None, metric: str) -> str:
    """'cosine vs baseline: +0.31 pts [0.05, 0.57] in val_acc, Holm p = 0.020 (n = 5 seeds): better val_acc;
    test_acc +0.20 pts [-0.10, 0.50]'."""
    if r["verdict"].startswith("same trials"):
        return f"{r['term']} ({r['changes']}): {r['verdict']} (the keys it sets are unused or already the base values)"
    _, u = unit(metric)
    ci = f"[{fmt_effect(r['lo'], metric, False)}, {fmt_effect(r['hi'], metric, False)}]"
    verdict = r["verdict"]
    if verdict in ("matters", "real but smaller than X"):
        good = (r["estimate"] > 0) == higher_is_better(metric)
        verdict = f"{verdict} ({'better' if good else 'worse'} {metric})"
    out = (f"{r['term']} ({r['changes']}): {fmt_effect(r['estimate'], metric)}{u} {ci} in {metric}, "
           f"Holm p {fmt_p(r['p_holm'])} (df {r['df']:.0f}): {verdict}")  # fmt: skip
    if t is not None and np.isfinite(t["estimate"]):
        out += (f"; {TEST} {fmt_effect(t['estimate'], TEST)} pts [{fmt_effect(t['lo'], TEST, False)}, "
                f"{fmt_effect(t['hi'], TEST, False)}]")  # fmt: skip
    return out


def analyse_arms(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict[str, Any]) -> Analysis:
    """The analysis of an arms study.

    trials: as for fmlab.analysis.grid.analyse, with an 'arm' column (the baseline's rows say 'baseline')
        in place of factor columns; a trial shared by several arms appears once per arm (same id).
    meta: study, budget, select, planned, design "arms", arms {name: {config key: value}} (file order).
    """
    select = meta.get("select", "val_acc")
    if select not in ("val_acc", "val_loss"):
        raise ValueError(f"select metric {select!r}: use a validation metric (val_acc or val_loss), never test")
    arms = {str(k): dict(v) for k, v in meta.get("arms", {}).items()}
    names = [BASELINE, *arms]
    budget = meta.get("budget") or "full"
    label = f"{meta.get('study', 'study')} study ({study_budget_label(meta)})"
    t = trials.copy()
    missing_cols = [c for c in ("id", "state", "seed", "arm", select) if c not in t.columns]
    if missing_cols:
        raise ValueError(
            f"trials table lacks columns {missing_cols}; see fmlab.analysis.arms.analyse_arms for the contract"
        )
    t, transform_notes = apply_transform(t, meta, select)
    t["arm"] = t["arm"].astype(str)
    stray = sorted(set(t["arm"]) - set(names))
    if stray:
        raise ValueError(f"arm: trial values {stray} are not among the study's arms {names}")
    t["arm"] = pd.Categorical(t["arm"], categories=names, ordered=True)
    t["cell"] = t["arm"].astype(str)
    done, counts = complete_and_counts(t, select, meta)
    counts["cells_planned"] = len(names)
    cells = cell_table(done, ["arm"], select)
    cells["changes"] = [changes_text(arms.get(str(a), {})) for a in cells["arm"]] if len(cells) else []
    counts["cells_complete"] = len(cells)
    same_base, notes = _shared(done, names)
    me = min_effects(meta)
    eff, fit = arm_effects(done, select, arms, same_base, me.get(select))
    test = arm_effects(done, TEST, arms, same_base, me.get(TEST))[0] if TEST in done else pd.DataFrame()
    tab, note = anova(done, select, ["arm"], fit) if fit is not None else (None, "no model could be fitted")
    note = note.replace("main effects only (too few trials)", "arm + seed block (one-way)")
    # the best set among baseline and arms, each set of trials once
    once = done.drop_duplicates("id").astype({"arm": str})
    best = best_set(once, select, ["arm"], fit) if fit is not None else None
    cells = mark_best_set(cells, best, select)

    a = Analysis(label=label, study=str(meta.get("study", "study")), budget=budget, select=select,
                 factors={"arm": names}, baseline={"arm": BASELINE}, counts=counts, cells=cells, effects=eff,
                 interactions=pd.DataFrame(), anova=tab, anova_note=note, curves=curve_table(done, epochs),
                 complete=done, missing_cells=[n for n in names if n not in set(cells["cell"])],
                 design="arms", arms=arms, test_effects=test, min_effect=me, best=best,
                 model_note=fit.note if fit is not None else "")  # fmt: skip
    a.failed = [{"id": str(r["id"]), "state": r["state"], "cell": r["cell"], "seed": r["seed"]}
                for _, r in t[t["state"] != State.COMPLETE].drop_duplicates("id").iterrows()]  # fmt: skip
    a.warnings = warnings_for(a, budget) + notes
    a.diagnostics = diagnose(fit, done, select, eff, ["arm"], notes=transform_notes)
    a.warnings += transform_notes + limit_lines(a.diagnostics)
    tests = {r["arm"]: r for _, r in test.iterrows()} if len(test) else {}
    a.findings = [finding(r, tests.get(r["arm"]), select) for _, r in eff.iterrows()] if len(done) else []
    m = int(eff["m_tests"].iloc[0]) if len(eff) and "m_tests" in eff else 0
    if m:
        a.findings.append(f"Holm over {m} tests (each arm's test of 0 and its TOST), separately for {select} (the "
                          f"selection metric) and {TEST} (evaluated only); 95% CIs per arm from the model "
                          f"{select} ~ arm + seed block (residual df {eff['df'].iloc[0]:.0f}).")  # fmt: skip
    if best is not None:
        a.findings.insert(0, best_line(best))
    claims, x = list(meta.get("claims") or []), me.get(select, MIN_EFFECT[select])
    pairs = simple_effects(fit, claims, {"arm": names}, {"arm": BASELINE}, select, x)  # arm vs arm: own family
    a.claims = check_claims(claims, [eff, pairs], select, effect_text(x, select), best, cells)
    if fit is not None and len(eff):  # the planned grid: baseline and the arms with trials of their own
        levels = {"arm": [BASELINE, *[m["level"] for m in fit.meta]]}
        rows = eff.assign(key="arm: " + eff["arm"].astype(str) + f" vs {BASELINE}")
        a.plan = seed_plan(fit, [rows], levels, {"arm": BASELINE}, counts["seeds"], me.get(select), best, select)
    return a


# ---------------------------------------------------------------- display rows (report, terminal)


def _level(r: pd.Series, m: str) -> str:
    k, _ = unit(m)
    d = 2 if k == 100 else 4
    mean, lo, hi = (r.get(f"{m}_{s}", math.nan) for s in ("mean", "lo", "hi"))
    if not np.isfinite(mean):
        return "n/a"
    return f"{k * mean:.{d}f}" + (f" [{k * lo:.{d}f}, {k * hi:.{d}f}]" if np.isfinite(lo) else " (no CI: n = 1)")


def ranked_header(a: Analysis) -> list[str]:
    _, u = unit(a.select, level=True)
    return ["rank", "arm", "changes", "n", f"{a.select} mean [95% CI]{u}", f"{TEST} mean [95% CI] %"]


def ranked_rows(a: Analysis, limit: int | None = None) -> list[list[str]]:
    return [[str(r["rank"]), r["cell"], r["changes"], str(r["n"]), _level(r, a.select), _level(r, TEST)]
            for _, r in a.cells.head(limit).iterrows()]  # fmt: skip


def effect_header(a: Analysis) -> list[str]:
    _, u = unit(a.select)
    return ["comparison", f"effect on {a.select}{u}", "95% CI", "Holm p", f"effect on {TEST} pts",
            f"{TEST} 95% CI", f"{TEST} Holm p", "seeds", "verdict"]  # fmt: skip


def effect_rows(a: Analysis) -> list[list[str]]:
    """One row per arm, in file order: effect on the selection metric and on test accuracy, verdict last
    (the verdict is on the selection metric)."""
    tests = {r["arm"]: r for _, r in a.test_effects.iterrows()} if len(a.test_effects) else {}
    rows = []
    for _, r in a.effects.iterrows():
        t = tests.get(r["arm"])
        ci = lambda x, m: f"[{fmt_effect(x['lo'], m, False)}, {fmt_effect(x['hi'], m, False)}]"  # noqa: E731
        tcols = [fmt_effect(t["estimate"], TEST), ci(t, TEST), fmt_p(t["p_holm"]).lstrip("= ")] if t is not None \
            else ["n/a"] * 3  # fmt: skip
        rows.append([r["term"], fmt_effect(r["estimate"], a.select), ci(r, a.select),
                     fmt_p(r["p_holm"]).lstrip("= "), *tcols, str(r["n_seeds"]), r["verdict"]])  # fmt: skip
    return rows


def definition_rows(a: Analysis) -> list[list[str]]:
    return [[BASELINE, "(the [base] config)"], *([n, changes_text(c)] for n, c in a.arms.items())]
