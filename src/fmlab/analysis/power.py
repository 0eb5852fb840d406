"""Seeds planned, not guessed: what a study can detect with its seeds, and how many seeds would settle it.

Pure functions; nothing here prints or writes. Everything rests on the fitted model (fmlab.analysis.stats): its
residual SD sigma, its residual df and each contrast's variance factor v = l (X'X)^-1 l', so an effect's
SE is sigma * sqrt(v).

- Level: Holm over the study's family of m tests (each effect's test of 0 and its TOST) is planned at its
  first, strictest step, alpha / m (Bonferroni): conservative, since Holm's later steps are looser.
- Detectable: the smallest |effect| a two-sided t-test at alpha / m rejects with 80% power, from the
  noncentral t (scipy.stats.nct) with the model's df.
- More seeds: the planned study is every planned cell run at n seeds with the seed as a block. Each seed
  holds the same cells, so the block is orthogonal to the contrasts: v(n) = v(1) / n exactly, and
  df(n) = n * cells - rank(treatment columns) - (n - 1). v(1) and the rank come from the model's own
  design matrix built for that grid (fastfit.contrast_design), never from a textbook formula.
- The chances behind it (noncentral t, Dunnett's value; seeds to resolve an undecided effect or to shrink
  the best set to one cell): fmlab.analysis.seedpower.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.fastfit import contrast_design
from fmlab.analysis.seedpower import CAP, POWER, detectable_delta, df_at, seeds_for_best, seeds_to_resolve
from fmlab.analysis.stats import ALPHA, Fit


def grid_factors(factors: dict[str, list[str]], fit: Fit, baseline: dict[str, str]) -> dict[str, list[str]]:
    """The factors of the planned grid: the study's own (a factor the trials so far hold at one level
    included), each with the fit's baseline first where the fit has one."""
    fitted: dict[str, str] = {}
    for m in fit.meta:  # a factor's first main contrast is against its baseline (pairs of other levels follow)
        if m["kind"] == "main":
            fitted.setdefault(m["factor"], m["baseline"])
    base = {**baseline, **fitted}
    return {f: [base.get(f, v[0]), *[x for x in v if x != base.get(f, v[0])]] for f, v in factors.items()}


def per_seed_variance(
    factors: dict[str, list[str]], baseline: dict[str, str], interactions: bool
) -> tuple[dict[str, float], int, int]:
    """Each contrast's variance factor with ONE seed of every planned cell (v(n) = v(1) / n), the number
    of cells and the rank of the treatment columns; from the model's design for that grid at 2 seeds."""
    keys = [f for f, v in factors.items() if len(v) > 1]
    cells = list(itertools.product(*[factors[f] for f in keys]))
    d = pd.DataFrame([dict(zip([*keys, "seed"], (*c, s), strict=True)) for s in (0, 1) for c in cells])
    d["y"] = np.random.default_rng(0).normal(size=len(d))  # any response: only the design is used
    X, L, names = contrast_design(d, "y", {f: factors[f] for f in keys}, baseline, interactions)
    v2 = np.einsum("ij,jk,ik->i", L, np.linalg.pinv(X.T @ X), L)
    return dict(zip(names, 2 * v2, strict=True)), len(cells), int(np.linalg.matrix_rank(X)) - 1


def plan_seeds(
    fit: Fit,
    rows: pd.DataFrame,
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    n_seeds: int,
    x: float,
    best: dict[str, Any] | None = None,
    higher: bool = True,
    cap: int = CAP,
) -> dict[str, Any]:
    """The study's seed plan (JSON-safe dict). rows: its effects table (term, kind, estimate, se, verdict,
    m_tests; optional column key: the contrast's name in the fit when term differs). factors/baseline:
    the planned grid (level labels). best: fmlab.analysis.bestset.best_set's dict."""
    m_now = int(rows["m_tests"].dropna().iloc[0]) if "m_tests" in rows and rows["m_tests"].notna().any() else 1
    grid = grid_factors(factors, fit, baseline)  # analysed as a full grid is: the two-way model where it fits
    v1, cells, rank = per_seed_variance(grid, {f: v[0] for f, v in grid.items()}, True)
    m = 2 * len(v1)  # the planned family: every contrast of the full grid, its test of 0 and its TOST
    alpha = ALPHA / m
    delta_now = detectable_delta(fit.df_resid, ALPHA / max(m_now, 1))
    keys = rows["key"] if "key" in rows else rows["term"]  # the contrast's name in the fit
    design = (fit.sigma, cells, rank, alpha, x, cap)  # what seeds_to_resolve needs of the planned grid
    out = [
        _effect_plan(r, v1.get(k, math.nan), delta_now * float(r["se"]), *design)
        for (_, r), k in zip(rows.iterrows(), keys, strict=True)
    ]
    plan = {
        "metric": str(rows["metric"].iloc[0]) if "metric" in rows and len(rows) else "",
        "sigma": fit.sigma,
        "df": fit.df_resid,
        "n_seeds": int(n_seeds),
        "power": POWER,
        "family_alpha": ALPHA,
        "m_tests": m,
        "alpha": alpha,
        "m_tests_now": m_now,
        "alpha_now": ALPHA / max(m_now, 1),
        "min_effect": x,
        "cells": cells,
        "rank": rank,
        "cap": cap,
        "effects": out,
        "best": _best_plan(best, cells, cap, higher),
        "method": _method(m, alpha, cells, rank),
    }
    return plan


def _effect_plan(
    r: pd.Series, v: float, mde_now: float, sigma: float, cells: int, rank: int, alpha: float, x: float, cap: int
) -> dict[str, Any]:
    """One effect's row of the plan: its variance factor v per seed, its detectable effect now, and (when
    undecided) the seeds that would resolve it."""
    est, verdict = float(r["estimate"]), str(r["verdict"])
    e: dict[str, Any] = {
        "term": r["term"],
        "kind": r["kind"],
        "estimate": _num(est),
        "verdict": verdict,
        "var_per_seed": _num(v),
        "mde_now": _num(mde_now),
        "seeds_needed": None,
        "route": None,
    }
    if verdict == "undecided" and np.isfinite(est) and np.isfinite(v):
        e["seeds_needed"], e["route"] = seeds_to_resolve(est, v, sigma, cells, rank, alpha, x, cap)
    return e


def _method(m: int, alpha: float, cells: int, rank: int) -> str:
    return (
        f"two-sided t-test at alpha = {ALPHA}/{m} = {alpha:.2g} (Bonferroni: Holm's first, "
        f"strictest step over the planned grid's family of {m} tests), {POWER:.0%} power from the "
        f"noncentral t with the model's df; more seeds = every planned cell at n seeds, SE from "
        f"each contrast's l (X'X)^-1 l' in that design, df = n x {cells} cells - {rank} "
        "- (n - 1)"
    )


def _best_plan(best: dict[str, Any] | None, cells: int, cap: int, higher: bool) -> dict[str, Any] | None:
    if best is None or "cells" not in best or len(best["cells"]) < 2:
        return None
    tab = best["cells"]
    top = tab[tab["cell"].astype(str) == best["best"]].iloc[0]
    rest = tab[tab["cell"].astype(str) != best["best"]]
    gaps = (top["mean"] - rest["mean"]).to_numpy(float) * (1 if higher else -1)
    n_now = float(tab["n"].mean())
    sigma = float(np.sqrt(np.mean(np.asarray(tab["se"], float) ** 2) * n_now))  # balanced: se = sigma / sqrt(n)
    runner = rest.iloc[int(np.argmin(gaps))]
    k = max(cells, len(tab))
    done = len(best["set"]) == 1
    return {
        "best": best["best"],
        "runner_up": str(runner["cell"]),
        "gap": _num(float(np.min(gaps))),
        "sigma": sigma,
        "cells": k,
        "in_set": len(best["set"]),
        "seeds_needed": None if done else seeds_for_best(gaps, sigma, k, cap),
        "already_one": done,
        "method": (
            "approximate: today's gaps taken as true, cell-means model at n seeds (df (cells - 1)"
            "(n - 1), se(gap) = sigma sqrt(2/n)), Dunnett's one-sided value for equicorrelated "
            "comparisons, the chances that each other cell drops out multiplied (conservative)"
        ),
    }


def detectable_at(plan: dict[str, Any], n: int) -> dict[str, float]:
    """term -> the smallest effect detectable at 80% power with every planned cell at n seeds."""
    delta = detectable_delta(float(df_at(n, plan["cells"], plan["rank"])), plan["alpha"])
    return {
        e["term"]: delta * plan["sigma"] * math.sqrt(e["var_per_seed"] / n)
        for e in plan["effects"]
        if e["var_per_seed"] is not None
    }


def _num(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None


def _fmt(v: float | None, scale: float) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{scale * v:.2f}" if scale != 1 else f"{v:.4f}"


def _span(vals: list[float], scale: float, u: str) -> str:
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    if not vals:
        return "n/a"
    lo, hi = min(vals), max(vals)
    return _fmt(lo, scale) + ("" if _fmt(lo, scale) == _fmt(hi, scale) else f" to {_fmt(hi, scale)}") + u


def needs_text(e: dict[str, Any], cap: int = CAP, have: int | None = None) -> str:
    """'<term> needs ~K seeds (route)'; have: the seeds planned, to say when they already suffice."""
    k = e["seeds_needed"]
    if k is None:
        return f"{e['term']}: more than {cap} seeds"
    if have is not None and k <= have:
        return f"{e['term']}: ~{k} seeds suffice, within the {have} planned, once every cell has them ({e['route']})"
    return f"{e['term']} needs ~{k} seeds ({e['route']})"


def plan_lines(plan: dict[str, Any], n: int | None = None, scale: float = 1.0, u: str = "") -> list[str]:
    """The plan in sentences (report); n: the seeds to state detectable effects at (default: the study's)."""
    n = plan["n_seeds"] if n is None else n
    mde = detectable_at(plan, n)
    kinds = {e["term"]: e["kind"] for e in plan["effects"]}
    parts = [
        f"{what} {_span([v for t, v in mde.items() if kinds[t] == k], scale, u)}"
        for k, what in (("main", "main effects"), ("arm", "arms vs the baseline"), ("interaction", "interactions"))
        if any(kinds[t] == k for t in mde)
    ]
    lines = [
        f"With {n} seed(s) of every planned cell: smallest effect on {plan['metric']} detectable at "
        f"{plan['power']:.0%} power: " + "; ".join(parts) + f" (residual SD {_fmt(plan['sigma'], scale)}{u}).",
        f"How: {plan['method']}.",
    ]
    now = [e["mde_now"] for e in plan["effects"] if e["kind"] in ("main", "arm")]
    if any(v is not None for v in now):
        lines.append(
            f"From the trials as they are (df {plan['df']:.0f}, alpha = {ALPHA}/{plan['m_tests_now']}): "
            f"{_span(now, scale, u)} for {'arms' if 'arm' in kinds.values() else 'main effects'}."
        )
    und = [e for e in plan["effects"] if e["verdict"] == "undecided" and e["estimate"] is not None]
    if und:
        lines.append(
            "Undecided, taking today's estimate as the truth, seeds of every cell for an 80% chance of a "
            "verdict: " + "; ".join(needs_text(e, plan["cap"], n) for e in und) + "."
        )
    b = plan.get("best")
    if b and not b["already_one"]:
        k = f"~{b['seeds_needed']} seeds" if b["seeds_needed"] else f"more than {plan['cap']} seeds"
        lines.append(
            f"Best set ({b['in_set']} cells) down to {b['best']} alone: {k} (runner-up {b['runner_up']}, "
            f"gap {_fmt(b['gap'], scale)}{u}; {b['method']})."
        )
    return lines


def dry_run_line(plan: dict[str, Any], n: int, scale: float = 1.0, u: str = "") -> str:
    """'with N seeds: smallest detectable main effect X (80% power); undecided: <term> needs ~K seeds, ...'."""
    mde = detectable_at(plan, n)
    kinds = {e["term"]: e["kind"] for e in plan["effects"]}
    mains = [v for t, v in mde.items() if kinds[t] in ("main", "arm")]
    und = [e for e in plan["effects"] if e["verdict"] == "undecided" and e["estimate"] is not None]
    line = (
        f"with {n} seeds: smallest detectable main effect {_span(mains, scale, u)} on {plan['metric']} "
        f"({plan['power']:.0%} power, alpha {plan['alpha']:.2g})"
    )
    line += "; undecided: " + (", ".join(needs_text(e, plan["cap"], n) for e in und) if und else "none")
    b = plan.get("best")
    if b and not b["already_one"]:
        k = f"~{b['seeds_needed']} seeds" if b["seeds_needed"] else f"more than {plan['cap']} seeds"
        line += f"; best set to one cell: {k}"
    return line
