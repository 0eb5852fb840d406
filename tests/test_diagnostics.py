"""Robustness of the fitted model (fmlab.analysis.diagnostics): residual tests against scipy on an independent fit,
a planted outlier named, the seed-level check flagging a planted disagreement, transform = "log"."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import synth_arms as arms_synth
from conftest import synth_grid as synth
from scipy import stats
from statsmodels.formula.api import ols
from statsmodels.stats.outliers_influence import OLSInfluence

from fmlab.analysis import diagnostics
from fmlab.analysis.driver import analyse
from fmlab.report import build as report
from fmlab.report import export as results
from fmlab.store.db import Store
from fmlab.study import spec as study

ROOT = Path(__file__).resolve().parents[1]
FORMULA = "~ (C(bn, Sum) + C(pool, Sum) + C(bs, Sum))**2 + C(seed)"


def coded(trials):
    return trials.assign(
        bn=trials["model.batch_norm"].astype(str), pool=trials["model.pool"], bs=trials["train.batch_size"].astype(str)
    )


def test_residual_tests_equal_scipy_on_an_independent_fit():
    trials, epochs, meta = synth(seeds=range(3))
    d = analyse(trials, epochs, meta).diagnostics
    ind = ols("val_acc " + FORMULA, data=coded(trials)).fit()
    r = ind.resid.to_numpy()
    assert d.residuals["id"].tolist() == trials["id"].tolist()
    assert np.allclose(d.residuals["resid"], r) and np.allclose(d.residuals["fitted"], ind.fittedvalues)
    assert np.allclose(d.residuals["student"], OLSInfluence(ind).resid_studentized_external)
    assert d.shapiro_p == pytest.approx(stats.shapiro(r).pvalue)
    # Brown-Forsythe across the levels of batch norm, the largest main effect
    bn = trials["model.batch_norm"].to_numpy()
    assert "model.batch_norm" in d.bf_by
    assert d.bf_p == pytest.approx(stats.levene(r[bn], r[~bn], center="median").pvalue)


def test_planted_outlier_is_named_by_trial_id(tmp_path):
    trials, epochs, meta = synth(seeds=range(3))
    trials.loc[trials["id"] == "s1-1max32", "val_acc"] += 0.03  # 15 noise SDs
    rep = report.build_report(trials, epochs, meta, tmp_path)
    a = analyse(trials, epochs, meta)
    assert [o["id"] for o in a.diagnostics.outliers] == ["s1-1max32"] and a.diagnostics.outliers[0]["student"] > 4
    assert any("s1-1max32" in w and "studentized residual" in w for w in a.warnings)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert [o["id"] for o in s["diagnostics"]["outliers"]] == ["s1-1max32"]
    assert rep["diagnostics"]["brown_forsythe_by"].startswith("residuals grouped by the levels of model.batch_norm")
    md = (tmp_path / "summary.md").read_text()
    assert md.index("## ANOVA") < md.index("## Diagnostics") and "s1-1max32 (" in md
    assert md.count("residuals.png") == 1 and (tmp_path / "residuals.png").stat().st_size > 0
    page = (tmp_path / "index.html").read_text()
    assert page.index("<h2>ANOVA</h2>") < page.index("<h2>Diagnostics</h2>") < page.index("residuals.png")


def test_seed_check_flags_a_planted_disagreement():
    """Batch norm's effect differs by seed (+2.0, 0.0, +1.0 pts): the model, which pools the seed x factor
    spread into a residual with 21 df, calls it real; the seed-paired check (df 2) does not."""
    trials, epochs, meta = synth(seeds=range(3), noise=0.0005)
    per_seed = {0: 0.02, 1: 0.0, 2: 0.01}
    bn = trials["model.batch_norm"].to_numpy()
    trials["val_acc"] += bn * (trials["seed"].map(per_seed) - 0.010)  # synth plants +0.010 in every seed
    a = analyse(trials, epochs, meta)
    d = a.diagnostics
    chk = d.seed_check.set_index("term")
    row = chk.loc["model.batch_norm: true vs false"]
    diffs = trials.groupby(["seed", "model.batch_norm"])["val_acc"].mean().unstack()
    diffs = (diffs[True] - diffs[False]).to_numpy()
    assert row["estimate"] == pytest.approx(diffs.mean()) and row["df"] == 2 and row["n_seeds"] == 3
    half = stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    assert (row["lo"], row["hi"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert row["p"] == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)
    assert row["model_differs"] and not row["check_differs"] and not row["agree"]
    assert chk.loc["model.pool: max vs avg", "agree"]
    line = next(s for s in d.disagreements if "model.batch_norm" in s)
    assert (
        line.startswith(
            "verdict depends on the model: model.batch_norm: true vs false: the fitted model says it differs from 0"
        )
        and "seed-paired check says it does not differ from 0" in line
    )
    assert any(w.startswith("Verdict depends on the model: model.batch_norm") for w in a.warnings)


def test_no_seed_check_with_two_seeds():
    d = analyse(*synth(seeds=range(2))).diagnostics
    assert not len(d.seed_check) and d.disagreements == [] and "needs 3 or more" in d.seed_note
    assert math.isfinite(d.shapiro_p)


def test_log_transform_equals_fitting_log_y_and_says_how_min_effect_reads():
    trials, epochs, meta = synth(seeds=range(3), select="val_loss")
    a = analyse(trials, epochs, {**meta, "transform": "log", "min_effect": {"val_loss": 0.02}})
    ind = ols("np.log(val_loss) " + FORMULA, data=coded(trials)).fit()
    k = "C(bn, Sum)[S.False]"
    bn = a.effects.set_index("term").loc["model.batch_norm: true vs false"]
    assert bn["estimate"] == pytest.approx(-2 * ind.params[k]) and bn["p"] == pytest.approx(ind.pvalues[k])
    lo, hi = ind.conf_int().loc[k]
    assert (bn["lo"], bn["hi"]) == pytest.approx((-2 * hi, -2 * lo))
    assert a.anova.loc["model.batch_norm", "F"] == pytest.approx(ind.tvalues[k] ** 2)
    assert np.allclose(a.diagnostics.residuals["resid"], ind.resid)
    note = f"min_effect 0.02 reads as a ratio inside [{math.exp(-0.02):.4f}, {math.exp(0.02):.4f}]"
    assert any(note in w for w in a.warnings) and any(note in n for n in a.diagnostics.notes)
    plain = analyse(trials, epochs, meta).effects.set_index("term").loc["model.batch_norm: true vs false"]
    assert plain["estimate"] != pytest.approx(bn["estimate"])  # the transform took effect
    acc = analyse(trials, epochs, {**meta, "select": "val_acc", "transform": "log"})
    assert any("applies to loss metrics only" in w for w in acc.warnings)
    with pytest.raises(ValueError, match="must be positive"):
        analyse(trials.assign(val_loss=0.0), epochs, {**meta, "transform": "log"})


def test_transform_parsed_and_carried_to_the_report_inputs(tmp_path):
    text = (ROOT / "studies" / "seed.toml").read_text()
    assert text.count("\nmin_effect = {") == 1  # in [analysis]
    f = tmp_path / "logged.toml"
    f.write_text(text.replace("\nmin_effect = {", '\ntransform = "log"\nmin_effect = {'))
    s = study.load(f, budget="quick")
    assert s.transform == "log" and s.spec()["transform"] == "log"
    assert study.load(ROOT / "studies" / "seed.toml").transform == "none"
    store = Store(tmp_path / "fm.db")
    store.plan(s, s.trials())
    _, _, meta = results.report_inputs(store, s.name, "quick")
    assert meta["transform"] == "log"
    f.write_text(text.replace("\nmin_effect = {", '\ntransform = "sqrt"\nmin_effect = {'))
    with pytest.raises(
        study.StudyError,
        match=r"logged.toml: \[analysis\] key 'transform': bad value 'sqrt'; "
        r"allowed: none, log$",
    ):
        study.load(f)


def test_arms_study_gets_diagnostics(tmp_path):
    trials, epochs, meta = arms_synth(seeds=range(4))
    a = analyse(trials, epochs, meta)
    d = a.diagnostics
    once = trials.drop_duplicates("id")
    assert len(d.residuals) == len(once) and "arm" in d.bf_by
    chk = d.seed_check.set_index("term")
    assert list(chk.index) == ["good vs baseline", "null vs baseline"]  # the twin is the baseline: not a test
    tr = once.assign(arm=once["arm"].replace({"twin": "baseline"}))
    ind = ols("val_acc ~ C(arm, Treatment('baseline')) + C(seed)", data=tr).fit()
    assert d.shapiro_p == pytest.approx(stats.shapiro(ind.resid).pvalue)
    b = tr.set_index(["seed", "arm"])["val_acc"].unstack()
    assert chk.loc["good vs baseline", "estimate"] == pytest.approx((b["good"] - b["baseline"]).mean())
    rep = report.build_report(trials, epochs, meta, tmp_path)
    assert rep["diagnostics"]["seed_check"]["rows"][0]["term"] == "good vs baseline"
    assert "## Diagnostics" in (tmp_path / "summary.md").read_text()


def test_degenerate_inputs():
    assert diagnostics.diagnose(None, synth(seeds=[0])[0], "val_acc", analyse(*synth()).effects, []) is None
    a = analyse(*synth(seeds=[0]))  # one seed: residual df 2, still checked
    assert a.diagnostics is not None and len(a.diagnostics.residuals) == 12
    json.dumps(a.diagnostics.to_dict(), allow_nan=False)


def test_brown_forsythe_is_undefined_when_no_group_has_spread():
    """Groups of two residuals +-e (an arm + seed fit with df 1) have no spread in their deviations from the
    median: the test is undefined (NaN, no divide-by-zero warning); with spread it equals scipy's."""
    import warnings

    import numpy as np
    import pandas as pd
    from scipy import stats

    from fmlab.analysis.diagnostics import brown_forsythe

    g = pd.Series(["a", "a", "b", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(brown_forsythe(np.array([0.01, -0.01, 0.02, -0.02]), g))
    r, g3 = np.array([0.0, 0.1, 0.3, 0.0, 0.2, 0.9]), pd.Series(list("aaabbb"))
    assert brown_forsythe(r, g3) == stats.levene(r[:3], r[3:], center="median").pvalue
