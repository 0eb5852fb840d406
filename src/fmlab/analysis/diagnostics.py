"""Robustness of a study's fitted model, said out loud: residual checks, outliers, a seed-level check.

Pure functions over the study's Fit (fmlab.analysis.stats, the same fit the effects are contrasts of) and its
COMPLETE trials; nothing here prints or writes.

- Residuals: Shapiro-Wilk on the raw residuals (normality); Brown-Forsythe (Levene centred on the
  median) on the residuals grouped by the levels of the factor whose main effect has the largest |t|,
  since unequal spread shows first where the means differ most (every cell has too few trials for a
  per-cell test); trials with |externally studentized residual| > 4 named by id.
- Seed-level check (3 or more seeds): the seed-paired estimate of each main effect (fmlab.analysis.seedcheck);
  where it and the model disagree, the verdict depends on the model, and the report says so.
- ``[analysis] transform = "log"``: loss metrics are analysed as log(loss); an effect d is then a ratio
  exp(d) of level to baseline, and min_effect x reads as a ratio inside [exp(-x), exp(x)].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fmlab.analysis.seedcheck import MIN_SEEDS, SEED_METHOD, disagreement_lines, seed_check
from fmlab.analysis.stats import MIN_EFFECT, Fit, json_safe

OUTLIER = 4.0  # |externally studentized residual| above this names the trial
TRANSFORMS = ("none", "log")
LOG_METRICS = ("val_loss", "test_loss")


@dataclass
class Diagnostics:
    """What the report's Diagnostics section shows for one metric's fitted model."""

    metric: str
    model: str  # the fitted model's note (formula, residual df)
    residuals: pd.DataFrame  # id, cell, seed, fitted, resid, student (externally studentized)
    shapiro_p: float
    bf_p: float
    bf_by: str  # what Brown-Forsythe groups by, and why
    outliers: list[dict[str, Any]]  # id, cell, seed, student
    seed_check: pd.DataFrame  # per main effect: the check beside the model's verdict
    seed_note: str  # the method, or why there is no check
    disagreements: list[str] = field(default_factory=list)  # "verdict depends on the model: ..."
    notes: list[str] = field(default_factory=list)  # transform, untestable parts

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: what summary.json carries."""
        rows = [{k: json_safe(v) for k, v in r.items()} for r in self.seed_check.to_dict("records")]
        return {
            "metric": self.metric,
            "model": self.model,
            "n": len(self.residuals),
            "shapiro_wilk_p": json_safe(self.shapiro_p),
            "brown_forsythe_p": json_safe(self.bf_p),
            "brown_forsythe_by": self.bf_by,
            "outlier_threshold": OUTLIER,
            "outliers": [{k: json_safe(v) for k, v in o.items()} for o in self.outliers],
            "seed_check": {"method": self.seed_note, "rows": rows},
            "disagreements": self.disagreements,
            "notes": self.notes,
        }


# ---------------------------------------------------------------- transform


def transform_of(meta: dict[str, Any]) -> str:
    t = str(meta.get("transform") or "none")
    if t not in TRANSFORMS:
        raise ValueError(f"transform {t!r}: allowed {', '.join(TRANSFORMS)}")
    return t


def apply_transform(trials: pd.DataFrame, meta: dict[str, Any], select: str) -> tuple[pd.DataFrame, list[str]]:
    """trials with the loss columns replaced by their logs when meta says transform = "log", and the
    sentences that say so (how min_effect reads then); unchanged (and no sentence) otherwise."""
    if transform_of(meta) != "log":
        return trials, []
    t = trials.copy()
    for m in (c for c in LOG_METRICS if c in t):
        v = pd.to_numeric(t[m], errors="coerce")
        if (v <= 0).any():
            bad = t.loc[v <= 0, "id"].astype(str).tolist()[:5] if "id" in t else []
            raise ValueError(f"transform = log: {m} must be positive; not so in trial(s) {bad}")
        t[m] = np.log(v)
    if select not in LOG_METRICS:
        return t, [
            f"transform = log applies to loss metrics only: {select} (the selection metric) is analysed as it is."
        ]
    x = float({**MIN_EFFECT, **(meta.get("min_effect") or {})}.get(select, math.nan))
    return t, [
        f"transform = log: {select} is analysed as log({select}) throughout (cells, effects, ANOVA, best "
        f"set); an effect d is the ratio exp(d) of level to baseline, and min_effect {x:g} reads as a ratio "
        f"inside [{math.exp(-x):.4f}, {math.exp(x):.4f}] (exp(+-{x:g}))."
    ]


# ---------------------------------------------------------------- residuals


def residual_table(fit: Fit, done: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per trial of the fit: id, cell, seed, fitted, raw residual and externally studentized residual.
    done: the frame the fit was made from (rows with metric, in order); checked against the fit's data."""
    from statsmodels.stats.outliers_influence import OLSInfluence

    rows = done.dropna(subset=[metric]).reset_index(drop=True)
    res = fit.fit
    y = np.asarray(res.model.endog, dtype=float)
    if len(rows) != len(y) or not np.allclose(rows[metric].to_numpy(float), y):
        raise ValueError("residual_table: the trials given are not the ones the model was fitted to")
    with np.errstate(divide="ignore", invalid="ignore"):
        student = np.asarray(OLSInfluence(res).resid_studentized_external, dtype=float)
    return pd.DataFrame(
        {
            "id": rows["id"].astype(str),
            "cell": rows.get("cell", pd.Series([""] * len(rows))),
            "seed": rows["seed"],
            "fitted": np.asarray(res.fittedvalues, dtype=float),
            "resid": np.asarray(res.resid, dtype=float),
            "student": student,
        }
    )


def largest_factor(effects: pd.DataFrame) -> str | None:
    """The factor whose main effect has the largest |estimate / se| (None when none is finite)."""
    if not len(effects) or "se" not in effects:
        return None
    t = (effects["estimate"] / effects["se"]).abs()
    t = t[np.isfinite(t)]
    return str(effects.loc[t.idxmax(), "factor"]) if len(t) else None


def brown_forsythe(resid: np.ndarray, groups: pd.Series) -> float:
    """Levene's test centred on the median (Brown-Forsythe) over the groups with 2+ residuals."""
    g = pd.Series(resid).groupby(groups.astype(str).to_numpy())
    parts = [v.to_numpy() for _, v in g if len(v) >= 2]
    if len(parts) < 2:
        return math.nan
    z = [np.abs(v - np.median(v)) for v in parts]  # each group's spread; none within any group: undefined
    if not any(np.ptp(v) > 1e-12 * (1 + np.abs(v).max()) for v in z):  # (pairs of residuals +-e, as df 1 gives)
        return math.nan
    return float(stats.levene(*parts, center="median").pvalue)


# ---------------------------------------------------------------- all of it


def diagnose(
    fit: Fit | None,
    done: pd.DataFrame,
    metric: str,
    effects: pd.DataFrame,
    factors: list[str],
    notes: list[str] | None = None,
) -> Diagnostics | None:
    """Residual checks and the seed-level check of one metric's fitted model. done: the COMPLETE trials
    the fit was made from (an arms study's shared trial once per arm); effects: the model's main effects
    (with p_holm); notes: sentences to carry (the transform). None without a fit."""
    if fit is None:
        return None
    once = done.drop_duplicates("id").dropna(subset=[metric]).reset_index(drop=True)  # arms: a trial per arm
    res = residual_table(fit, once, metric)
    notes = list(notes or [])
    r = res["resid"].to_numpy()
    sw = float(stats.shapiro(r).pvalue) if len(r) >= 3 and np.ptp(r) > 0 else math.nan
    if not np.isfinite(sw):
        notes.append("Shapiro-Wilk not computed (fewer than 3 residuals, or none differ).")
    f = largest_factor(effects)
    bf = brown_forsythe(r, once[f]) if f else math.nan
    by = (
        f"residuals grouped by the levels of {f}, the factor with the largest main effect (|t|)"
        if f
        else "no tested main effect to group by"
    )
    if f and not np.isfinite(bf):
        notes.append(f"Brown-Forsythe not computed: fewer than 2 levels of {f} with 2+ trials.")
    if fit.df_resid < 2:
        notes.append("Studentized residuals need a residual df of 2 or more: outliers not checked.")
    out = res[np.isfinite(res["student"]) & (res["student"].abs() > OUTLIER)]
    outliers = [
        {"id": o["id"], "cell": o["cell"], "seed": o["seed"], "student": float(o["student"])}
        for _, o in out.sort_values("student", key=abs, ascending=False).iterrows()
    ]
    n_seeds = int(done["seed"].nunique())
    if n_seeds >= MIN_SEEDS:
        tab, note = seed_check(done, metric, effects, factors), SEED_METHOD
    else:
        tab = pd.DataFrame()
        note = f"none ({n_seeds} seed(s); it needs {MIN_SEEDS} or more, df = seeds - 1)"
    return Diagnostics(
        metric=metric,
        model=fit.note,
        residuals=res,
        shapiro_p=sw,
        bf_p=bf,
        bf_by=by,
        outliers=outliers,
        seed_check=tab,
        seed_note=note,
        disagreements=disagreement_lines(tab) if len(tab) else [],
        notes=notes,
    )


def limit_lines(d: Diagnostics | None) -> list[str]:
    """The lines the report's Limits section carries: outliers and verdicts that depend on the model."""
    if d is None:
        return []
    w = (
        [
            f"{len(d.outliers)} trial(s) with |studentized residual| > {OUTLIER:g} in the {d.metric} model: "
            + ", ".join(f"{o['id']} ({o['cell']}, seed {o['seed']}, {o['student']:+.1f})" for o in d.outliers)
            + "."
        ]
        if d.outliers
        else []
    )
    return w + [s[0].upper() + s[1:] + "." for s in d.disagreements]
