"""A running sweep's progress: the snapshot the sweep loop (fmlab.sweep.loop) keeps up to date as events
arrive and hands to on_update; fmlab.cli.progress shows it, run_study's callers get it, SweepOutcome ends
with it. Nothing here prints."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Progress:
    """A snapshot for the display; times in seconds."""

    total: int
    done: int = 0  # COMPLETE, whoever ran it
    failed: int = 0
    ran: int = 0  # completed by this sweep
    failed_here: int = 0
    running: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {started, epoch, max_epochs}
    elsewhere: int = 0  # RUNNING in another sweep
    trial_s: list[float] = field(default_factory=list)  # wall time of trials finished here
    started: float = field(default_factory=time.time)
    estimate_s: float = 0.0  # the plan's estimate, used until trials finish
    slots: int = 1
    last: str = ""  # one line about the latest event
    events: int = 0  # trials finished, failed or lost so far (the plain display prints one line each)
    epochs: int = 0  # epochs finished so far (the plain display prints one now and then)
    epochs_left: int | None = None  # epochs this sweep's trials have still to train at most; None: not counted
    epoch_s: float = 0.0  # the running time of the epochs finished here, summed

    def __post_init__(self) -> None:
        self.todo = self.total - self.done - self.failed  # the trials left at the start: what estimate_s is for

    def eta_s(self) -> float:
        """Seconds left, at most: the epochs left at the pace of those finished here (a resumed trial has fewer
        to go than a fresh one), else the trials left at the pace of those finished here, else the estimate."""
        left = self.total - self.done - self.failed
        if self.epochs_left is not None and self.epochs and self.epoch_s > 0:
            return max(self.epochs_left, 0) * self.epoch_s / self.epochs / self.slots
        if self.trial_s:
            return sum(self.trial_s) / len(self.trial_s) * left / self.slots
        return self.estimate_s * left / max(self.todo, 1)
