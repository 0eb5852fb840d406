#!/usr/bin/env python3
"""The search's final rule (studies/search.toml, written before round 2 ran), applied to the published round 2:
which recipe is trained at the final length, and the studies/best.toml budget that trains it.

    scripts/search_final.py results/search-r2                              # the pick; exit 1 if unfinished
    scripts/search_final.py results/search-r2 --write studies/best.toml    # and write [budgets.final], final_all60k

The rule: of round 2's arms in the best set (Hsu's MCB on val_acc: cells.csv's in_best_set), the one with the
highest val_acc estimate; between best-set arms whose estimates are within TIE_PTS of it, the one with the
fewest forward FLOPs per image. It reads cells.csv (VALIDATION estimates; never test_*), run.json (counts) and
the round's own study file as published (study.toml). --write adds [budgets.final] to the best study: the arm's
keys over its [base], FINAL_EPOCHS epochs, precision "auto"; and [budgets.final_all60k], the same recipe and
schedule on all 60,000 training images (data.val_size = 0: tested at its last epoch, labelled, never counting
toward the goal; issue 33, item 3). It checks that each final trial is the round-2 trial of the same seed but
for the length, that each all-60k trial is the final's but for data.val_size, that the file's other budgets
keep their trial ids, and writes atomically, once.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

TIE_PTS = 0.05  # percentage points
FINAL_EPOCHS = 100
FINAL_PRECISION = "auto"  # the rules' precision from round 2 on: each box's fastest, trial ids as bf16's
BUDGET = "final"
ALL60K = "final_all60k"  # the final recipe retrained on all 60,000 training images
SWEEP_ARGS = "--workers 3 --threads 1"  # the 3 seeds at once on 2 cores: they finish together (BENCHMARKS.md)


class FinalError(Exception):
    """The final budget cannot be written as the rule says; the message names the file and what to do."""


def arms_of(trial) -> list[str]:
    """Every arm that trains this trial (arms that resolve to one config share it)."""
    return [trial.cell["arm"], *trial.cell.get("also", [])]


def forward_mflop(cfg) -> float:
    from fmlab.model.nets import build, forward_flops

    return forward_flops(build(cfg.model))["total"] / 1e6


def pick(cells: pd.DataFrame, configs: dict) -> tuple[str, pd.DataFrame]:
    """The arm the rule picks, and the best set's rows (estimate in points, MFLOP, why each is or is not it)."""
    best = cells[cells.in_best_set.astype(bool)].copy()
    if best.empty:
        raise FinalError("cells.csv: no arm in the best set; publish the round again with a fit")
    best["pts"] = 100 * best.val_acc_mean
    best["mflop"] = [forward_mflop(configs[a]) for a in best.arm]
    top = best.pts.max()
    tied = best[best.pts > top - TIE_PTS - 1e-9].sort_values(["mflop", "pts"], ascending=[True, False])
    chosen = str(tied.arm.iloc[0])
    best["why"] = [
        "picked" if a == chosen else ("within the tie, more FLOPs" if a in set(tied.arm) else "lower estimate")
        for a in best.arm
    ]
    return chosen, best.sort_values("pts", ascending=False)


def final_text(best_file: Path, round_study, arm: str, folder: Path) -> str:
    """best_file with [budgets.final] appended; checked against round 2's trials and the file's other budgets."""
    from fmlab.config.schema import with_overrides
    from fmlab.study import spec as fstudy

    text = best_file.read_text()
    study = fstudy.load(best_file)
    for b in (BUDGET, ALL60K):
        if b in study.budgets:
            raise FinalError(f"{best_file}: [budgets.{b}] is already written; edit it by hand or restore the file")
    keys = round_study.arm_tables.get(arm, {})
    day = datetime.date.today().isoformat()
    lines = [
        "",
        f"# The search's final recipe, written on {day} by scripts/search_final.py {folder} --write {best_file}:",
        f"# round 2's arm {arm!r} (the rule in studies/search.toml), {FINAL_EPOCHS} epochs, each CPU's fastest",
        "# precision. Its seeds train at once (a third single-thread process on 2 cores costs nothing, BENCHMARKS.md):",
        f'#   LONGRUN_SWEEP_ARGS="{SWEEP_ARGS}" scripts/cpu_longrun.sh start {best_file.as_posix()} {BUDGET}',
        *_budget(BUDGET, f"final: search arm {arm}, {FINAL_EPOCHS} epochs, full data", keys),
        "# The same recipe and schedule on all 60,000 training images (no validation split): each seed tested at its",
        "# last epoch, labelled, beside the validation-selected figure; it never counts toward the goal.",
        *_budget(
            ALL60K,
            f"final, all 60,000 training images: search arm {arm}, {FINAL_EPOCHS} epochs, last epoch tested",
            {**keys, "data.val_size": 0},
        ),
    ]
    new = text.rstrip("\n") + "\n" + "\n".join(lines)
    r2 = {t.seed: t.config for t in round_study.trials() if arm in arms_of(t)}
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / best_file.name
        probe.write_text(new)
        for name in study.budgets:
            if [t.id for t in fstudy.load(probe, name).trials()] != [
                t.id for t in fstudy.load(best_file, name).trials()
            ]:
                raise FinalError(f"{best_file}: the final budget would change [budgets.{name}]'s trial ids")
        for t in fstudy.load(probe, BUDGET).trials():
            want = with_overrides(r2[t.seed], {"train.max_epochs": FINAL_EPOCHS}) if t.seed in r2 else None
            if want is None or want.resolved().trial_id() != t.id:
                raise FinalError(
                    f"{best_file}: seed {t.seed} of the final budget is not round 2's {arm!r} at {FINAL_EPOCHS} epochs "
                    "(its [base] or [factors] differ from the search's); write the budget by hand"
                )
        _check_all60k(probe, best_file)
    return new


def _budget(name: str, label: str, keys: dict) -> list[str]:
    """A [budgets.<name>] table of the final's length and precision over keys (the arm's, and any more)."""
    tail = {"train.max_epochs": FINAL_EPOCHS, "train.precision": FINAL_PRECISION}
    body = [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in {**keys, **tail}.items()]
    return [f"[budgets.{name}]", "finding = true", f"label = {json.dumps(label)}", *body, ""]


def _check_all60k(probe: Path, best_file: Path) -> None:
    """Each all-60k trial is the final's of the same seed but for data.val_size = 0."""
    from fmlab.config.schema import with_overrides
    from fmlab.study import spec as fstudy

    final = {t.seed: t.config for t in fstudy.load(probe, BUDGET).trials()}
    for t in fstudy.load(probe, ALL60K).trials():
        want = with_overrides(final[t.seed], {"data.val_size": 0}) if t.seed in final else None
        if want is None or want.resolved().trial_id() != t.id:
            raise FinalError(
                f"{best_file}: seed {t.seed} of [budgets.{ALL60K}] is not the final's on all 60,000 images"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the published round 2, e.g. results/search-r2")
    ap.add_argument("--write", type=Path, metavar="BEST_STUDY_FILE", help="write [budgets.final] (+ all-60k) into it")
    a = ap.parse_args(argv)
    from fmlab.study import spec as fstudy
    from fmlab.study.checks import StudyError
    from fmlab.training import checkpoint

    try:
        counts = json.loads((a.folder / "run.json").read_text())["counts"]
        cells = pd.read_csv(a.folder / "cells.csv")
        round_study = fstudy.load(a.folder / "study.toml", "r2")
    except (OSError, KeyError, ValueError, StudyError) as e:
        print(
            f"search_final: {a.folder}: not a published round 2 ({e}); publish it with fmlab publish", file=sys.stderr
        )
        return 2
    if counts["complete"] + counts.get("failed", 0) != counts["planned"]:
        print(
            f"search_final: {a.folder}: {counts['complete']} of {counts['planned']} trials COMPLETE; the rule is "
            "applied to a finished round",
            file=sys.stderr,
        )
        return 1
    configs = {a: t.config for t in round_study.trials() if t.seed == round_study.seeds[0] for a in arms_of(t)}
    try:
        arm, rows = pick(cells, configs)
        print(f"# {a.folder.name}: the final recipe (best set on val_acc; ties within {TIE_PTS} pts: fewer FLOPs)\n")
        print("| arm | val_acc estimate % | forward MFLOP | |\n|---|---|---|---|")
        for r in rows.itertuples():
            print(f"| {r.arm} | {r.pts:.2f} | {r.mflop:.1f} | {r.why} |")
        print(f"\nthe final recipe: {arm}, {FINAL_EPOCHS} epochs, 3 seeds")
        if a.write is not None:
            checkpoint.write_text(a.write, final_text(a.write, round_study, arm, a.folder))
            print(f"wrote [budgets.{BUDGET}] and [budgets.{ALL60K}] into {a.write}; commit it, then")
            print(f'  LONGRUN_SWEEP_ARGS="{SWEEP_ARGS}" scripts/cpu_longrun.sh start {a.write.as_posix()} {BUDGET}')
    except (FinalError, StudyError, OSError) as e:
        print(f"search_final: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
