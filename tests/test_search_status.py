"""docs/anchors.md's tables of the search's rounds are what results/ says (scripts/search_status.py)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "search_status.py"
PAGE = ROOT / "docs" / "anchors.md"


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def marked_folders() -> list[str]:
    return re.findall(r"<!-- status:(\S+) begin", PAGE.read_text())


def test_the_page_holds_each_published_round_and_its_tables_are_current():
    names = marked_folders()
    rounds = sorted(p.parent.name for p in (ROOT / "results").glob("search-r*/run.json"))
    assert rounds and sorted(names) == rounds  # every published round has its table, once
    p = run(*(f"results/{n}" for n in names), "--check", "docs/anchors.md")
    assert p.returncode == 0, p.stderr


def table_rows(text: str) -> dict[str, list[str]]:
    return {
        cells[0]: cells[1:]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| arm ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }


def test_each_complete_trial_shows_its_own_validation_and_test_accuracy():
    d = ROOT / "results" / "search-r1"
    rows = table_rows(run(d).stdout)
    with (d / "trials.csv").open(newline="") as f:
        trials = list(csv.DictReader(f))
    assert list(rows)[0] == "baseline" and len(rows) == len({t["arm"] for t in trials})
    for t in trials:
        want = f"{100 * float(t['val_acc']):.2f} / {100 * float(t['test_acc']):.2f} (ep {t['best_epoch']})"
        assert rows[t["arm"]][int(t["seed"])] == want


def part_run_round(tmp_path: Path) -> Path:
    """A copy of a published round with one trial FAILED, one part-run without a resume state, one waiting."""
    d = tmp_path / "search-r9"
    shutil.copytree(ROOT / "results" / "search-r1", d)
    with (d / "trials.csv").open(newline="") as f:
        trials = list(csv.DictReader(f))
    by = {(t["arm"], t["seed"]): t for t in trials}
    by["ema", "0"].update(state="FAILED")
    by["dirac", "1"].update(state="RUNNING", epochs="7", val_acc="", test_acc="", best_epoch="")
    by["whiten", "2"].update(state="WAITING", epochs="0", val_acc="", test_acc="", best_epoch="")
    by["airbench", "2"].update(state="WAITING", epochs="3", val_acc="", test_acc="", best_epoch="")
    (d / "resume" / by["airbench", "2"]["id"]).mkdir(parents=True)
    with (d / "trials.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(trials[0]))
        w.writeheader()
        w.writerows(trials)
    return d


def test_unfinished_trials_say_how_far_they_got_and_whether_they_resume(tmp_path):
    rows = table_rows(run(part_run_round(tmp_path)).stdout)
    assert rows["ema"][0] == "FAILED"
    assert rows["dirac"][1] == "7 of 10 epochs run"
    assert rows["whiten"][2] == "waiting"
    assert rows["airbench"][2] == "cut off after 3 of 10 epochs, resume state published"


def test_write_replaces_only_the_blocks_and_check_then_passes(tmp_path):
    d = part_run_round(tmp_path)
    page = tmp_path / "page.md"
    page.write_text(f"# top\n\n<!-- status:{d.name} begin (old) -->\nstale\n<!-- status:{d.name} end -->\n\ntail\n")
    assert run(d, "--check", page).returncode == 1
    assert run(d, "--write", page).returncode == 0
    text = page.read_text()
    assert text.startswith("# top\n\n") and text.endswith("\n\ntail\n") and "stale" not in text
    assert "| dirac |" in text and run(d, "--check", page).returncode == 0


@pytest.mark.parametrize("broken", ["run.json", "page"])
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, broken):
    d = part_run_round(tmp_path)
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    if broken == "run.json":
        (d / "run.json").unlink()
    p = run(d, "--write", page)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert str(d / "run.json" if broken == "run.json" else page) in p.stderr
    assert page.read_text() == "no markers here\n" and not list(tmp_path.glob("*.tmp"))
