"""`fmlab watch STUDY`: a live terminal view of a study, read from the store while a sweep runs.

The view is a read-only connection to the SQLite store (WAL: any number of watchers beside the
sweep, from another terminal or over SSH): a progress bar with an ETA, the running trials with their
latest epoch row (the sweep writes each epoch's row as it ends), failures with their one-line reason,
and the ranking so far, cells with mean and 95% CI exactly as the report computes them (one look at the
store: fmlab.cli.watch_view; this module draws it and loops). It fits 80x24, redraws in place on a
terminal (rich.live.Live) and prints a plain line whenever something changed (or every 30 s) when
stdout is not one. It exits once the study has nothing WAITING or RUNNING, or on Ctrl-C (exit 0).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fmlab.cli.watch_view import Ranker, View, look
from fmlab.durations import duration
from fmlab.store.db import Store

PLAIN_EVERY_S = 30.0  # a plain line at least this often, changed or not
MAX_RUNNING, MAX_FAILED = 6, 3  # rows shown; the ranking gets what is left of the screen


def _secs(s: float | None) -> str:
    return duration(s)


def _metric(v: Any, select: str) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}%" if select.endswith("acc") else f"{v:.4f}"


def status_line(v: View) -> str:
    eta = "done" if v.finished else f"ETA ~{_secs(v.eta_s)}"
    return f"{v.done}/{v.planned} COMPLETE, {len(v.running)} running, {v.failed} failed, {v.waiting} waiting; {eta}"


def render(v: View, height: int, store_path: Path, every_s: float) -> Any:
    """The whole view as one rich renderable, at most `height` lines."""
    from rich.console import Group
    from rich.text import Text

    out: list[Any] = [*_head(v)]
    used = 3  # title, bar, footer
    for title, header, rows, more, flex in _trial_tables(v):
        out.append(_table(title, header, rows, more, flex))
        used += 2 + len(rows) + bool(more)
    room = max(height - used - 3, 1)  # 2: the table's title and header; 1: the exit line
    if v.ranking:
        rows = v.ranking[: room - 1] if len(v.ranking) > room else v.ranking
        out.append(_table(f"ranking so far ({v.done} COMPLETE)", v.header, rows, len(v.ranking) - len(rows)))
    else:
        out.append(Text("ranking so far: no COMPLETE trial yet", style="bold"))
    foot = v.note or f"read-only view of {store_path}, every {every_s:g}s; Ctrl-C quits"
    out.append(Text(foot, style="dim", no_wrap=True, overflow="ellipsis"))
    return Group(*out)


def _head(v: View) -> list[Any]:
    """The title line (the study, the time) and the progress bar with the status line."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    title = Text(f"{v.label}  {time.strftime('%H:%M:%S')}", style="bold", no_wrap=True, overflow="ellipsis")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(v.planned, 1), completed=v.done + v.failed, width=20),
        Text(status_line(v), no_wrap=True, overflow="ellipsis"),
    )
    return [title, bar]


def _trial_tables(v: View) -> list[tuple[str, list[str], list[list[str]], int, int]]:
    """(title, header, rows, rows left out, flex column) of the running and failed trials' tables, when any."""
    out = []
    if v.running:
        rows = [
            [
                r["id"][:8],
                r["cell"],
                f"{r['epoch']}/{r['max_epochs']}",
                _metric(r["metric"], v.select),
                _secs(r["elapsed_s"]),
            ]
            for r in v.running[:MAX_RUNNING]
        ]
        out.append(("running", ["trial", v.cells, "epoch", v.select, "time"], rows, len(v.running) - len(rows), 1))
    if v.failures:
        rows = [[f["id"][:8], f["cell"], f["error"]] for f in v.failures[:MAX_FAILED]]
        out.append(("failed", ["trial", v.cells, "reason"], rows, len(v.failures) - len(rows), 2))
    return out


def _table(title: str, header: list[str], rows: list[list[str]], more: int, flex: int = 1) -> Any:
    """A titled table without borders, one line a row (and '... N more'): only the flex column shrinks to fit
    the screen, the others keep their widest cell."""
    from rich.table import Table

    t = Table(
        box=None,
        padding=(0, 1, 0, 0),
        title=title,
        title_justify="left",
        title_style="bold",
        show_edge=False,
        pad_edge=False,
    )
    for i, h in enumerate(header):
        fit = max([len(h), *(len(r[i]) for r in rows)]) if i != flex else None  # only the flex column shrinks
        t.add_column(
            h,
            no_wrap=True,
            overflow="ellipsis",
            ratio=1 if i == flex else None,
            min_width=fit,
            justify="right" if i != flex and i else "left",
        )
    for r in rows:
        t.add_row(*r)
    if more:
        t.add_row(*([f"... {more} more"] + [""] * (len(header) - 1)))
    return t


def plain_lines(v: View) -> list[str]:
    """The ranking as plain text, for a log."""
    if not v.ranking:
        return ["ranking: no COMPLETE trial yet"]
    w = [max(len(h), *(len(r[i]) for r in v.ranking)) for i, h in enumerate(v.header)]
    fmt = lambda r: "  ".join(c.ljust(n) for c, n in zip(r, w)).rstrip()  # noqa: E731
    return [fmt(v.header), *(fmt(r) for r in v.ranking)]


def watch(store_path: str | Path, study: str, budget: str | None = None, every_s: float = 2.0) -> int:
    """Show the study until nothing is left to run (or Ctrl-C); returns the exit code (0)."""
    from rich.console import Console

    every_s = max(float(every_s), 0.2)
    store = Store(store_path, read_only=True)
    con = Console()
    ranker = Ranker()
    try:
        v = look(store, study, budget, ranker)  # an unknown study or budget fails here, before any drawing
        if con.is_terminal:
            from rich.live import Live

            with Live(console=con, auto_refresh=False, vertical_overflow="crop") as live:
                while True:
                    live.update(render(v, con.height, store.path, every_s), refresh=True)
                    if v.finished:
                        break
                    time.sleep(every_s)
                    v = look(store, study, budget, ranker)
            print(f"nothing left to run: {v.done}/{v.planned} COMPLETE, {v.failed} failed")
        else:
            last, at = None, 0.0
            while True:
                key = (v.done, v.failed, v.waiting, tuple((r["id"], r["epoch"]) for r in v.running))
                if key != last or time.time() - at >= PLAIN_EVERY_S or v.finished:
                    note = f"; {v.note}" if v.note else ""
                    print(f"{time.strftime('%H:%M:%S')} {v.label}: {status_line(v)}{note}", flush=True)
                    last, at = key, time.time()
                if v.finished:
                    break
                time.sleep(every_s)
                v = look(store, study, budget, ranker)
            print("\n".join(plain_lines(v)), flush=True)
    except KeyboardInterrupt:  # the way out of a watch: no traceback, exit 0
        return 0
    finally:
        store.close()
    return 0
