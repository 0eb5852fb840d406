#!/usr/bin/env python3
"""Where each round of the search stands, per arm and seed, from its published folder (trials.csv, run.json,
study.toml): a table for docs/anchors.md, so that the page says what results/ says, never a copy by hand.

    scripts/search_status.py results/search-r1 results/search-r2                         # print the blocks
    scripts/search_status.py results/search-r1 results/search-r2 --write docs/anchors.md # replace them there
    scripts/search_status.py results/search-r1 results/search-r2 --check docs/anchors.md # exit 1 if stale

A COMPLETE trial's cell is its validation / test accuracy at the epoch validation chose (test evaluated only,
never used to choose); a part-run trial shows the epochs it has run, and whether its resume state is published
(it is when the sweep stopped gracefully: any machine resumes it there); one not started, "waiting". The
fitted effects are in the folder's summary.md; these are the per-trial values they are fitted to.
Each folder's block sits between <!-- status:FOLDER begin ... --> and <!-- status:FOLDER end --> lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tomllib
from pathlib import Path

BASELINE = "baseline"  # fmlab.study.spec.BASELINE, the arm every study's [base] trains


class StatusError(Exception):
    """A folder or page that cannot give or take the table; the message names the file and the fix."""


def begin(name: str) -> str:
    return f"<!-- status:{name} begin (scripts/search_status.py --write) -->"


def end(name: str) -> str:
    return f"<!-- status:{name} end -->"


def read_round(d: Path) -> tuple[dict, list[dict], list[str]]:
    """run.json, trials.csv's rows, and the arms in the study file's order (baseline first)."""
    need = [d / "run.json", d / "trials.csv", d / "study.toml"]
    for p in need:
        if not p.is_file():
            raise StatusError(f"{p}: missing; publish the round first (fmlab publish STUDY --budget B)")
    run = json.loads(need[0].read_text())
    with need[1].open(newline="") as f:
        rows = list(csv.DictReader(f))
    doc = tomllib.loads(need[2].read_text())
    if rows and "arm" not in rows[0]:
        raise StatusError(f"{need[1]}: no arm column; search_status reads a search round (an arms study's folder)")
    budget = doc.get("budgets", {}).get(run["budget"], {})
    listed = [BASELINE, *budget.get("arms", doc.get("arms", {}))]  # a budget without arms = runs them all
    arms = [a for a in listed if any(r["arm"] == a for r in rows)]
    arms += sorted({r["arm"] for r in rows} - set(arms))
    return run, rows, arms


def cell(r: dict, max_epochs: int | None, resumable: bool) -> str:
    """One trial's entry: val / test % (best epoch) when COMPLETE, else how far it got."""
    if r["state"] == "COMPLETE":
        return f"{100 * float(r['val_acc']):.2f} / {100 * float(r['test_acc']):.2f} (ep {r['best_epoch']})"
    if r["state"] == "FAILED":
        return "FAILED"
    done = int(r.get("epochs") or 0)
    if not done:
        return "waiting"
    ran = f"{done}" + (f" of {max_epochs}" if max_epochs else "") + " epochs"
    return f"cut off after {ran}, resume state published" if resumable else f"{ran} run"


def max_epochs(rows: list[dict]) -> int | None:
    lengths = {json.loads(r["config"])["train"]["max_epochs"] for r in rows if r.get("config")}
    return lengths.pop() if len(lengths) == 1 else None


def block(d: Path) -> str:
    """The folder's block: a one-line count and hardware, and the arm x seed table."""
    run, rows, arms = read_round(d)
    seeds = sorted({int(r["seed"]) for r in rows})
    n = max_epochs(rows)
    c = run["counts"]
    part = sum(1 for r in rows if r["state"] != "COMPLETE" and int(r.get("epochs") or 0) > 0)
    env = {i: t.get("env", {}) for i, t in run.get("trials", {}).items()}
    where = sorted(
        {f"{env[r['id']].get('device_name', '?')} in {r.get('precision') or '?'}" for r in rows if r["id"] in env}
    )
    head = (
        f"`{d.as_posix()}` (budget `{run['budget']}`, {n or 'mixed'} epochs): **{c['complete']} of {c['planned']} "
        f"trials COMPLETE**, {part} part-run, {c['failed']} failed"
        + (f"; ran on {'; '.join(where)}" if where else "")
        + ". Validation / test accuracy % at the epoch validation chose (test evaluated only):"
    )
    by = {(r["arm"], int(r["seed"])): r for r in rows}
    table = [
        "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for a in arms:
        entries = [cell(by[a, s], n, (d / "resume" / by[a, s]["id"]).is_dir()) if (a, s) in by else "-" for s in seeds]
        table.append(f"| {a} | " + " | ".join(entries) + " |")
    return "\n".join([begin(d.name), head, "", *table, end(d.name)])


def replace(page: str, d: Path, new: str, path: Path) -> str:
    """page with d's block (from its begin line, whatever it says after the name, to its end line) as new."""
    found = re.findall(rf"<!-- status:{re.escape(d.name)} begin[^\n]*?-->.*?{re.escape(end(d.name))}", page, re.S)
    if len(found) != 1:
        raise StatusError(f"{path}: needs exactly one pair of lines {begin(d.name)!r} and {end(d.name)!r}")
    return page.replace(found[0], new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="published rounds, e.g. results/search-r2")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", type=Path, metavar="PAGE", help="replace each folder's block in PAGE")
    g.add_argument("--check", type=Path, metavar="PAGE", help="exit 1 when PAGE's blocks differ from the folders")
    a = ap.parse_args(argv)
    try:
        blocks = {d: block(d) for d in a.folders}
        if not (a.write or a.check):
            print("\n\n".join(blocks.values()))
            return 0
        path = a.write or a.check
        if not path.is_file():
            raise StatusError(f"{path}: no such page; give the docs page that holds the status markers")
        old = path.read_text()
        new = old
        for d, text in blocks.items():
            new = replace(new, d, text, path)
    except StatusError as e:
        print(f"search_status: {e}", file=sys.stderr)
        return 1
    if a.check:
        if new != old:
            print(
                f"search_status: {path}: the search's status is out of date; run {Path(__file__).name} "
                f"{' '.join(d.as_posix() for d in a.folders)} --write {path}",
                file=sys.stderr,
            )
            return 1
        return 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    tmp.replace(path)  # atomic: the page is the old one or the new one, never half
    return 0


if __name__ == "__main__":
    sys.exit(main())
