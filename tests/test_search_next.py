"""scripts/search_next.py: the search's round rule (studies/search.toml) applied to a published round's
validation effects, on the further study's real published folder and on copies of it made to trip each clause."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("search_next", ROOT / "scripts" / "search_next.py")
search_next = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(search_next)
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
