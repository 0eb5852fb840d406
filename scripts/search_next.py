#!/usr/bin/env python3
"""Round 1's rule of studies/search.toml (written there before the round ran), applied to a published
round's VALIDATION effects: which arms go on to round 2, and why each other arm does not.

    scripts/search_next.py results/search-r1             # the arms that go on; exit 1 if the round is unfinished
    scripts/search_next.py results/search-r1 --partial   # the standing so far, labelled as not final

It reads the folder's effects.csv (val_acc rows: the fit val_acc ~ arm + seed, Holm-corrected verdicts),
trials.csv (FAILED trials, parameters) and run.json (counts); never test_effects.csv. The rule:
  1. drop an arm whose verdict is "matters" or "real but smaller than X" with a negative estimate, any of
     whose trials FAILED, or whose network has over 1,000,000 parameters;
  2. of the rest, the (up to) 3 with the highest estimates above 0 go on; none above 0: the baseline alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

PARAM_CAP = 1_000_000  # issue 33's cap: every parameter the network uses at inference
KEEP = 3
REAL = ("matters", "real but smaller than X")


def decide(effects: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """One row per arm compared with the baseline (effects' val_acc rows), best estimate first: estimate and
    CI (fractions), verdict, FAILED trials, parameters, goes_on, and why not."""
    rows = []
    for e in effects[(effects.metric == "val_acc") & (effects.kind == "arm")].itertuples():
        mine = trials[trials.arm == e.arm]
        failed, params = int((mine.state == "FAILED").sum()), int(mine.n_params.max(skipna=True) or 0)
        if e.verdict in REAL and e.estimate < 0:
            why = f"{e.verdict}, worse than the baseline"
        elif failed:
            why = f"{failed} trial(s) FAILED"
        elif params > PARAM_CAP:
            why = f"{params:,} parameters, over the cap"
        else:
            why = "" if e.estimate > 0 else "not above the baseline"
        rows.append([e.arm, e.estimate, e.lo, e.hi, e.verdict, failed, params, why])
    cols = ["arm", "estimate", "lo", "hi", "verdict", "failed", "params", "why"]
    out = pd.DataFrame(rows, columns=cols).sort_values("estimate", ascending=False, ignore_index=True)
    eligible = out.index[out.why == ""]
    out["goes_on"] = out.index.isin(eligible[:KEEP])
    out.loc[eligible[KEEP:], "why"] = f"not in the top {KEEP}"
    return out


def render(d: Path, out: pd.DataFrame, final: bool) -> str:
    """The decision as a Markdown table and one line saying what round 2 runs."""
    lines = [
        f"# {d.name}: the arms that go on to round 2{'' if final else ' (NOT FINAL: the round is unfinished)'}",
        "",
        "| arm | val_acc vs baseline, pts [95% CI] | verdict | FAILED | params | goes on |",
        "|---|---|---|---|---|---|",
    ]
    for r in out.itertuples():
        ci = f"{100 * r.estimate:+.2f} [{100 * r.lo:+.2f}, {100 * r.hi:+.2f}]"
        lines.append(
            f"| {r.arm} | {ci} | {r.verdict} | {r.failed} | {r.params:,} | {'yes' if r.goes_on else 'no: ' + r.why} |"
        )
    kept = out.arm[out.goes_on].tolist()
    lines += ["", f"round 2 runs: {', '.join(kept) if kept else 'the baseline alone (no arm above 0)'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a published round, e.g. results/search-r1")
    ap.add_argument("--partial", action="store_true", help="show the standing of an unfinished round")
    a = ap.parse_args(argv)
    try:
        counts = json.loads((a.folder / "run.json").read_text())["counts"]
        trials = pd.read_csv(a.folder / "trials.csv")
    except (OSError, KeyError, ValueError) as e:
        print(f"search_next: {a.folder}: not a published round ({e}); publish it with fmlab publish", file=sys.stderr)
        return 2
    final = counts["complete"] + counts.get("failed", 0) == counts["planned"]
    if not final and not a.partial:
        print(
            f"search_next: {a.folder}: {counts['complete']} of {counts['planned']} trials COMPLETE; the rule is "
            "applied to a finished round (--partial shows the standing so far)",
            file=sys.stderr,
        )
        return 1
    if not (a.folder / "effects.csv").is_file():
        print(
            f"search_next: {a.folder}: no effects.csv, no fit yet (each arm needs 2 seeds); run more of the round",
            file=sys.stderr,
        )
        return 1
    effects = pd.read_csv(a.folder / "effects.csv")
    print(render(a.folder, decide(effects, trials), final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
