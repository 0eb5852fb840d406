"""The README's "What the study found" section is what results/ says (scripts/readme_answer.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_answer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_answer", ROOT / "scripts" / "readme_answer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_answer_section_matches_results():
    p = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "readme_answer.py"), "--check"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr


def test_readme_answer_names_every_published_folder_and_its_claims():
    import json

    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    for run in sorted((ROOT / "results").glob("*/run.json")):
        r = json.loads(run.read_text())
        rel = f"results/{run.parent.name}"
        assert f"**{r['study']} study, budget `{r['budget']}`**" in text
        assert f"`fmlab import {rel}`" in text and f"]({rel}/summary.md)" in text
        c = r["counts"]
        if c["complete"] < c["planned"]:  # a study in progress names what it lacks
            assert f"- Still to run ({c['planned'] - c['complete'] - c['failed']}, in the order a resumed sweep" in text
        summ = json.loads((run.parent / "summary.json").read_text())
        for c in summ.get("claims", []):
            assert f'- Claim "{c["text"]}": {c["verdict"]} (' in text
        for e in summ["effects"]:  # every effect shown real on the selection metric has its line, its estimate
            real = e["verdict"] in ("matters", "real but smaller than X")
            if real and e.get("metric", summ["select"]) == summ["select"]:
                k, d = (100, 2) if summ["select"].endswith("acc") else (1, 4)
                line = next((x for x in lines if x.startswith((f"- {e['term']} ", f"- Interaction {e['term']}: "))), "")
                assert f"{k * e['estimate']:+.{d}f} [" in line, e["term"]
        split = [
            x["term"]
            for x in (summ.get("diagnostics") or {}).get("seed_check", {}).get("rows", [])
            if not x["agree"] and x["model_differs"]
        ]  # the seed-paired check's caveat, beside its effect
        for t in split:
            line = next(x for x in lines if x.startswith(f"- {t} "))
            assert "Caveat: a seed-paired check" in line, (run.parent, t)


def test_readme_is_short_and_starts_with_the_quickstart_and_its_links_resolve():
    import re

    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= readme_answer().MAX_LINES, len(lines)
    assert "## Quickstart" in lines[:30] and "make run" in "\n".join(lines[:30])
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in link or link.startswith("#"):
                continue
            target = (page.parent / link.split("#", 1)[0]).resolve()
            assert target.exists(), f"{page.name}: {link}"


def test_readme_best_rows_are_each_folders_best_cell_from_its_trials():
    """Each published folder's row: rank 1 of cells.csv, its test accuracy recomputed here from trials.csv."""
    import csv
    import json
    import statistics

    text = (ROOT / "README.md").read_text()
    for run in sorted((ROOT / "results").glob("*/run.json")):
        d, r = run.parent, json.loads(run.read_text())
        if not (d / "cells.csv").is_file():  # no COMPLETE trial published yet: no best cell, so no row
            assert r["counts"]["complete"] == 0 and f"| {r['study']} `{r['budget']}`:" not in text, d
            continue
        with (d / "cells.csv").open(newline="") as f:
            top = next(c for c in csv.DictReader(f) if c["rank"] == "1")
        with (d / "trials.csv").open(newline="") as f:
            trials = [t for t in csv.DictReader(f) if t["state"] == "COMPLETE"]
        keys = [k for k in top if k in trials[0] and ("." in k or k == "arm")]  # the factor columns both tables hold

        def level(v: str) -> str:
            try:
                return repr(float(v))
            except ValueError:
                return v.lower()

        mine = [t for t in trials if all(level(t[k]) == level(top[k]) for k in keys)]
        assert len(mine) == int(top["n"]), (d, keys, top["cell"])
        acc = statistics.mean(float(t["test_acc"]) for t in mine)
        row = f"| {r['study']} `{r['budget']}`: {top['cell']}"
        line = next((x for x in text.splitlines() if x.startswith((row + " |", row + " ("))), None)
        assert line is not None, f"README lacks the best-cell row {row!r}"
        assert f"| {100 * acc:.2f}%" in line and f"| {top['n']} |" in line, line
        with (d / "cells.csv").open(newline="") as f:
            tried = sum(int(c["n"] or 0) > 0 for c in csv.DictReader(f))
        # a pick of one trial among several cells is said to be no finding; a replicated one is not
        assert ("not a finding" in line) == (int(top["n"]) < 2 and tried > 1), line


def test_readme_int8_latency_is_the_bench_record_of_the_folders_own_best(tmp_path):
    """The int8 column reads results/bench/<folder>.json (`fmlab bench --save`) only while its checkpoint is the
    folder's best: a folder re-published since has another best, and its old record is not shown."""
    import importlib.util
    import json
    import shutil

    spec = importlib.util.spec_from_file_location("readme_answer", ROOT / "scripts" / "readme_answer.py")
    ra = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ra)
    text = (ROOT / "README.md").read_text()
    records = sorted((ROOT / "results" / "bench").glob("*.json"))
    assert records, "no bench record committed"
    for f in records:
        rec = json.loads(f.read_text())
        int8 = next(r for r in rec["results"] if r["runtime"] == "ort_int8")
        want = f"| {int8['latency']['p50_ms']:.2f} ms p50, {rec['latency_threads']} thread,"
        row = next(x for x in text.splitlines() if f"`fmlab predict results/{f.stem}/best IMG`" in x)
        assert want in row and rec["command"].startswith(f"fmlab bench results/{f.stem}/best"), row
        d = tmp_path / "results" / f.stem
        shutil.copytree(ROOT / "results" / f.stem / "best", d / "best", ignore=shutil.ignore_patterns("*.safetensors"))
        shutil.copytree(ROOT / "results" / "bench", tmp_path / "results" / "bench", dirs_exist_ok=True)
        assert ra.int8_latency(d).startswith(want[2:])
        trial = json.loads((d / "best" / "trial.json").read_text())
        (d / "best" / "trial.json").write_text(json.dumps({**trial, "trial_id": "0" * 12}))
        assert ra.int8_latency(d) == "not measured"


def test_readme_answer_is_the_seed_fit_and_the_best_network_is_chosen_on_validation():
    """The seed study's answer lines carry summary.json's effects (estimate and CI as written), and the best
    network is the folder whose best cell has the highest mean validation accuracy, recomputed from trials.csv."""
    import csv
    import json
    import statistics

    text = (ROOT / "README.md").read_text()
    lines = text.splitlines()
    folders = sorted(p.parent for p in (ROOT / "results").glob("*/run.json"))
    seed = next((d for d in folders if d.name.startswith("seed-")), None)
    if seed is None:
        return
    summ = json.loads((seed / "summary.json").read_text())
    sel = summ["select"]
    for e in summ["effects"]:
        if e["metric"] == sel and e["verdict"] == "matters":
            assert any(
                f"{e['term']}" in x and f"{e['estimate']:+.4f} [{e['lo']:.4f}, {e['hi']:.4f}]" in x and "(matters)" in x
                for x in lines
            ), e["term"]
    best = {}
    for d in folders:
        if not (d / "cells.csv").is_file():  # published with no COMPLETE trial yet: no cells, no candidate
            continue
        with (d / "cells.csv").open(newline="") as f:
            cells = list(csv.DictReader(f))
        top = next(c for c in cells if c["rank"] == "1")
        if int(top["n"]) < 2:
            continue  # one trial (alone, or the highest of several cells) is no best network: no mean, no CI
        with (d / "trials.csv").open(newline="") as f:
            trials = [t for t in csv.DictReader(f) if t["state"] == "COMPLETE"]
        keys = [k for k in top if k in trials[0] and ("." in k or k == "arm")]
        mine = [t for t in trials if all(t[k].lower() == top[k].lower() or _num_eq(t[k], top[k]) for k in keys)]
        best[d] = statistics.mean(float(t["val_acc"]) for t in mine)
    win = max(best, key=best.get)
    line = next(x for x in lines if x.startswith("**Best network published**"))
    assert f"predict {win.relative_to(ROOT).as_posix()}/best" in line and f"{100 * best[win]:.2f}%" in line, line


def _num_eq(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def test_benchmarks_body_is_a_page_of_current_figures_each_table_with_hardware_date_and_command():
    text = (ROOT / "BENCHMARKS.md").read_text()
    body = text.split("\n# Appendix", 1)[0].splitlines()
    assert len(body) < 300, len(body)
    heads = [x for x, nxt in zip(body, body[1:]) if x.startswith("|") and nxt.startswith("|---")]
    assert len(heads) >= 8
    for h in heads:
        cols = [c.strip().lower() for c in h.strip("|").split("|")]
        assert "date" in cols and "command" in cols and ({"hardware", "cpu"} & set(cols)), h
