"""What a reader is told in words before the numbers: the study's budget label, the warnings (budget,
missing or failed trials, one seed, unequal n) and the best set's one-line summary."""

from __future__ import annotations

from typing import Any

from fmlab.analysis.record import Analysis
from fmlab.config.metrics import ALL_TRAIN
from fmlab.config.states import State

NO_VALIDATION = (
    f"No validation split (data.val_size = 0): the trials trained on {ALL_TRAIN} with a fixed "
    "schedule and were tested at their last epoch. Nothing was chosen on validation, so nothing is ranked, fitted "
    "or picked (no effects, no best set, no best trial); the cells' test accuracy [95% CI] stands beside a "
    "validation-selected figure and never counts toward the goal."
)


def study_budget_label(meta: dict[str, Any]) -> str:
    """'full', 'cpu: full data, bf16 on CPU' (a budget with finding = true, by its label) or
    'quick: indicative only'."""
    budget = meta.get("budget") or "full"
    if budget == "full":
        return "full"
    if meta.get("finding"):
        return f"{budget}: {meta.get('budget_note') or 'a finding'}"
    return f"{budget}: indicative only"


def best_line(best: dict[str, Any]) -> str:
    others = [c for c in best["set"] if c != best["best"]]
    return f"best: {best['best']}; not distinguishable from it: {'; '.join(others) if others else 'none'}"


def warnings_for(a: Analysis, budget: str) -> list[str]:
    """What a reader must know before the numbers: budget, missing or failed trials, one seed, unequal n."""
    c, w = a.counts, []
    if budget == "quick":
        w.append(
            "Quick budget (subset of the data, few epochs): indicative only; rerun with --budget full "
            "before drawing conclusions."
        )
    if not a.validated:
        w.append(NO_VALIDATION)
    if c.get("left_out_no_validation"):
        w.append(
            f"{c['left_out_no_validation']} COMPLETE trial(s) trained with no validation split (data.val_size = 0) "
            f"have no {a.select} and are left out of this analysis (their test accuracy is in trials.csv)."
        )
    if c["complete"] == 0:
        w.append("No complete trials: nothing to analyse.")
    elif c["seeds"] < 2 and a.design == "arms":  # arm + seed block on one seed: as many terms as trials
        w.append(
            "Only one seed per arm: the model arm + seed block has no residual (df 0), so no arm can be "
            "compared with the baseline yet; run at least 2 seeds."
        )
    elif c["seeds"] < 2:
        w.append(
            "Only one seed per cell: the model's residual is the higher-order interactions (no seed "
            "replication); run at least 2 seeds to measure noise directly."
        )
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
        w.append(
            f"Unequal seeds per cell (n from {a.cells['n'].min()} to {a.cells['n'].max()}); the model "
            "fits the unbalanced data (marginal means weight every cell equally)."
        )
    return w
