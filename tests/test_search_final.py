"""scripts/search_final.py: the search's final rule applied to a published round 2 (here: round 2 as
scripts/search_next.py writes it into a copy of round 1's published study file, with made-up validation
estimates), and the studies/best.toml budget it writes, checked against round 2's own trials."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import script

from fmlab.config.schema import hash_dict
from fmlab.study import spec as fstudy

ROOT = Path(__file__).resolve().parents[1]


search_next, search_final = script("search_next"), script("search_final")
R2 = ["baseline", "ema", "alt_flip", "tta_shifts", "combined", "combined_cutmix", "combined_no_erase", "combined_wide"]


@pytest.fixture
def round2(tmp_path) -> Path:
    """A 'published' round 2: its study file, run.json and cells.csv; combined_wide is the highest estimate,
    combined within 0.05 pts of it, the rest lower, two of them outside the best set."""
    d = tmp_path / "search-r2"
    d.mkdir()
    r1 = ROOT / "results" / "search-r1" / "study.toml"  # the study file as round 1 ran
    text, _ = search_next.round2_text(r1, ["ema", "alt_flip", "tta_shifts"], d)
    (d / "study.toml").write_text(text)
    (d / "run.json").write_text(json.dumps({"counts": {"planned": 24, "complete": 24, "failed": 0}}))
    acc = [0.9500, 0.9488, 0.9490, 0.9470, 0.95157, 0.9490, 0.9480, 0.9520]
    best = [True, True, True, False, True, True, True, True]
    pd.DataFrame({"arm": R2, "val_acc_mean": acc, "in_best_set": best}).to_csv(d / "cells.csv", index=False)
    return d


def run(capsys, *args) -> tuple[int, str, str]:
    rc = search_final.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_the_best_set_arm_with_the_highest_estimate_but_ties_go_to_fewer_flops(round2, capsys):
    rc, out, _ = run(capsys, round2)
    assert rc == 0 and out.strip().endswith("the final recipe: combined, 100 epochs, 3 seeds")
    assert "| combined_wide | 95.20 |" in out and "within the tie, more FLOPs" in out  # x1.5 widths cost more
    assert "| tta_shifts |" not in out  # outside the best set: not a candidate


def test_write_adds_a_final_budget_that_is_round_2s_arm_at_the_final_length(round2, tmp_path, capsys):
    best = tmp_path / "best.toml"
    shutil.copy(ROOT / "studies" / "best.toml", best)
    before = {b: [t.id for t in fstudy.load(best, b).trials()] for b in fstudy.load(best).budgets}
    rc, out, err = run(capsys, round2, "--write", best)
    assert rc == 0, err
    final = fstudy.load(best, "final").trials()
    r2 = {t.seed: t.config for t in fstudy.load(round2 / "study.toml", "r2").trials() if t.cell["arm"] == "combined"}
    assert [t.seed for t in final] == [0, 1, 2] and all(t.config.train.max_epochs == 100 for t in final)
    for t in final:  # the same network, data and training as round 2's trial of that seed, but for the length
        want, got = hash_dict(r2[t.seed]), hash_dict(t.config)
        want["train"]["max_epochs"] = 100
        assert got == want and t.config.train.precision == "auto"
    assert {b: [t.id for t in fstudy.load(best, b).trials()] for b in before} == before  # the others unchanged
    all60k = fstudy.load(best, "final_all60k").trials()  # the same recipe on all 60,000 images, labelled
    for t, f in zip(all60k, final, strict=True):
        want, got = hash_dict(f.config), hash_dict(t.config)
        want["data"]["val_size"] = 0
        assert t.seed == f.seed and got == want
    assert "last epoch tested" in fstudy.load(best, "final_all60k").label
    start = f'LONGRUN_SWEEP_ARGS="--workers 3 --threads 1" scripts/cpu_longrun.sh start {best.as_posix()} final'
    assert start in out and f"#   {start}" in best.read_text()  # the 3 seeds at once, said where it is run
    again = best.read_text()
    rc, _, err = run(capsys, round2, "--write", best)
    assert rc == 2 and "[budgets.final] is already written" in err and best.read_text() == again


def test_an_unfinished_round_a_bad_folder_and_a_best_file_on_another_base_write_nothing(round2, tmp_path, capsys):
    best = tmp_path / "best.toml"
    best.write_text((ROOT / "studies" / "best.toml").read_text().replace('"train.lr" = 0.2', '"train.lr" = 0.1'))
    kept = best.read_text()
    rc, _, err = run(capsys, round2, "--write", best)
    assert rc == 2 and "seed 0 of the final budget is not round 2's 'combined'" in err and best.read_text() == kept
    (round2 / "run.json").write_text(json.dumps({"counts": {"planned": 24, "complete": 20, "failed": 0}}))
    rc, _, err = run(capsys, round2, "--write", best)
    assert rc == 1 and "20 of 24 trials COMPLETE" in err and best.read_text() == kept
    rc, _, err = run(capsys, tmp_path / "nowhere")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not a published round 2" in err
