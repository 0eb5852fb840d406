"""A running sweep's progress on stderr: a rich panel on a terminal, otherwise (a log, --plain) one line per
finished trial and, when no line has been printed for EPOCH_LINE_S, one per finished epoch, so that a log of
trials that take hours still shows them moving and a quick study stays one line per trial.

On the interface floor beside cli and watch (the only modules that print): the sweep hands each
snapshot (fmlab.sweep.progress.Progress) to SweepDisplay.update; nothing below this floor prints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from fmlab.durations import duration

EPOCH_LINE_S = 60.0  # plain display: an epoch's line only after this long without a line


class SweepDisplay:
    """Live progress on stderr: a rich panel on a terminal, lines otherwise (the module says which)."""

    def __init__(self, title: str, live: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.title, self.live, self.panel, self.printed, self.p = title, live, None, 0, None
        self.clock = clock
        self.epochs_printed, self.printed_at = 0, clock()
        if live:
            from rich.console import Console
            from rich.live import Live

            self.panel = Live(
                console=Console(stderr=True), refresh_per_second=2, transient=True, get_renderable=self.render
            )
            self.panel.start()

    def line(self, p: Any) -> str:
        elsewhere = f" (+{p.elsewhere} in another sweep)" if p.elsewhere else ""
        return (
            f"{p.done}/{p.total} done, {len(p.running)} running{elsewhere}, {p.failed} failed, "
            f"elapsed {duration(time.time() - p.started)}, ETA {duration(p.eta_s())}"
        )

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        p = self.p
        if p is None:
            return Text(f"{self.title}: starting")
        t = Table(box=None, padding=(0, 2, 0, 0))
        for c in ("running", "epoch", "elapsed"):
            t.add_column(c)
        now = time.time()
        for tid, r in sorted(dict(p.running).items()):  # a copy: the sweep loop changes it meanwhile
            t.add_row(tid, f"{r['epoch']}/{r['max_epochs']}", duration(now - r["started"]))
        return Group(Text(f"{self.title}: {self.line(p)}", style="bold"), t, Text(p.last, style="dim"))

    def update(self, p: Any) -> None:
        self.p = p
        if self.panel is not None:
            return
        now = self.clock()
        if p.events != self.printed or (p.epochs != self.epochs_printed and now - self.printed_at >= EPOCH_LINE_S):
            self.printed, self.epochs_printed, self.printed_at = p.events, p.epochs, now
            print(f"[{self.line(p)}] {p.last}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.panel is not None:
            self.panel.stop()
            self.panel = None
