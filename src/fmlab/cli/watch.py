"""`fmlab watch STUDY`: a live terminal view of a study, read from the store while a sweep runs.

The view is a read-only connection to the SQLite store (WAL: any number of watchers beside the
sweep, from another terminal or over SSH): a progress bar with an ETA, the running trials with their
latest epoch row (the sweep writes each epoch's row as it ends), failures with their one-line reason,
and the ranking so far, cells with mean and 95% CI exactly as the report computes them (fmlab.analysis.driver
on results.report_inputs, rows formatted by fmlab.report.build). It fits 80x24, redraws in place on a
terminal (rich.live.Live) and prints a plain line whenever something changed (or every 30 s) when
stdout is not one. It exits once the study has nothing WAITING or RUNNING, or on Ctrl-C (exit 0).
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlab.store.db import State, Store

PLAIN_EVERY_S = 30.0  # a plain line at least this often, changed or not
MAX_RUNNING, MAX_FAILED = 6, 3  # rows shown; the ranking gets what is left of the screen


@dataclass
class View:
    """One look at the study; times in seconds."""

    label: str
    select: str
    planned: int
    done: int
    failed: int
    waiting: int
    running: list[dict[str, Any]] = field(default_factory=list)  # id, cell, epoch, max_epochs, metric, elapsed_s
    failures: list[dict[str, str]] = field(default_factory=list)  # id, cell, error
    cells: str = "cell"  # the cell column's header: the factors' short names
    header: list[str] = field(default_factory=list)  # the ranking: rank, cell, n, select mean [CI], test
    ranking: list[list[str]] = field(default_factory=list)
    eta_s: float | None = None
    note: str = ""

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.running


def _cell(cell: dict[str, Any]) -> str:
    """A cell by its levels only ('true, 0.2, avg, 64'); the column header names the factors."""
    return ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for k, v in cell.items() if k != "also")


def _levels(name: str) -> str:
    """tables.cell_rows' 'batch_norm=true, dropout=0.2' as 'true, 0.2' (the header names the factors)."""
    return ", ".join(part.split("=", 1)[-1] for part in name.split(", "))


def _eta(
    recs: list[dict[str, Any]], epochs: dict[str, list[dict]], running: list[dict], waiting: int, now: float
) -> float | None:
    """Trials to go x a trial's median wall time (finished trials, else epochs x median epoch time),
    over the trials running at once; an upper bound when trials stop early."""
    walls = [
        r["finished"] - r["started"]
        for r in recs
        if r["state"] == State.COMPLETE and r["started"] and r["finished"] and r["finished"] > r["started"]
    ]
    if walls:
        per = statistics.median(walls)
    else:
        ep_s = [e["epoch_s"] for rows in epochs.values() for e in rows if e.get("epoch_s")]
        if not ep_s or not running:
            return None
        per = statistics.median(ep_s) * max(r["max_epochs"] for r in running)
    left = waiting * per + sum(max(per - r["elapsed_s"], 0.0) for r in running)
    return left / max(len(running), 1)


class Ranker:
    """The ranking so far, refitted only when the set of finished trials changes (a fit takes ~1 s)."""

    def __init__(self) -> None:
        self.key: Any = None
        self.header: list[str] = []
        self.rows: list[list[str]] = []

    def __call__(self, store: Store, study: str, budget: str, recs: list[dict[str, Any]]) -> None:
        key = tuple(sorted((r["id"], r["state"]) for r in recs if r["state"] in (State.COMPLETE, State.FAILED)))
        if key == self.key:
            return
        from fmlab.analysis import arms as farms
        from fmlab.analysis.driver import analyse
        from fmlab.analysis.formatting import unit
        from fmlab.report import tables
        from fmlab.report.export import report_frames

        trials, epochs, meta = report_frames(store, study, budget)
        # a partial grid fits rank-deficient models; a warning would print over the view. record=True: the
        # filter statsmodels adds when first imported (inside this block) cannot print either
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("ignore")
            a = analyse(trials, epochs, meta)
        arms = a.design == "arms"
        rows = farms.ranked_rows(a) if arms else tables.cell_rows(a)
        pick = (0, 1, 3, 4) if arms else (0, 1, 2, 3)  # rank, cell, n, select mean [CI]
        _, u = unit(a.select, level=True)
        self.header = ["#", cell_header(meta), "n", f"{a.select} mean [95% CI]{u}", "test %"]
        self.rows = [[r[i] for i in pick] + [r[-1].split(" ")[0]] for r in rows]  # test acc: its mean only
        if not arms:
            for r in self.rows:
                r[1] = _levels(r[1])
        self.key = key


def cell_header(meta: dict[str, Any]) -> str:
    """'arm', or the factors' short names in file order: the header over _cell's levels."""
    from fmlab.analysis.formatting import short_names

    return "arm" if meta.get("design") == "arms" else ", ".join(short_names(list(meta["factors"])).values())


def look(store: Store, study: str, budget: str | None, ranker: Ranker) -> View:
    from fmlab.report.export import spec_label

    info = store.study(study)
    budget = store.pick_budget(study, budget)
    select = info["select_metric"]
    recs = store.records(study, budget)
    now = time.time()
    by_state = {s: [r for r in recs if r["state"] == s] for s in State}
    run_recs = by_state[State.RUNNING]
    eps: dict[str, list[dict]] = {}
    for e in store.epochs(r["id"] for r in recs if r["state"] != State.WAITING):
        eps.setdefault(e["trial"], []).append(e)
    running = []
    for r in run_recs:
        last = eps.get(r["id"], [{}])[-1]
        running.append(
            {
                "id": r["id"],
                "cell": _cell(r["cell"]),
                "epoch": last.get("epoch", 0),
                "max_epochs": int(r["config"]["train"]["max_epochs"]),
                "metric": last.get(select),
                "elapsed_s": now - (r["started"] or now),
            }
        )
    failures = [
        {"id": r["id"], "cell": _cell(r["cell"]), "error": (r["error"] or "failed").splitlines()[0]}
        for r in by_state[State.FAILED]
    ]
    ranker(store, study, budget, recs)
    waiting = len(by_state[State.WAITING])
    note = "nothing RUNNING: is a sweep running this study? (fmlab sweep STUDY_FILE)" if waiting and not running else ""
    return View(
        label=f"{study} study ({spec_label(info['spec'], budget)})",
        select=select,
        planned=len(recs),
        done=len(by_state[State.COMPLETE]),
        failed=len(failures),
        waiting=waiting,
        running=running,
        failures=failures,
        cells=ranker.header[1] if ranker.header else "cell",
        header=ranker.header,
        ranking=ranker.rows,
        eta_s=_eta(recs, eps, running, waiting, now),
        note=note,
    )


def _secs(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}min" if s < 7200 else f"{s / 3600:.1f}h"


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
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = [Text(f"{v.label}  {time.strftime('%H:%M:%S')}", style="bold", no_wrap=True, overflow="ellipsis")]
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(v.planned, 1), completed=v.done + v.failed, width=20),
        Text(status_line(v), no_wrap=True, overflow="ellipsis"),
    )
    out.append(bar)
    used = 3  # title, bar, footer

    def table(title: str, header: list[str], rows: list[list[str]], more: int, flex: int = 1) -> None:
        nonlocal used
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
        out.append(t)
        used += 2 + len(rows) + bool(more)

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
        table("running", ["trial", v.cells, "epoch", v.select, "time"], rows, len(v.running) - len(rows))
    if v.failures:
        rows = [[f["id"][:8], f["cell"], f["error"]] for f in v.failures[:MAX_FAILED]]
        table("failed", ["trial", v.cells, "reason"], rows, len(v.failures) - len(rows), flex=2)
    room = max(height - used - 3, 1)  # 2: the table's title and header; 1: the exit line
    if v.ranking:
        rows = v.ranking[: room - 1] if len(v.ranking) > room else v.ranking
        table(f"ranking so far ({v.done} COMPLETE)", v.header, rows, len(v.ranking) - len(rows))
    else:
        out.append(Text("ranking so far: no COMPLETE trial yet", style="bold"))
    foot = v.note or f"read-only view of {store_path}, every {every_s:g}s; Ctrl-C quits"
    out.append(Text(foot, style="dim", no_wrap=True, overflow="ellipsis"))
    return Group(*out)


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
