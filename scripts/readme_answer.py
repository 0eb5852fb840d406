#!/usr/bin/env python3
"""The README's "What the study found" section, built from results/ (summary.json, run.json, best/).

    scripts/readme_answer.py            print the section
    scripts/readme_answer.py --write    replace it in README.md (between the answer markers)
    scripts/readme_answer.py --check    exit 1 when README.md differs from results/ (the test runs this)

It opens with "In short": the first folder with a fitted model (the seed study's) by verdict, each effect
with its test-accuracy counterpart from the same fit, and the best network of any folder chosen on mean
validation accuracy. Then each published folder gives: its budget label, trials done of planned, seeds,
hardware, the best set, the effects that matter with CIs, the claims with verdicts, the best trial's test
accuracy, and the commands that reproduce it. Study files with a `full` budget and no results/<study>-full/
are listed as not yet run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- answer:begin (scripts/readme_answer.py --write) -->", "<!-- answer:end -->"


def _fmt(v: float, metric: str, signed: bool = True) -> str:
    k, d = (100, 2) if metric.endswith("acc") else (1, 4)
    return f"{k * v:{'+' if signed else ''}.{d}f}"


def _unit(metric: str) -> str:
    return " pts" if metric.endswith("acc") else ""


def folder_lines(d: Path) -> list[str]:
    run = json.loads((d / "run.json").read_text())
    summ = json.loads((d / "summary.json").read_text())
    c, sel, hw = run["counts"], run["select"], run["hardware"]
    seeds = ", ".join(str(s) for s in run["seeds"])
    hard = f"{'/'.join(hw.get('device') or ['?'])} ({'/'.join(hw.get('device_name') or ['?'])}), " \
           f"{'/'.join(hw.get('threads') or ['?'])} thread(s), torch {'/'.join(hw.get('torch') or ['?'])}"  # fmt: skip
    state = "complete" if c["complete"] == c["planned"] else f"**in progress: {c['complete']} of {c['planned']} " \
        f"trials COMPLETE** ({c['failed']} failed, {c['missing']} not yet run)"  # fmt: skip
    out = [f"**{run['study']} study, budget `{run['budget']}`** ({run['label']}; seeds {seeds}): {state}; "
           f"{run['wall_s'] / 3600:.1f} h of training summed over trials, each on {hard}; published "
           f"{run['published'][:10]} at commit {str(run['commit'])[:7]}.", ""]  # fmt: skip
    n_cells = sum(1 for _ in (d / "cells.csv").open()) - 1 if (d / "cells.csv").exists() else 0
    if n_cells == 1:  # a one-cell study (a recipe over seeds): nothing to compare, its mean is in the table
        out.append(f"- One cell (the recipe) over {len(run['seeds'])} seed(s): no factor to compare, so no effects; "
                   "its mean test accuracy [95% CI] is in the table below.")  # fmt: skip
    elif summ.get("anova_note") == "no model could be fitted" and c["complete"] < c["planned"]:
        out.append("- Fitted model: none yet: too few replicated trials (an arm or cell needs a second seed; the "
                   "folder's `summary.md` says what limits it), so no effects are claimed.")  # fmt: skip
    elif summ.get("anova_note"):  # what the effects' noise is (one seed: the higher-order interactions)
        out.append(f"- Fitted model: {summ['anova_note']}.")
    b = summ.get("best_set")
    if b:
        others = len(b["set"]) - 1
        out.append(f"- Best cell by {sel}: {b['best']}; {others} other cell(s) not distinguishable from it "
                   f"(Hsu's MCB, 95% simultaneous, df {b['df']:.0f}).")  # fmt: skip
    eff = [e for e in summ["effects"] if e.get("metric", sel) == sel]
    matters = sorted((e for e in eff if e["verdict"] == "matters"), key=lambda e: -abs(e["estimate"]))
    small = sorted((e for e in eff if e["verdict"].startswith("real but smaller")), key=lambda e: -abs(e["estimate"]))
    for e in [*matters, *small]:
        x = summ.get("min_effect", {}).get(sel)
        what = "Matters" if e["verdict"] == "matters" else \
            f"Real but smaller than {_fmt(x, sel, False) if x is not None else 'X'}{_unit(sel)} (what matters)"
        out.append(f"- {what}: {e['term']}: {_fmt(e['estimate'], sel)}{_unit(sel)} [{_fmt(e['lo'], sel, False)}, "
                   f"{_fmt(e['hi'], sel, False)}] in {sel} (df {e['df']:.0f}, Holm p {e['p_holm']:.2g}).")  # fmt: skip
    rest: dict[str, int] = {}
    for e in eff:
        if e["verdict"] != "matters" and e not in small:
            rest[e["verdict"]] = rest.get(e["verdict"], 0) + 1
    if rest:
        x = summ.get("min_effect", {}).get(sel)
        xs = f"{_fmt(x, sel, False)}{_unit(sel)}" if x is not None else "X"
        out.append("- Other effects: " + "; ".join(f"{n} {v.replace('X', xs)}" for v, n in rest.items()) + ".")
    check = (summ.get("diagnostics") or {}).get("seed_check", {})
    split = [r for r in check.get("rows", []) if not r.get("agree", True)]
    if split:  # the report's Limits: a verdict the seed-paired check (df = seeds - 1) does not share
        k = split[0]["n_seeds"]
        out.append("- Caveat: " + "; ".join(r["term"] for r in split) + f": the fitted model (df "
                   f"{split[0]['model_df']:.0f}) says each differs from 0, a seed-paired check over the {k} seeds "
                   f"(df {k - 1}, Holm) does not; these verdicts rest on the model's pooled residual.")  # fmt: skip
    for cl in summ.get("claims", []):
        ev = ""
        if cl.get("estimate") is not None:  # an effect claim: the term it was tested as, its estimate and CI
            at = ", ".join(f"{f}={v}" for f, v in (cl.get("at") or {}).items())
            ev = f"; {cl['term']}{' at ' + at if at else ''}: {_ci(cl, sel)} in {sel}"
        out.append(f"- Claim \"{cl['text']}\": **{cl['verdict']}** ({cl['why']}{ev}).")
    best = d / "best" / "trial.json"
    if best.exists():
        tj = json.loads(best.read_text())
        m = tj.get("metrics", {})
        out.append(f"- Best trial {tj['trial_id']} (chosen on {sel}): test accuracy {100 * m['test_acc']:.2f}% "
                   f"(one trial, evaluated only), {tj.get('n_params', 0):,} parameters; "
                   f"`fmlab predict {d.relative_to(ROOT).as_posix()}/best IMAGE.png`.")  # fmt: skip
    if c["complete"] < c["planned"]:
        out.append(still_to_run(d, run))
    rel = d.relative_to(ROOT).as_posix()
    out.append(f"- Reproduce or resume: `fmlab import {rel}` then `fmlab sweep {run['study_file']} --budget "
               f"{run['budget']}` (runs only what the folder lacks), then `fmlab publish {run['study_file']} "
               f"--budget {run['budget']}`; the report: `fmlab report {run['study']} --budget {run['budget']}`.")
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
    todo = [t for t in order.run_order(st.trials(), {} if st.arms else st.factors, st.seeds, done)
            if t.id not in done | failed]  # fmt: skip
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
    parts = [f"seed {s}: every cell ({len(v)})" if len(v) == n_cells else f"seed {s}: {'; '.join(v)}"
             for s, v in by_seed.items()]  # fmt: skip
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
    metric) and its COMPLETE trials from trials.csv."""
    import csv

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
        env = [run.get("trials", {}).get(r["id"], {}).get("env", {}) for r in mine]  # each trial's own machine
        hw = "; ".join(sorted({f"{e.get('device_name', '?')}{' (native bf16)' if e.get('cpu_bf16') else ''}, "
                               f"{e.get('threads', '?')} threads" for e in env})) or "?"  # fmt: skip
        when = f"{statistics.median(secs) / 60:.1f} min per trial (median)" if secs else "?"
        rel = d.relative_to(ROOT).as_posix()
        rows.append(f"| {run['study']} `{run['budget']}`: {pick} | {'/'.join(f'{p:,}' for p in params)} "
                    f"| {acc} | {top['n']} | {when}, {hw} | `fmlab predict {rel}/best IMG` |")  # fmt: skip
    if not rows:
        return []
    return ["Each published study's best cell (chosen on validation; test accuracy evaluated only, mean [95% CI] "
            "over its seeds):", "", "| study, budget: best cell | params | test acc | n | training time, hardware "
            "| use it |", "|---|---|---|---|---|---|", *rows, ""]  # fmt: skip


def _ci(e: dict, metric: str) -> str:
    u = 100 if metric.endswith("acc") else 1  # accuracy in points
    d = 2 if u == 100 else 4
    return f"{e['estimate'] * u:+.{d}f} [{e['lo'] * u:.{d}f}, {e['hi'] * u:.{d}f}]{_unit(metric)}"


def headline(folders: list[Path]) -> list[str]:
    """The answer in a few lines, from the first folder with a fitted model (the seed study's): the
    effects by verdict on the selection metric, each with its test-accuracy counterpart from the same
    fit, the factors with no effect that matters, the claims' tally, and the best network of any folder."""
    lines: list[str] = []
    for d in folders:
        summ = json.loads((d / "summary.json").read_text())
        run = json.loads((d / "run.json").read_text())
        sel = summ["select"]
        eff = [e for e in summ["effects"] if e.get("metric", sel) == sel]
        if not eff:
            continue
        test = {e["term"]: e for e in summ["effects"] if e.get("metric") == "test_acc"}
        x = summ.get("min_effect", {}).get(sel)
        xs = f"{_fmt(x, sel, False)}{_unit(sel)}" if x is not None else "X"

        def say(e: dict, sel: str = sel, test: dict = test) -> str:
            t = test.get(e["term"]) if sel != "test_acc" else None
            acc = f", {_ci(t, 'test_acc')} of test accuracy" if t else ""
            return f"{e['term']}: {_ci(e, sel)} in {sel}{acc}"

        c = run["counts"]
        n_cells = sum(1 for _ in (d / "cells.csv").open()) - 1
        state = "complete" if c["complete"] == c["planned"] else f"in progress, {c['complete']} of {c['planned']}"
        k = len(run["seeds"])
        lines += [f"**In short** ({run['study']} study, `{d.relative_to(ROOT).as_posix()}`: {n_cells} cells x "
                  f"{k} seed{'s' if k != 1 else ''}, {run['label']}, {state}; effects from its fitted model with "
                  "95% CIs, verdicts Holm-corrected):", ""]  # fmt: skip
        big = sorted((e for e in eff if e["verdict"] == "matters"), key=lambda e: -abs(e["estimate"]))
        small = [e for e in eff if e["verdict"].startswith("real but smaller")]
        if big:
            lines.append("- **Matters**: " + "; ".join(say(e) for e in big) + ".")
        if small:
            lines.append(f"- Real but smaller than {xs}: " + "; ".join(say(e) for e in small) + ".")
        mains: dict[str, list[str]] = {}
        for e in eff:
            if e.get("kind") == "main":
                mains.setdefault(e["term"].split(":")[0], []).append(e["verdict"])
        none = [f for f, v in mains.items() if all(x.startswith("no effect") for x in v)]
        if none:
            lines.append(f"- No effect larger than {xs} in {sel}: " + ", ".join(
                f"{f} (all {len(mains[f])} contrast(s))" for f in none) + ".")  # fmt: skip
        split = [r["term"] for r in ((summ.get("diagnostics") or {}).get("seed_check") or {}).get("rows", [])
                 if not r.get("agree", True)]  # fmt: skip
        if split:
            lines.append("- Not confirmed by the seed-paired check (see the caveat below): " + "; ".join(split) + ".")
        cl = summ.get("claims", [])
        if cl:
            tally: dict[str, int] = {}
            for k in cl:
                tally[k["verdict"]] = tally.get(k["verdict"], 0) + 1
            lines.append(f"- The original's {len(cl)} claims: " + ", ".join(f"{n} {v}" for v, n in tally.items())
                         + " (each below).")  # fmt: skip
        break
    best = None  # across folders by validation accuracy (every study records it), never by test accuracy
    for d in folders:
        top, mine = _top_cell(d)
        va = [float(r["val_acc"]) for r in mine if r.get("val_acc")]
        if top and va and not top["lucky"] and (best is None or sum(va) / len(va) > best[1]):
            best = (d, sum(va) / len(va), top)
    if best:
        d, va, top = best
        run = json.loads((d / "run.json").read_text())
        lo, hi = top.get("test_acc_lo"), top.get("test_acc_hi")
        ci = f" [{100 * float(lo):.2f}, {100 * float(hi):.2f}]" if lo and hi else ""
        lines.append(f"- Best network published (highest mean validation accuracy, {100 * va:.2f}%): {run['study']} "
                     f"`{run['budget']}` ({top['cell']}), test accuracy {100 * float(top['test_acc_mean']):.2f}%{ci} "
                     f"over n = {top['n']} seed(s); `fmlab predict {d.relative_to(ROOT).as_posix()}/best IMAGE.png`; "
                     "each study's best cell is in the table below.")  # fmt: skip
    return lines + [""] if lines else []


def section(root: Path = ROOT) -> str:
    lines = [BEGIN, "## What the study found", ""]
    folders = sorted(
        (p.parent for p in (root / "results").glob("*/run.json")),
        key=lambda d: (not d.name.startswith("seed-"), d.name),
    )  # the seed study, the mission's, first
    lines += headline(folders)
    for d in folders:
        lines += folder_lines(d) + [""]
    lines += best_rows(folders)
    if not folders:
        lines += ["Nothing is published in results/ yet.", ""]
    unrun = []
    for f in sorted((root / "studies").glob("*.toml")):
        doc = tomllib.loads(f.read_text())
        if "full" in doc.get("budgets", {}) and not (root / "results" / f"{doc['name']}-full").exists():
            unrun.append(f"`fmlab sweep studies/{f.name} --budget full`")
    if unrun:
        lines += ["Not yet run (GPU jobs: `scripts/gpu_answers.sh` runs them in order, time-bounded): "
                  + ", ".join(unrun) + ".", ""]  # fmt: skip
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
        print(f"{readme}: no answer markers; add the lines {BEGIN!r} and {END!r} where the section goes",
              file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    cur = BEGIN + rest.split(END, 1)[0] + END
    if args.check:
        if cur != new:
            print(f"{readme}: 'What the study found' is out of date with results/; run scripts/readme_answer.py "
                  "--write", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    readme.write_text(head + new + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
