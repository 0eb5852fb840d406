#!/usr/bin/env python3
"""A report from files, without a store (development and tests): trials.csv, epochs.csv and a meta JSON in
the contract of fmlab.analysis.driver.analyse, written as `fmlab report` writes a study's report.

    python scripts/report_files.py --trials T.csv [--epochs E.csv] --meta M.json --out DIR [--format json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from fmlab.cli import print_report_summary
    from fmlab.report.build import build_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", required=True, help="CSV, one row per trial (contract: fmlab.analysis.driver.analyse)")
    ap.add_argument("--epochs", help="CSV, one row per trial and epoch")
    ap.add_argument(
        "--meta",
        required=True,
        help="JSON: study, budget, factors, baseline, select, planned "
        '(an arms study: design "arms", arms {name: {key: value}})',
    )
    ap.add_argument("--out", required=True, help="output folder (index.html, summary.md, figures, hiplot.html)")
    ap.add_argument("--best-ckpt", help="checkpoint dir of the best trial (by validation): confusion matrix")
    ap.add_argument("--format", choices=["table", "json"], default="table")
    args = ap.parse_args(argv)
    try:
        trials = pd.read_csv(args.trials)
        epochs = pd.read_csv(args.epochs) if args.epochs else pd.DataFrame()
        meta = json.loads(Path(args.meta).read_text())
    except (OSError, ValueError) as e:
        print(f"report_files: cannot read the report inputs: {e}", file=sys.stderr)
        return 2
    try:
        rep = build_report(trials, epochs, meta, args.out, Path(args.best_ckpt) if args.best_ckpt else None)
    except (KeyError, ValueError) as e:
        msg = f"report_files: the inputs do not match the contract (see fmlab.analysis.driver.analyse): {e}"
        print(msg, file=sys.stderr)
        return 2
    print_report_summary(rep, args.format)
    return 0


if __name__ == "__main__":
    sys.exit(main())
