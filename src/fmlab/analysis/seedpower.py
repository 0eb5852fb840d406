"""The chances behind the seed plan (fmlab.analysis.power): power of the t-test of 0 from the noncentral t,
the smallest detectable effect, and the seeds that would settle an effect or the best set.

Pure functions over numbers; nothing here prints or writes.

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

import math
from typing import Any

import numpy as np
from scipy import optimize, stats

from fmlab.analysis.stats import ALPHA

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
