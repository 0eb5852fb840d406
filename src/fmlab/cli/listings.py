"""The store's commands: `fmlab ls`, `show`, `results`, `report`, `publish`, `import`."""

from __future__ import annotations

import argparse
from typing import Any

from fmlab.cli.common import Command, cell_text, err, metric_text, out_json, print_table, store_path
from fmlab.config.metrics import EPOCH_ROW
from fmlab.config.states import State
from fmlab.durations import duration
from fmlab.errors import FmlabError


class Ls(Command):
    name = "ls"
    help = "trials in the store: state, cell, seed, metrics"
    parents = ("store", "format")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("study", nargs="?")
        p.add_argument("--budget")
        p.add_argument("--state", choices=[s.value for s in State])

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.api import handles as api

        recs = api.open_store(store_path(args)).records(args.study, args.budget, args.state)
        if args.format == "json":
            out_json(recs)
            return 0
        cols = [
            "id",
            "study",
            "budget",
            "state",
            "seed",
            "cell",
            "val_acc",
            "val_loss",
            "test_acc",
            "best_epoch",
            "precision",
            "time",
        ]
        rows = [
            [
                r["id"],
                r["study"] or "",
                r["label"] or "",
                r["state"],
                str(r["seed"]),
                cell_text(r["cell"]),
                metric_text(r, "val_acc"),
                metric_text(r, "val_loss"),
                metric_text(r, "test_acc"),
                str(r["best_epoch"] or ""),
                r["precision"] or r["config"]["train"]["precision"],
                duration(r["timings"]["total_s"]) if r["timings"].get("total_s") is not None else "",
            ]
            for r in recs
        ]
        print_table(cols, rows)
        err(f"{len(recs)} trial(s)")
        return 0


def precision_text(rec: dict) -> str:
    """What a trial trained in, and what its config asked when that differs (auto: the machine's pick)."""
    asked = rec["config"]["train"]["precision"]
    done = rec.get("precision")
    if done is None:
        return f"{asked} (not trained yet)" if asked == "auto" else asked
    return done if done == asked else f"{done} (train.precision = {asked})"


class Show(Command):
    name = "show"
    help = "one trial: config, metrics, per-epoch rows, traceback and log"
    parents = ("store", "format")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("trial", help="a trial id or a unique prefix")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.api import handles as api

        rec = api.open_store(store_path(args)).trial(args.trial)
        if args.format == "json":
            out_json(rec)
            return 0
        rows = [
            ["trial", rec["id"]],
            ["state", rec["state"]],
            ["seed", str(rec["seed"])],
            ["attempts", str(rec["attempts"])],
            ["precision", precision_text(rec)],
        ]
        rows += [["study", f"{s['study']} ({s['budget']})"] for s in rec["studies"]]
        if rec["cell"]:
            rows.append(["cell", " ".join(f"{k}={v}" for k, v in rec["cell"].items())])
        rows += [
            [k, "none (no validation split)" if v is None else f"{v:.4f}"] for k, v in (rec["metrics"] or {}).items()
        ]
        if rec["metrics"]:
            rows.append(["best epoch", f"{rec['best_epoch']} ({rec['stop_reason']})"])
        if rec["checkpoint"]:
            rows.append(["checkpoint", str(rec["checkpoint"])])
        if rec["owner"]:
            rows.append(["running on", str(rec["owner"])])
        if rec["error"]:
            rows.append(["error", rec["error"]])
        print_table(["field", "value"], rows)
        if rec["epochs"]:
            fmt = {"epoch": "{:d}", "lr": "{:.2e}", "epoch_s": "{:.1f}"}
            print()
            print_table(
                list(EPOCH_ROW),
                [["" if e[c] is None else fmt.get(c, "{:.4f}").format(e[c]) for c in EPOCH_ROW] for e in rec["epochs"]],
                right=tuple(range(len(EPOCH_ROW))),
            )
        if rec["traceback"]:
            print(rec["traceback"].rstrip())
        if rec["log"]:
            print("log:\n" + rec["log"].rstrip())
        return 0


class Results(Command):
    name = "results"
    help = "per-trial and per-epoch tables of a study"
    parents = ("store",)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("study")
        p.add_argument("--out", help="output folder (trials.csv, epochs.csv)")
        p.add_argument(
            "--tensorboard",
            metavar="DIR",
            help="also (or instead) write one TensorBoard run per trial to "
            "DIR from the store, replacing earlier runs of these trials (needs fmlab[tensorboard])",
        )
        p.add_argument("--as", dest="as_", choices=["csv", "jsonl"], default="csv")
        p.add_argument("--budget", help="which budget's trials (needed when the study has several)")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.api import handles as api

        if not args.out and not args.tensorboard:
            raise FmlabError("fmlab results: give --out DIR (tables), --tensorboard DIR, or both")
        h = api.open_store(store_path(args)).study(args.study, args.budget)
        if args.tensorboard:
            ids = h.tensorboard(args.tensorboard)
            err(
                f"wrote {len(ids)} TensorBoard run(s) to {args.tensorboard}; "
                f"view: tensorboard --logdir {args.tensorboard}"
            )
        for p in h.export(args.out, args.as_) if args.out else []:
            err(f"wrote {p}")
        return 0


class Report(Command):
    name = "report"
    help = "a study's report: index.html, summary.md, figures, hiplot.html"
    parents = ("store", "format")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("study")
        p.add_argument("--budget", help="which budget's trials (needed when the study has several)")
        p.add_argument("--out", help="output folder (default reports/<study>, or reports/<study>-<budget>)")

    def run(self, args: argparse.Namespace) -> int:
        """A study's report from the store: reports/<study>/ (reports/<study>-<budget>/ for other budgets)."""
        from fmlab.api import handles as api

        rep = api.open_store(store_path(args)).study(args.study, args.budget).report(args.out)
        print_report_summary(rep, args.format)
        return 0


def print_report_summary(rep: dict[str, Any], fmt: str = "table") -> None:
    """The terminal view of build_report's dict: JSON on stdout, or plain lines, the answer first; on a
    terminal rich wraps them to its width, in a log or a pipe each stays one whole line."""
    if fmt == "json":
        out_json(rep)
        return
    from rich.console import Console
    from rich.markup import escape

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:  # rich exits 1 here; main() ends a closed pipe quietly with 0
            raise BrokenPipeError

    con = PipeConsole()
    con.soft_wrap = not con.is_terminal  # a log or a pipe gets whole lines (grep finds them); a terminal wraps
    c = rep["counts"]
    con.print(
        f"[bold]{rep['label']}[/bold]: {c['complete']} of {c['planned']} planned trials complete, "
        f"{c['failed']} failed, {c['waiting'] + c['running']} unfinished, {c['missing']} missing; "
        f"{c['seeds']} seed(s)"
    )
    if rep.get("answer"):  # the plain answer first (fmlab.report.answer), then the statistics
        from fmlab.report.answer import lines

        con.print("[bold]The answer[/bold]")
        for s in lines(rep["answer"]):
            con.print(f"- {escape(s)}", highlight=False)
    for w in rep["warnings"]:
        con.print(f"[yellow]! {w}[/yellow]", markup=True, highlight=False)
    for f in rep["findings"]:  # the statistics: the best set, then the effects by verdict
        con.print(f"- {escape(f)}", highlight=False)
    for cl in rep.get("claims", []):
        con.print(f"claim: {escape(cl['text'])}: [bold]{cl['verdict']}[/bold] ({escape(cl['why'])})", highlight=False)
    what = "arms" if rep.get("design") == "arms" else "top cells" if not c.get("no_validation") else "cells"
    vs = "each arm vs the baseline" if rep.get("design") == "arms" else "effects"
    # plain lines, one per cell and per effect: an 80-column log reads them (a 7-column table would squeeze
    # the cell names and terms into fragments); markup is escaped ("[0.1, 0.3]" is text)
    by = f"by {rep['select']}" if not c.get("no_validation") else "not ranked, with no validation split"
    con.print(f"[bold]{what} {by} (mean [95% CI])[/bold]")
    head = rep["cells_table"]["header"]
    for r in rep["cells_table"]["rows"]:
        rest = ", ".join(f"{h} {v}" for h, v in zip(head[2:], r[2:], strict=True))
        con.print(f"{escape(r[0])}. {escape(r[1])}: {escape(rest)}", highlight=False)
    con.print(f"[bold]{vs}, contrasts of the fitted model (Holm-adjusted p)[/bold]")
    head = rep["effects_table"]["header"]
    for r in rep["effects_table"]["rows"]:
        rest = ", ".join(f"{h} {v}" for h, v in zip(head[1:-1], r[1:-1], strict=True))
        con.print(f"- {escape(r[0])}: {escape(rest)}: [bold]{escape(r[-1])}[/bold]", highlight=False)
    con.print(f"report: {rep['index']}\nhiplot: {rep['hiplot']}\nsummary: {rep['summary_md']}", highlight=False)


class Publish(Command):
    name = "publish"
    help = (
        "a study's results as a folder for the repository: tables, summary, figures, run.json, best/, resume/ (atomic)"
    )
    parents = ("store",)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("study_file")
        p.add_argument("--budget", default="full", help="the budget whose trials to publish (default full)")
        p.add_argument("--seeds", help="the --seeds the sweep ran with, if it overrode the study's")
        p.add_argument("--out", help="folder to write (default results/<study>-<budget>)")

    def run(self, args: argparse.Namespace) -> int:
        import shlex

        from fmlab.archive import publish
        from fmlab.archive.provenance import shown_path
        from fmlab.study.spec import load, parse_seeds

        seeds = parse_seeds(args.seeds) if args.seeds else None
        argv = ["fmlab", "publish", shown_path(args.study_file), "--budget", args.budget]
        argv += ["--seeds", args.seeds] if args.seeds else []
        argv += ["--store", shown_path(args.store)] if args.store else []
        argv += ["--out", shown_path(args.out)] if args.out else []
        st = load(args.study_file, args.budget, seeds)
        # the one write to the store: the study's row from its file, so the report follows its analysis keys
        publish.record_study_row(st, store_path(args))
        run = publish.write_results(st, store=store_path(args), out=args.out, command=shlex.join(argv))
        c = run["counts"]
        cut = f" ({len(run['resume'])} with a resume state in resume/)" if run.get("resume") else ""
        best = run["best"] or "none yet"
        if run.get("no_validation"):  # nothing validated, so nothing is chosen: say so (run.json's words)
            best = f"none: {run['no_validation']}"
        err(
            f"wrote {run['out']}: {c['complete']} of {c['planned']} planned trials COMPLETE, {c['failed']} FAILED, "
            f"{c['missing']} missing{cut}; best {best}"
        )
        return 0


class Import(Command):
    name = "import"
    help = "load a results folder into a store: its COMPLETE trials, best checkpoint, cut-off trials' resume states"
    parents = ("store",)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("folder", help="a folder written by fmlab publish, e.g. results/seed-cpu")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.archive.load import import_results

        r = import_results(args.folder, store=store_path(args))
        failed = f", {r['failed']} FAILED" if r["failed"] else ""
        cut = f"; {r['resumable']} to resume mid-trial" if r["resumable"] else ""
        err(
            f"{r['study']} ({r['budget']}): imported {r['imported']} COMPLETE trial(s){failed}, {r['already']} "
            f"already in {store_path(args)}; {r['planned']} planned{cut}; "
            f"best checkpoint {r['best'] or 'none'}"
        )
        return 0
