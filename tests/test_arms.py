"""Arms studies: parsing and validation, trial planning (shared trials run once), the arm-vs-baseline
analysis on synthetic results with known effects, and a tiny arms study end to end through the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import ARMS_GOOD as GOOD
from conftest import run_cli
from conftest import synth_arms as synth
from statsmodels.stats.multitest import multipletests

from fmlab.analysis.driver import analyse
from fmlab.analysis.formatting import fmt_p
from fmlab.config.schema import Config, with_overrides
from fmlab.config.states import State
from fmlab.report import build as report
from fmlab.report import export as results
from fmlab.store.db import Store
from fmlab.study import spec as fstudy

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = '"model.widths" = "8,16,16"\n"data.train_subset" = 600\n"data.val_size" = 300\n"train.max_epochs" = 1\n'


def write(tmp: Path, body: str, name: str = "arms", seeds=(0, 1)) -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(f'name = "{name}"\nseeds = {list(seeds)}\nselect = "val_acc"\n[base]\n{TINY_BASE}{body}')
    return p


ARMS = """
[arms.lr_hi]
"train.lr" = 3e-3
[arms.mom]
"train.momentum" = 0.5
[arms.bn]
"model.batch_norm" = true
[arms.bn_nobias]
"model.batch_norm" = true
"model.conv_bias" = false
"""


# ---------------------------------------------------------------- parsing and validation


def test_further_study_parses_and_each_arm_changes_only_its_keys():
    path = ROOT / "studies" / "further.toml"
    full, quick = fstudy.load(path, "full"), fstudy.load(path, "quick")
    assert full.design == "arms" and full.select == "val_acc" and full.seeds == (0, 1, 2, 3, 4)
    assert len(full.arms) >= 20 and len(full.trials()) == (len(full.arms) + 1) * 5  # no two arms alike
    assert quick.seeds == (0, 1) and quick.label == "quick: indicative only"
    assert len(quick.trials()) == (len(quick.arms) + 1) * 2
    base = with_overrides(Config(), full.base).resolved().flat()
    assert base == Config().resolved().flat()  # fmlab's defaults are the seed study's best cell
    for name, changes in full.arms.items():
        flat = with_overrides(Config(), {**full.base, **changes}).resolved().flat()
        diff = {k for k in flat if flat[k] != base[k]}
        # conv_bias is derived from batch_norm ("auto"), so a batch-norm arm may change it too
        assert diff and diff <= set(changes) | {"model.conv_bias"}, (name, diff)


def test_arms_trials_are_baseline_plus_arms_times_seeds(tmp_path):
    st = fstudy.load(write(tmp_path, '[arms.lr_hi]\n"train.lr" = 3e-3\n[arms.cosine]\n"train.schedule" = "cosine"\n'))
    assert [c["arm"] for c in st.cells()] == ["baseline", "lr_hi", "cosine"]
    trials = st.trials()
    assert len(trials) == 3 * 2 and len({t.id for t in trials}) == 6
    by = {(t.cell["arm"], t.seed): t.config for t in trials}
    assert by[("lr_hi", 1)].train.lr == 3e-3 and by[("lr_hi", 1)].seed == 1
    assert by[("cosine", 0)].train.schedule == "cosine" and by[("baseline", 0)].train.schedule == "constant"
    assert by[("baseline", 0)].model.widths == (8, 16, 16)  # [base] applies to every arm
    assert st.spec()["design"] == "arms" and st.spec()["arms"]["lr_hi"] == {"train.lr": 3e-3}


BAD = {  # case: (study body, budget, what the one-line error must name)
    "unknown_key": ('[arms.x]\n"train.lrr" = 1\n', "full", ["[arms.x]", "train.lrr", "train.lr,"]),
    "bad_value": (
        '[arms.cos]\n"train.schedule" = "cosyne"\n',
        "full",
        ["[arms.cos]", "train.schedule", "'cosine'", "'onecycle'"],
    ),
    "out_of_range": ('[arms.big]\n"model.dropout" = 1.5\n', "full", ["[arms.big]", "model.dropout", "0.0..0.99"]),
    "factors_and_arms": (
        '[factors]\n"train.lr" = [1e-3]\n[arms.x]\n"train.lr" = 3e-3\n',
        "full",
        ["[factors]", "[arms]", "not both"],
    ),
    "empty_arms": ("[arms]\n", "full", ["[arms] is empty"]),
    "arm_without_keys": ("[arms.nothing]\n", "full", ["[arms.nothing]", "changes no key"]),
    "reserved_name": ('[arms.baseline]\n"train.lr" = 3e-3\n', "full", ["[arms.baseline]", "reserved"]),
    "dotted_name": ('[arms.wd0.05]\n"train.lr" = 3e-3\n', "full", ["[arms.wd0.05]", "quoted"]),
    "arm_seed": ("[arms.s]\nseed = 3\n", "full", ["[arms.s]", "seeds"]),
    "budget_overrides_arm": (
        '[arms.long]\n"train.max_epochs" = 5\n[budgets.quick]\n"train.max_epochs" = 2\n',
        "quick",
        ["[budgets.quick]", "train.max_epochs", "[arms.long]"],
    ),
    "budget_arm_unknown": (
        '[arms.a]\n"train.lr" = 3e-3\n[budgets.r1]\narms = ["b"]\n',
        "full",
        ["[budgets.r1]", "[arms.b]", "allowed: a"],
    ),
    "budget_arm_baseline": (
        '[arms.a]\n"train.lr" = 3e-3\n[budgets.r1]\narms = ["baseline"]\n',
        "full",
        ["[budgets.r1] key 'arms'", "the baseline always runs"],
    ),
    "budget_arm_twice": (
        '[arms.a]\n"train.lr" = 3e-3\n[budgets.r1]\narms = ["a", "a"]\n',
        "r1",
        ["[budgets.r1]", "twice"],
    ),
    "budget_arms_empty": (
        '[arms.a]\n"train.lr" = 3e-3\n[budgets.r1]\narms = []\n',
        "r1",
        ["[budgets.r1]", "non-empty list"],
    ),
    "budget_arms_in_a_grid": (
        '[factors]\n"train.lr" = [1e-3]\n[budgets.r1]\narms = ["a"]\n',
        "r1",
        ["no [arms.*] tables"],
    ),
    "clash_with_base": (
        '[arms.cos]\n"train.schedule" = "cosine"\n"train.lr_min" = 0.5\n',
        "full",
        ["[arms.cos]", "train.lr_min"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_arms_name_file_arm_and_key(tmp_path, case):
    body, budget, needles = BAD[case]
    f = write(tmp_path, body)
    with pytest.raises(fstudy.StudyError) as e:
        fstudy.load(f, budget)
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_bad_arm_via_cli_exits_2_and_leaves_the_store_untouched(tmp_path):
    good = write(tmp_path, '[arms.lr_hi]\n"train.lr" = 3e-3\n', name="good")
    db = tmp_path / "fm.db"
    Store(db).plan(fstudy.load(good), fstudy.load(good).trials())  # an existing store, nothing run
    before = db.read_bytes()
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text() + '[arms.act]\n"model.activation" = "swish"\n')
    p = run_cli("sweep", str(bad), "--store", str(db))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert all(s in lines[0] for s in (str(bad), "[arms.act]", "model.activation", "'gelu'"))
    assert db.read_bytes() == before
    p = run_cli("sweep", str(bad), "--store", str(tmp_path / "new" / "fm.db"))
    assert p.returncode == 2 and not (tmp_path / "new").exists()


ROUNDS = """
[arms.ema]
"train.momentum" = 0.5
[arms.flip]
"train.lr" = 3e-3
[arms.combined]
"train.momentum" = 0.5
"train.lr" = 3e-3
[budgets.r1]
arms = ["ema", "flip"]
"data.val_size" = 200
[budgets.r2]
arms = ["flip", "combined"]
"data.train_subset" = 700
"""


def test_a_budget_runs_the_arms_it_names_so_each_round_is_a_budget(tmp_path):
    """[budgets.r2] arms = [...]: that round's arms beside the baseline, in the order given; the key leaves every
    trial id alone (round 1's ids are those of the file before round 2's arms were written into it), and each
    round's report reads its own arms whichever round the store last planned."""
    f = write(tmp_path, ROUNDS)
    r1, r2, full = (fstudy.load(f, b) for b in ("r1", "r2", "full"))
    assert [c["arm"] for c in r1.cells()] == ["baseline", "ema", "flip"]
    assert [c["arm"] for c in r2.cells()] == ["baseline", "flip", "combined"]
    assert list(full.arms) == ["ema", "flip", "combined"] and list(r2.arm_tables) == list(full.arms)
    before = write(tmp_path, ROUNDS.split("[arms.combined]")[0] + '[budgets.r1]\n"data.val_size" = 200\n', "before")
    assert [t.id for t in r1.trials()] == [t.id for t in fstudy.load(before, "r1").trials()]
    assert not {t.id for t in r1.trials()} & {t.id for t in r2.trials()}
    store = Store(tmp_path / "fm.db")
    for st in (r1, r2):  # r2 planned last: the stored spec is r2's
        store.plan(st, st.trials())
    for budget, arms in (("r1", ["ema", "flip"]), ("r2", ["flip", "combined"])):
        tr, ep, meta = results.report_frames(store, "arms", budget)
        assert list(meta["arms"]) == arms and meta["factors"] == {"arm": ["baseline", *arms]}
        assert sorted(set(tr.arm)) == sorted(["baseline", *arms]) and len(tr) == 3 * 2
    store.close()


def test_an_arm_added_to_the_file_after_the_sweep_planned_counts_as_missing(tmp_path):
    """publish and report read the study file's spec (record_study) while the store's rows are the ones a
    sweep planned: an arm the file gained since is planned but has no row, and the report says so."""
    f = write(tmp_path, '[arms.lr_hi]\n"train.lr" = 3e-3\n')
    store = Store(tmp_path / "fm.db")
    store.plan(fstudy.load(f), fstudy.load(f).trials())
    assert results.report_inputs(store, "arms")[2]["planned"] == 2 * 2
    f.write_text(f.read_text() + '[arms.cosine]\n"train.schedule" = "cosine"\n')
    store.record_study(fstudy.load(f))
    tr, ep, meta = results.report_frames(store, "arms")
    assert len(tr) == 4 and meta["planned"] == 3 * 2
    a = analyse(tr, ep, meta)
    assert (a.counts["planned"], a.counts["missing"]) == (6, 2)
    assert "2 of 6 planned trial(s) have no row at all." in a.warnings
    store.close()


# ---------------------------------------------------------------- planning: shared trials


def test_arms_that_resolve_alike_share_one_trial_and_both_are_linked(tmp_path):
    st = fstudy.load(write(tmp_path, ARMS))
    trials = st.trials()
    # mom: momentum is unused under adam (resolved() resets it), so it is the baseline's own trial;
    # bn_nobias: conv_bias "auto" already means no bias with batch norm, so it is bn's trial
    assert len(trials) == 3 * 2
    cells = {(t.cell["arm"], t.seed): t.cell for t in trials}
    assert cells[("baseline", 0)] == {"arm": "baseline", "also": ["mom"]}
    assert cells[("bn", 1)] == {"arm": "bn", "also": ["bn_nobias"]}
    assert cells[("lr_hi", 0)] == {"arm": "lr_hi"}
    db = tmp_path / "fm.db"
    store = Store(db)
    plan = store.plan(st, trials)
    assert len(plan.ids) == len(plan.todo) == 6
    con = sqlite3.connect(db)
    links = {t: json.loads(c) for t, c in con.execute("SELECT trial, cell FROM study_trials")}
    assert len(links) == 6 and sum("also" in c for c in links.values()) == 4
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 6
    assert json.loads(con.execute("SELECT factors FROM studies").fetchone()[0]) == ["arm"]
    rows, _ = results.tables(store, "arms")
    assert len(rows) == 5 * 2  # one row per arm and seed: shared trials appear under each arm
    assert sorted(r["arm"] for r in rows if r["seed"] == 0) == ["baseline", "bn", "bn_nobias", "lr_hi", "mom"]
    _, _, meta = results.report_inputs(store, "arms")
    assert meta["design"] == "arms" and meta["factors"] == {"arm": ["baseline", "lr_hi", "mom", "bn", "bn_nobias"]}
    assert meta["baseline"] == {"arm": "baseline"} and meta["arms"]["bn_nobias"]["model.conv_bias"] is False
    # an arm added later that shares existing trials: the link now names it too (no new trial)
    f2 = write(tmp_path, ARMS + '[arms.nesterov_unused]\n"train.nesterov" = true\n', name="arms")
    st2 = fstudy.load(f2)
    store.plan(st2, st2.trials())
    assert con.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 6
    base0 = next(t.id for t in trials if t.cell["arm"] == "baseline" and t.seed == 0)
    cell = json.loads(con.execute("SELECT cell FROM study_trials WHERE trial = ?", (base0,)).fetchone()[0])
    assert cell == {"arm": "baseline", "also": ["mom", "nesterov_unused"]}
    store.close()
    con.close()


# ---------------------------------------------------------------- analysis on synthetic results


def test_arm_analysis_recovers_a_known_effect_and_calls_the_null_arm_noise():
    a = analyse(*synth())
    assert a.design == "arms"
    eff = a.effects.set_index("arm")
    g, n, tw = eff.loc["good"], eff.loc["null"], eff.loc["twin"]
    assert g["lo"] > 0 and g["lo"] < GOOD < g["hi"] and abs(g["estimate"] - GOOD) < 0.003
    assert g["verdict"] in ("matters", "real but smaller than X") and g["n_seeds"] == 6
    assert -0.005 < n["lo"] and n["hi"] < 0.005 and n["verdict"] != "matters"  # inside min_effect 0.5 pts
    assert tw["verdict"].startswith("same trials as the baseline") and not np.isfinite(tw["p"])
    # Holm over one family: the two arms tested (the twin is not a test) and their TOSTs
    ps = eff.loc[["good", "null"], ["p", "p_tost"]].to_numpy().T.ravel()
    assert np.allclose(eff.loc[["good", "null"], "p_holm"], multipletests(ps, method="holm")[1][:2])
    assert (eff.loc[["good", "null"], "m_tests"] == 4).all()
    t = a.test_effects.set_index("arm")
    assert t.loc["good", "lo"] > 0 and t.loc["good", "metric"] == "test_acc"
    # the estimate is a contrast of val_acc ~ C(arm) + C(seed), fitted independently here
    from statsmodels.formula.api import ols

    tr = synth()[0]
    tr = tr[tr.state == State.COMPLETE].drop_duplicates("id")
    tr = tr[tr.arm.isin(["baseline", "good", "null"])]
    ind = ols("val_acc ~ C(arm, Treatment('baseline')) + C(seed)", data=tr).fit()
    k = "C(arm, Treatment('baseline'))[T.good]"
    assert np.isclose(g["estimate"], ind.params[k]) and np.allclose([g["lo"], g["hi"]], ind.conf_int().loc[k])
    good = next(f for f in a.findings if f.startswith("good vs baseline"))
    assert f"{100 * g['estimate']:+.2f} pts [{100 * g['lo']:.2f}, " in good and f"(df {ind.df_resid:.0f})" in good
    assert f"Holm p {fmt_p(g['p_holm'])} (" in good and g["p_holm"] >= g["p"]
    assert "better val_acc" in good and "test_acc +" in good
    assert a.findings[0].startswith("best: good") and a.best is not None and "good" in a.best["set"]
    assert any("twin" in w and "baseline" in w for w in a.warnings)
    ranked = list(a.cells["cell"])
    assert ranked[0] == "good" and len(ranked) == 4 and a.cells["n"].tolist() == [6] * 4
    assert a.anova is not None and "arm" in a.anova.index


def test_an_arm_not_yet_run_adds_no_df_to_the_anova():
    """'null' has no trial yet: arm has 2 df (baseline, good, twin's rows are the baseline's), not 3, the same
    table as statsmodels' anova_lm on the trials that exist."""
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    tr, ep, meta = synth()
    tr = tr[tr.arm != "null"]
    a = analyse(tr, ep, meta)
    ref = anova_lm(ols("val_acc ~ C(arm) + C(seed)", data=tr.drop_duplicates("id")).fit(), typ=2)
    assert a.anova.loc["arm", "df"] == ref.loc["C(arm)", "df"] == 1
    assert np.allclose(
        a.anova.loc[["arm", "seed", "Residual"], ["sum_sq", "df", "F", "PR(>F)"]].to_numpy(),
        ref.to_numpy(),
        equal_nan=True,
    )
    assert a.effects.set_index("arm").loc["null", "verdict"].startswith("untested")


def test_arm_report_has_ranked_table_effects_and_figure(tmp_path):
    rep = report.build_report(*synth(), tmp_path)
    assert rep["design"] == "arms" and "arm_effects" in rep["figures"] and Path(rep["figures"]["arm_effects"]).is_file()
    page = (tmp_path / "index.html").read_text()
    for s in (
        "Each arm vs the baseline",
        "Arms ranked by val_acc",
        "good vs baseline",
        "train.schedule=cosine",
        "arm_effects.png",
    ):
        assert s in page, s
    md = (tmp_path / "summary.md").read_text()
    assert "## Arms ranked" in md and "| 1 | good |" in md
    eff = rep["effects_table"]
    assert eff["header"][0] == "comparison" and eff["rows"][0][-1] in ("matters", "real but smaller than X")
    hip = (tmp_path / "hiplot.html").read_text()
    t, e, m = synth()
    waiting = report.build_report(t.assign(state=State.WAITING), e, m, tmp_path / "waiting")  # nothing complete yet
    assert waiting["findings"] == [] and "No complete trials: nothing to analyse." in waiting["warnings"]
    assert '\\"arm\\": {\\"type\\": \\"categorical\\"' in hip  # the arm is a categorical column


# ---------------------------------------------------------------- end to end


def test_tiny_arms_study_end_to_end(tmp_path):
    f = write(tmp_path, ARMS, name="tinyarms")
    db, out = tmp_path / "s" / "fm.db", tmp_path / "rep"
    dry = run_cli("sweep", str(f), "--store", str(db), "--dry-run", check=True)
    assert "baseline + 4 arms x 2 seeds = 6 trials" in dry.stdout and "arm=baseline also=mom" in dry.stdout
    run_cli("sweep", str(f), "--store", str(db), "--workers", "2", "--threads", "1", "--plain", check=True)
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*), SUM(state = 'COMPLETE') FROM trials").fetchone() == (6, 6)
    con.close()
    p = run_cli("report", "tinyarms", "--store", str(db), "--out", str(out), "--format", "json", check=True)
    rep = json.loads(p.stdout)
    assert rep["design"] == "arms" and rep["counts"]["complete"] == 10 and rep["counts"]["seeds"] == 2
    assert {r[1] for r in rep["cells_table"]["rows"]} == {"baseline", "lr_hi", "mom", "bn", "bn_nobias"}
    from fmlab.analysis.stats import VERDICTS  # model-based effects: the same verdict classes as a grid, and a best set

    sel = [e for e in rep["effects"] if e["metric"] == "val_acc"]
    assert sel and all(e["df"] is not None and e["df"] >= 1 for e in sel if e["estimate"] is not None)
    assert {e["verdict"] for e in sel} <= {*VERDICTS, "same trials as the baseline: not a comparison"}
    assert rep["best_set"]["method"].startswith("Hsu") and rep["best_set"]["best"] in {
        "baseline",
        "lr_hi",
        "mom",
        "bn",
        "bn_nobias",
    }
    page = (out / "index.html").read_text()
    assert "Arms ranked by val_acc" in page and "lr_hi vs baseline" in page and "bn_nobias" in page
    assert (out / "arm_effects.png").is_file() and (out / "summary.md").is_file() and (out / "hiplot.html").is_file()
    term = run_cli("report", "tinyarms", "--store", str(db), "--out", str(out), check=True)
    assert "each arm vs the baseline" in term.stdout and "[base]" in term.stdout


def test_arms_on_one_seed_say_nothing_is_comparable_yet():
    """One seed per arm: arm + seed block has as many terms as trials, so no effect and a limit that says so
    (not the factorial's 'residual is the higher-order interactions')."""
    a = analyse(*synth(seeds=[0]))
    assert a.design == "arms" and a.counts["seeds"] == 1
    assert any("Only one seed per arm" in w and "df 0" in w for w in a.warnings), a.warnings
    assert not any("higher-order interactions" in w for w in a.warnings)
    assert a.effects.empty or not a.effects["verdict"].isin(["matters", "real but smaller than X"]).any()


def test_arms_part_way_through_a_seed_fit_what_is_there_and_count_each_arms_seeds():
    """A study stopped part-way (seed 2 has only the baseline, 'good' only seed 0): each contrast is the
    unbalanced arm + seed fit (statsmodels here), and each arm's row counts the seeds it has, not the study's."""
    from statsmodels.formula.api import ols

    tr, ep, meta = synth(seeds=range(3))
    cut = ((tr.seed == 2) & ~tr.arm.isin(["baseline", "twin"])) | ((tr.arm == "good") & (tr.seed > 0))
    tr = tr[~cut]
    a = analyse(tr, ep[ep.trial_id.isin(tr.id)], meta)
    eff = a.effects.set_index("arm")
    d = tr.drop_duplicates("id")
    ind = ols("val_acc ~ C(arm, Treatment('baseline')) + C(seed)", data=d[d.arm != "twin"]).fit()
    for arm in ("good", "null"):
        k = f"C(arm, Treatment('baseline'))[T.{arm}]"
        assert np.isclose(eff.loc[arm, "estimate"], ind.params[k]) and eff.loc[arm, "df"] == ind.df_resid == 1
        assert np.allclose(eff.loc[arm, ["lo", "hi"]].astype(float), ind.conf_int().loc[k])
    assert eff["n_seeds"].to_dict() == {"good": 1, "null": 2, "twin": 3}  # twin: the baseline's own seeds
    assert a.cells.set_index("cell").loc[["good", "null", "baseline"], "n"].tolist() == [1, 2, 3]


def test_a_claim_may_compare_two_arms_with_each_other():
    """'good vs null': the contrast of the same arm + seed fit (statsmodels here), in the claims' own family;
    the arms' effects keep their verdicts; a twin of the baseline or an unknown arm is refused at load."""
    from statsmodels.formula.api import ols

    tr, ep, meta = synth()
    claims = [
        {"text": "good beats null", "kind": "effect", "term": "good vs null", "direction": "better"},
        {"text": "null is no better than good", "kind": "effect", "term": "null vs good", "direction": "better"},
    ]
    a = analyse(tr, ep, {**meta, "claims": claims})
    c1, c2 = a.claims
    assert c1["verdict"] == "supported" and c2["verdict"] == "contradicted", a.claims
    d = tr.drop_duplicates("id")
    ind = ols("val_acc ~ C(arm, Treatment('null')) + C(seed)", data=d[d.arm != "twin"]).fit()
    k = "C(arm, Treatment('null'))[T.good]"
    assert c1["estimate"] == pytest.approx(ind.params[k]) and c2["estimate"] == pytest.approx(-ind.params[k])
    assert [c1["lo"], c1["hi"]] == pytest.approx(list(ind.conf_int().loc[k]), abs=1e-9)
    assert "contrast's verdict" in c1["why"] and c1["df"] == ind.df_resid
    plain = analyse(tr, ep, meta).effects
    assert a.effects["p_holm"].tolist() == pytest.approx(plain["p_holm"].tolist(), nan_ok=True)


def test_arm_vs_arm_claims_in_a_study_file(tmp_path):
    body = (
        'name = "s"\n[arms.a]\n"train.lr" = 0.003\n[arms.b]\n"train.lr" = 0.0003\n'
        '[[claims]]\ntext = "a beats b"\nkind = "effect"\nterm = "a vs b"\ndirection = "better"\n'
    )
    p = tmp_path / "s.toml"
    p.write_text(body)
    assert fstudy.load(p).claims[0]["term"] == "a vs b"
    p.write_text(body.replace('"a vs b"', '"a vs c"'))
    with pytest.raises(fstudy.StudyError, match=r"key 'term': 'a vs c' is not an effect"):
        fstudy.load(p)
