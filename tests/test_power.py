"""Seeds planned (fmlab.analysis.power): the design's variance factors, then simulations of 2x2x2x3 grids with planted
effects (fixed RNG, no training): a planted effect the size of the computed detectable effect is found at the
planned power, and an undecided effect gets a verdict at the seeds the planner asks for; the report and the
dry-run say it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import STATS_BASE as BASE
from conftest import STATS_FACTORS as FACTORS
from conftest import STATS_SIGMA as SIGMA
from conftest import run_cli, synth_arms, synth_grid
from conftest import stats_grid as grid
from conftest import stats_truth as truth
from scipy import stats

from fmlab.analysis import bestset
from fmlab.analysis import fastfit as ff
from fmlab.analysis import power as fp
from fmlab.analysis import pvalues as fpv
from fmlab.analysis import seedpower as sp
from fmlab.analysis import stats as fs
from fmlab.analysis.driver import analyse
from fmlab.report import build as report

N_SIM = 400
V1, CELLS, RANK = fp.per_seed_variance(FACTORS, BASE, True)
M_TESTS = 2 * len(V1)  # each effect's test of 0 and its TOST: one Holm family
ALPHA = fs.ALPHA / M_TESTS


def _sim(seeds: int, rng_seed: int, d_level_2: float = 0.0, **planted: float) -> tuple[dict, list[str]]:
    d = grid(seeds)
    X, L, names = ff.contrast_design(d.assign(y=np.random.default_rng(99).normal(size=len(d))), "y", FACTORS, BASE)
    mu = truth(d, **planted) + d_level_2 * (d["d"] == "2").to_numpy(float)
    Y = mu[:, None] + np.random.default_rng(rng_seed).normal(0, SIGMA, (len(d), N_SIM))
    return ff.fast_contrasts(X, L, Y), names


def _resolved(out: dict, i: int, x: float) -> float:
    """Share of studies whose verdict on effect i (Holm over the whole family) is not 'undecided'."""
    tost = fpv.tost_p(out["estimate"], out["se"], out["df"], x)
    adj = fpv.holm_adjust_many(np.r_[out["p"], tost])
    m = out["estimate"].shape[0]
    v = [
        fs.verdicts(out["lo"][i : i + 1, j], out["hi"][i : i + 1, j], adj[i : i + 1, j], adj[m + i : m + i + 1, j], x)[
            0
        ]
        for j in range(N_SIM)
    ]
    return float(np.mean([s != "undecided" for s in v]))


def test_variance_factors_scale_as_one_over_seeds_and_equal_the_design_at_n_seeds():
    for n in (1, 3, 5):
        d = grid(n)
        X, L, names = ff.contrast_design(d.assign(y=np.arange(len(d), dtype=float) ** 1.5), "y", FACTORS, BASE)
        v = np.einsum("ij,jk,ik->i", L, np.linalg.pinv(X.T @ X), L)
        assert v == pytest.approx(np.array([V1[k] for k in names]) / n)
        assert sp.df_at(n, CELLS, RANK) == X.shape[0] - np.linalg.matrix_rank(X)
    assert V1["a: 1 vs 0"] == pytest.approx(4 / 24) and V1["d: 2 vs 0"] == pytest.approx(6 / 24)


def test_dunnett_by_quadrature_equals_the_multivariate_t_draws():
    k = 11
    corr = np.full((k, k), 0.5) + 0.5 * np.eye(k)
    assert sp.dunnett_equicorrelated(k, 20) == pytest.approx(bestset.dunnett_one_sided(corr, 20), abs=0.03)
    assert sp.dunnett_equicorrelated(1, 10) == pytest.approx(stats.t.ppf(0.95, 10), abs=1e-3)  # one: t


@pytest.mark.parametrize(
    "term, key", [("a: 1 vs 0", "a"), ("d: 2 vs 0", "d_level_2"), ("a x b: (1 vs 0) at 1 minus at 0", "ab")]
)
def test_an_effect_the_size_of_the_detectable_effect_is_found_80_percent_of_the_time(term, key):
    n = 2
    mde = sp.detectable_delta(float(sp.df_at(n, CELLS, RANK)), ALPHA) * SIGMA * np.sqrt(V1[term] / n)
    out, names = _sim(n, 7, **{key: mde})
    rate = np.mean(out["p"][names.index(term)] < ALPHA)  # the two-sided test at alpha / m
    assert 0.75 <= rate <= 0.85, (term, mde, rate)


@pytest.mark.parametrize("theta, route", [(0.45, "differs from 0"), (0.1, "no effect larger than X")])
def test_seeds_needed_for_an_undecided_effect_resolve_it_when_simulated(theta, route):
    x = 0.5 * SIGMA
    n, why = sp.seeds_to_resolve(theta, V1["a: 1 vs 0"], SIGMA, CELLS, RANK, ALPHA, x)
    assert why == route and 2 < n < sp.CAP
    out, names = _sim(n, 11, a=theta)
    assert _resolved(out, names.index("a: 1 vs 0"), x) >= 0.75
    out, _ = _sim(max(n // 2, 1), 12, a=theta)  # half the seeds: clearly short of it
    assert _resolved(out, names.index("a: 1 vs 0"), x) < 0.75


def test_beyond_the_cap_says_more_than_the_cap():
    n, why = sp.seeds_to_resolve(0.05, V1["a: 1 vs 0"], SIGMA, CELLS, RANK, ALPHA, 0.01)  # tiny, and a tiny X
    assert n is None and why == f"more than {sp.CAP}"
    assert sp.seeds_for_best(np.r_[0.0, np.full(22, 3.0)], 1.0, 24) is None  # a tie with the best: never one cell
    k = sp.seeds_for_best(np.full(23, 1.5), 1.0, 24)
    assert k is not None and 5 < k < sp.CAP


def test_analysis_report_and_summary_json_carry_the_plan(tmp_path):
    a = analyse(*synth_grid(seeds=range(2), noise=0.004))
    p = a.plan
    assert p["n_seeds"] == 2 and p["alpha"] == pytest.approx(fs.ALPHA / p["m_tests"]) and p["m_tests"] == 20
    bn = next(e for e in p["effects"] if e["term"] == "model.batch_norm: true vs false")
    se = a.effects.set_index("term").loc["model.batch_norm: true vs false", "se"]
    assert bn["mde_now"] == pytest.approx(sp.detectable_delta(a.effects["df"].iloc[0], p["alpha"]) * se)
    undecided = [e for e in p["effects"] if e["verdict"] == "undecided"]
    assert undecided and all(e["seeds_needed"] or e["route"].startswith("more than") for e in undecided)
    report.build_report(*synth_grid(seeds=range(2), noise=0.004), tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["seeds_planned"]["effects"][0]["term"] == p["effects"][0]["term"]
    for page in ("summary.md", "index.html"):
        text = (tmp_path / page).read_text()
        assert "Seeds planned" in text and "detectable at 80% power" in text and "needs ~" in text


def test_arms_analysis_has_a_plan_for_its_arms():
    a = analyse(*synth_arms(seeds=range(3), noise=0.004))
    assert a.plan is not None and {e["kind"] for e in a.plan["effects"]} == {"arm"}
    good = next(e for e in a.plan["effects"] if e["term"].startswith("good"))
    assert good["var_per_seed"] == pytest.approx(2.0)  # arm minus baseline with one seed of each: 1 + 1
    assert fp.detectable_at(a.plan, 6)[good["term"]] < fp.detectable_at(a.plan, 3)[good["term"]]


STUDY = """name = "planned"
seeds = [0, 1]
[factors]
"train.lr" = [0.01, 0.02]
"model.dropout" = [0.0, 0.2]
[budgets.t]
"train.max_epochs" = 1
"""


def test_dry_run_prints_the_power_line_when_the_store_holds_trials(tmp_path):
    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy

    f = tmp_path / "planned.toml"
    f.write_text(STUDY)
    db = tmp_path / "runs" / "fmlab.db"
    cmd = ["sweep", str(f), "--budget", "t", "--seeds", "0,1,2", "--dry-run", "--store", str(db)]
    assert "smallest detectable" not in run_cli(*cmd, check=True, cwd=tmp_path).stdout  # nothing stored yet
    st = fstudy.load(f, "t")
    s = Store(db)
    s.plan(st, st.trials())
    rng = np.random.default_rng(3)
    for t in st.trials():  # plant COMPLETE rows through the store's API: no training
        acc = 0.85 + 0.02 * (t.cell["model.dropout"] == 0.2) + rng.normal(0, 0.03)
        s.import_complete(
            t.id,
            metrics={"val_acc": acc, "val_loss": 0.4 - acc / 4, "test_acc": acc - 0.002, "test_loss": 0.41 - acc / 4},
            timings={"total_s": 1.0},
            env={},
            best_epoch=1,
            stop_reason="max_epochs",
            n_params=1,
            epochs=[],
        )
    s.close()
    out = run_cli(*cmd, check=True, cwd=tmp_path).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("with 3 seeds"))  # --seeds 0,1,2: ids unchanged
    assert "smallest detectable main effect" in line and "on val_loss (80% power" in line
    assert "seeds (" in line.split("undecided: ")[1] and "from 8 COMPLETE trials" in line
    assert "to run: 4, already COMPLETE: 8" in out
