"""The sweep loop's pieces without training: the Recorder writes each event to a real store, the wait step
counts the plan's trials by state, and publishing's one store write is its own step."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import tiny_study_file

from fmlab.store.db import State, Store, StoreError
from fmlab.study import spec as fstudy
from fmlab.sweep import local as executors
from fmlab.sweep import work
from fmlab.sweep.loop import MAX_ATTEMPTS, Recorder, _SweepLoop
from fmlab.sweep.progress import Progress


@pytest.fixture
def planned(tmp_path):
    st = fstudy.load(tiny_study_file(tmp_path), "t")
    s = Store(tmp_path / "runs" / "fmlab.db")
    plan = s.plan(st, st.trials())
    yield st, s, plan
    s.close()


def _recorder(s: Store, total: int) -> tuple[Recorder, list[tuple[int, str]]]:
    seen: list[tuple[int, str]] = []
    prog = Progress(total=total)
    return Recorder(s, prog, None, lambda p: seen.append((p.events, p.last))), seen


def test_recorder_writes_epochs_and_failures_then_the_snapshot(planned):
    st, s, plan = planned
    rec, seen = _recorder(s, len(plan.ids))
    tid = s.claim(plan.ids)
    rec.started(tid, 3)
    assert rec.prog.running[tid]["epoch"] == 0 and tid in rec.mine
    rec.handle(
        work.Event(
            "epoch",
            tid,
            row={
                "epoch": 1,
                "lr": 0.01,
                "train_loss": 1.5,
                "train_acc": 0.5,
                "val_loss": 1.25,
                "val_acc": 0.625,
                "epoch_s": 2.0,
            },
        )
    )
    assert [e["val_loss"] for e in s.epochs([tid])] == [1.25]
    assert rec.prog.running[tid]["epoch"] == 1 and rec.prog.epochs == 1 and rec.prog.events == 0
    assert seen[-1] == (0, f"{tid} epoch 1/3: val loss 1.2500 acc 0.6250 (2.0 s)")
    rec.handle(work.Event("failed", tid, error="Diverged: nan", traceback="tb", log="log"))
    assert s.states([tid])[tid] == State.FAILED and len(seen) == 1  # shown once the loop has refilled the slot
    rec.flush()
    assert s.states([tid])[tid] == State.FAILED and s.records(ids=[tid])[0]["error"] == "Diverged: nan"
    p = rec.prog
    assert (p.failed, p.failed_here, p.events, p.running, rec.mine) == (1, 1, 1, {}, {})
    assert seen[-1] == (1, f"{tid} FAILED: Diverged: nan")


def test_a_lost_trial_is_retried_then_failed_after_max_attempts(planned):
    st, s, plan = planned
    rec, _ = _recorder(s, len(plan.ids))
    tid = plan.ids[0]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert s.claim([tid]) == tid
        rec.started(tid, 1)
        rec.handle(work.Event("lost", tid, error="worker process died (exit code -9)"))
        rec.flush()
        r = s.records(ids=[tid])[0]
        if attempt < MAX_ATTEMPTS:  # back to WAITING, to resume from its last saved epoch
            assert r["state"] == State.WAITING and "retrying" in r["error"] and rec.prog.failed == 0
    assert r["state"] == State.FAILED and f"gave up after {MAX_ATTEMPTS} attempts" in r["error"]
    assert (rec.prog.failed, rec.prog.events, rec.mine) == (1, MAX_ATTEMPTS, {})


def test_interrupted_gives_this_sweeps_trials_back(planned):
    st, s, plan = planned
    rec, _ = _recorder(s, len(plan.ids))
    for tid in plan.ids[:2]:
        assert s.claim([tid]) == tid
        rec.started(tid, 1)
    rec.interrupted()
    assert set(s.states(plan.ids).values()) == {State.WAITING} and rec.mine == {}
    assert "interrupted" in s.records(ids=[plan.ids[0]])[0]["error"]


def test_wait_counts_the_plan_by_state_and_ends_when_nothing_is_left(planned):
    st, s, plan = planned
    rec, _ = _recorder(s, len(plan.ids))
    loop = _SweepLoop(s, {t.id: t for t in st.trials()}, plan.ids, None, executors.InlineExecutor(), None, rec)
    assert loop.wait() is True  # WAITING trials are left: the loop goes on (and claims them)
    for tid in plan.ids:
        s.claim([tid])
        s.fail(tid, "x", "")
    assert loop.wait() is False and (rec.prog.done, rec.prog.failed, rec.prog.elsewhere) == (0, 4, 0)


def test_publishing_writes_the_study_row_as_its_own_step(planned, tmp_path):
    """record_study_row rewrites the study's row from the file (the report follows its analysis keys); a budget
    the store has no trials under is one clear error before anything is written."""
    from fmlab.archive import publish

    st, s, plan = planned
    f = tiny_study_file(tmp_path, extra="")
    f.write_text(f.read_text() + "[analysis]\nmin_effect = { val_loss = 0.02 }\n")
    publish.record_study_row(fstudy.load(f, "t"), s.path)
    spec = json.loads(sqlite3.connect(s.path).execute("SELECT spec FROM studies").fetchone()[0])
    assert spec["min_effect"] == {"val_loss": 0.02}
    with pytest.raises(StoreError, match="has no trials under budget 'full'"):
        publish.record_study_row(fstudy.load(f, "full"), s.path)
    assert json.loads(sqlite3.connect(s.path).execute("SELECT spec FROM studies").fetchone()[0])["budget"] == "t"


class _TwoSlots:
    """An executor of 2 slots whose every poll ends the oldest trial it holds (FAILED: no training needed)."""

    slots = 2

    def __init__(self) -> None:
        self.held: list[str] = []

    def free(self) -> int:
        return self.slots - len(self.held)

    def submit(self, task) -> None:
        self.held.append(task.trial_id)

    def poll(self, timeout_s, handle) -> None:
        handle(work.Event("failed", self.held.pop(0), error="x"))

    def shutdown(self) -> None:
        pass


def test_each_ended_trial_is_shown_with_the_trials_running_after_the_refill(planned):
    """Issue 34: a sweep of 2 workers logged "1 running" throughout: the line was printed between a trial's end
    and the next trial's start. Now each end is shown once the slot is refilled: 2 running while trials wait."""
    st, s, plan = planned
    shown: list[tuple[int, int]] = []
    prog = Progress(total=len(plan.ids))
    rec = Recorder(s, prog, None, lambda p: shown.append((p.events, len(p.running))))
    _SweepLoop(s, {t.id: t for t in st.trials()}, plan.ids, None, _TwoSlots(), None, rec).run()
    per_event: dict[int, int] = {}
    for n, running in shown:
        per_event.setdefault(n, running)  # the snapshot each end was first shown with (the plain log's line)
    assert [per_event[n] for n in range(1, 5)] == [2, 2, 1, 0]


def test_the_eta_before_a_trial_ends_here_is_the_estimate_of_the_trials_left():
    """A resumed sweep (12 of 24 COMPLETE) logged an ETA of half its estimate: the estimate is of the 12 it runs,
    not of all 24. Before any trial ends here the ETA is the estimate, shrinking as others' trials complete."""
    prog = Progress(total=24, done=12, estimate_s=7200.0, slots=2)
    assert prog.eta_s() == pytest.approx(7200.0)
    prog.done = 18  # another sweep on the store completed 6 of them
    assert prog.eta_s() == pytest.approx(3600.0)
    prog.trial_s = [1800.0, 1800.0]  # then the trials that end here set the pace
    assert prog.eta_s() == pytest.approx(1800.0 * 6 / 2)


def test_the_eta_counts_the_epochs_left_at_the_pace_of_those_run_here(planned):
    """A resumed trial has fewer epochs to go than a fresh one, so its wall time says little of the next trial's:
    the ETA is the epochs left (a resumed trial's earlier ones and a stopped trial's unrun ones taken off, a
    retried one's counted once) at the pace of the epochs finished here."""
    st, s, plan = planned
    rec, _ = _recorder(s, 2)
    prog = rec.prog
    prog.epochs_left, prog.slots = 8, 2  # two trials of 4 epochs
    a, b = plan.ids[:2]

    def epoch(tid: str, k: int, took: float) -> None:
        row = {"epoch": k, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5}
        rec.handle(work.Event("epoch", tid, row={**row, "epoch_s": took}))

    for tid in (a, b):
        assert s.claim([tid]) == tid
        rec.started(tid, 4)
    epoch(a, 3, 10.0)  # a resumed after 2 epochs of an earlier sweep: 3 of its 4 are behind it
    assert prog.epochs_left == 5 and prog.eta_s() == pytest.approx(5 * 10.0 / 2)
    epoch(b, 1, 30.0)
    rec.handle(work.Event("lost", b, error="worker process died (exit code -9)"))
    assert s.claim([b]) == b
    rec.started(b, 4)
    epoch(b, 1, 30.0)  # the retry trains epoch 1 again: not taken off twice
    epoch(b, 2, 30.0)
    assert prog.epochs_left == 3 and prog.eta_s() == pytest.approx(3 * (100.0 / 4) / 2)
    rec.handle(work.Event("failed", b, error="Diverged: nan"))  # its 2 epochs not run are not left
    assert prog.epochs_left == 1
