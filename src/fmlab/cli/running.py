"""`fmlab train`, `fmlab sweep` and `fmlab watch`: one network, a study's trials, a live view of them."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from fmlab.cli.common import Command, err, out_json, store_path
from fmlab.cli.sweep_lines import print_dry_run, print_interrupted, print_outcome, print_start
from fmlab.config.metrics import val_text
from fmlab.config.states import State
from fmlab.durations import duration
from fmlab.errors import FmlabError


class Train(Command):
    name = "train"
    help = "train one network; last stdout line is JSON"
    parents = ("device", "threads", "data")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
        p.add_argument("--out", help="checkpoint directory (default runs/train/<trial id>)")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.api import handles as api
        from fmlab.config import schema as config

        cfg = api.make_config(config.parse_sets(args.set))
        dev = api.check_device(args.device)  # a missing GPU is one line before anything is printed or loaded
        tid = cfg.trial_id()
        out = Path(args.out) if args.out else api.default_train_dir(cfg)
        t0 = time.perf_counter()
        max_epochs = cfg.train.max_epochs
        chosen = (
            f"up to {max_epochs} epochs, early stopping on {cfg.train.monitor} (patience {cfg.train.patience})"
            if cfg.data.val_size
            else f"{max_epochs} epochs on {cfg.data.train_subset or 60_000:,} training images (no validation split), "
            "tested at the last"
        )
        err(
            f"trial {tid}: {cfg.model.arch} net, {cfg.train.optimizer} lr {cfg.train.lr}, "
            f"batch {cfg.train.batch_size}, {chosen}"
        )
        from fmlab.training.env import precision_note

        note = precision_note(dev.split(":")[0], {cfg.train.precision})
        if note:
            err(note)

        def progress(row: dict[str, float]) -> None:
            elapsed = time.perf_counter() - t0
            eta = row["epoch_s"] * (max_epochs - row["epoch"])
            err(
                f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  "
                f"{val_text(row, pct=True)}  {row['epoch_s']:.1f}s  "
                f"elapsed {duration(elapsed)}  ETA <= {duration(eta)}"
            )

        res = api.train_trial(
            cfg, out=out, device=args.device, threads=args.threads, data_dir=args.data_dir, on_epoch=progress
        ).result
        m = res.metrics
        picked = f"val acc {100 * m['val_acc']:.2f}%" if m["val_acc"] is not None else "no validation, the last epoch"
        err(
            f"best epoch {res.best_epoch} ({res.stop_reason}): {picked}, test acc {100 * m['test_acc']:.2f}%  ->  {out}"
        )
        out_json(
            {
                "trial_id": tid,
                "out": str(out),
                "best_epoch": res.best_epoch,
                "epochs": len(res.epochs),
                **m,
                **res.timings,
                "n_params": res.n_params,
            }
        )
        return 0


class Sweep(Command):
    name = "sweep"
    help = "run a study file's trials (resumes; nothing COMPLETE is redone)"
    parents = ("store", "device", "threads", "data")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("study_file")
        p.add_argument("--budget", default="full", help="a [budgets.NAME] of the study file: full (default) or quick")
        p.add_argument("--seeds", help="N (seeds 0..N-1) or a list like 0,1,2; overrides the study and budget")
        p.add_argument(
            "--workers",
            type=int,
            default=None,
            help="local worker processes (default: one per core, 1 thread each); 0 = inline",
        )
        p.add_argument(
            "--executor",
            choices=["local", "ray"],
            default="local",
            help="local processes (default) or Ray tasks (needs the extra: pip install 'fmlab[ray]')",
        )
        p.add_argument(
            "--address",
            help="Ray: auto, HOST:PORT or ray://HOST:PORT (default: RAY_ADDRESS, else a new local instance)",
        )
        p.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray: CPUs per trial (default 1)")
        p.add_argument(
            "--gpus-per-trial",
            type=float,
            default=None,
            help="Ray: GPUs per trial, fractions allowed (default: 1 when the cluster has GPUs, else 0)",
        )
        p.add_argument(
            "--pack",
            default="auto",
            metavar="auto|off|on|K",
            help="train each pack (trials equal but for seed and dropout) as one model: auto (default: on "
            "a GPU; not on a CPU, where it measured 0.95x), off, on, or K (packs of at most K trials)",
        )
        p.add_argument("--dry-run", action="store_true", help="print the plan and an estimate; run nothing")
        p.add_argument("--retry-failed", action="store_true", help="rerun the study's FAILED trials")
        p.add_argument("--plain", action="store_true", help="line-by-line progress even on a terminal")
        p.add_argument(
            "--tensorboard",
            metavar="DIR",
            help="write one TensorBoard run per trial to DIR as epochs "
            "finish: scalars and HParams (needs pip install 'fmlab[tensorboard]')",
        )
        p.add_argument(
            "--report-every",
            type=float,
            default=0,
            metavar="SECONDS",
            help="rewrite the study's report (reports/<study>[-<budget>]/) while the sweep runs, at most "
            "this often; its test-set pass runs once, at the end (default 0: no live report)",
        )

    def run(self, args: argparse.Namespace) -> int:
        import signal

        from fmlab.api import handles as api
        from fmlab.cli.progress import SweepDisplay
        from fmlab.study.spec import parse_seeds

        if args.report_every < 0:
            raise FmlabError(f"bad --report-every {args.report_every:g}; give seconds between rewrites, e.g. 60")
        common = dict(
            seeds=parse_seeds(args.seeds) if args.seeds else None,
            workers=args.workers,
            threads=args.threads,
            store=store_path(args),
            retry_failed=args.retry_failed,
            executor=args.executor,
            address=args.address,
            cpus_per_trial=args.cpus_per_trial,
            pack=args.pack,
        )
        if args.dry_run:
            print_dry_run(api.plan_sweep(args.study_file, args.budget, **common, device=args.device), args)
            return 0
        with api.open_sweep(
            args.study_file,
            args.budget,
            **common,
            device=args.device,
            data_dir=args.data_dir,
            gpus_per_trial=args.gpus_per_trial,
            tensorboard=args.tensorboard,
        ) as sw:
            p = sw.plan
            print_start(p, args)
            signal.signal(signal.SIGTERM, _raise_interrupt)
            disp = SweepDisplay(f"{p.study.name} ({p.study.label})", live=sys.stderr.isatty() and not args.plain)
            live = _live_report(args, p.store, p.study)
            try:
                outcome = sw.run(disp.update)
            except KeyboardInterrupt:
                disp.close()
                print_interrupted(live)
                return 130
            finally:
                disp.close()
                if live is not None:
                    live.stop()
            print_outcome(outcome, p, args, live)
            return 1 if outcome.in_state(State.FAILED) else 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _live_report(args: argparse.Namespace, path: Path, st: Any) -> Any:
    """--report-every: the report rewritten while the sweep runs (fmlab.report.live), started; else None."""
    if not args.report_every:
        return None
    from fmlab.api import handles as api
    from fmlab.report.live import LiveReport

    out = api.StudyHandle(api.StoreHandle(path), st.name, st.budget).default_report_dir()
    err(f"live report: {out / 'index.html'}, rewritten every {args.report_every:g}s while the sweep runs")
    return LiveReport(path, st.name, st.budget, out, args.report_every).__enter__()


class Watch(Command):
    name = "watch"
    help = "a live view of a study while it runs: progress, running trials, failures, ranking so far (read-only)"
    parents = ("store",)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("study")
        p.add_argument("--budget", help="which budget's trials (needed when the study has several)")
        p.add_argument("--every", type=float, default=2.0, metavar="SECONDS", help="refresh interval (default 2)")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.cli.watch import watch

        if args.every <= 0:
            raise FmlabError(f"bad --every {args.every:g}; give seconds between refreshes, e.g. 2")
        return watch(store_path(args), args.study, args.budget, args.every)
