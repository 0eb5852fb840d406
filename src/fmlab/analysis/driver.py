"""The analysis of one study, run once for every design: validate, transform, count, tabulate the cells,
fit the design's model, ANOVA, best set, warnings, diagnostics, findings, claims, seed plan.

The design (fmlab.analysis.grid.GridDesign or fmlab.analysis.arms.ArmsDesign, chosen by meta's design)
supplies only what differs: its cells, its model's contrasts and how its findings read. Pure functions over
DataFrames; nothing here prints or writes. The input contract is documented on :func:`analyse`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.anova import anova
from fmlab.analysis.arms import ArmsDesign
from fmlab.analysis.bestset import best_set
from fmlab.analysis.cells import cell_table, complete_and_counts, curve_table, mark_best_set
from fmlab.analysis.claims import check_claims, simple_effects
from fmlab.analysis.design import Contrasts, Design
from fmlab.analysis.diagnostics import apply_transform, diagnose, limit_lines
from fmlab.analysis.formatting import effect_text
from fmlab.analysis.grid import GridDesign
from fmlab.analysis.power import plan_seeds
from fmlab.analysis.prose import best_line, study_budget_label, warnings_for
from fmlab.analysis.ranking import higher_is_better
from fmlab.analysis.record import Analysis
from fmlab.analysis.stats import MIN_EFFECT, Fit
from fmlab.config.states import State

SELECT = ("val_acc", "val_loss")


def analyse(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict[str, Any]) -> Analysis:
    """The whole analysis of one study.

    trials: one row per trial: id, state (COMPLETE/FAILED/WAITING/RUNNING), seed, one column per
        factor named by its config key (values bool/str/int/float), val_loss, val_acc, test_loss,
        test_acc (accuracies as fractions), epochs, best_epoch, train_s, total_s, n_params. An arms study
        has an 'arm' column (the baseline's rows say 'baseline') in place of factor columns; a trial shared
        by several arms appears once per arm (same id).
    epochs: trial_id, epoch, train_loss, train_acc, val_loss, val_acc, epoch_s, lr.
    meta: study (name), budget ("quick" labels everything "indicative only"), factors {key: [levels
        in file order]}, baseline {key: level}, select (val_acc or val_loss), planned (trial count); an arms
        study: design "arms", arms {name: {config key: value}} (file order) in place of factors and baseline.
    Only COMPLETE trials enter the statistics; the others are counted and named.
    statsmodels' rank-deficiency warnings are silenced: a study in progress often lacks cells, and the
    analysis itself says which effects are not estimable ("untested") instead.
    """
    from statsmodels.tools.sm_exceptions import SingularMatrixWarning, ValueWarning

    select = meta.get("select", "val_acc")
    if select not in SELECT:
        raise ValueError(f"select metric {select!r}: use a validation metric (val_acc or val_loss), never test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularMatrixWarning)
        warnings.simplefilter("ignore", ValueWarning)
        return run(design_for(meta), trials, epochs, meta)


def design_for(meta: dict[str, Any]) -> Design:
    """The study's design from its meta: arms when meta's design says so, else a grid."""
    return ArmsDesign(meta) if meta.get("design") == "arms" else GridDesign(meta)


def min_effects(meta: dict[str, Any]) -> dict[str, float]:
    """The smallest effect that matters per metric ([analysis] min_effect over the defaults)."""
    return {**MIN_EFFECT, **{str(k): float(v) for k, v in (meta.get("min_effect") or {}).items()}}


def run(design: Design, trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict[str, Any]) -> Analysis:
    """The pipeline, the same for every design; the design answers only what differs between designs."""
    select = meta.get("select", "val_acc")
    design.check_columns(trials, select)
    t, transform_notes = apply_transform(trials.copy(), meta, select)  # [analysis] transform = "log"
    t = design.label(t)
    done, counts = complete_and_counts(t, select, meta)
    counts["cells_planned"] = design.cells_planned
    cells = design.cell_columns(cell_table(done, list(design.factors), select))
    missing = design.missing_cells(set(cells["cell"]) if len(cells) else set())
    counts["cells_complete"] = len(cells)

    me = min_effects(meta)
    x = me.get(select, MIN_EFFECT[select])
    if len(done) and done[select].isna().all():  # no validation split (data.val_size = 0): nothing to fit or choose
        c = Contrasts(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), None)
    else:
        c = design.contrasts(done, select, me, x)
    tab, note = (
        anova(done, select, list(design.factors), c.fit) if c.fit is not None else (None, "no model could be fitted")
    )
    best = best_set(design.best_set_trials(done), select, list(design.factors), c.fit) if c.fit is not None else None
    cells = mark_best_set(cells, best, select)

    a = Analysis(
        label=f"{meta.get('study', 'study')} study ({study_budget_label(meta)})",
        study=str(meta.get("study", "study")),
        budget=meta.get("budget") or "full",
        select=select,
        factors=design.factors,
        baseline=design.baseline,
        counts=counts,
        cells=cells,
        effects=c.effects,
        interactions=c.interactions,
        anova=tab,
        anova_note=design.anova_note(note),
        curves=curve_table(done, epochs),
        complete=done,
        missing_cells=missing,
        design=design.name,
        arms=design.arms,
        test_effects=c.test,
        min_effect=me,
        best=best,
        model_note=c.fit.note if c.fit is not None else "",
    )
    a.failed = failed_trials(t, design.shares_trials)
    a.warnings = warnings_for(a, a.budget) + c.notes
    a.diagnostics = diagnose(c.fit, done, select, c.effects, list(design.factors), notes=transform_notes)
    a.warnings += transform_notes + limit_lines(a.diagnostics)
    a.findings = design.findings(c, done, select, x, tab)
    if best is not None:
        a.findings.insert(0, best_line(best))
    a.claims = claims(design, c, meta, select, x, best, cells)
    planned = design.plan_tables(c)
    if planned is not None:
        a.plan = seed_plan(c.fit, planned[0], planned[1], design.baseline, counts["seeds"], x, best, select)
    return a


def failed_trials(t: pd.DataFrame, shared: bool) -> list[dict[str, Any]]:
    """id, state, cell and seed of each trial that is not COMPLETE (each once where cells share trials)."""
    rows = t[t["state"] != State.COMPLETE]
    rows = rows.drop_duplicates("id") if shared else rows
    return [{"id": str(r["id"]), "state": r["state"], "cell": r["cell"], "seed": r["seed"]} for _, r in rows.iterrows()]


def claims(
    design: Design,
    c: Contrasts,
    meta: dict[str, Any],
    select: str,
    x: float,
    best: dict[str, Any] | None,
    cells: pd.DataFrame,
) -> list[dict[str, Any]]:
    """The study's [[claims]], each with its verdict: from the effects tables, from the contrasts only claims
    make (simple effects; arm vs arm: their own Holm family, not the table's) and from the best set."""
    asked = list(meta.get("claims") or [])
    own = simple_effects(c.fit, asked, design.factors, design.baseline, select, x)
    return check_claims(asked, [c.effects, c.interactions, own], select, effect_text(x, select), best, cells)


def seed_plan(
    fit: Fit | None,
    tabs: list[pd.DataFrame],
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    n_seeds: int,
    x: float,
    best: dict[str, Any] | None,
    select: str,
) -> dict[str, Any] | None:
    """fmlab.analysis.power's seed plan for the selection metric's family of effects; None when nothing fits."""
    rows = [t for t in tabs if len(t)]
    if fit is None or not rows:
        return None
    try:
        return plan_seeds(
            fit, pd.concat(rows, ignore_index=True), factors, baseline, n_seeds, x, best, higher_is_better(select)
        )
    except (ValueError, np.linalg.LinAlgError):  # a grid the planner cannot fit: the report just omits the plan
        return None
