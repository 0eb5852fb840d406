"""The fitted model's contrasts vectorised over many responses (numpy least squares): the same computation as
fmlab.analysis.stats' one fit, for the simulation tests and the seed plan; tests check they equal statsmodels.

Pure functions; nothing here prints or writes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from fmlab.analysis.stats import ALPHA, fit_model


def contrast_design(
    df: pd.DataFrame, metric: str, factors: dict[str, list[str]], baseline: dict[str, str], interactions: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The fitted model's design matrix X and contrast matrix L (for fast_contrasts), and effect names."""
    m = fit_model(df, metric, factors, baseline, interactions)
    if m is None:
        raise ValueError("nothing to fit")
    return np.asarray(m.fit.model.exog), m.L, m.names


def fast_contrasts(X: np.ndarray, L: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
    """For each column of Y (n x r): estimates, se, lo, hi, p of L @ beta; df = n - rank(X)."""
    beta, _, rank, _ = np.linalg.lstsq(X, Y, rcond=None)
    resid = Y - X @ beta
    df = X.shape[0] - rank
    s2 = (resid**2).sum(axis=0) / df
    xtx = np.linalg.pinv(X.T @ X)
    v = np.einsum("ij,jk,ik->i", L, xtx, L)
    est = L @ beta
    se = np.sqrt(v[:, None] * s2[None, :])
    q = stats.t.ppf(1 - ALPHA / 2, df)
    p = 2 * stats.t.sf(np.abs(est / se), df)
    return {"estimate": est, "se": se, "lo": est - q * se, "hi": est + q * se, "p": p, "df": df, "sigma2": s2}
