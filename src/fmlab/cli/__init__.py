"""The `fmlab` command: small commands over the library, the only code that prints (with progress, watch).

Each command is a class beside its options (fmlab.cli.common.Command: name, help, parents, add_arguments,
run), grouped by subject: dataset (data check, data fetch), running (train, sweep, watch), timing
(bench-train, speedrun), listings (the store: ls, show, results, report, publish, import) and products
(params, bench, export, predict). build_parser() walks COMMANDS; the shared options (--store, --format,
--data-dir, --threads, --device) are parent parsers declared once, and every listing prints through one
table renderer (print_table).

Human output goes to stderr (progress) and stdout (tables); with --format json, stdout holds JSON
only. Errors a user can fix are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fmlab.cli import dataset, listings, products, running, timing
from fmlab.cli.common import Command as Command
from fmlab.cli.common import err as err
from fmlab.cli.common import out_json as out_json
from fmlab.cli.common import print_table as print_table
from fmlab.cli.common import shared_parsers
from fmlab.cli.listings import print_report_summary as print_report_summary
from fmlab.errors import FmlabError

COMMANDS: list[type[Command]] = [
    dataset.DataCheck,
    dataset.DataFetch,
    running.Train,
    timing.BenchTrain,
    timing.Speedrun,
    listings.Report,
    running.Sweep,
    running.Watch,
    listings.Ls,
    listings.Show,
    listings.Results,
    listings.Publish,
    listings.Import,
    products.Params,
    products.Bench,
    products.Export,
    products.Predict,
]
GROUPS = {"data": "check or fetch the dataset"}  # a group's commands are its actions: `fmlab data check`


def build_parser() -> argparse.ArgumentParser:
    from fmlab.version import __version__

    shared = shared_parsers()
    ap = argparse.ArgumentParser(
        prog="fmlab",
        description="Training experiments on Fashion-MNIST.",
        epilog="--debug (anywhere on the line, or FMLAB_DEBUG=1): show the traceback behind a one-line error",
    )
    ap.add_argument("--version", action="version", version=f"fmlab {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}  # group -> its subparsers
    for cls in COMMANDS:
        cmd = cls()
        group, _, action = cmd.name.rpartition(" ")
        if group and group not in groups:
            g = sub.add_parser(group, help=GROUPS[group])
            groups[group] = g.add_subparsers(dest=f"{group}_cmd", required=True, metavar="ACTION")
        p = (groups[group] if group else sub).add_parser(
            action, help=cmd.help, parents=[shared[k] for k in cmd.parents]
        )
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FMLAB_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, inside the handler, not at exit
        return rc
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # another pipe (a worker's, a socket) broke: that is a bug to see, not a quiet exit
        # `fmlab ls --format json | head -c 300`: the reader has what it wanted. Point stdout at devnull so
        # the interpreter's last flush does not fail again (the recipe in Python's signal docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except FmlabError as e:
        if debug:  # the traceback the one-line error hides, then the line itself
            import traceback

            traceback.print_exc()
        err(f"fmlab: error: {e}")
        return 2
    except KeyboardInterrupt:
        err("fmlab: interrupted")
        return 130


def _stdout_gone() -> bool:
    """True when stdout is a pipe whose reader has closed it (poll reports POLLERR on its write end)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no stdout fd: trust the error
        return True
