"""The Analysis record: everything one study's analysis found, as the report, the CLI and the API read it.

The driver (fmlab.analysis.driver) fills it in for grid and arms studies alike; its fields and their meaning
are a contract with its readers (fmlab.report, fmlab.api.handles, the README's answer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fmlab.analysis.diagnostics import Diagnostics
from fmlab.analysis.stats import MIN_EFFECT


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

    @property
    def validated(self) -> bool:
        """False when no COMPLETE trial validated (data.val_size = 0: all 60,000 training images trained, each
        trial tested at its last epoch): no ranking, fit, effects or best set; the cells give test accuracy."""
        return not self.counts.get("no_validation")
