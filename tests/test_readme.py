"""The README's "What the study found" section is what results/ says (scripts/readme_answer.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_answer_section_matches_results():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_answer.py"), "--check"], capture_output=True,
                       text=True)  # fmt: skip
    assert p.returncode == 0, p.stderr


def test_readme_answer_names_every_published_folder_and_its_claims():
    import json

    text = (ROOT / "README.md").read_text()
    for run in sorted((ROOT / "results").glob("*/run.json")):
        r = json.loads(run.read_text())
        assert f"**{r['study']} study, budget `{r['budget']}`**" in text
        assert f"`fmlab import results/{run.parent.name}`" in text
        c = r["counts"]
        if c["complete"] < c["planned"]:  # a study in progress names what it lacks
            assert f"- Still to run ({c['planned'] - c['complete'] - c['failed']}, in the order a resumed sweep" in text
        summ = json.loads((run.parent / "summary.json").read_text())
        for c in summ.get("claims", []):
            assert f"Claim \"{c['text']}\": **{c['verdict']}**" in text
        for e in summ["effects"]:  # every effect shown real on the selection metric is named with its estimate
            real = e["verdict"] in ("matters", "real but smaller than X")
            if real and e.get("metric", summ["select"]) == summ["select"]:
                assert f": {e['term']}: " in text, e["term"]
        split = [x["term"] for x in (summ.get("diagnostics") or {}).get("seed_check", {}).get("rows", [])
                 if not x["agree"]]  # the report's Limits: a verdict the seed-paired check does not share
        if split:
            caveat = next((x for x in text.splitlines() if x.startswith("- Caveat: " + split[0])), "")
            assert all(t in caveat for t in split) and "seed-paired check" in caveat, (run.parent, split)


def test_readme_best_rows_are_each_folders_best_cell_from_its_trials():
    """Each published folder's row: rank 1 of cells.csv, its test accuracy recomputed here from trials.csv."""
    import csv
    import json
    import statistics

    text = (ROOT / "README.md").read_text()
    for run in sorted((ROOT / "results").glob("*/run.json")):
        d, r = run.parent, json.loads(run.read_text())
        with (d / "cells.csv").open(newline="") as f:
            top = next(c for c in csv.DictReader(f) if c["rank"] == "1")
        with (d / "trials.csv").open(newline="") as f:
            trials = [t for t in csv.DictReader(f) if t["state"] == "COMPLETE"]
        keys = [k for k in top if k in trials[0] and "." in k]  # the factor columns both tables hold

        def level(v: str) -> str:
            try:
                return repr(float(v))
            except ValueError:
                return v.lower()

        mine = [t for t in trials if all(level(t[k]) == level(top[k]) for k in keys)]
        assert len(mine) == int(top["n"]), (d, keys, top["cell"])
        acc = statistics.mean(float(t["test_acc"]) for t in mine)
        row = f"| {r['study']} `{r['budget']}`: {top['cell']} |"
        line = next((x for x in text.splitlines() if x.startswith(row)), None)
        assert line is not None, f"README lacks the best-cell row {row!r}"
        assert f"| {100 * acc:.2f}%" in line and f"| {top['n']} |" in line, line
