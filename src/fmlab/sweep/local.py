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
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from fmlab.training.env import RunOptions

FAULT_ENV = "FMLAB_FAULT"  # test-only fault injection, outside the config so trial ids do not change


@dataclass(frozen=True)
class Task:
    trial_id: str
    config: dict[str, Any]  # Config.to_dict()
    state_dir: str | None  # per-epoch resume state (train() resumes from it when present)
    opts: RunOptions = RunOptions()


@dataclass(frozen=True)
class Pack:
    """Trials of one pack (fmlab.training.packs), trained as one model (fmlab.training.packed) by one worker."""

    pack_id: str
    tasks: tuple[Task, ...]

    @property
    def trial_id(self) -> str:  # for messages: the pack and its size
        return f"pack {self.pack_id} ({len(self.tasks)} trials)"


Work = Task | Pack


def members(work: Work) -> tuple[Task, ...]:
    """The trials a unit of work runs: a task's own, a pack's all."""
    return work.tasks if isinstance(work, Pack) else (work,)


@dataclass
class Event:
    kind: str  # "epoch" | "done" | "failed" | "lost"
    trial_id: str
    row: dict[str, float] | None = None  # epoch
    result: Any = None  # done: a TrialResult
    error: str | None = None  # failed, lost: one line
    traceback: str | None = None  # failed
    log: str = ""
    resumed_from: int = 0  # epochs already done when this attempt started
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Event], None]


class Executor(Protocol):
    slots: int

    def free(self) -> int: ...
    def submit(self, task: Work) -> None: ...
    def poll(self, timeout_s: float, handle: Handler) -> None: ...
    def shutdown(self) -> None: ...


def faults(trial_id: str) -> list[list[str]]:
    """FMLAB_FAULT=nan:<id>,raise:<id>,kill:<id>:<epoch>,sleep:<id>:<s> (id or a prefix) -> this trial's faults.

    All act after an epoch's resume state is saved: nan/raise fail the trial, kill SIGKILLs the process
    running it (a worker, or the sweep itself when inline), sleep holds it after each epoch."""
    out = []
    for item in os.environ.get(FAULT_ENV, "").split(","):
        parts = item.strip().split(":")
        if len(parts) >= 2 and parts[1] and trial_id.startswith(parts[1]):
            out.append(parts)
    return out


class _Trial:
    """One trial's bookkeeping in a worker: its log, the epoch it resumed after, its injected faults."""

    def __init__(self, task: Task, emit: Handler) -> None:
        from fmlab.training.checkpoint import ResumeState

        self.tid, self.emit, self.log, self.resumed_from = task.trial_id, emit, [], 0
        state = Path(task.state_dir) if task.state_dir else None
        if ResumeState.exists(state):
            try:
                self.resumed_from = ResumeState.epoch(state)  # type: ignore[arg-type]
                self.log.append(f"resuming after epoch {self.resumed_from} from {state}")
            except (OSError, ValueError, KeyError):
                self.resumed_from = 0
        self.faults = faults(self.tid)

    def on_epoch(self, row: dict[str, float]) -> None:
        from fmlab.training.loop import Diverged

        self.log.append(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
                        f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  {row['epoch_s']:.1f}s")  # fmt: skip
        self.emit(Event("epoch", self.tid, row=dict(row)))
        for f in self.faults:
            if f[0] == "nan":
                raise Diverged(f"training loss is nan at epoch {row['epoch']} (injected by {FAULT_ENV})")
            if f[0] == "raise":
                raise RuntimeError(f"injected failure at epoch {row['epoch']} ({FAULT_ENV})")
            if f[0] == "sleep" and len(f) > 2:  # hold the trial mid-way, so a test can interrupt it there
                time.sleep(float(f[2]))
            if f[0] == "kill" and len(f) > 2 and int(f[2]) == row["epoch"]:
                os.kill(os.getpid(), signal.SIGKILL)  # after the epoch's state is saved: tests resume

    def end(self, what: Any) -> None:
        """The trial's TrialResult, or the exception it failed with."""
        if isinstance(what, BaseException):
            tb = "".join(traceback.format_exception(what))
            self.emit(Event("failed", self.tid, error=f"{type(what).__name__}: {what}", traceback=tb,
                            log="\n".join(self.log), resumed_from=self.resumed_from))  # fmt: skip
        else:
            self.emit(Event("done", self.tid, result=what, log="\n".join(self.log), resumed_from=self.resumed_from))


def run_task(task: Task, emit: Handler) -> None:
    """Train one trial, sending epoch rows as they finish and the result (or the failure) at the end."""
    from fmlab.config.schema import from_dict
    from fmlab.training.loop import train

    t = _Trial(task, emit)
    state = Path(task.state_dir) if task.state_dir else None
    try:
        res = train(from_dict(task.config), opts=task.opts, state_dir=state, on_epoch=t.on_epoch)
    except Exception as e:  # noqa: BLE001 - any trial failure is recorded, the study goes on
        t.end(e)
        return
    t.end(res)


def run_pack(pack: Pack, emit: Handler) -> None:
    """Train a pack's trials as one model (fmlab.training.packed.train_pack): each trial's epochs, result or
    failure go out as its own events, exactly as run_task sends them, as each one happens."""
    from fmlab.config.schema import from_dict
    from fmlab.training.packed import train_pack

    trials = {t.trial_id: _Trial(t, emit) for t in pack.tasks}
    ended: set[str] = set()

    def on_end(tid: str, what: Any) -> None:
        ended.add(tid)
        trials[tid].end(what)

    try:
        train_pack([from_dict(t.config) for t in pack.tasks], opts=pack.tasks[0].opts,
                   state_dirs=[t.state_dir for t in pack.tasks], on_epoch=lambda tid, row: trials[tid].on_epoch(row),
                   on_end=on_end, pack_id=pack.pack_id)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - before the pack trained (data, configs): all of its trials fail
        for tid, t in trials.items():
            if tid not in ended:
                t.end(e)


def run_work(work: Work, emit: Handler) -> None:
    """A task (one trial) or a pack (trained as one model)."""
    if isinstance(work, Pack):
        run_pack(work, emit)
    else:
        run_task(work, emit)


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
