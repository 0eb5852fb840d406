"""The store's one state machine (Store.transition and its table), checked directly: refused pairs, claim
races between real processes, stale recovery, release. Real SQLite; no training."""

from __future__ import annotations

import ast
import itertools
import json
import multiprocessing as mp
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_study

from fmlab.config.metrics import EPOCH_ROW
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


SRC = Path(__file__).resolve().parents[1] / "src" / "fmlab"
OWNER = SRC / "config" / "states.py"  # where State is defined: the only module that spells a state


def state_literals(path: Path) -> list[str]:
    """'line: text' for each string constant of the module that names a trial state: one equal to a State
    value, or one holding a value in SQL quotes ('COMPLETE'); the schema's text (CREATE TABLE, its CHECK
    constraints) may name them."""
    values = {s.value for s in State}
    quoted = re.compile("|".join(f"'{v}'" for v in values))
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            v = node.value
            if v in values or (quoted.search(v) and "CREATE TABLE" not in v):
                out.append((node.lineno, f"{node.lineno}: {v!r}"))
    return [text for _, text in sorted(out)]


def test_the_state_literal_scan_finds_comparisons_and_sql_not_the_schema_or_prose(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('''"""COMPLETE trials, FAILED ones: prose names them."""
DDL = "CREATE TABLE t (state TEXT CHECK (state IN ('WAITING', 'FAILED')))"
def f(r, db):
    db.execute("SELECT id FROM trials WHERE state = 'RUNNING'")
    return r["state"] == "COMPLETE" or f"{r['id']} COMPLETE: done"
''')
    assert state_literals(f) == ["4: \"SELECT id FROM trials WHERE state = 'RUNNING'\"", "5: 'COMPLETE'"]


def test_no_module_but_the_owner_spells_a_trial_state_as_a_string():
    """State (fmlab.config.states) owns the states' text: every other module names a state by its member."""
    found = [
        f"{f.relative_to(SRC.parent)}:{hit}"
        for f in sorted(SRC.rglob("*.py"))
        if f != OWNER
        for hit in state_literals(f)
    ]
    assert not found, "trial states spelled as strings (use fmlab.config.states.State):\n" + "\n".join(found)


def test_the_store_hands_out_state_members_that_read_as_their_text(tmp_path):
    from fmlab.api import handles as api

    s, ids = planned(tmp_path)
    tid = s.claim(ids)
    got = s.states(ids)
    assert got[tid] is R and {got[i] for i in ids if i != tid} == {W}
    rec = s.records(ids=[tid])[0]
    assert rec["state"] is R and json.dumps(rec["state"]) == '"RUNNING"' and f"{rec['state']}" == "RUNNING"
    assert [r["id"] for r in s.records(states=["RUNNING"])] == [tid]  # the CLI's --state text still selects
    assert api.STATES == tuple(m.value for m in State) and all(type(v) is str for v in api.STATES)
    assert state(tmp_path / "fm.db", tid) == "RUNNING"  # the row holds the text


def test_epoch_rows_have_one_column_list_and_one_insert(tmp_path):
    s, ids = planned(tmp_path)
    cols = [r[1] for r in s.db.execute("PRAGMA table_info(epochs)")]
    assert cols == ["trial", *EPOCH_ROW]  # the schema's columns are EPOCH_ROW's, in order
    row = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 0.9, "val_acc": 0.6, "epoch_s": 2.0}
    s.add_epoch(ids[0], row)
    s.add_epoch(ids[0], {**row, "val_acc": 0.7})  # the same epoch again: replaced
    s.add_epoch(ids[0], {**row, "epoch": 2})
    assert [(e["epoch"], e["val_acc"]) for e in s.epochs([ids[0]])] == [(1, 0.7), (2, 0.6)]
    s.import_complete(
        ids[0],
        metrics={"val_acc": 0.8},
        timings={},
        env={},
        best_epoch=3,
        stop_reason="max_epochs",
        n_params=10,
        epochs=[{**row, "epoch": 3, "val_acc": 0.8}],
    )
    assert s.epochs([ids[0]]) == [{"trial": ids[0], **row, "epoch": 3, "val_acc": 0.8}]  # the old rows are gone
    inserts = [
        f"{f.relative_to(SRC.parent)}:{n.lineno}"
        for f in sorted(SRC.rglob("*.py"))
        for n in ast.walk(ast.parse(f.read_text()))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and re.search(r"INSERT\b.*\bINTO epochs\b", n.value)
    ]
    assert len(inserts) == 1 and inserts[0].startswith("fmlab/store/lifecycle.py"), inserts
