"""Analysis and report on synthetic studies with known effects; the pages checked in headless Chromium."""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import BN_EFFECT, BS128_EFFECT, OPTS, tiny_config
from conftest import synth_grid as synth
from scipy import stats

from fmlab.analysis.driver import analyse
from fmlab.analysis.formatting import level_label
from fmlab.analysis.ranking import best_trial
from fmlab.analysis.stats import VERDICTS
from fmlab.config.states import State
from fmlab.report import build as report
from fmlab.training import checkpoint
from fmlab.training.loop import train

_spec = importlib.util.spec_from_file_location(
    "report_files", Path(__file__).resolve().parents[1] / "scripts" / "report_files.py"
)
report_files = importlib.util.module_from_spec(_spec)  # scripts/report_files.py: the dev path, not the user CLI
_spec.loader.exec_module(report_files)


def effect(a, term):
    return a.effects.set_index("term").loc[term]


def test_known_effect_recovered_and_null_factor_is_noise():
    a = analyse(*synth())
    bn = effect(a, "model.batch_norm: true vs false")
    assert bn["lo"] < BN_EFFECT < bn["hi"] and bn["lo"] > 0
    assert abs(bn["estimate"] - BN_EFFECT) < 0.003
    assert bn["verdict"] == "matters" and bn["n_seeds"] == 6 and bn["df"] == 72 - 15  # 15 params
    bs = effect(a, "train.batch_size: 128 vs 64")
    assert bs["lo"] < BS128_EFFECT < bs["hi"] and bs["verdict"] == "matters"
    pool = effect(a, "model.pool: max vs avg")
    assert pool["lo"] < 0 < pool["hi"] and pool["verdict"] == "no effect larger than X"
    assert effect(a, "train.batch_size: 32 vs 64")["verdict"] == "no effect larger than X"
    pair = effect(a, "train.batch_size: 128 vs 32")  # a 3-level factor's other pair is an effect too
    assert abs(pair["estimate"] - BS128_EFFECT) < 0.003 and pair["verdict"] == "matters"
    text = "\n".join(a.findings)
    assert text.startswith("best: batch_norm=true, pool=")
    assert "matters: model.batch_norm: true vs false: +1." in text and "pts [" in text and "% of the variance" in text
    assert "no effect larger than 0.50 pts (" in text and "model.pool: max vs avg" in text


def test_effect_and_cell_ci_match_a_statsmodels_fit_made_here():
    """The batch-norm effect and a cell's CI against OLS fits made directly in the test: the two-way model
    in sum coding (a 2-level main effect is -2 x its level-0 coefficient) and the cell-means model."""
    from statsmodels.formula.api import ols

    trials, epochs, meta = synth()
    a = analyse(trials, epochs, meta)
    d = trials.assign(
        bn=trials["model.batch_norm"].astype(str), pool=trials["model.pool"], bs=trials["train.batch_size"].astype(str)
    )
    ind = ols("val_acc ~ (C(bn, Sum) + C(pool, Sum) + C(bs, Sum))**2 + C(seed)", data=d).fit()
    k = "C(bn, Sum)[S.False]"
    lo, hi = ind.conf_int().loc[k]
    bn = effect(a, "model.batch_norm: true vs false")
    assert bn["estimate"] == pytest.approx(-2 * ind.params[k])
    assert (bn["lo"], bn["hi"]) == pytest.approx((-2 * hi, -2 * lo))
    assert bn["p"] == pytest.approx(ind.pvalues[k]) and bn["df"] == ind.df_resid == 57
    per_seed = trials.groupby(["seed", "model.batch_norm"])["val_acc"].mean().unstack()
    assert bn["estimate"] == pytest.approx((per_seed[True] - per_seed[False]).mean())  # balanced: same point
    cm = ols("val_acc ~ C(cell) + C(seed)", data=d.assign(cell=d["bn"] + d["pool"] + d["bs"])).fit()
    cell = a.cells.set_index("cell").loc["batch_norm=true, pool=avg, batch_size=64"]
    vals = trials.query("`model.batch_norm` and `model.pool` == 'avg' and `train.batch_size` == 64")["val_acc"]
    half = stats.t.ppf(0.975, cm.df_resid) * math.sqrt(cm.scale / len(vals))  # pooled residual SD, not the cell's
    assert (cell["val_acc_mean"], cell["val_acc_lo"], cell["val_acc_hi"], cell["n"]) == pytest.approx(
        (vals.mean(), vals.mean() - half, vals.mean() + half, 6)
    )
    assert a.cells["rank"].tolist() == list(range(1, 13))
    assert a.cells["val_acc_mean"].is_monotonic_decreasing


def test_a_cell_missing_a_seed_is_ranked_on_its_seed_adjusted_mean(tmp_path):
    """A study part-way through a seed (some cells have seeds 0-2, others 0-1): the cell table's means and
    intervals are the cell-means model's (statsmodels fitted here: cell + seed, averaged over seeds), rank 1
    is the best set's best, and the figure draws every mean inside its interval."""
    from statsmodels.formula.api import ols

    from fmlab.report import figures_trials

    drop = ("s2-1avg32", "s2-1avg64", "s2-0max64", "s2-1max128")
    trials, epochs, meta = synth(seeds=range(3), noise=0.004, drop=drop)
    a = analyse(trials, epochs, meta)
    levels = zip(trials["model.batch_norm"], trials["model.pool"], trials["train.batch_size"], strict=True)
    d = trials.assign(cell=[f"{str(b).lower()}{p}{s}" for b, p, s in levels])
    cm = ols("val_acc ~ C(cell) + C(seed)", data=d).fit()
    for _, r in a.cells.iterrows():
        key = f"{str(r['model.batch_norm']).lower()}{r['model.pool']}{r['train.batch_size']}"
        at = cm.predict(pd.DataFrame({"cell": [key] * 3, "seed": [0, 1, 2]}))
        assert r["val_acc_mean"] == pytest.approx(at.mean(), abs=1e-12)
        assert r["val_acc_raw_mean"] == pytest.approx(d.loc[d["cell"] == key, "val_acc"].mean())
        assert r["val_acc_lo"] < r["val_acc_mean"] < r["val_acc_hi"]
    assert sorted(a.cells["n"].unique()) == [2, 3]
    assert (a.cells["val_acc_mean"] != a.cells["val_acc_raw_mean"]).any()  # the seed offsets make them differ
    assert a.cells["rank"].tolist() == list(range(1, 13)) and a.cells["val_acc_mean"].is_monotonic_decreasing
    assert a.cells["cell"].iloc[0] == a.best["best"]
    assert figures_trials.cells(a, tmp_path / "cells.png").stat().st_size > 0


def test_holm_over_one_family_of_tests_of_zero_and_tost():
    from statsmodels.stats.multitest import multipletests

    a = analyse(*synth())
    both = pd.concat([a.effects, a.interactions])
    assert len(a.effects) == 5 and len(a.interactions) == 1 + 2 + 2  # bs: 32 vs 64, 128 vs 64, 128 vs 32
    adj = multipletests(
        np.r_[a.effects["p"], a.effects["p_tost"], a.interactions["p"], a.interactions["p_tost"]], method="holm"
    )[1]
    assert np.allclose(
        np.r_[a.effects["p_holm"], a.effects["p_tost_holm"], a.interactions["p_holm"], a.interactions["p_tost_holm"]],
        adj,
    )
    assert (both["p_holm"] >= both["p"] - 1e-12).all() and (both["m_tests"] == 20).all()
    assert any(f.startswith("Holm over 20 tests") for f in a.findings)


def test_anova_table_present():
    a = analyse(*synth())
    assert a.anova is not None
    for term in (
        "model.batch_norm",
        "model.pool",
        "train.batch_size",
        "seed",
        "Residual",
        "model.batch_norm x train.batch_size",
    ):
        assert term in a.anova.index
    assert a.anova.loc["model.batch_norm", "PR(>F)"] < 1e-6
    assert a.anova.loc["train.batch_size", "df"] == 2
    assert "type-2" in a.anova_note
    # a full-rank design: the same table as statsmodels' anova_lm (typ 2) of the same model fitted here
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    t = synth()[0]
    d = t.assign(bn=t["model.batch_norm"].astype(str), pool=t["model.pool"], bs=t["train.batch_size"].astype(str))
    ref = anova_lm(ols("val_acc ~ (C(bn) + C(pool) + C(bs))**2 + C(seed)", data=d).fit(), typ=2)
    names = {"C(bn)": "model.batch_norm", "C(pool)": "model.pool", "C(bs)": "train.batch_size", "C(seed)": "seed"}
    for k, v in names.items():
        ref.index = [i.replace(k, v).replace(":", " x ") for i in ref.index]
    got = a.anova.loc[ref.index, ["sum_sq", "df", "F", "PR(>F)"]]
    assert np.allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-7, equal_nan=True)


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")  # the nested fits made here
def test_anova_rows_are_type2_drops_in_residual_ss_while_a_pair_of_levels_is_untried():
    """Batch norm never tried with batch 128 yet: the batch norm x batch size interaction has 2 columns but
    the trials identify 1. Each ANOVA row must be the type-2 definition, fitted here as nested models: the
    drop in residual SS (and df) from the model without the term and the terms containing it. anova_lm
    alone counts columns (df 2) and gives batch norm a NaN F."""
    from statsmodels.formula.api import ols

    trials, epochs, meta = synth()
    trials = trials[~(trials["model.batch_norm"] & (trials["train.batch_size"] == 128))]
    a = analyse(trials, epochs, meta)
    d = trials.assign(
        bn=trials["model.batch_norm"].astype(str), pool=trials["model.pool"], bs=trials["train.batch_size"].astype(str)
    )
    terms = {
        "model.batch_norm": "C(bn)",
        "model.pool": "C(pool)",
        "train.batch_size": "C(bs)",
        "seed": "C(seed)",
        "model.batch_norm x model.pool": "C(bn):C(pool)",
        "model.batch_norm x train.batch_size": "C(bn):C(bs)",
        "model.pool x train.batch_size": "C(pool):C(bs)",
    }

    def rss(drop):
        f = ols("val_acc ~ " + " + ".join(t for n, t in terms.items() if n not in drop), data=d).fit()
        return f.ssr, f.df_resid

    full_ssr, full_df = rss(())
    assert a.anova.loc["Residual", "df"] == full_df and a.anova.loc["Residual", "sum_sq"] == pytest.approx(full_ssr)
    for name in terms:
        containing = [n for n in terms if set(name.split(" x ")) < set(n.split(" x "))]
        ssr0, df0 = rss(containing)
        ssr1, df1 = rss([name, *containing])
        assert a.anova.loc[name, "df"] == df1 - df0, name
        assert a.anova.loc[name, "sum_sq"] == pytest.approx(ssr1 - ssr0, rel=1e-6, abs=1e-12), name
    assert a.anova.loc["model.batch_norm x train.batch_size", "df"] == 1
    assert a.anova["share_ss"].sum() == pytest.approx(1.0)


def test_one_seed_study_fits_with_the_higher_order_terms_as_error_and_says_so():
    a = analyse(*synth(seeds=[0]))
    assert any("one seed" in w.lower() and "higher-order" in w for w in a.warnings)
    bn = effect(a, "model.batch_norm: true vs false")
    assert bn["df"] == 12 - 10 and bn["n_seeds"] == 1  # 12 cells, 10 parameters of the two-way model
    assert bn["lo"] < BN_EFFECT < bn["hi"] and set(a.effects["verdict"]) <= set(VERDICTS)
    assert "one seed" in a.model_note and "residual df 2" in a.model_note
    assert a.anova is not None and "one seed" in a.anova_note  # the residual is the higher-order terms


def test_failed_waiting_and_missing_trials_counted_and_named():
    fail = ("s0-0max64", "s2-1avg32")
    drop = ("s1-0avg32",) + tuple(f"s{s}-1max128" for s in range(6))  # one row lost, one whole cell never run
    trials, epochs, meta = synth(fail=fail, drop=drop, states={"s3-0avg32": State.WAITING})
    a = analyse(trials, epochs, meta)
    c = a.counts
    assert (c["failed"], c["waiting"], c["missing"], c["planned"]) == (2, 1, 7, 72)
    assert c["complete"] == 72 - 7 - 2 - 1
    text = " ".join(a.warnings)
    assert "2 trial(s) FAILED" in text and all(f in text for f in fail)
    assert "1 trial(s) WAITING" in text and "7 of 72 planned trial(s) have no row" in text
    assert "batch_norm=true, pool=max, batch_size=128" in a.missing_cells and "1 of 12 cells" in text
    bn = effect(a, "model.batch_norm: true vs false")  # still recovered from the balanced pairs left
    assert bn["lo"] < BN_EFFECT < bn["hi"]


def test_a_factor_not_yet_varied_is_untested_and_left_out_of_the_fit():
    """A study in progress whose COMPLETE trials all have batch_norm=false: its effect is untested, it has no
    ANOVA row (an all-zero design column would make that row numerical noise), the rest is estimated."""
    trials, epochs, meta = synth(seeds=[0, 1])
    a = analyse(trials[~trials["model.batch_norm"]], epochs, meta)
    assert effect(a, "model.batch_norm: true vs false")["verdict"].startswith("untested")
    assert list(a.effects["factor"]) == ["model.batch_norm", "model.pool", *["train.batch_size"] * 3]
    assert "model.batch_norm" not in a.anova.index and a.anova.loc["Residual", "df"] == 12 - 7 - 0
    assert effect(a, "train.batch_size: 128 vs 64")["verdict"] == "matters"


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_degenerate_studies_do_not_crash(tmp_path, keep):
    trials, epochs, meta = synth(seeds=[0])
    trials = trials.head(keep)
    a = analyse(trials, epochs, meta)
    assert len(a.cells) == keep
    rep = report.build_report(trials, epochs, meta, tmp_path)
    json.dumps(rep, allow_nan=False)


def test_no_complete_trials(tmp_path):
    trials, epochs, meta = synth(seeds=[0], fail=tuple(synth(seeds=[0])[0]["id"]))
    rep = report.build_report(trials, epochs, meta, tmp_path)
    assert "No complete trials: nothing to analyse." in rep["warnings"]
    assert (tmp_path / "index.html").exists() and (tmp_path / "hiplot.html").exists()


def test_loss_selection_and_quick_label():
    a = analyse(*synth(select="val_loss", budget="quick"))
    assert a.label == "synth study (quick: indicative only)" and a.warnings[0].startswith("Quick budget")
    bn = effect(a, "model.batch_norm: true vs false")
    assert bn["estimate"] < 0 and bn["verdict"] == "real but smaller than X"  # 0.0025 < min_effect 0.01
    assert any(f.startswith("real but smaller than 0.0100") and "model.batch_norm" in f for f in a.findings)
    assert a.cells["val_loss_mean"].is_monotonic_increasing
    with pytest.raises(ValueError, match="never test"):
        analyse(*synth(select="test_acc"))


def test_report_files_script_json(tmp_path, capsys):
    trials, epochs, meta = synth(seeds=[0, 1], budget="quick")
    trials.to_csv(tmp_path / "trials.csv", index=False)
    epochs.to_csv(tmp_path / "epochs.csv", index=False)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    args = [
        "--trials",
        str(tmp_path / "trials.csv"),
        "--epochs",
        str(tmp_path / "epochs.csv"),
        "--meta",
        str(tmp_path / "meta.json"),
        "--out",
        str(tmp_path / "rep"),
        "--format",
        "json",
    ]
    assert report_files.main(args) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["label"].endswith("(quick: indicative only)") and rep["counts"]["complete"] == 24
    metrics = [e["metric"] for e in rep["effects"]]  # 5 main + 5 two-way on the selection metric, then on test_acc
    assert metrics == ["val_acc"] * 10 + ["test_acc"] * 10 and rep["top_cells"][0]["rank"] == 1
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "quick: indicative only" in md and "![" in md
    assert report_files.main(args[:-2] + ["--format", "table"]) == 0
    assert "top cells by val_acc" in capsys.readouterr().out


def test_confusion_matches_training_evaluation(tiny_ckpt):
    best = report.test_confusion(tiny_ckpt)
    meta = json.loads((tiny_ckpt / "trial.json").read_text())
    assert best["n_test"] == 10_000 and np.asarray(best["confusion"]).sum() == 10_000
    assert best["test_acc"] == pytest.approx(meta["metrics"]["test_acc"], abs=1e-4)


def test_confusion_tests_through_the_trials_views(tiny_ds, tmp_path):
    """A trial tested with the mirror and shifted views: the report's best-trial accuracy is the trial's own
    test accuracy, not the bare network's (which differs on this net, so the check can fail)."""
    res = train(tiny_config(**{"train.tta": True, "train.tta_shifts": 1}), tiny_ds, OPTS)
    ckpt = checkpoint.save_trial(res, tmp_path / res.trial_id)
    best = report.test_confusion(ckpt)
    assert best["test_acc"] == pytest.approx(res.metrics["test_acc"], abs=1e-4)
    bare = tiny_config(**{"train.tta": False})
    plain = checkpoint.save_trial(res, tmp_path / "plain")
    tj = json.loads((plain / "trial.json").read_text())
    tj["config"] = bare.to_record()
    (plain / "trial.json").write_text(json.dumps(tj))
    assert abs(report.test_confusion(plain)["test_acc"] - best["test_acc"]) > 1e-4


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_ckpt):
    out = tmp_path_factory.mktemp("report")
    trials, epochs, meta = synth(seeds=range(3), fail=("s1-0max64",), budget="quick")
    return out, trials, report.build_report(trials, epochs, meta, out, best_ckpt=tiny_ckpt)


def _not_blank(png: bytes) -> float:
    from PIL import Image

    im = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return float(im.std())


def test_report_files(built):
    out, trials, rep = built
    for name in (
        "index.html",
        "summary.md",
        "hiplot.html",
        "cells.png",
        "curves.png",
        "main_effects.png",
        "interactions.png",
        "confusion.png",
        "residuals.png",
        "cells.csv",
        "effects.csv",
        "anova.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    page = (out / "index.html").read_text()
    assert "quick: indicative only" in page and "s1-0max64" in page and "http" not in page
    assert rep["best"]["n_test"] == 10_000


def test_pages_in_headless_chromium(built, tmp_path):
    pytest.importorskip("websocket", reason="pip install websocket-client (the dev extra) for the browser check")
    from browser import CHROMIUM, Browser

    if CHROMIUM is None:
        pytest.skip("chromium not installed: apt-get install -y chromium")
    out, trials, _ = built
    with Browser() as b:
        b.open(out / "index.html")
        imgs = b.js("[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(imgs) == 7 and imgs[0][0] == "forest.png" and all(ok and w > 0 for _, ok, w in imgs), imgs
        assert b.problems() == []
        shot = b.screenshot(tmp_path / "index.png").read_bytes()
        assert _not_blank(shot) > 10

        b.open(out / "hiplot.html", settle_s=0.5)
        assert "synth study (quick: indicative only): 36 trials" in b.js("document.body.innerText")
        sel = b.wait_for("(document.body.innerText.match(/Selected:\\s*(\\d+)\\s*\\/\\s*(\\d+)/) || []).slice(1)")
        assert sel == [str(len(trials))] * 2
        info = b.wait_for("(document.body.innerText.match(/of (\\d+) entries/) || [])[1]")
        assert int(info) == len(trials) == 36
        ids = b.js("[...document.querySelectorAll('table tbody tr td:nth-child(2)')].map(td => td.innerText)")
        assert len(ids) == 10 and set(ids) <= set(trials["id"])
        inked = b.wait_for("""Math.max(0, ...[...document.querySelectorAll('canvas')].map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; }))""")
        assert inked > 1000, "parallel plot drew no lines"
        assert b.problems() == []
        assert _not_blank(b.screenshot(tmp_path / "hiplot.png", full=False).read_bytes()) > 10


def test_contract_errors_name_the_problem(tmp_path):
    trials, epochs, meta = synth(seeds=[0, 1])
    with pytest.raises(ValueError, match=r"model.pool: trial values \['min'\] are not among"):
        analyse(trials.assign(**{"model.pool": "min"}), epochs, meta)
    with pytest.raises(ValueError, match="lacks columns"):
        analyse(trials.drop(columns=["seed"]), epochs, meta)


def test_study_without_factors_and_without_epochs(tmp_path):
    trials, _, meta = synth(seeds=[0, 1, 2])
    trials = trials[(trials["train.batch_size"] == 64) & ~trials["model.batch_norm"] & (trials["model.pool"] == "avg")]
    rep = report.build_report(trials, pd.DataFrame(), {**meta, "factors": {}, "baseline": {}, "planned": 3}, tmp_path)
    assert rep["counts"]["complete"] == 3 and rep["effects"] == [] and len(rep["top_cells"]) == 1
    assert set(rep["figures"]) == {"cells"}


def test_levels_match_across_storage_round_trips():
    """SQLite gives booleans as 0/1, CSV may give 64.0 or '1e-3': all land on the study's levels."""
    assert level_label(1, boolean=True) == level_label(True) == level_label("True")
    assert level_label(64.0) == level_label("64") == level_label(64) == "64"
    assert level_label("1e-3") == level_label(0.001) and level_label("max") == "max"
    trials, epochs, meta = synth(seeds=[0, 1, 2])
    stored = trials.assign(
        **{
            "model.batch_norm": trials["model.batch_norm"].astype(int),
            "train.batch_size": trials["train.batch_size"].astype(float),
        }
    )
    a, b = analyse(trials, epochs, meta), analyse(stored, epochs, meta)
    assert a.findings == b.findings


def test_best_trial_is_chosen_on_validation():
    trials, _, _ = synth(seeds=[0, 1], fail=("s0-1avg64",))
    trials.loc[trials["id"] == "s0-0avg32", "test_acc"] = 0.99  # a test score must not sway the choice
    best = best_trial(trials, "val_acc")
    assert best == trials.loc[trials["val_acc"].idxmax(), "id"]
    assert best_trial(trials, "val_loss") == trials.loc[trials["val_loss"].idxmin(), "id"]
    with pytest.raises(ValueError, match="never on test"):
        best_trial(trials, "test_acc")


def test_summary_json_has_model_effects_best_set_and_df(tmp_path):
    report.build_report(*synth(seeds=range(2)), tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    bn = next(e for e in s["effects"] if e["term"] == "model.batch_norm: true vs false" and e["metric"] == "val_acc")
    assert bn["df"] == 24 - 11 and bn["verdict"] == "matters" and bn["lo"] < BN_EFFECT < bn["hi"]
    assert s["best_set"]["best"].startswith("batch_norm=true") and "Hsu" in s["best_set"]["method"]
    assert s["best_set"]["best"] in s["best_set"]["set"]
    assert "df" in pd.read_csv(tmp_path / "effects.csv").columns
    assert (tmp_path / "index.html").read_text().count("best: batch_norm=true") == 1
