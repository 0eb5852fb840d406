"""The write side of the store: planning a sweep's trials, atomic claims, heartbeats, stale-run recovery and
each state change (WAITING -> RUNNING -> COMPLETE / FAILED, imports), always through Store.transition.

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
from fmlab.store.states import TRANSITIONS, Plan, State, TransitionError

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


def _columns(study: Any) -> list[str]:
    """The study's cell columns: its factors, or 'arm' for an arms study."""
    return ["arm"] if getattr(study, "design", "grid") == "arms" else list(study.factors)


def _j(x: Any) -> str | None:
    return None if x is None else json.dumps(x, allow_nan=False)


_EPOCH_INSERT = (
    f"INSERT OR REPLACE INTO epochs (trial, {', '.join(EPOCH_ROW)}) VALUES ({', '.join('?' * (1 + len(EPOCH_ROW)))})"
)


def _insert_epochs(
    db: sqlite3.Connection, tid: str, rows: Iterable[dict[str, Any]], *, replace_all: bool = False
) -> None:
    """The one write of epoch rows (columns: fmlab.config.metrics.EPOCH_ROW): a row replaces the trial's row
    of the same epoch; replace_all drops the trial's other rows first (a finished or imported trial)."""
    if replace_all:
        db.execute("DELETE FROM epochs WHERE trial = ?", (tid,))
    db.executemany(_EPOCH_INSERT, [(tid, int(r["epoch"]), *(r.get(c) for c in EPOCH_COLS)) for r in rows])


class Lifecycle:
    """Store's write methods (mixed into fmlab.store.db.Store)."""

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

    def _stale_ids(self, ids: Iterable[str] | None = None, *, mine_too: bool = False) -> list[str]:
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
        stale = self._stale_ids(ids, mine_too=mine_too)
        if stale:
            with self.tx() as db:
                for tid in stale:
                    self.transition(db, tid, W, (R,), owner_host=None, owner_pid=None, heartbeat=None)
        return stale

    def record_study(self, study: Any, db: sqlite3.Connection | None = None) -> None:
        """Write the study's row (description, factors, spec: what the analysis reads, e.g. claims and
        min_effect) from its file; trials are untouched. plan() calls it; so does publish, so that a
        report follows the study file's current analysis keys."""
        now = time.time()
        args = (
            study.name,
            study.description,
            study.path,
            study.select,
            _j(_columns(study)),
            _j(study.spec()),
            now,
            now,
        )
        sql = (
            "INSERT INTO studies VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
            "description=excluded.description, path=excluded.path, select_metric=excluded.select_metric, "
            "factors=excluded.factors, spec=excluded.spec, updated=excluded.updated"
        )
        if db is not None:
            db.execute(sql, args)
            return
        with self.tx() as tx:
            tx.execute(sql, args)

    def plan(self, study: Any, trials: list[Any], *, retry_failed: bool = False) -> Plan:
        """Record the study and its trials (WAITING when new), recover stale rows; say what is left."""
        now = time.time()
        ids = [t.id for t in trials]
        with self.tx() as db:
            self.record_study(study, db)
            for t in trials:
                db.execute(
                    "INSERT OR IGNORE INTO trials (id, config, seed, state, created) VALUES (?,?,?,?,?)",
                    (t.id, _j(t.config.to_dict()), t.seed, State.WAITING.value, now),
                )
                # the cell follows the study file: an arm added later may share an existing trial
                db.execute(
                    "INSERT INTO study_trials VALUES (?,?,?,?) ON CONFLICT(study, budget, trial) DO UPDATE "
                    "SET cell=excluded.cell",
                    (study.name, study.budget, t.id, _j(t.cell)),
                )
            if retry_failed:
                for tid in ids:
                    if self.transition(db, tid, W, (F,), error=None, traceback=None, attempts=0):
                        db.execute("DELETE FROM epochs WHERE trial = ?", (tid,))
                        shutil.rmtree(self.state_dir(tid), ignore_errors=True)
        recovered = self.recover_stale(ids, mine_too=True)
        plan = self.status(ids)
        plan.recovered = recovered
        for tid in plan.done:  # a crash between COMPLETE and cleanup leaves resume state behind
            shutil.rmtree(self.state_dir(tid), ignore_errors=True)
        return plan

    def status(self, ids: list[str]) -> Plan:
        """Read-only: the planned ids by state (ids not in the store yet count as to do)."""
        states = self.states(ids)
        p = Plan(ids=list(ids))
        for tid in ids:
            {C: p.done, F: p.failed, R: p.running, W: p.todo}[states.get(tid, W)].append(tid)
        return p

    def states(self, ids: Iterable[str]) -> dict[str, State]:
        """Each id's state (ids not in the store are left out)."""
        ids = list(ids)
        out: dict[str, State] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT id, state FROM trials WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r["id"]: State(r["state"]) for r in self.db.execute(q, chunk)})
        return out

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
            _insert_epochs(db, tid, [row])

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
                metrics=_j(result.metrics),
                timings=_j(result.timings),
                env=_j(result.env),
                best_epoch=result.best_epoch,
                stop_reason=result.stop_reason,
                n_params=result.n_params,
                log=log,
                owner_pid=None,
                heartbeat=None,
            ):
                return False  # no longer ours (taken back as stale): the other owner writes it
            _insert_epochs(db, tid, result.epochs, replace_all=True)
            for kind, name in (("weights", "best.safetensors"), ("trial_json", "trial.json")):
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (tid, kind, str(ckpt / name), now))
        shutil.rmtree(self.state_dir(tid), ignore_errors=True)
        return True

    def import_complete(
        self,
        tid: str,
        *,
        metrics: dict[str, float],
        timings: dict[str, Any],
        env: dict[str, Any],
        best_epoch: int | None,
        stop_reason: str | None,
        n_params: int | None,
        epochs: list[dict[str, Any]],
        started: float | None = None,
        finished: float | None = None,
        state: State = C,
        error: str | None = None,
    ) -> None:
        """Mark a planned trial COMPLETE (or FAILED, with its error) with results from elsewhere (`fmlab
        import`); its epochs replace any. A RUNNING trial (a live sweep) is left alone."""
        with self.tx() as db:
            to = State(state)
            frm = tuple(f for f in (W, F, C) if (f, to) in TRANSITIONS)  # never a RUNNING row (a live sweep)
            if not self.transition(
                db,
                tid,
                to,
                frm,
                started=started,
                finished=finished or time.time(),
                metrics=_j(metrics or None),
                timings=_j(timings or None),
                env=_j(env),
                best_epoch=best_epoch,
                stop_reason=stop_reason,
                n_params=n_params,
                error=error,
                traceback=None,
                log="imported by fmlab import",
                owner_host=None,
                owner_pid=None,
                heartbeat=None,
            ):
                return
            _insert_epochs(db, tid, epochs, replace_all=True)
        shutil.rmtree(self.state_dir(tid), ignore_errors=True)

    def add_artifacts(self, tid: str, paths: dict[str, Path]) -> None:
        with self.tx() as db:
            for kind, p in paths.items():
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (tid, kind, str(p), time.time()))

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
