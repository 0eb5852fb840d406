"""Seconds of running, not of being stopped: the clock a trial's epoch_s and total_s are read from. A long run
paused with SIGSTOP while something else is timed (scripts/cpu_longrun.sh pause) would otherwise publish the
pause as training time. A daemon thread ticks every TICK_S; a gap between ticks longer than TICK_S + SLACK_S is
time the process was stopped (or the whole machine was), and now() leaves it out. Gaps shorter than SLACK_S
count as running: a busy box delays a tick by milliseconds, not seconds.
"""

from __future__ import annotations

import os
import threading
import time

TICK_S = 0.2
SLACK_S = 2.0


class _Clock:
    def __init__(self, stopped: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.last = time.perf_counter()
        self.stopped = stopped
        threading.Thread(target=self._tick, name="fmlab-clock", daemon=True).start()

    def _account(self) -> float:
        """perf_counter now, with any gap since the last look counted as stopped time."""
        with self.lock:
            t = time.perf_counter()
            gap = t - self.last
            if gap > TICK_S + SLACK_S:
                self.stopped += gap - TICK_S
            self.last = t
            return t - self.stopped

    def _tick(self) -> None:
        while True:
            time.sleep(TICK_S)
            self._account()


_clock: _Clock | None = None


def now() -> float:
    """Seconds on a monotonic clock that stands still while this process is stopped; differences only."""
    global _clock
    if _clock is None:
        _clock = _Clock()
    return _clock._account()


def _after_fork() -> None:
    """A forked child has no ticking thread: it starts its own at once, on its parent's reading."""
    global _clock
    if _clock is not None:
        _clock = _Clock(_clock.stopped)


os.register_at_fork(after_in_child=_after_fork)
