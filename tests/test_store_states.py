"""The store's one state machine (Store.transition and its table), checked directly: refused pairs, claim
races between real processes, stale recovery, release. Real SQLite; no training."""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_study

from fmlab.store.db import TRANSITIONS, State, Store, TransitionError
from fmlab.study import spec as fstudy

W, R, C, F = State.WAITING, State.RUNNING, State.COMPLETE, State.FAILED


def planned(tmp: Path, n_seeds: int = 4) -> tuple[Store, list[str]]:
    st = fstudy.load(write_study(tmp, "sm", {"train.lr": [0.01, 0.02]}, seeds=range(n_seeds)))
    s = Store(tmp / "fm.db")
    s.plan(st, st.trials())
    return s, [t.id for t in st.trials()]


def state(path: Path, tid: str) -> str:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT state FROM trials WHERE id = ?", (tid,)).fetchone()[0]


def test_the_table_allows_exactly_the_listed_changes(tmp_path):
    s, ids = planned(tmp_path)
    assert (C, W) not in TRANSITIONS and (C, R) not in TRANSITIONS and (W, W) not in TRANSITIONS
    for frm, to in itertools.product(State, State):
        if (frm, to) in TRANSITIONS:
            continue
        with pytest.raises(TransitionError, match=f"{frm.value} -> {to.value} is not an allowed"):
            with s.tx() as db:
                s.transition(db, ids[0], to, (frm,))
    assert state(tmp_path / "fm.db", ids[0]) == "WAITING"  # refused changes write nothing
    with s.tx() as db:  # an allowed pair applies only from the state it names
        assert not s.transition(db, ids[0], W, (F,))
        assert s.transition(db, ids[0], R, (W,), owner_host=s.host, owner_pid=s.pid, heartbeat=0.0)
        assert not s.transition(db, ids[0], R, (W,))


def _claim_all(path: str, ids: list[str], q) -> None:
    s = Store(path)
    got = []
    while (tid := s.claim(ids)) is not None:
        got.append(tid)
    q.put((os.getpid(), got))


def test_claims_from_racing_processes_take_each_trial_once(tmp_path):
    s, ids = planned(tmp_path, n_seeds=10)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(str(tmp_path / "fm.db"), ids, q)) for _ in range(4)]
    for p in procs:
        p.start()
    res = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    taken = [t for _, got in res for t in got]
    assert sorted(taken) == sorted(ids)  # every trial once, none twice
    with sqlite3.connect(tmp_path / "fm.db") as db:
        rows = db.execute("SELECT id, state, owner_pid, attempts FROM trials").fetchall()
    owner = {t: pid for pid, got in res for t in got}
    assert all(st == "RUNNING" and pid == owner[tid] and n == 1 for tid, st, pid, n in rows)


def test_stale_rows_go_back_to_waiting_live_owners_keep_theirs(tmp_path):
    s, ids = planned(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = os.getppid()  # pytest's parent: alive for the whole test
    with s.tx() as db:
        import time

        for tid, pid in ((ids[0], int(dead.stdout)), (ids[1], live)):
            assert s.transition(db, tid, R, (W,), owner_host=s.host, owner_pid=pid, heartbeat=time.time())
        assert s.transition(db, ids[2], R, (W,), owner_host="elsewhere", owner_pid=1, heartbeat=time.time() - 3600)
    assert sorted(s.recover_stale()) == sorted([ids[0], ids[2]])  # dead pid, and a heartbeat an hour old
    p = tmp_path / "fm.db"
    assert [state(p, i) for i in ids[:3]] == ["WAITING", "RUNNING", "WAITING"]


def test_release_and_fail_touch_only_this_process_rows(tmp_path):
    s, ids = planned(tmp_path)
    other = Store(tmp_path / "fm.db")
    other.pid = s.pid + 1  # another sweep on this host
    a, b = s.claim(ids), other.claim(ids)
    s.release([a, b], error="interrupted")
    p = tmp_path / "fm.db"
    assert (state(p, a), state(p, b)) == ("WAITING", "RUNNING")
    s.fail(b, "boom", "")
    assert state(p, b) == "RUNNING"  # not ours: refused quietly, the owner decides
    other.fail(b, "boom", "")
    assert state(p, b) == "FAILED"
    st = fstudy.load(write_study(tmp_path, "sm", {"train.lr": [0.01, 0.02]}, seeds=range(4)))
    assert b in s.plan(st, st.trials(), retry_failed=True).todo and state(p, b) == "WAITING"
