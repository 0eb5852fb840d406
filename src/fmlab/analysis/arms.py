"""Statistics for an arms study: each arm (a variant of the baseline config) against the baseline.

What an arms study supplies to the analysis driver (fmlab.analysis.driver runs the pipeline and fills in
the Analysis record with design "arms", so the report and the CLI treat both designs alike; this module calls
no step of it), and the arms' display rows. Each arm minus the baseline is a contrast of one OLS fit
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

from fmlab.analysis.design import Contrasts, Design
from fmlab.analysis.formatting import fmt_effect, fmt_p, unit
from fmlab.analysis.ranking import higher_is_better
from fmlab.analysis.record import Analysis
from fmlab.analysis.stats import MIN_EFFECT, effects_table, fit_model, holm_verdicts

BASELINE = "baseline"
TEST = "test_acc"
_NOT_ESTIMATED = dict.fromkeys(("estimate", "lo", "hi", "se", "p", "p_tost"), math.nan)  # an arm the fit lacks


def changes_text(changes: dict[str, Any]) -> str:
    """{'train.schedule': 'cosine'} -> 'train.schedule=cosine'."""

    def v(x: Any) -> str:
        if isinstance(x, bool):
            return str(x).lower()
        if isinstance(x, list):
            return ",".join(str(i) for i in x)
        return str(x)

    return ", ".join(f"{k}={v(x)}" for k, x in changes.items()) or "(the [base] config)"


def arm_effects(
    done: pd.DataFrame, metric: str, arms: dict[str, dict[str, Any]], same_as_base: set[str], x: float | None = None
) -> tuple[pd.DataFrame, Any]:
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
    m = fit_model(
        once.dropna(subset=[metric]), metric, {"arm": own}, {"arm": BASELINE}, interactions=False, all_pairs=False
    )
    if m is None or len(own) < 2:
        return pd.DataFrame(), m
    tab = effects_table(m, metric, x).set_index("level")
    rows = []
    for name, changes in arms.items():
        src = first[name]
        r = tab.loc[src].to_dict() if src in tab.index else {**_NOT_ESTIMATED, "df": m.df_resid}
        if name in same_as_base or src != name:
            r["p"], r["p_tost"] = math.nan, math.nan
        rows.append(
            {
                "kind": "arm",
                "term": f"{name} vs {BASELINE}",
                "arm": name,
                "changes": changes_text(changes),
                "metric": metric,
                **{k: r[k] for k in ("estimate", "se", "lo", "hi", "df", "p", "p_tost")},
                "n_seeds": int(once.loc[once["arm"] == src, "seed"].nunique()),  # this arm's, not the study's
                "n_level": int((done["arm"] == name).sum()),
                "n_baseline": int((done["arm"] == BASELINE).sum()),
                "factor": "arm",
            }
        )
    out = pd.DataFrame(rows)
    holm_verdicts([out], x)
    for name in arms:  # twins share the verdict of the arm they duplicate
        if first[name] != name and first[name] != BASELINE:
            out.loc[out["arm"] == name, ["p_holm", "p_tost_holm", "verdict"]] = out.loc[
                out["arm"] == first[name], ["p_holm", "p_tost_holm", "verdict"]
            ].to_numpy()
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
            notes.append(
                f"Arms {', '.join([n, *twins])} resolve to the same configs (same trials): one result, "
                "reported under each name."
            )
    if same_base:
        notes.append(
            f"Arm(s) {', '.join(sorted(same_base))} resolve to the baseline's own config (the keys they "
            "set are unused or already the base values): not compared."
        )
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
    out = (
        f"{r['term']} ({r['changes']}): {fmt_effect(r['estimate'], metric)}{u} {ci} in {metric}, "
        f"Holm p {fmt_p(r['p_holm'])} (df {r['df']:.0f}): {verdict}"
    )
    if t is not None and np.isfinite(t["estimate"]):
        out += (
            f"; {TEST} {fmt_effect(t['estimate'], TEST)} pts [{fmt_effect(t['lo'], TEST, False)}, "
            f"{fmt_effect(t['hi'], TEST, False)}]"
        )
    return out


class ArmsDesign(Design):
    """An arms study: meta arms {name: {config key: value}} (file order), each a variant of the base config;
    the trials table has an 'arm' column (the baseline's rows say 'baseline') in place of factor columns, and
    a trial shared by several arms appears once per arm (same id). A cell is an arm."""

    name = "arms"
    shares_trials = True

    def __init__(self, meta: dict[str, Any]):
        self.arms = {str(k): dict(v) for k, v in meta.get("arms", {}).items()}
        self.names = [BASELINE, *self.arms]
        self.factors = {"arm": self.names}
        self.baseline = {"arm": BASELINE}
        self.cells_planned = len(self.names)

    def check_columns(self, t: pd.DataFrame, select: str) -> None:
        missing_cols = [c for c in ("id", "state", "seed", "arm", select) if c not in t.columns]
        if missing_cols:
            raise ValueError(
                f"trials table lacks columns {missing_cols}; see fmlab.analysis.driver.analyse for the contract"
            )

    def label(self, t: pd.DataFrame) -> pd.DataFrame:
        t["arm"] = t["arm"].astype(str)
        stray = sorted(set(t["arm"]) - set(self.names))
        if stray:
            raise ValueError(f"arm: trial values {stray} are not among the study's arms {self.names}")
        t["arm"] = pd.Categorical(t["arm"], categories=self.names, ordered=True)
        t["cell"] = t["arm"].astype(str)
        return t

    def cell_columns(self, cells: pd.DataFrame) -> pd.DataFrame:
        cells["changes"] = [changes_text(self.arms.get(str(a), {})) for a in cells["arm"]] if len(cells) else []
        return cells

    def missing_cells(self, observed: set[str]) -> list[str]:
        return [n for n in self.names if n not in observed]

    def contrasts(self, done: pd.DataFrame, select: str, min_effect: dict[str, float], x: float) -> Contrasts:
        same_base, notes = _shared(done, self.names)
        eff, fit = arm_effects(done, select, self.arms, same_base, min_effect.get(select))
        test = (
            arm_effects(done, TEST, self.arms, same_base, min_effect.get(TEST))[0] if TEST in done else pd.DataFrame()
        )
        return Contrasts(eff, pd.DataFrame(), test, fit, notes)

    def anova_note(self, note: str) -> str:
        return note.replace("main effects only (too few trials)", "arm + seed block (one-way)")

    def best_set_trials(self, done: pd.DataFrame) -> pd.DataFrame:
        return done.drop_duplicates("id").astype({"arm": str})  # the best set among baseline and arms, each once

    def findings(
        self, c: Contrasts, done: pd.DataFrame, select: str, x: float, anova_tab: pd.DataFrame | None
    ) -> list[str]:
        eff, test = c.effects, c.test
        tests = {r["arm"]: r for _, r in test.iterrows()} if len(test) else {}
        out = [finding(r, tests.get(r["arm"]), select) for _, r in eff.iterrows()] if len(done) else []
        m = int(eff["m_tests"].iloc[0]) if len(eff) and "m_tests" in eff else 0
        if m:
            out.append(
                f"Holm over {m} tests (each arm's test of 0 and its TOST), separately for {select} (the "
                f"selection metric) and {TEST} (evaluated only); 95% CIs per arm from the model "
                f"{select} ~ arm + seed block (residual df {eff['df'].iloc[0]:.0f})."
            )
        return out

    def plan_tables(self, c: Contrasts) -> tuple[list[pd.DataFrame], dict[str, list[str]]] | None:
        if c.fit is None or not len(c.effects):
            return None
        # the planned grid: baseline and the arms with trials of their own
        levels = {"arm": [BASELINE, *[m["level"] for m in c.fit.meta]]}
        return [c.effects.assign(key="arm: " + c.effects["arm"].astype(str) + f" vs {BASELINE}")], levels


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
    return [
        [
            str(r["rank"]) if a.validated else "-",
            r["cell"],
            r["changes"],
            str(r["n"]),
            _level(r, a.select),
            _level(r, TEST),
        ]
        for _, r in a.cells.head(limit).iterrows()
    ]


def effect_header(a: Analysis) -> list[str]:
    _, u = unit(a.select)
    return [
        "comparison",
        f"effect on {a.select}{u}",
        "95% CI",
        "Holm p",
        f"effect on {TEST} pts",
        f"{TEST} 95% CI",
        f"{TEST} Holm p",
        "seeds",
        "verdict",
    ]


def effect_rows(a: Analysis) -> list[list[str]]:
    """One row per arm, in file order: effect on the selection metric and on test accuracy, verdict last
    (the verdict is on the selection metric)."""
    tests = {r["arm"]: r for _, r in a.test_effects.iterrows()} if len(a.test_effects) else {}
    rows = []
    for _, r in a.effects.iterrows():
        t = tests.get(r["arm"])
        ci = lambda x, m: f"[{fmt_effect(x['lo'], m, False)}, {fmt_effect(x['hi'], m, False)}]"  # noqa: E731
        tcols = (
            [fmt_effect(t["estimate"], TEST), ci(t, TEST), fmt_p(t["p_holm"]).lstrip("= ")]
            if t is not None
            else ["n/a"] * 3
        )
        rows.append(
            [
                r["term"],
                fmt_effect(r["estimate"], a.select),
                ci(r, a.select),
                fmt_p(r["p_holm"]).lstrip("= "),
                *tcols,
                str(r["n_seeds"]),
                r["verdict"],
            ]
        )
    return rows


def definition_rows(a: Analysis) -> list[list[str]]:
    return [[BASELINE, "(the [base] config)"], *([n, changes_text(c)] for n, c in a.arms.items())]
