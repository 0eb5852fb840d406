"""The `fmlab` command: argparse subcommands over the library. The only module that prints.

Human output goes to stderr (progress) and stdout (tables); with --format json, stdout holds JSON
only. Errors a user can fix are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import FmlabError


def err(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def out_json(obj: Any) -> None:
    print(json.dumps(obj, allow_nan=False), flush=True)


def _fmt_secs(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}min"


def run_options(args: argparse.Namespace):
    from .env import RunOptions

    return RunOptions(device=args.device, threads=args.threads, data_dir=getattr(args, "data_dir", None))


# ---------------------------------------------------------------- data


def cmd_data_check(args: argparse.Namespace) -> int:
    from . import data

    rep = data.check(args.data_dir)
    if args.format == "json":
        out_json(rep)
    else:
        for f in rep["files"]:
            ok = "OK" if f["sha256_ok"] and f["count_ok"] else "MISMATCH"
            print(f"{ok:8} {f['name']:26} {f['count']:6} items  sha256 {f['sha256'][:16]}…  {f['path']}")
            if "per_class" in f:
                print("         per class: " + ", ".join(f"{c} {n}" for c, n in f["per_class"].items()))
    if not rep["ok"]:
        err(f"fmlab: error: some files do not match upstream (see above); {data.FIX}")
        return 1
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from . import data

    paths = data.fetch(args.url, args.dest)
    for p in paths:
        err(f"wrote {p}")
    return 0


# ---------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from . import checkpoint, config
    from .train import train

    cfg = config.with_overrides(config.Config(), config.parse_sets(args.set)).resolved()
    opts = run_options(args)
    tid = cfg.trial_id()
    out = Path(args.out) if args.out else Path("runs/train") / tid
    t0 = time.perf_counter()
    max_epochs = cfg.train.max_epochs
    err(f"trial {tid}: {cfg.model.arch} net, {cfg.train.optimizer} lr {cfg.train.lr}, batch {cfg.train.batch_size}, "
        f"up to {max_epochs} epochs, early stopping on {cfg.train.monitor} (patience {cfg.train.patience})")

    def progress(row: dict[str, float]) -> None:
        elapsed = time.perf_counter() - t0
        eta = row["epoch_s"] * (max_epochs - row["epoch"])
        err(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  "
            f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%  {row['epoch_s']:.1f}s  "
            f"elapsed {_fmt_secs(elapsed)}  ETA <= {_fmt_secs(eta)}")  # fmt: skip

    res = train(cfg, opts=opts, on_epoch=progress)
    checkpoint.save_trial(res, out)
    m = res.metrics
    err(f"best epoch {res.best_epoch} ({res.stop_reason}): val acc {100 * m['val_acc']:.2f}%, "
        f"test acc {100 * m['test_acc']:.2f}%  ->  {out}")  # fmt: skip
    out_json({"trial_id": tid, "out": str(out), "best_epoch": res.best_epoch, "epochs": len(res.epochs),
              **m, **res.timings, "n_params": res.n_params})  # fmt: skip
    return 0


# ---------------------------------------------------------------- report


def print_report_summary(rep: dict[str, Any], fmt: str = "table") -> None:
    """The terminal view of build_report's dict: JSON on stdout, or rich tables."""
    if fmt == "json":
        out_json(rep)
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    c = rep["counts"]
    con.print(f"[bold]{rep['label']}[/bold]: {c['complete']} of {c['planned']} planned trials complete, "
              f"{c['failed']} failed, {c['waiting'] + c['running']} unfinished, {c['missing']} missing; "
              f"{c['seeds']} seed(s)")  # fmt: skip
    for w in rep["warnings"]:
        con.print(f"[yellow]! {w}[/yellow]", markup=True, highlight=False)
    for key, title in (("cells_table", f"top cells by {rep['select']} (mean [95% CI] over seeds)"),
                       ("effects_table", "effects paired by seed (Holm-adjusted p)")):  # fmt: skip
        tbl = Table(title=title, title_justify="left")
        for h in rep[key]["header"]:
            text = h in ("cell", "comparison", "verdict") or h.startswith(("effect", rep["select"]))
            tbl.add_column(h, no_wrap=not text, min_width=15 if h == "verdict" else None,
                           ratio=2 if h in ("cell", "comparison") else None)  # fmt: skip
        for r in rep[key]["rows"]:
            style = "green" if r[-1] == "distinguishable" else None
            tbl.add_row(*r, style=style)
        con.print(tbl)
    con.print(f"report: {rep['index']}\nhiplot: {rep['hiplot']}\nsummary: {rep['summary_md']}", highlight=False)


def cmd_report_files(args: argparse.Namespace) -> int:
    """Dev/test path: a report from trials.csv, epochs.csv and a meta JSON (the store-backed
    `fmlab report STUDY` hands build_report the same DataFrames)."""
    import pandas as pd

    from .report import build_report

    try:
        trials = pd.read_csv(args.trials)
        epochs = pd.read_csv(args.epochs) if args.epochs else pd.DataFrame()
        meta = json.loads(Path(args.meta).read_text())
    except (OSError, ValueError) as e:
        raise FmlabError(f"cannot read the report inputs: {e}") from None
    try:
        rep = build_report(trials, epochs, meta, args.out, Path(args.best_ckpt) if args.best_ckpt else None)
    except (KeyError, ValueError) as e:
        raise FmlabError(f"report inputs do not match the contract (see fmlab.analysis.analyse): {e}") from None
    print_report_summary(rep, args.format)
    return 0


# ---------------------------------------------------------------- parser


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--data-dir", help="folder with the IDX files (default: $FMLAB_DATA, then system paths)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="fmlab", description="Training experiments on Fashion-MNIST.")
    ap.add_argument("--version", action="version", version=f"fmlab {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="check or fetch the dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    c = dsub.add_parser("check", help="where the dataset is, checksums, counts per class")
    c.add_argument("--data-dir")
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.set_defaults(func=cmd_data_check)
    f = dsub.add_parser("fetch", help="download the upstream files, verify, write atomically")
    f.add_argument("--url", default=None, help="base URL (default: upstream)")
    f.add_argument("--dest", help="target folder (default: the user cache dir)")
    f.set_defaults(func=cmd_data_fetch)

    t = sub.add_parser("train", help="train one network; last stdout line is JSON")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    t.add_argument("--out", help="checkpoint directory (default runs/train/<trial id>)")
    add_run_args(t)
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("report-files", help="(dev) build a report from trials.csv, epochs.csv and a meta JSON")
    r.add_argument("--trials", required=True, help="CSV, one row per trial (contract: fmlab.analysis.analyse)")
    r.add_argument("--epochs", help="CSV, one row per trial and epoch")
    r.add_argument("--meta", required=True, help="JSON: study, budget, factors, baseline, select, planned")
    r.add_argument("--out", required=True, help="output folder (index.html, summary.md, figures, hiplot.html)")
    r.add_argument("--best-ckpt", help="checkpoint dir of the best trial (by validation): confusion matrix")
    r.add_argument("--format", choices=["table", "json"], default="table")
    r.set_defaults(func=cmd_report_files)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "url", "x") is None:
        from .data import UPSTREAM_URL

        args.url = UPSTREAM_URL
    try:
        return args.func(args)
    except FmlabError as e:
        err(f"fmlab: error: {e}")
        return 2
    except KeyboardInterrupt:
        err("fmlab: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
