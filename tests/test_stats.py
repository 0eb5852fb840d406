"""The statistical engine (fmlab.analysis.stats) on simulated 2x2x2x3 grids with planted effects and known noise:
equal to an independently fitted statsmodels OLS, then the error rates over 1,000 simulated studies."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from conftest import STATS_BASE as BASE
from conftest import STATS_FACTORS as FACTORS
from conftest import STATS_SIGMA as SIGMA
from conftest import stats_grid as grid
from conftest import stats_truth as truth
from statsmodels.formula.api import ols

from fmlab.analysis import bestset
from fmlab.analysis import fastfit as ff
from fmlab.analysis import pvalues as fpv
from fmlab.analysis import stats as fs


def test_contrasts_equal_an_independent_statsmodels_fit_and_the_fast_path():
    rng = np.random.default_rng(0)
    d = grid(2)
    d["y"] = truth(d, a=1.0, ab=0.7) + 0.4 * (d["d"] == "2") + rng.normal(0, SIGMA, len(d))
    m = fs.fit_model(d, "y", FACTORS, BASE)
    tab = fs.effects_table(m, "y", 0.5).set_index("term")
    # independent: effects (sum) coding; the 2-level main effect is -2 x the coefficient of level 0,
    # a 2x2 interaction's difference of differences is 4 x its coefficient
    terms = [f"C({f}, Sum)" for f in FACTORS]
    ind = ols(
        "y ~ " + " + ".join(terms + [f"{x}:{y}" for x, y in itertools.combinations(terms, 2)]) + " + C(seed)", data=d
    ).fit()
    ci = ind.conf_int()
    a = tab.loc["a: 1 vs 0"]
    k = "C(a, Sum)[S.0]"
    assert a["estimate"] == pytest.approx(-2 * ind.params[k])
    assert (a["lo"], a["hi"]) == pytest.approx((-2 * ci.loc[k, 1], -2 * ci.loc[k, 0]))
    assert a["df"] == ind.df_resid == 32
    ab = tab.loc["a x b: (1 vs 0) at 1 minus at 0"]
    k = "C(a, Sum)[S.0]:C(b, Sum)[S.0]"
    assert ab["estimate"] == pytest.approx(4 * ind.params[k])
    assert (ab["lo"], ab["hi"]) == pytest.approx((4 * ci.loc[k, 0], 4 * ci.loc[k, 1]))
    assert ab["p"] == pytest.approx(ind.pvalues[k])
    # a 3-level factor: level 2 vs 0 equals the difference of raw marginal means (balanced design)
    raw = d.groupby("d")["y"].mean()
    assert tab.loc["d: 2 vs 0", "estimate"] == pytest.approx(raw["2"] - raw["0"])
    X, L, names = ff.contrast_design(d, "y", FACTORS, BASE)
    fast = ff.fast_contrasts(X, L, d["y"].to_numpy()[:, None])
    assert names == list(tab.index) and fast["df"] == 32
    for col in ("estimate", "lo", "hi", "p"):
        assert fast[col][:, 0] == pytest.approx(tab[col].to_numpy())


def _simulate(seeds: int, n: int, rng_seed: int, **planted: float) -> tuple[dict, np.ndarray, list[str], pd.DataFrame]:
    d = grid(seeds)
    X, L, names = ff.contrast_design(d.assign(y=np.random.default_rng(99).normal(size=len(d))), "y", FACTORS, BASE)
    rng = np.random.default_rng(rng_seed)
    Y = truth(d, **planted)[:, None] + rng.normal(0, SIGMA, (len(d), n))
    return ff.fast_contrasts(X, L, Y), Y, names, d


def _verdicts(out: dict, x: float) -> list[list[str]]:
    tost = fpv.tost_p(out["estimate"], out["se"], out["df"], x)
    adj = fpv.holm_adjust_many(np.r_[out["p"], tost])
    m = out["estimate"].shape[0]
    assert np.allclose(adj[:, 0], fpv.holm_adjust(np.r_[out["p"][:, 0], tost[:, 0]]))  # equals statsmodels
    return [fs.verdicts(out["lo"][:, j], out["hi"][:, j], adj[:m, j], adj[m:, j], x) for j in range(adj.shape[1])]


def test_null_studies_holm_family_rejects_something_at_most_6_5_percent():
    out, *_ = _simulate(2, 1000, 1)
    v = _verdicts(out, 0.5)
    rate = np.mean([any(x in fs.VERDICTS[:2] for x in row) for row in v])
    assert rate <= 0.065


def test_ci_covers_the_true_main_effect_about_95_percent():
    out, _, names, _ = _simulate(2, 1000, 2, a=0.8, ab=0.5)
    i = names.index("a: 1 vs 0")
    true = 0.8 + 0.5 / 2  # the marginal mean difference averages the interaction over b's levels
    cover = np.mean((out["lo"][i] <= true) & (true <= out["hi"][i]))
    assert 0.935 <= cover <= 0.965


def test_ci_covers_the_true_simple_effect_about_95_percent():
    """A claim's simple effect (a at b = 1, fmlab.analysis.claims): the contrast Fit.mean_at builds covers the planted
    a + ab, not the main effect's a + ab / 2, in about 95% of 1,000 simulated 2-seed studies."""
    d = grid(2)
    m = fs.fit_model(d.assign(y=np.random.default_rng(98).normal(size=len(d))), "y", FACTORS, BASE)
    L = (m.mean_at({"a": "1", "b": "1"}) - m.mean_at({"a": "0", "b": "1"}))[None, :]
    Y = truth(d, a=0.8, ab=0.5)[:, None] + np.random.default_rng(4).normal(0, SIGMA, (len(d), 1000))
    out = ff.fast_contrasts(np.asarray(m.fit.model.exog), L, Y)
    cover = np.mean((out["lo"][0] <= 1.3) & (1.3 <= out["hi"][0]))
    assert 0.935 <= cover <= 0.965 and abs(out["estimate"][0].mean() - 1.3) < 0.05


def test_main_effect_of_1_5_sd_found_in_at_least_90_percent_of_2_seed_studies():
    out, _, names, _ = _simulate(2, 1000, 3, a=1.5 * SIGMA)
    i = names.index("a: 1 vs 0")
    found = np.mean([row[i] in fs.VERDICTS[:2] for row in _verdicts(out, 0.5)])
    assert found >= 0.90


def test_best_set_holds_the_true_best_cell_in_at_least_93_percent():
    d = grid(2)
    cells = list(dict.fromkeys(d["cell"]))
    # truth: a=1 better by 1 sd, and b=1 by 0.5 sd on top (higher is better): true best cells have a=b=1;
    # c and d are null, so the true best is a tie among a=1,b=1 cells; take one of them as the target
    mu = (1.0 * (d["a"] == "1") + 0.5 * (d["b"] == "1") + 0.3 * d["seed"]).to_numpy(float)
    target = "1,1,0,0"
    C = pd.get_dummies(pd.Categorical(d["cell"], categories=cells)).to_numpy(float)
    S = (d["seed"] == 1).to_numpy(float)[:, None]
    X = np.c_[C, S]
    Lc = np.c_[np.eye(len(cells)), np.full((len(cells), 1), 0.5)]  # each cell averaged over the two seeds
    df = len(d) - np.linalg.matrix_rank(X)
    xtx = np.linalg.pinv(X.T @ X)
    V = Lc @ xtx @ Lc.T
    D = np.c_[np.eye(len(cells) - 1), -np.ones((len(cells) - 1, 1))]
    cd = D @ V @ D.T
    dcrit = bestset.dunnett_one_sided(cd / np.sqrt(np.outer(np.diag(cd), np.diag(cd))), df)
    rng = np.random.default_rng(4)
    Y = mu[:, None] + rng.normal(0, SIGMA, (len(d), 1000))
    beta = np.linalg.lstsq(X, Y, rcond=None)[0]
    s2 = ((Y - X @ beta) ** 2).sum(axis=0) / df
    means = Lc @ beta
    held = [bestset.mcb(means[:, j], V * s2[j], df, True, dcrit)[0][cells.index(target)] for j in range(Y.shape[1])]
    assert np.mean(held) >= 0.93


def test_best_set_on_a_study_names_the_best_and_uses_the_pooled_sd():
    d = grid(3)
    rng = np.random.default_rng(5)
    d["val_acc"] = 0.8 + 0.05 * ((d["a"] == "1") & (d["b"] == "1")) + rng.normal(0, 0.01, len(d))
    m = fs.fit_model(d, "val_acc", FACTORS, BASE)
    b = bestset.best_set(d, "val_acc", list(FACTORS), m)
    assert b["best"].startswith("1,1,") and all(c.startswith("1,1,") for c in b["set"])
    se = b["cells"]["se"]
    assert se.max() == pytest.approx(se.min())  # one pooled residual SD for every cell, not per-cell
    assert "Hsu" in b["method"] and b["df"] == len(d) - 24 - 2
