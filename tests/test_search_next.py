"""scripts/search_next.py: the search's round rule (studies/search.toml) applied to a published round's
validation effects, on the further study's real published folder and on copies of it made to trip each clause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import script

ROOT = Path(__file__).resolve().parents[1]
search_next = script("search_next")
FURTHER = ROOT / "results" / "further-cpu"


def kept(folder: Path, capsys) -> list[str]:
    assert search_next.main([str(folder)]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1].removeprefix("round 2 runs: ").split(", ")


@pytest.fixture
def copy(tmp_path) -> Path:
    d = tmp_path / "round"
    shutil.copytree(FURTHER, d, ignore=shutil.ignore_patterns("best", "*.png"))
    return d


def test_the_top_three_positive_arms_go_on_and_the_clauses_drop_theirs(capsys):
    out = search_next.decide(pd.read_csv(FURTHER / "effects.csv"), pd.read_csv(FURTHER / "trials.csv"))
    assert kept(FURTHER, capsys) == ["label_smoothing", "step", "flip_tta"]
    why = dict(zip(out.arm, out.why, strict=True))
    assert why["kernel5"] == "1,049,098 parameters, over the cap"  # and negative: the cap is named first
    assert why["tta_flip"] == "matters, worse than the baseline"
    assert why["onecycle"] == "not in the top 3" and why["gelu"] == "not above the baseline"
    assert out.estimate.is_monotonic_decreasing and out.goes_on.sum() == 3


def test_a_failed_trial_drops_its_arm_and_the_next_moves_up(copy, capsys):
    t = pd.read_csv(copy / "trials.csv")
    t.loc[t.index[t.arm == "step"][0], "state"] = "FAILED"
    t.to_csv(copy / "trials.csv", index=False)
    assert kept(copy, capsys) == ["label_smoothing", "flip_tta", "onecycle"]


def test_no_arm_above_the_baseline_runs_the_baseline_alone(copy, capsys):
    e = pd.read_csv(copy / "effects.csv")
    e["estimate"] = -e.estimate.abs()
    e.to_csv(copy / "effects.csv", index=False)
    assert kept(copy, capsys) == ["the baseline alone (no arm above 0)"]


def test_test_effects_are_never_read(copy, capsys):
    (copy / "test_effects.csv").write_text("not,a,table\n")  # would break a reader that looked
    assert kept(copy, capsys) == ["label_smoothing", "step", "flip_tta"]


def test_an_unfinished_round_is_refused_unless_partial(copy, capsys):
    run = json.loads((copy / "run.json").read_text())
    run["counts"]["complete"] -= 1
    (copy / "run.json").write_text(json.dumps(run))
    assert search_next.main([str(copy)]) == 1
    assert "COMPLETE; the rule is applied to a finished round" in capsys.readouterr().err
    assert search_next.main([str(copy), "--partial"]) == 0
    assert "NOT FINAL" in capsys.readouterr().out
    assert search_next.main([str(copy / "nope")]) == 2


# ---------------------------------------------------------------- writing round 2 into the study file

SEARCH = ROOT / "results" / "search-r1" / "study.toml"  # the study file as round 1 ran, before round 2 was written
SEARCH_ARMS = ["ema", "alt_flip", "tta_shifts", "whiten", "dirac", "bn_bias_lr", "airbench"]


def a_round(tmp_path: Path, estimates: dict[str, float]) -> Path:
    """A finished round 1 of the search (its study file as it ran) whose val_acc estimates are planted (others
    -0.001, undecided)."""
    d = tmp_path / "search-r1"
    d.mkdir()
    rows = [
        {"kind": "arm", "arm": a, "metric": "val_acc", "estimate": estimates.get(a, -0.001), "verdict": "undecided"}
        for a in SEARCH_ARMS
    ]
    e = pd.DataFrame(rows).assign(lo=lambda f: f.estimate - 0.004, hi=lambda f: f.estimate + 0.004)
    e.to_csv(d / "effects.csv", index=False)
    t = [
        {"arm": a, "seed": s, "state": "COMPLETE", "n_params": 272_186}
        for a in ["baseline", *SEARCH_ARMS]
        for s in (0, 1, 2)
    ]
    pd.DataFrame(t).to_csv(d / "trials.csv", index=False)
    (d / "run.json").write_text(json.dumps({"counts": {"planned": 24, "complete": 24, "failed": 0}}))
    return d


@pytest.fixture
def study(tmp_path) -> Path:
    f = tmp_path / "search.toml"
    shutil.copyfile(SEARCH, f)
    return f


def test_round_2_is_written_as_the_rule_says_and_round_1_keeps_its_ids(tmp_path, study, capsys):
    from fmlab.study import spec as fstudy

    d = a_round(tmp_path, {"ema": 0.003, "alt_flip": 0.002, "tta_shifts": 0.001, "dirac": 0.0005})
    assert search_next.main([str(d), "--write", str(study)]) == 0
    assert f"wrote round 2 into {study}" in capsys.readouterr().out
    r1, r2 = fstudy.load(study, "r1"), fstudy.load(study, "r2")
    assert [t.id for t in r1.trials()] == [t.id for t in fstudy.load(SEARCH, "r1").trials()]
    assert list(r1.arms) == SEARCH_ARMS
    new = ["combined", "combined_cutmix", "combined_no_erase", "combined_wide"]
    assert [c["arm"] for c in r2.cells()] == ["baseline", "ema", "alt_flip", "tta_shifts", *new]
    by = {t.cell["arm"]: t.config for t in r2.trials() if t.seed == 0}
    assert all(c.train.max_epochs == search_next.R2_EPOCHS for c in by.values()) and r2.label.startswith("r2: round 2")
    assert {c.train.precision for c in by.values()} == {"auto"}  # each box's fastest, trial ids as bf16's
    both = by["combined"]
    assert (both.train.ema, both.data.flip_mode, both.train.tta_shifts) == (0.999, "alternate", 2)
    assert by["combined_cutmix"].data.cutmix == 1.0 and by["combined_no_erase"].data.erase_p == 0.0
    assert by["combined_wide"].model.widths == (24, 48, 96) and by["combined_wide"].train.ema == 0.999
    assert by["baseline"].data.erase_p == 0.5 and by["ema"].data.flip_mode != "alternate"
    assert search_next.main([str(d), "--write", str(study)]) == 2  # written once: a second write is refused
    assert "[budgets.r2] is already written" in capsys.readouterr().err


def test_a_whitened_combination_widens_behind_its_first_conv_and_the_cap_drops_a_wide_airbench(tmp_path, study, capsys):
    d = a_round(tmp_path, {"whiten": 0.002, "ema": 0.001})
    assert search_next.main([str(d), "--write", str(study)]) == 0
    from fmlab.study import spec as fstudy

    wide = fstudy.load(study, "r2").arm_tables["combined_wide"]
    assert wide["model.widths"] == [18, 48, 96] and wide["model.whiten"] == "frozen"
    (tmp_path / "b").mkdir()
    one, g = a_round(tmp_path / "b", {"airbench": 0.004}), tmp_path / "b" / "search.toml"
    shutil.copyfile(SEARCH, g)
    assert search_next.main([str(one), "--write", str(g)]) == 0
    out = capsys.readouterr().out
    assert "left out: combined_wide:" in out and "parameters, over the cap" in out
    r2 = fstudy.load(g, "r2")
    assert list(r2.arms) == ["airbench", "combined_cutmix", "combined_no_erase"]  # one kept arm: no "combined"


def test_kept_arms_that_clash_write_nothing(tmp_path, study, capsys):
    before = study.read_text()
    d = a_round(tmp_path, {"whiten": 0.002, "airbench": 0.001})
    assert search_next.main([str(d), "--write", str(study)]) == 2
    err = capsys.readouterr().err
    assert "model.widths differently" in err and len(err.strip().splitlines()) == 1
    assert study.read_text() == before


def test_no_kept_arm_puts_the_regularisers_on_the_baseline(tmp_path, study, capsys):
    from fmlab.study import spec as fstudy

    d = a_round(tmp_path, {})
    assert search_next.main([str(d), "--write", str(study)]) == 0
    assert list(fstudy.load(study, "r2").arms) == ["cutmix", "no_erase", "wide"]


def test_the_round_2_in_studies_search_toml_is_what_the_rule_writes_from_the_published_round_1(tmp_path, capsys):
    """The search in the open: studies/search.toml's [budgets.r2] follows from results/search-r1's validation
    effects by the rule written before round 1 ran (the same trials, arm for arm and seed for seed)."""
    from fmlab.study import spec as fstudy

    f = tmp_path / "search.toml"
    shutil.copyfile(SEARCH, f)
    assert search_next.main([str(ROOT / "results" / "search-r1"), "--write", str(f)]) == 0
    assert "round 2 runs: whiten, dirac, alt_flip" in capsys.readouterr().out
    live, written = fstudy.load(ROOT / "studies" / "search.toml", "r2"), fstudy.load(f, "r2")
    assert [(t.cell["arm"], t.seed, t.id) for t in written.trials()] == [
        (t.cell["arm"], t.seed, t.id) for t in live.trials()
    ]
