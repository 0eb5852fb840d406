#!/usr/bin/env python3
"""Round 1's rule of studies/search.toml (written there before the round ran), applied to a published
round's VALIDATION effects: which arms go on to round 2, and why each other arm does not.

    scripts/search_next.py results/search-r1             # the arms that go on; exit 1 if the round is unfinished
    scripts/search_next.py results/search-r1 --partial   # the standing so far, labelled as not final
    scripts/search_next.py results/search-r1 --write studies/search.toml   # and write round 2 into the file

It reads the folder's effects.csv (val_acc rows: the fit val_acc ~ arm + seed, Holm-corrected verdicts),
trials.csv (FAILED trials, parameters) and run.json (counts); never test_effects.csv. The rule:
  1. drop an arm whose verdict is "matters" or "real but smaller than X" with a negative estimate, any of
     whose trials FAILED, or whose network has over 1,000,000 parameters;
  2. of the rest, the (up to) 3 with the highest estimates above 0 go on; none above 0: the baseline alone.
--write then writes round 2 into the study file as the rule says (round2_arms): the kept arms alone, all of
them together ("combined"), and the combination plus each regulariser; [budgets.r2] runs those arms at
R2_EPOCHS in precision "auto", and [budgets.r1] gains arms = [its arms], which leaves its trial ids alone
(checked before writing).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

PARAM_CAP = 1_000_000  # issue 33's cap: every parameter the network uses at inference
KEEP = 3
REAL = ("matters", "real but smaller than X")
R2_EPOCHS, FINAL_EPOCHS = 50, 100  # studies/search.toml's rules: round 2 at half the final length
REGULARISERS = {  # round 2's regularisers on top of the combination (the rules' "mixup or cutmix": cutmix)
    "cutmix": {"data.cutmix": 1.0},
    "no_erase": {"data.erase_p": 0.0},
}
WIDE = 1.5  # widths x1.5 where the cap allows; a whitening first conv keeps its 2 x 3^2 channels
# the rules' precision from round 2 on: each box's fastest (bf16 where native and faster, else fp32); trial ids
# as bf16's. On the avx512_bf16 Xeon without AMX a bf16 step of the ResNet is 0.78x fp32's (BENCHMARKS.md).
R2_PRECISION = "auto"


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


class RoundError(Exception):
    """Round 2 cannot be written as the rule says; the message names the file and what to do."""


def round2_arms(base: dict, tables: dict[str, dict], kept: list[str]) -> tuple[dict[str, dict], list[str]]:
    """Round 2's new [arms.*] tables from the kept arms of round 1, and the lines saying what was left out.
    "combined" merges the kept arms' keys (two that set one key differently: RoundError); with one kept arm it
    is that arm, with none the baseline; the regulariser arms add to it."""
    combined: dict = {}
    for arm in kept:
        for key, v in tables[arm].items():
            if key in combined and combined[key] != v:
                raise RoundError(f"kept arms set {key} differently ({combined[key]!r} vs {v!r}); write round 2 by hand")
            combined[key] = v
    prefix = "combined_" if kept else ""
    new = {"combined": combined} if len(kept) > 1 else {}
    for name, keys in REGULARISERS.items():
        new[prefix + name] = {**combined, **keys}
    widths = list(combined.get("model.widths", base["model.widths"]))
    whitened = combined.get("model.whiten", base.get("model.whiten", "off")) != "off"
    wide = [w if (i == 0 and whitened) else round(w * WIDE) for i, w in enumerate(widths)]
    new[prefix + "wide"] = {**combined, "model.widths": wide}
    left = []
    for name, keys in list(new.items()):
        n = params_of({**base, **keys})
        if n > PARAM_CAP:
            del new[name]
            left.append(f"{name}: {n:,} parameters, over the cap")
    return new, left


def params_of(keys: dict) -> int:
    """Every parameter of the network a config builds (fmlab.model.nets.count_params)."""
    from fmlab.config.schema import Config, with_overrides
    from fmlab.model.nets import build, count_params

    return count_params(build(with_overrides(Config(), keys).resolved().model))


def toml_table(header: str, keys: dict) -> list[str]:
    return [header, *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in keys.items())]


def round2_text(study_file: Path, kept: list[str], folder: Path) -> tuple[str, list[str]]:
    """The study file with round 2 written in; checked: round 1's trial ids unchanged, round 2 loads."""
    from fmlab.study import spec as fstudy

    text = study_file.read_text()
    r1 = fstudy.load(study_file, "r1")
    if "r2" in r1.budgets:
        raise RoundError(f"{study_file}: [budgets.r2] is already written; edit it by hand or restore the file")
    new, left = round2_arms(r1.base, r1.arm_tables, kept)
    clash = sorted(set(new) & set(r1.arm_tables))
    if clash:
        raise RoundError(f"{study_file}: [arms.{clash[0]}] exists already; rename it, then write round 2")
    header = "[budgets.r1]\n"
    if header not in text:
        raise RoundError(f"{study_file}: no [budgets.r1] table line; round 2 follows round 1 in this file")
    r1_arms = f"arms = {json.dumps(list(r1.arm_tables))}  # round 1's; round 2's follow below\n"
    text = text.replace(header, header + r1_arms, 1)
    day = datetime.date.today().isoformat()
    lines = [
        "",
        f"# Round 2, written on {day} by scripts/search_next.py {folder} --write {study_file}, before it ran:",
        f"# round 1's kept arms ({', '.join(kept) or 'none'}) alone, together, and with each regulariser.",
        *(f"# left out: {why}" for why in left),
    ]
    for name, keys in new.items():
        lines += toml_table(f"[arms.{name}]", keys)
    label = f"round 2: {R2_EPOCHS} epochs, full data, each CPU's fastest precision"
    lines += ["[budgets.r2]", "finding = true", f"label = {json.dumps(label)}", f"arms = {json.dumps([*kept, *new])}"]
    lines += [f'"train.max_epochs" = {R2_EPOCHS}', f'"train.precision" = "{R2_PRECISION}"', ""]
    text = text.rstrip("\n") + "\n" + "\n".join(lines)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / study_file.name
        probe.write_text(text)
        if [t.id for t in fstudy.load(probe, "r1").trials()] != [t.id for t in r1.trials()]:
            raise RoundError(f"{study_file}: writing round 2 would change round 1's trial ids; nothing written")
        fstudy.load(probe, "r2")
    return text, left


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a published round, e.g. results/search-r1")
    ap.add_argument("--partial", action="store_true", help="show the standing of an unfinished round")
    ap.add_argument("--write", type=Path, metavar="STUDY_FILE", help="write round 2 into the study file")
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
    out = decide(pd.read_csv(a.folder / "effects.csv"), trials)
    print(render(a.folder, out, final))
    if a.write is None:
        return 0
    if not final:
        print(f"search_next: {a.folder}: round 2 is written from a finished round only", file=sys.stderr)
        return 1
    from fmlab.study.checks import StudyError
    from fmlab.training import checkpoint

    try:
        text, left = round2_text(a.write, out.arm[out.goes_on].tolist(), a.folder)
    except (RoundError, StudyError, OSError) as e:
        print(f"search_next: {e}", file=sys.stderr)
        return 2
    checkpoint.write_text(a.write, text)
    print(f"wrote round 2 into {a.write}{'; left out: ' + '; '.join(left) if left else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
