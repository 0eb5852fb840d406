"""A trial's run in the store: atomic claims, heartbeats, epoch rows, stale-run recovery and each state change
(WAITING -> RUNNING -> COMPLETE / FAILED), always through Store.transition (planning and imports:
fmlab.store.planning, through it too).

A mixin: fmlab.store.db.Store supplies the connection (db, tx()), its owner identity (host, pid) and the
checkpoint layout (state_dir()); this class holds what changes a trial's row.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.config.metrics import EPOCH_COLS, EPOCH_ROW
from fmlab.store.states import TRANSITIONS, State, TransitionError

W, R, C, F = State.WAITING, State.RUNNING, State.COMPLETE, State.FAILED
HEARTBEAT_S = 5.0  # how often the parent refreshes its RUNNING rows
HEARTBEAT_TTL_S = 60.0  # a RUNNING row not refreshed for this long belongs to a dead sweep


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def json_col(x: Any) -> str | None:
    """A value as the JSON text of its column (None stays NULL; NaN is refused)."""
    return None if x is None else json.dumps(x, allow_nan=False)


_EPOCH_INSERT = (
    f"INSERT OR REPLACE INTO epochs (trial, {', '.join(EPOCH_ROW)}) VALUES ({', '.join('?' * (1 + len(EPOCH_ROW)))})"
)


def insert_epochs(
    db: sqlite3.Connection, tid: str, rows: Iterable[dict[str, Any]], *, replace_all: bool = False
) -> None:
    """The one write of epoch rows (columns: fmlab.config.metrics.EPOCH_ROW): a row replaces the trial's row
    of the same epoch; replace_all drops the trial's other rows first (a finished or imported trial)."""
    if replace_all:
        db.execute("DELETE FROM epochs WHERE trial = ?", (tid,))
    db.executemany(_EPOCH_INSERT, [(tid, int(r["epoch"]), *(r.get(c) for c in EPOCH_COLS)) for r in rows])


class Lifecycle:
    """Store's writes of a running trial and the one state change (mixed into fmlab.store.db.Store)."""

    if TYPE_CHECKING:  # supplied by Store
        db: sqlite3.Connection
        host: str
        pid: int

        def tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
        def state_dir(self, tid: str) -> Path: ...

    def transition(
        self, db: sqlite3.Connection, tid: str, to: State, frm: tuple[State, ...], *, owned: bool = False, **cols: Any
    ) -> bool:
        """The one place a trial's state changes: UPDATE the row from one of frm to to (and set cols) when it
        is in one of frm (and, with owned, RUNNING under this process). False when the row is not in such a
        state (another sweep took it, or it is gone); TransitionError for a pair TRANSITIONS lacks."""
        bad = [f for f in frm if (f, to) not in TRANSITIONS]
        if bad:
            raise TransitionError(
                f"trial {tid}: {bad[0].value} -> {to.value} is not an allowed state change; "
                f"allowed: {', '.join(f'{a}->{b}' for a, b in TRANSITIONS)}"
            )
        sets = ", ".join(f"{k}=?" for k in ("state", *cols))
        where = f"id=? AND state IN ({','.join('?' * len(frm))})"
        args: list[Any] = [to.value, *cols.values(), tid, *(f.value for f in frm)]
        if owned:
            where += " AND owner_host=? AND owner_pid=?"
            args += [self.host, self.pid]
        return db.execute(f"UPDATE trials SET {sets} WHERE {where}", args).rowcount == 1

    def stale_ids(self, ids: Iterable[str] | None = None, *, mine_too: bool = False) -> list[str]:
        """Read-only: the RUNNING trials (of ids) whose owner is gone (heartbeat expired, or its pid dead on
        this host); with mine_too, also those that name this process (a previous process with our pid)."""
        now = time.time()
        rows = self.db.execute(
            "SELECT id, owner_host, owner_pid, heartbeat FROM trials WHERE state = ?", (State.RUNNING.value,)
        ).fetchall()
        want = set(ids) if ids is not None else None
        out = []
        for r in rows:
            if want is not None and r["id"] not in want:
                continue
            if r["heartbeat"] is None or now - r["heartbeat"] > HEARTBEAT_TTL_S:
                out.append(r["id"])
            elif r["owner_host"] == self.host and r["owner_pid"] == self.pid:
                if mine_too:  # a previous process with our pid; we own nothing yet
                    out.append(r["id"])
            elif r["owner_host"] == self.host and not _pid_alive(r["owner_pid"]):
                out.append(r["id"])
        return out

    def recover_stale(self, ids: Iterable[str] | None = None, *, mine_too: bool = False) -> list[str]:
        """Put RUNNING rows whose owner is gone back to WAITING; their resume state is kept."""
        stale = self.stale_ids(ids, mine_too=mine_too)
        if stale:
            with self.tx() as db:
                for tid in stale:
                    self.transition(db, tid, W, (R,), owner_host=None, owner_pid=None, heartbeat=None)
        return stale

    def claim(self, ids: Iterable[str]) -> str | None:
        """Atomically take the first WAITING trial of ids for this process; None if none is left."""
        got = self._claim(ids, first=True)
        return got[0] if got else None

    def claim_all(self, ids: Iterable[str]) -> list[str]:
        """Atomically take every WAITING trial of ids (a pack) for this process; [] if none is left."""
        return self._claim(ids, first=False)

    def _claim(self, ids: Iterable[str], first: bool) -> list[str]:
        now, got = time.time(), []
        with self.tx() as db:
            for tid in ids:
                n = db.execute("SELECT attempts FROM trials WHERE id=? AND state=?", (tid, W.value)).fetchone()
                if n is not None and self.transition(
                    db,
                    tid,
                    R,
                    (W,),
                    owner_host=self.host,
                    owner_pid=self.pid,
                    heartbeat=now,
                    started=now,
                    attempts=(n[0] or 0) + 1,
                ):
                    got.append(tid)
                    if first:
                        break
        return got

    def heartbeat(self) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE trials SET heartbeat=? WHERE state=? AND owner_host=? AND owner_pid=?",
                (time.time(), State.RUNNING.value, self.host, self.pid),
            )

    def add_epoch(self, tid: str, row: dict[str, float]) -> None:
        with self.tx() as db:
            insert_epochs(db, tid, [row])

    def complete(self, tid: str, result: Any, log: str, ckpt: Path) -> bool:
        """The trial's row, epochs and artifact paths in one transaction, once the sweep has written its
        checkpoint files into ckpt (files first, then the row); drops the resume state."""
        now = time.time()
        with self.tx() as db:
            if not self.transition(
                db,
                tid,
                C,
                (R,),
                owned=True,
                finished=now,
                metrics=json_col(result.metrics),
                timings=json_col(result.timings),
                env=json_col(result.env),
                best_epoch=result.best_epoch,
                stop_reason=result.stop_reason,
                n_params=result.n_params,
                log=log,
                owner_pid=None,
                heartbeat=None,
            ):
                return False  # no longer ours (taken back as stale): the other owner writes it
            insert_epochs(db, tid, result.epochs, replace_all=True)
            for kind, name in (("weights", "best.safetensors"), ("trial_json", "trial.json")):
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (tid, kind, str(ckpt / name), now))
        shutil.rmtree(self.state_dir(tid), ignore_errors=True)
        return True

    def fail(self, tid: str, error: str, traceback: str, log: str = "") -> None:
        with self.tx() as db:
            self.transition(
                db,
                tid,
                F,
                (R,),
                owned=True,
                finished=time.time(),
                error=error,
                traceback=traceback,
                log=log,
                owner_pid=None,
                heartbeat=None,
            )

    def release(self, tids: Iterable[str], error: str | None = None) -> None:
        """Give trials back (WAITING) so the next sweep redoes them from their last saved epoch."""
        with self.tx() as db:
            for tid in tids:
                self.transition(
                    db, tid, W, (R,), owned=True, owner_host=None, owner_pid=None, heartbeat=None, error=error
                )
