"""p-values besides the fitted model's t-tests: two one-sided tests (TOST) against +-X, and Holm's adjustment
(one family with statsmodels; many families at once, vectorised, for the simulation tests).

Pure functions over numpy arrays; nothing here prints or writes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def tost_p(est: np.ndarray, se: np.ndarray, df: float, x: float) -> np.ndarray:
    """Two one-sided tests of |effect| < x: the larger of the two one-sided p-values."""
    with np.errstate(invalid="ignore", divide="ignore"):
        p_lo = stats.t.sf((est + x) / se, df)
        p_hi = stats.t.cdf((est - x) / se, df)
    return np.maximum(p_lo, p_hi)


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels), NaN left as NaN."""
    from statsmodels.stats.multitest import multipletests

    out = np.full(len(p), math.nan)
    fin = np.isfinite(p)
    if fin.any():
        out[fin] = multipletests(p[fin], method="holm")[1]
    return out


def holm_adjust_many(P: np.ndarray) -> np.ndarray:
    """Holm over each column of P (tests x studies) at once: the simulation path (statsmodels'
    multipletests, used for a single study, costs a garbage collection per call); tests check both agree."""
    m = P.shape[0]
    order = np.argsort(P, axis=0)
    ps = np.take_along_axis(P, order, axis=0) * (m - np.arange(m))[:, None]
    ps = np.minimum(np.maximum.accumulate(ps, axis=0), 1.0)
    out = np.empty_like(ps)
    np.put_along_axis(out, order, ps, axis=0)
    return out
