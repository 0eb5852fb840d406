"""What every `fmlab` command shares: the Command base, the shared parent parsers, the one table renderer,
the output helpers and the one default store path. The command modules import from here; the package's
__init__ walks their registry."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fmlab.errors import FmlabError


class Command:
    """One `fmlab` command: its options declared beside its handler (as optuna's cli `_BaseCommand`).

    name: the word on the command line; "data check" is the action check of the group data.
    parents: the shared options it takes, by key of shared_parsers(): store, format, data, threads, device.
    """

    name: str = ""
    help: str = ""
    parents: tuple[str, ...] = ()

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """The command's own options and positionals (none by default)."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the command; the exit code (a user-fixable error is an FmlabError: main prints it, exit 2)."""
        raise NotImplementedError


def shared_parsers() -> dict[str, argparse.ArgumentParser]:
    """The options many commands share, each declared once (argparse parents)."""
    from fmlab.store.db import DEFAULT_PATH  # the one default store path (also the API's)

    def parser() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(add_help=False)

    ps = {k: parser() for k in ("store", "format", "data", "threads", "device")}
    ps["store"].add_argument("--store", help=f"the SQLite store (default {DEFAULT_PATH})")
    ps["format"].add_argument("--format", choices=["table", "json"], default="table", help="table (default) or json")
    ps["data"].add_argument("--data-dir", help="folder with the IDX files (default: FMLAB_DATA, then the usual places)")
    ps["threads"].add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    ps["device"].add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N, mps")
    return ps


def store_path(args: argparse.Namespace) -> Path:
    """--store, else the one default store path."""
    from fmlab.store.db import DEFAULT_PATH

    return Path(args.store) if args.store else DEFAULT_PATH


def err(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def out_json(obj: Any) -> None:
    print(json.dumps(obj, allow_nan=False), flush=True)


def print_table(header: list[str], rows: list[list[str]], right: tuple[int, ...] = ()) -> None:
    """The one plain-text table every listing prints: columns padded to their widest cell, two spaces
    apart; the columns in right (numbers) right-aligned. Plain text, so a log or a pipe reads the same."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(header))
    for r in rows:
        print(line(r))


def cell_text(cell: dict[str, Any]) -> str:
    """'pool=max batch_size=64', or for an arm shared with others 'arm=bn also=bn_bias'."""
    return " ".join(
        f"{k.split('.')[-1]}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in cell.items()
    )


def metric_text(r: dict, k: str) -> str:
    """A record's final metric to 4 decimals, '' when it has none (yet)."""
    v = r["metrics"].get(k)
    return "" if v is None else f"{v:.4f}"


def positive_ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        xs = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise FmlabError(f"bad {flag} {text!r}; expected positive integers, e.g. 256,1024") from None
    if not xs or min(xs) < 1:
        raise FmlabError(f"bad {flag} {text!r}; expected positive integers, e.g. 256,1024")
    return xs
