"""How trials enter the store: the study's row, a sweep's plan (new trials WAITING, stale rows recovered,
FAILED ones reset on request), the planned ids by state, and finished trials imported from a results folder.

A mixin beside fmlab.store.lifecycle.Lifecycle in fmlab.store.db.Store: Store supplies the connection (db,
tx()) and the checkpoint layout (state_dir()), Lifecycle the one state change (transition) and the stale-run
recovery; every state change here goes through transition too.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.store.lifecycle import insert_epochs, json_col
from fmlab.store.states import TRANSITIONS, Plan, State

W, R, C, F = State.WAITING, State.RUNNING, State.COMPLETE, State.FAILED


def _columns(study: Any) -> list[str]:
    """The study's cell columns: its factors, or 'arm' for an arms study."""
    return ["arm"] if getattr(study, "design", "grid") == "arms" else list(study.factors)


class Planning:
    """Store's methods that bring trials in (mixed into fmlab.store.db.Store)."""

    if TYPE_CHECKING:  # supplied by Store and Lifecycle
        db: sqlite3.Connection

        def tx(self) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...
        def state_dir(self, tid: str) -> Path: ...

        transition: Callable[..., bool]  # Lifecycle.transition, the one state change
        recover_stale: Callable[..., list[str]]

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
            json_col(_columns(study)),
            json_col(study.spec()),
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
                    (t.id, json_col(t.config.to_record()), t.seed, State.WAITING.value, now),
                )
                # the cell follows the study file: an arm added later may share an existing trial
                db.execute(
                    "INSERT INTO study_trials VALUES (?,?,?,?) ON CONFLICT(study, budget, trial) DO UPDATE "
                    "SET cell=excluded.cell",
                    (study.name, study.budget, t.id, json_col(t.cell)),
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
                metrics=json_col(metrics or None),
                timings=json_col(timings or None),
                env=json_col(env),
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
            insert_epochs(db, tid, epochs, replace_all=True)
        shutil.rmtree(self.state_dir(tid), ignore_errors=True)

    def import_epochs(self, tid: str, epochs: list[dict[str, Any]]) -> bool:
        """A WAITING trial's epoch rows so far from elsewhere (`fmlab import` of a trial to resume mid-way,
        its resume state placed beside): they replace any. False (nothing written) unless it is WAITING."""
        with self.tx() as db:
            row = db.execute("SELECT state FROM trials WHERE id = ?", (tid,)).fetchone()
            if row is None or row["state"] != W.value:
                return False
            insert_epochs(db, tid, epochs, replace_all=True)
        return True

    def add_artifacts(self, tid: str, paths: dict[str, Path]) -> None:
        with self.tx() as db:
            for kind, p in paths.items():
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (tid, kind, str(p), time.time()))
