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
- Seeds to resolve an undecided effect, taking its true value to be today's estimate: the smallest n at
  which the chance of any verdict but "undecided" (the test of 0 rejects, or the TOST against +-X does)
  is at least 80%. The joint chance is integrated over the residual SD's chi-square law.
- Seeds to shrink the best set to one cell (approximate): the observed gaps between the best cell and
  every other stay as they are; the cell-means model at n seeds has df (cells - 1)(n - 1) and
  se(gap) = sigma * sqrt(2 / n); Dunnett's one-sided value for equicorrelated (0.5) comparisons; each
  other cell is excluded with the noncentral-t chance that its gap beats d * se, and the comparisons are
  taken as independent (conservative, since they share the best cell's mean).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from fmlab.analysis.fastfit import contrast_design
from fmlab.analysis.stats import ALPHA, Fit

POWER = 0.8
CAP = 50  # seeds: beyond this the answer is "more than 50"
_U = (np.arange(256) + 0.5) / 256  # chi-square quantile midpoints: the residual SD's law, integrated


def power_zero(delta: Any, df: Any, alpha: float) -> np.ndarray:
    """Power of the two-sided t-test of 0 at level alpha when effect / SE = delta (noncentral t)."""
    c = stats.t.ppf(1 - alpha / 2, df)
    return np.asarray(stats.nct.sf(c, df, delta) + stats.nct.cdf(-c, df, delta), dtype=float)


def detectable_delta(df: float, alpha: float, power: float = POWER) -> float:
    """effect / SE that the two-sided test at alpha detects with the given power (inf when df < 1)."""
    if not np.isfinite(df) or df < 1:
        return math.inf
    f = lambda d: float(np.nan_to_num(power_zero(d, df, alpha), nan=1.0)) - power  # scipy's nct is NaN far out
    hi = float(stats.t.ppf(1 - alpha / 2, df)) + 4.0
    while f(hi) < 0:
        hi *= 2
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-8))


def resolve_power(theta: float, sd: Any, df: Any, alpha: float, x: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a true effect theta and estimator SD sd (arrays over designs): the chance that the test of 0
    rejects (two-sided, alpha), that the TOST against +-x does (each side at alpha), and that either does."""
    sd, df = np.broadcast_arrays(np.asarray(sd, float), np.asarray(df, float))
    ok = np.isfinite(sd) & (df >= 1)
    sd_, df_ = np.where(ok, sd, 1.0), np.where(ok, df, 1.0)
    p0 = np.where(ok, power_zero(theta / sd_, df_, alpha), 0.0)
    s = sd_[..., None] * np.sqrt(stats.chi2.ppf(_U, df_[..., None]) / df_[..., None])  # the estimated SE
    c0, c1 = stats.t.ppf(1 - alpha / 2, df_)[..., None], stats.t.ppf(1 - alpha, df_)[..., None]

    def within(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # P(a <= |est| <= b), est ~ N(theta, sd^2)
        z = lambda v: stats.norm.cdf((v - theta) / sd_[..., None])  # noqa: E731
        return np.clip(z(b) - z(a), 0, 1) + np.clip(z(-a) - z(-b), 0, 1)

    tost_edge = np.maximum(x - c1 * s, 0.0)
    pt = within(np.zeros_like(s), tost_edge).mean(axis=-1)
    unresolved = within(np.minimum(tost_edge, c0 * s), c0 * s).mean(axis=-1)
    pt, pany = np.where(ok, pt, 0.0), np.where(ok, np.maximum(1 - unresolved, p0), 0.0)
    return p0, pt, pany


def seeds_to_resolve(
    theta: float, v1: float, sigma: float, cells: int, rank: int, alpha: float, x: float, cap: int = CAP
) -> tuple[int | None, str]:
    """Smallest n (1..cap) with an 80% chance of a verdict (test of 0 or TOST at alpha) when the true effect
    is theta, and which test gets there more often; (None, 'more than cap') when none does."""
    ns = np.arange(1, cap + 1)
    p0, pt, pany = resolve_power(theta, sigma * np.sqrt(v1 / ns), df_at(ns, cells, rank), alpha, x)
    hit = np.flatnonzero(pany >= POWER)
    if not len(hit):
        return None, f"more than {cap}"
    i = int(hit[0])
    return int(ns[i]), "differs from 0" if p0[i] >= pt[i] else "no effect larger than X"


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


def df_at(n: Any, cells: int, rank: int) -> np.ndarray:
    """Residual df of the planned grid at n seeds (seed block from 2 seeds on)."""
    n = np.asarray(n, float)
    return n * cells - rank - (n - 1)


def dunnett_equicorrelated(k: int, df: float, alpha: float = ALPHA) -> float:
    """One-sided Dunnett critical value for k comparisons with one control, correlation 0.5 (a balanced
    design): P(max T_i <= d) = E[Phi(W + sqrt(2) d s)^k], W ~ N(0, 1), s^2 ~ chi2(df) / df, by quadrature."""
    if k < 1 or df < 1:
        return math.inf
    w, wt = np.polynomial.hermite_e.hermegauss(48)
    wt = wt / wt.sum()
    s = np.sqrt(stats.chi2.ppf(_U, df) / df)

    def cover(d: float) -> float:
        return float((wt[:, None] * stats.norm.cdf(w[:, None] + math.sqrt(2) * d * s[None, :]) ** k).sum() / len(s))

    return float(optimize.brentq(lambda d: cover(d) - (1 - alpha), 0.0, 50.0, xtol=1e-6))


def seeds_for_best(gaps: np.ndarray, sigma: float, cells: int, cap: int = CAP) -> int | None:
    """Smallest n (2..cap) at which every other cell is excluded from the best set with 80% chance
    (the approximation in the module docstring); None beyond cap."""
    gaps = np.abs(np.asarray(gaps, float))
    if not len(gaps) or not np.isfinite(sigma) or sigma <= 0:
        return None

    def enough(n: int) -> bool:
        df = (cells - 1) * (n - 1)
        d = dunnett_equicorrelated(cells - 1, df)
        return bool(np.prod(stats.nct.sf(d, df, gaps / (sigma * math.sqrt(2 / n)))) >= POWER)

    if not enough(cap):
        return None
    lo, hi = 1, cap  # the chance grows with n: bisect (enough(hi) holds; n = 1 has no df)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


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
    out = []
    for _, r in rows.iterrows():
        key = r.get("key", r["term"]) if "key" in rows else r["term"]
        est, se, verdict = float(r["estimate"]), float(r["se"]), str(r["verdict"])
        v = v1.get(key, math.nan)
        e: dict[str, Any] = {
            "term": r["term"],
            "kind": r["kind"],
            "estimate": _num(est),
            "verdict": verdict,
            "var_per_seed": _num(v),
            "mde_now": _num(delta_now * se),
            "seeds_needed": None,
            "route": None,
        }
        if verdict == "undecided" and np.isfinite(est) and np.isfinite(v):
            e["seeds_needed"], e["route"] = seeds_to_resolve(est, v, fit.sigma, cells, rank, alpha, x, cap)
        out.append(e)
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
        "method": (
            f"two-sided t-test at alpha = {ALPHA}/{m} = {alpha:.2g} (Bonferroni: Holm's first, "
            f"strictest step over the planned grid's family of {m} tests), {POWER:.0%} power from the "
            f"noncentral t with the model's df; more seeds = every planned cell at n seeds, SE from "
            f"each contrast's l (X'X)^-1 l' in that design, df = n x {cells} cells - {rank} "
            "- (n - 1)"
        ),
    }
    return plan


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
