"""Run a study: plan it in the store, claim trials one at a time, hand them to an executor, write
what comes back. The parent is the only writer; a heartbeat thread keeps its RUNNING rows alive.

Ctrl-C (or SIGTERM) kills the workers and gives their trials back (WAITING, resume state kept);
a killed worker's trial is retried from its last saved epoch (up to MAX_ATTEMPTS, then FAILED); on Ray
too: the state comes back with each epoch's row (fmlab.sweep.ray).

The loop claims (claim), submits (submit) and, with nothing of its own running, waits for trials that
another sweep runs (wait); a Recorder writes each event the executor sends back, one method per event.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from fmlab.config.metrics import val_text
from fmlab.durations import duration
from fmlab.store.db import HEARTBEAT_S, Plan, State, Store
from fmlab.study.spec import Study, Trial
from fmlab.sweep import local as executors
from fmlab.sweep import work
from fmlab.sweep.progress import Progress
from fmlab.training import packs
from fmlab.training.env import RunOptions

MAX_ATTEMPTS = 3


class _Heartbeat(threading.Thread):
    def __init__(self, path: Any) -> None:
        super().__init__(daemon=True, name="fmlab-heartbeat")
        self.path, self.stop = path, threading.Event()

    def run(self) -> None:
        store = Store(self.path)
        try:
            while not self.stop.wait(HEARTBEAT_S):
                try:
                    store.heartbeat()
                except sqlite3.Error:  # busy for a minute: try again next beat
                    pass
        finally:
            store.close()


def pack_id(ids: list[str]) -> str:
    """A pack's id: its trials' ids, hashed (packing is an execution choice: trial ids never change)."""
    return hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:12]


class Recorder:
    """What the sweep writes as its executor's events arrive, one method per event: the store first (the
    sweep's parent is its only writer), then the progress snapshot; handle() then gives the event to the
    TensorBoard board (optional) and the snapshot to on_update. A trial's end is shown (on_update) only by
    flush(), once the loop has handed its slot to the next trial, so the line counts the trials running then
    (shown at once, every line of a busy pool said "1 running" while 2 trained: the finished one had left, the
    next not yet come)."""

    def __init__(self, store: Store, prog: Progress, board: Any, on_update: Callable[[Progress], None]) -> None:
        self.store, self.prog, self.board, self.on_update = store, prog, board, on_update
        self.mine: dict[str, float] = {}  # the trials this sweep runs: id -> claimed at
        self.ended: list[str] = []  # lines of trials ended since the last flush()
        self.counted: dict[str, int] = {}  # the last epoch of each trial taken off prog.epochs_left

    def started(self, tid: str, max_epochs: int) -> None:
        """A trial claimed by this sweep, about to go to the executor."""
        self.mine[tid] = time.time()
        self.prog.running[tid] = {"started": self.mine[tid], "epoch": 0, "max_epochs": max_epochs}

    def handle(self, ev: work.Event) -> None:
        """The executor's callback: the event's own method, then the board and on_update."""
        record = {"epoch": self.epoch, "done": self.completed, "failed": self.failed, "lost": self.lost}.get(ev.kind)
        before = self.prog.last
        if record is not None:
            record(ev)
        if self.board is not None:
            self.board.record(ev)
        if ev.kind != "epoch":
            self.prog.running.pop(ev.trial_id, None)
            self.ended.append(self.prog.last)
            self.prog.last = before  # until flush() shows it: snapshots in between (the refill's) say the last shown
        else:
            self.on_update(self.prog)

    def flush(self) -> None:
        """Each trial ended since the last flush to on_update, one event each (after the slots are refilled)."""
        for line in self.ended:
            self.prog.last = line
            self.prog.events += 1
            self.on_update(self.prog)
        self.ended.clear()

    def epoch(self, ev: work.Event) -> None:
        tid, r, prog = ev.trial_id, ev.row, self.prog
        self.store.add_epoch(tid, r)
        if prog.epochs_left is not None:  # a resumed trial's first epoch here also counts those it ran before
            prog.epochs_left -= max(int(r["epoch"]) - self.counted.get(tid, 0), 0)
            self.counted[tid] = max(int(r["epoch"]), self.counted.get(tid, 0))
        prog.running[tid]["epoch"] = int(r["epoch"])
        prog.epochs += 1
        prog.epoch_s += float(r.get("epoch_s") or 0.0)
        took = f" ({duration(r['epoch_s'])})" if r.get("epoch_s") else ""
        prog.last = f"{tid} epoch {int(r['epoch'])}/{prog.running[tid]['max_epochs']}: {val_text(r)}{took}"

    def completed(self, ev: work.Event) -> None:
        from fmlab.training.checkpoint import save_trial  # files first (the sweep's), then the row (the store's)

        tid, prog = ev.trial_id, self.prog
        self.store.complete(tid, ev.result, ev.log, save_trial(ev.result, self.store.trial_dir(tid)))
        self._drop_epochs_left(tid)
        prog.done += 1
        prog.ran += 1
        prog.trial_s.append(time.time() - self.mine.pop(tid))
        m = ev.result.metrics
        prog.last = f"{tid} {State.COMPLETE}: {val_text(m)}, test acc {m['test_acc']:.4f} ({ev.result.stop_reason})"

    def failed(self, ev: work.Event) -> None:
        tid = ev.trial_id
        self.store.fail(tid, ev.error or "failed", ev.traceback or "", ev.log)
        self._count_failure(tid)
        self.mine.pop(tid, None)
        self.prog.last = f"{tid} {State.FAILED}: {ev.error}"

    def _drop_epochs_left(self, tid: str) -> None:
        """A trial ended before max_epochs (early stopping, a failure): its epochs not run are not left."""
        run = self.prog.running.get(tid)
        if run is not None and self.prog.epochs_left is not None:
            self.prog.epochs_left -= max(run["max_epochs"] - self.counted.get(tid, 0), 0)

    def lost(self, ev: work.Event) -> None:
        """A worker died under the trial: retried from its last saved epoch, FAILED after MAX_ATTEMPTS."""
        tid = ev.trial_id
        attempts = self.store.records(ids=[tid])[0]["attempts"]
        self.mine.pop(tid, None)
        if attempts >= MAX_ATTEMPTS:
            self.store.fail(tid, f"{ev.error}; gave up after {attempts} attempts", "", "")
            self._count_failure(tid)
        else:
            self.store.release([tid], error=f"{ev.error}; retrying (from its last saved epoch, if any)")
        self.prog.last = f"{tid}: {ev.error}"

    def interrupted(self) -> None:
        """Ctrl-C or an error: this sweep's trials go back (WAITING, resume state kept)."""
        self.store.release(list(self.mine), error="interrupted; will resume from the last saved epoch")
        self.mine.clear()

    def _count_failure(self, tid: str) -> None:
        self._drop_epochs_left(tid)
        self.prog.failed += 1
        self.prog.failed_here += 1


class _SweepLoop:
    """One sweep's loop over the plan's trials: claim, submit, poll the executor; wait while another sweep
    runs what is left."""

    def __init__(
        self,
        store: Store,
        trials: dict[str, Trial],
        ids: list[str],
        groups: list[list[str]] | None,
        ex: work.Executor,
        opts: RunOptions,
        rec: Recorder,
    ) -> None:
        self.store, self.trials, self.ids, self.groups = store, trials, ids, groups
        self.ex, self.opts, self.rec = ex, opts, rec

    def claim(self) -> list[str]:
        """The next trials to run: one WAITING trial of the plan, or with packs every claimable trial of the
        first pack that has any; [] when there is nothing to claim."""
        if self.groups is None:
            tid = self.store.claim(self.ids)
            return [tid] if tid else []
        for g in self.groups:
            got = self.store.claim_all(g)
            if got:
                return got
        return []

    def submit(self, got: list[str]) -> None:
        """Claimed trials to the executor: one task, or a pack of them trained as one model."""
        tasks = []
        for tid in got:
            t = self.trials[tid]
            self.rec.started(tid, t.config.train.max_epochs)
            tasks.append(work.Task(tid, t.config.to_dict(), str(self.store.state_dir(tid)), self.opts))
        self.ex.submit(tasks[0] if len(tasks) == 1 else work.Pack(pack_id(got), tuple(tasks)))
        if not self.rec.ended:  # else flush() shows the refill with the ends
            self.rec.on_update(self.rec.prog)

    def wait(self) -> bool:
        """Nothing of this sweep's is running: count the plan's trials by state; while another sweep runs some,
        wait a second (and take over those whose sweep died). False when none is RUNNING or WAITING."""
        prog, states = self.rec.prog, self.store.states(self.ids)
        prog.done = sum(s == State.COMPLETE for s in states.values())
        prog.failed = sum(s == State.FAILED for s in states.values())
        prog.elsewhere = sum(s == State.RUNNING for s in states.values())
        if not prog.elsewhere and not any(s == State.WAITING for s in states.values()):
            return False
        if prog.elsewhere:
            self.store.recover_stale(self.ids)
            self.rec.on_update(prog)
            time.sleep(1.0)
        return True

    def run(self) -> None:
        while True:
            while self.ex.free() > 0:
                got = self.claim()
                if not got:
                    break
                self.submit(got)
            self.rec.flush()
            if self.rec.mine:
                self.ex.poll(1.0, self.rec.handle)
            elif not self.wait():
                return


def run(
    store: Store,
    study: Study,
    plan: Plan,
    *,
    workers: int,
    opts: RunOptions,
    on_update: Callable[[Progress], None] = lambda p: None,
    estimate: float = 0.0,
    executor: work.Executor | None = None,
    board: Any = None,
    pack: int | None = None,
) -> Progress:
    """Run the plan's WAITING trials (and any that become WAITING) on executor (default: `workers`
    local processes, 0 = inline); returns the final progress. The executor is shut down at the end.
    board (a tboard.Board, optional) is handed each recorded epoch and result, after the store.
    pack: None runs every trial on its own; 0 trains each pack (fmlab.training.packs) as one model, K caps a
    pack at K trials. A pack takes one executor slot; its trials are claimed together."""
    trials = {t.id: t for t in study.trials()}
    ids = plan.ids
    groups = None if pack is None else [[t.id for t in g] for g in packs.group([trials[i] for i in ids], pack)]
    ex = executor or executors.make(workers)
    prog = Progress(
        total=len(ids), done=len(plan.done), failed=len(plan.failed), estimate_s=estimate, slots=max(ex.slots, 1)
    )
    if groups is None:  # a pack's epoch trains several trials at once: its ETA stays per trial
        prog.epochs_left = sum(trials[i].config.train.max_epochs for i in plan.todo)
    rec = Recorder(store, prog, board, on_update)
    hb = _Heartbeat(store.path)
    hb.start()
    try:
        _SweepLoop(store, trials, ids, groups, ex, opts, rec).run()
    except BaseException:
        ex.shutdown()
        rec.flush()
        rec.interrupted()
        raise
    finally:
        ex.shutdown()
        hb.stop.set()
        hb.join(timeout=HEARTBEAT_S + 1)
    return prog
