#!/usr/bin/env python3
"""The README's "What the study found" section, built from results/ (summary.json, run.json, best/).

    scripts/readme_answer.py            print the section
    scripts/readme_answer.py --write    replace it in README.md (between the answer markers)
    scripts/readme_answer.py --check    exit 1 when README.md differs from results/ (the test runs this)

Each published folder (the seed study first) gives its budget label, seeds, state and hardware, its plain
answer (fmlab.report.answer over the folder's summary.json: the same generator as the report's first box),
a link to its summary.md, and the commands that reproduce it. Then the best network of any folder, chosen
on mean validation accuracy, and each folder's best cell as a table row. Study files with a `full` budget
and no results/<study>-full/ are listed as not yet run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- answer:begin (scripts/readme_answer.py --write) -->", "<!-- answer:end -->"
MAX_LINES = 249  # the README stays short: at most this many lines (tests/test_readme.py holds it)


def folder_lines(d: Path) -> list[str]:
    """One published folder: what it is (budget, seeds, state, hardware), its plain answer from the fit
    (fmlab.report.answer, the generator the report uses, over the folder's summary.json), and how to
    reproduce it; the statistics are in the folder's summary.md, linked."""
    from fmlab.report import answer

    run = json.loads((d / "run.json").read_text())
    summ = json.loads((d / "summary.json").read_text())
    c, hw, rel = run["counts"], run["hardware"], d.relative_to(ROOT).as_posix()
    seeds = ", ".join(str(s) for s in run["seeds"])
    hard = f"{'/'.join(hw.get('device_name') or ['?'])}, {'/'.join(hw.get('threads') or ['?'])} thread(s)"
    state = (
        "complete"
        if c["complete"] == c["planned"]
        else f"**in progress: {c['complete']} of {c['planned']} "
        f"trials COMPLETE** ({c['failed']} failed, {c['missing']} still to run)"
    )
    trained = f"{run['wall_s'] / 3600:.1f} h of training on {hard}" if c["complete"] else "no trial COMPLETE yet"
    said = answer.markdown(answer.compose(summ))
    if c["complete"] < c["planned"]:  # mid-study "undecided" is what in progress means; the seed plan: summary.md
        said = [ln for ln in said if not ln.startswith("- Undecided")]
        said = [ln for i, ln in enumerate(said) if ln or (i and said[i - 1])]
    out = [
        f"**{run['study']} study, budget `{run['budget']}`** ({run['label']}; seeds {seeds}; {state}; "
        f"{trained}; statistics: [{rel}/summary.md]({rel}/summary.md))",
        "",
        *said,
    ]
    if c["complete"] < c["planned"]:
        out += [still_to_run(d, run), ""]
    out.append(
        f"Reproduce: `fmlab import {rel}` then `fmlab report {run['study']} --budget {run['budget']}`; "
        f"resume or extend: `fmlab sweep {run['study_file']} --budget {run['budget']}`."
    )
    return out


def still_to_run(d: Path, run: dict) -> str:
    """The planned trials the folder lacks, in the order a resumed sweep takes them (fmlab.sweep.order)."""
    import csv

    from fmlab.analysis.formatting import level_label  # the cells' names as the report writes them
    from fmlab.study import spec as study
    from fmlab.sweep import order

    st = study.load(ROOT / run["study_file"], run["budget"])
    with (d / "trials.csv").open(newline="") as f:
        state = {r["id"]: r["state"] for r in csv.DictReader(f)}
    done = {i for i, v in state.items() if v == "COMPLETE"}
    failed = {i for i, v in state.items() if v == "FAILED"}  # a sweep skips them without --retry-failed
    todo = [
        t
        for t in order.run_order(st.trials(), {} if st.arms else st.factors, st.seeds, done)
        if t.id not in done | failed
    ]

    def name(t) -> str:
        return ", ".join(f"{k.split('.')[-1]}={level_label(v)}" for k, v in t.cell.items())

    tail = f" FAILED, rerun with --retry-failed: {len(failed)}." if failed else ""
    head = f"- Still to run ({len(todo)}, in the order a resumed sweep takes them): "
    if len(todo) <= 12:
        names = [name(t) + (f" (seed {t.seed})" if len(st.seeds) > 1 else "") for t in todo]
        return head + "; ".join(names) + "." + tail
    n_cells = len({json.dumps(t.cell, sort_keys=True, default=str) for t in st.trials()})
    by_seed: dict[int, list[str]] = {}
    for t in todo:
        by_seed.setdefault(t.seed, []).append(name(t))
    parts = [
        f"seed {s}: every cell ({len(v)})" if len(v) == n_cells else f"seed {s}: {'; '.join(v)}"
        for s, v in by_seed.items()
    ]
    return head + " | ".join(parts) + "." + tail


def _same(a: str | None, b: str) -> bool:
    """One factor level as trials.csv and cells.csv spell it ('False' and 'false', '0.0' and '0')."""
    if a is None:
        return False
    try:
        return float(a) == float(b)
    except ValueError:
        return a.lower() == b.lower()


def _top_cell(d: Path) -> tuple[dict | None, list[dict]]:
    """A folder's best cell (rank 1 of cells.csv, the fitted model's ranking on the study's validation
    metric) and its COMPLETE trials from trials.csv; none while no trial is COMPLETE (a round just started:
    publish writes no cells.csv)."""
    import csv

    if not (d / "cells.csv").is_file():
        return None, []
    with (d / "cells.csv").open(newline="") as f:
        cells = list(csv.DictReader(f))
    if not cells:
        return None, []
    top = min(cells, key=lambda r: int(r["rank"]))
    top["n_cells"] = sum(int(r["n"] or 0) > 0 for r in cells)
    top["lucky"] = int(top["n"]) < 2 and top["n_cells"] > 1  # one trial's pick among several: not a finding
    with (d / "trials.csv").open(newline="") as f:
        trials = [r for r in csv.DictReader(f) if r["state"] == "COMPLETE"]
    keys = [k for k in top if ("." in k or k == "arm") and not k.endswith(("_mean", "_std", "_lo", "_hi"))]
    return top, [r for r in trials if all(_same(r.get(k), top[k]) for k in keys)]


def best_rows(folders: list[Path]) -> list[str]:
    """One row per published folder: its best cell (rank 1 of cells.csv, the fitted model's ranking on the
    study's validation metric) with parameters, test accuracy mean [95% CI] over its seeds, n, time per
    trial and hardware, so the best network stands against the seed net from the same files."""
    import statistics

    rows = []
    for d in folders:
        run = json.loads((d / "run.json").read_text())
        top, mine = _top_cell(d)
        if top is None:
            continue
        params = sorted({int(r["n_params"]) for r in mine if r.get("n_params")})
        secs = [float(r["total_s"]) for r in mine if r.get("total_s")]
        acc = f"{100 * float(top['test_acc_mean']):.2f}%"
        lo, hi = top["test_acc_lo"], top["test_acc_hi"]
        acc += f" [{100 * float(lo):.2f}, {100 * float(hi):.2f}]" if lo else " (no CI)"
        pick = top["cell"]
        if top["lucky"]:  # the highest of single trials: a winner's curse
            what = "arms" if "arm" in top else "cells"
            pick += f" (one trial, the highest of {top['n_cells']} {what}: not a finding)"
        if run.get("no_validation"):  # data.val_size = 0: nothing validated, nothing chosen, no best/
            pick += (
                " (no validation split: all training images, tested at the last epoch; never counts toward the goal)"
            )
            use = "no best/: nothing is chosen"
        else:
            use = f"`fmlab predict {d.relative_to(ROOT).as_posix()}/best IMG`"
        env = [run.get("trials", {}).get(r["id"], {}).get("env", {}) for r in mine]  # each trial's own machine
        hw = (
            "; ".join(
                sorted(
                    {
                        f"{e.get('device_name', '?')}{' (native bf16)' if e.get('cpu_bf16') else ''}, "
                        f"{e.get('threads', '?')} thread{'' if str(e.get('threads')) == '1' else 's'}"
                        for e in env
                    }
                )
            )
            or "?"
        )
        when = f"{statistics.median(secs) / 60:.1f} min per trial (median)" if secs else "?"
        epochs = "/".join(sorted({r["epochs"] for r in mine if r.get("epochs")}, key=int)) or "?"
        rows.append(
            f"| {run['study']} `{run['budget']}`: {pick} | {'/'.join(f'{p:,}' for p in params)} "
            f"| {acc} | {top['n']} | {epochs} | {when}, {hw} | {int8_latency(d)} | {use} |"
        )
    if not rows:
        return []
    return [
        "Each published study's best cell (chosen on validation; test accuracy evaluated only, mean [95% CI] "
        "over its seeds; int8 latency: `fmlab bench FOLDER/best --save results/bench/FOLDER.json`):",
        "",
        "| study, budget: best cell | params | test acc | n | epochs run | training time, hardware | int8 latency "
        "| use it |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def int8_latency(d: Path) -> str:
    """The folder's best network's batch-1 latency in ONNX Runtime int8 (p50), from the record `fmlab bench
    --save` wrote to results/bench/<folder>.json; a record of another checkpoint (the folder re-published
    since) is stale and not shown."""
    f = d.parent / "bench" / f"{d.name}.json"
    if not f.is_file() or not (d / "best" / "trial.json").is_file():
        return "not measured"
    rec = json.loads(f.read_text())
    best = json.loads((d / "best" / "trial.json").read_text())["trial_id"]
    int8 = [r for r in rec["results"] if r["runtime"] == "ort_int8"]
    if rec.get("trial_id") != best or not int8:
        return "not measured"
    cpu = rec["env"].get("device_name", "?") + (" (native bf16)" if rec["env"].get("cpu_bf16") else "")
    return f"{int8[0]['latency']['p50_ms']:.2f} ms p50, {rec['latency_threads']} thread, {cpu}"


def best_network(folders: list[Path]) -> list[str]:
    """The best network of any folder, chosen on its best cell's mean validation accuracy (every study
    records it), never on test accuracy; a best cell of one trial (a round just begun, or one trial's pick among
    several cells) is no candidate."""
    best = None
    for d in folders:
        top, mine = _top_cell(d)
        va = [float(r["val_acc"]) for r in mine if r.get("val_acc")]
        if top and len(va) >= 2 and (best is None or sum(va) / len(va) > best[1]):  # one seed: no mean, no CI
            best = (d, sum(va) / len(va), top)
    if best is None:
        return []
    d, va, top = best
    run = json.loads((d / "run.json").read_text())
    lo, hi = top.get("test_acc_lo"), top.get("test_acc_hi")
    ci = f" [{100 * float(lo):.2f}, {100 * float(hi):.2f}]" if lo and hi else ""
    return [
        f"**Best network published** (highest mean validation accuracy, {100 * va:.2f}%): {run['study']} "
        f"`{run['budget']}` ({top['cell']}), test accuracy {100 * float(top['test_acc_mean']):.2f}%{ci} over "
        f"n = {top['n']} seed(s); `fmlab predict {d.relative_to(ROOT).as_posix()}/best IMAGE.png`. How it "
        "stands against published small nets: [docs/anchors.md](docs/anchors.md).",
        "",
    ]


def section(root: Path = ROOT) -> str:
    lines = [BEGIN, "## What the studies found", ""]
    folders = sorted(
        (p.parent for p in (root / "results").glob("*/run.json")),
        key=lambda d: (not d.name.startswith("seed-"), d.name),
    )  # the seed study, the mission's, first
    for d in folders:
        lines += folder_lines(d) + [""]
    lines += best_network(folders) + best_rows(folders)
    if not folders:
        lines += ["Nothing is published in results/ yet.", ""]
    unrun = []
    for f in sorted((root / "studies").glob("*.toml")):
        doc = tomllib.loads(f.read_text())
        if "full" in doc.get("budgets", {}) and not (root / "results" / f"{doc['name']}-full").exists():
            unrun.append(f"`fmlab sweep studies/{f.name} --budget full`")
    if unrun:
        lines += [
            "Not yet run (GPU jobs: `scripts/gpu_answers.sh` runs them in order, time-bounded): "
            + ", ".join(unrun)
            + ".",
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="replace the section in README.md")
    g.add_argument("--check", action="store_true", help="exit 1 when README.md's section is out of date")
    args = ap.parse_args()
    new = section()
    if not (args.write or args.check):
        print(new)
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(
            f"{readme}: no answer markers; add the lines {BEGIN!r} and {END!r} where the section goes", file=sys.stderr
        )
        return 1
    head, rest = text.split(BEGIN, 1)
    cur = BEGIN + rest.split(END, 1)[0] + END
    if args.check:
        if cur != new:
            print(
                f"{readme}: 'What the studies found' is out of date with results/; run scripts/readme_answer.py "
                "--write",
                file=sys.stderr,
            )
            return 1
        return 0
    readme.write_text(head + new + rest.split(END, 1)[1])
    n = len(readme.read_text().splitlines())
    if n > MAX_LINES:  # the section is true to results/ and written; the README around it must make room
        print(f"{readme}: {n} lines, over the {MAX_LINES} it keeps; shorten it before committing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
