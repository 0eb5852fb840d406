"""What a sweep hands a worker and what comes back: a task (one trial) or a pack (trained as one model), the
Events a run emits (epoch rows, results, failures), the Executor interface every executor implements, and
running a piece of work in the current process (which local workers and Ray tasks both call).

Everything here is plain and picklable: spawned workers and Ray tasks receive it by value."""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fmlab.config.metrics import val_text
from fmlab.durations import duration
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

        self.log.append(
            f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
            f"{val_text(row)}  {duration(row['epoch_s'])}"
        )
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
            self.emit(
                Event(
                    "failed",
                    self.tid,
                    error=f"{type(what).__name__}: {what}",
                    traceback=tb,
                    log="\n".join(self.log),
                    resumed_from=self.resumed_from,
                )
            )
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
        train_pack(
            [from_dict(t.config) for t in pack.tasks],
            opts=pack.tasks[0].opts,
            state_dirs=[t.state_dir for t in pack.tasks],
            on_epoch=lambda tid, row: trials[tid].on_epoch(row),
            on_end=on_end,
            pack_id=pack.pack_id,
        )
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
