"""Where trials run: in this process (inline) or in local worker processes, behind the Executor interface that
fmlab.sweep.ray shares: submit(work) with a plain config; poll() hands back Events carrying plain, picklable
TrialResults. Workers never touch the store; the parent writes what they send. Local workers are spawned (not
forked: torch's thread pools do not survive fork), ignore Ctrl-C (the parent decides), and die with their
parent (PR_SET_PDEATHSIG), so a killed sweep leaves no orphans."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from fmlab.sweep.work import Event, Executor, Handler, Work, members, run_work


class InlineExecutor:
    """Runs each trial in this process when polled; for debugging and one-core machines."""

    slots = 1

    def __init__(self) -> None:
        self.pending: list[Work] = []

    def free(self) -> int:
        return 0 if self.pending else 1

    def submit(self, task: Work) -> None:
        self.pending.append(task)

    def poll(self, timeout_s: float, handle: Handler) -> None:
        if self.pending:
            run_work(self.pending.pop(0), handle)
        else:
            time.sleep(timeout_s)

    def shutdown(self) -> None:
        self.pending.clear()


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the kernel kills us when the parent dies
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _worker_main(conn: Connection, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent handles it
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        run_work(task, conn.send)


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    task: Work | None = None
    open: set[str] = field(default_factory=set)  # the work's trials not yet done or failed


class LocalExecutor:
    """N spawned worker processes, each running one trial (or one pack) at a time."""

    def __init__(self, workers: int) -> None:
        self.slots = workers
        self.ctx = mp.get_context("spawn")
        self.workers: list[_Worker] = []  # spawned on first use: a sweep with nothing to do starts none

    def _spawn(self) -> _Worker:
        ours, theirs = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(theirs, os.getpid()), daemon=True, name="fmlab-worker")
        proc.start()
        theirs.close()
        return _Worker(proc, ours)

    def free(self) -> int:
        return self.slots - sum(w.task is not None for w in self.workers)

    def submit(self, task: Work) -> None:
        w = next((w for w in self.workers if w.task is None), None)
        if w is None:
            w = self._spawn()
            self.workers.append(w)
        w.task, w.open = task, {t.trial_id for t in members(task)}
        w.conn.send(task)

    def poll(self, timeout_s: float, handle: Handler) -> None:
        if not self.workers:
            time.sleep(timeout_s)
            return
        ready = set(wait([w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers], timeout_s))
        for i, w in enumerate(self.workers):
            dead = w.proc.sentinel in ready
            if w.conn in ready:
                try:
                    while w.conn.poll():
                        ev = w.conn.recv()
                        if ev.kind in ("done", "failed"):
                            w.open.discard(ev.trial_id)
                            if not w.open:
                                w.task = None
                        handle(ev)
                except (EOFError, OSError):
                    dead = True
            if dead:
                w.proc.join(5)
                for tid in sorted(w.open) if w.task is not None else []:  # every trial of a lost pack
                    handle(Event("lost", tid, error=f"worker process died (exit code {w.proc.exitcode})"))
                w.conn.close()
                self.workers[i] = self._spawn()  # keep the pool at its size

    def shutdown(self) -> None:
        for w in self.workers:
            if w.proc.is_alive():
                w.proc.kill()  # state is saved each epoch; at most the running epoch is lost
        for w in self.workers:
            w.proc.join(5)
            w.conn.close()
        self.workers = []


def make(workers: int) -> Executor:
    """workers 0 = inline (this process), N >= 1 = N local processes."""
    return InlineExecutor() if workers == 0 else LocalExecutor(workers)
