"""The store: one SQLite file (WAL) of studies, trials, their per-epoch rows and artifacts.

Only the sweep's parent process writes. A RUNNING trial names its owner (host, pid) and carries a
heartbeat; it is taken back (to WAITING) only when its owner is gone: the heartbeat expired, or the
owner pid on this host no longer exists. Claims are atomic (BEGIN IMMEDIATE + conditional UPDATE),
so concurrent sweeps never run the same trial twice. Checkpoints live next to the file:
<store dir>/trials/<id>/best.safetensors + trial.json, resume state in <id>/state/ until COMPLETE.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict

from .errors import FmlabError
from .metrics import EPOCH_COLS as EPOCH_COLS  # defined once, in fmlab.metrics

SCHEMA_VERSION = 1
DEFAULT_PATH = Path("runs/fmlab.db")
HEARTBEAT_S = 5.0  # how often the parent refreshes its RUNNING rows
HEARTBEAT_TTL_S = 60.0  # a RUNNING row not refreshed for this long belongs to a dead sweep

DDL = """
CREATE TABLE IF NOT EXISTS studies (
  name TEXT PRIMARY KEY, description TEXT, path TEXT, select_metric TEXT NOT NULL,
  factors TEXT NOT NULL, spec TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
  id TEXT PRIMARY KEY, config TEXT NOT NULL, seed INTEGER NOT NULL, state TEXT NOT NULL,
  owner_host TEXT, owner_pid INTEGER, heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0,
  created REAL NOT NULL, started REAL, finished REAL, error TEXT, traceback TEXT, log TEXT,
  metrics TEXT, timings TEXT, env TEXT, best_epoch INTEGER, stop_reason TEXT, n_params INTEGER);
CREATE INDEX IF NOT EXISTS trials_state ON trials(state);
CREATE TABLE IF NOT EXISTS study_trials (
  study TEXT NOT NULL REFERENCES studies(name), budget TEXT NOT NULL, trial TEXT NOT NULL REFERENCES trials(id),
  cell TEXT NOT NULL, PRIMARY KEY (study, budget, trial));
CREATE TABLE IF NOT EXISTS epochs (
  trial TEXT NOT NULL REFERENCES trials(id), epoch INTEGER NOT NULL, lr REAL, train_loss REAL, train_acc REAL,
  val_loss REAL, val_acc REAL, epoch_s REAL, PRIMARY KEY (trial, epoch));
CREATE TABLE IF NOT EXISTS artifacts (
  trial TEXT NOT NULL REFERENCES trials(id), kind TEXT NOT NULL, path TEXT NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (trial, kind));
"""


class StoreError(FmlabError):
    """A missing or unusable store, or a trial reference that matches nothing."""


class State(StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


W, R, C, F = State.WAITING, State.RUNNING, State.COMPLETE, State.FAILED
# every trial state change goes through Store.transition, which refuses any pair not listed here
TRANSITIONS: dict[tuple[State, State], str] = {
    (W, R): "claim: a sweep takes a WAITING trial",
    (R, C): "complete: its owner records the result",
    (R, F): "fail: its owner records the error",
    (R, W): "release (interrupted, retrying) or recover_stale (the owner is gone); resume state is kept",
    (F, W): "plan(retry_failed=True): run a FAILED trial again from scratch",
    (W, C): "import: a results folder brings a finished trial",
    (F, C): "import: a results folder brings a finished trial",
    (W, F): "import: a results folder brings a FAILED trial",
}


class TransitionError(StoreError):
    """A state change the table does not allow (a bug in the caller, not bad input)."""


class TrialRecord(TypedDict):
    """One (study, budget, trial) link as Store.records returns it: the typed shape every listing reads."""

    id: str
    study: str | None
    budget: str | None
    label: str | None
    state: str  # a State value
    seed: int
    cell: dict[str, Any]  # factor values, or {"arm": name, "also": [...]}
    config: dict[str, Any]
    metrics: dict[str, float]  # fmlab.metrics.METRICS once COMPLETE
    best_epoch: int | None
    stop_reason: str | None
    n_params: int | None
    timings: dict[str, Any]
    attempts: int
    error: str | None
    owner: str | None  # "host:pid" while RUNNING
    started: float | None
    finished: float | None


@dataclass
class Plan:
    """What a sweep will do: all planned ids, split by their state in the store."""

    ids: list[str]
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # RUNNING in another live sweep
    todo: list[str] = field(default_factory=list)  # WAITING: this sweep runs them
    recovered: list[str] = field(default_factory=list)  # stale RUNNING rows put back to WAITING


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


class Store:
    def __init__(self, path: str | Path = DEFAULT_PATH, *, create: bool = True, read_only: bool = False):
        """read_only: a connection that cannot write (mode=ro), for watchers and live reports: it takes
        no write lock, so any number of them read beside the sweep (WAL); implies create=False."""
        self.path = Path(path)
        if not self.path.exists() and (not create or read_only):
            raise StoreError(f"{self.path}: no store here; run 'fmlab sweep STUDY_FILE' first or pass --store PATH")
        self.root = self.path.parent
        self.host, self.pid = socket.gethostname(), os.getpid()
        if read_only:
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60,
                                      isolation_level=None, check_same_thread=False)  # fmt: skip
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not an fmlab store ({e})") from None
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema {version} is newer than this fmlab ({SCHEMA_VERSION}); "
                             "upgrade fmlab")  # fmt: skip
        self.db.execute("PRAGMA busy_timeout = 60000")
        if version < SCHEMA_VERSION and read_only:
            raise StoreError(f"{self.path}: not an fmlab store (schema {version}); 'fmlab sweep' creates one")
        if version < SCHEMA_VERSION:
            self.db.execute("PRAGMA journal_mode = WAL")
            with self.tx():
                for stmt in DDL.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.db.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:  # `with Store(path, create=False) as s:` closes it after
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no lock upgrades, no deadlocks)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def trial_dir(self, tid: str) -> Path:
        return self.trial_dir_of(self.path, tid)

    @staticmethod
    def trial_dir_of(store_path: str | Path, tid: str) -> Path:
        """A trial's checkpoint folder, next to the store file (no connection needed)."""
        return Path(store_path).parent / "trials" / tid

    def state_dir(self, tid: str) -> Path:
        return self.trial_dir(tid) / "state"

    # ------------------------------------------------------------ planning and claiming

    def transition(self, db: sqlite3.Connection, tid: str, to: State, frm: tuple[State, ...], *,
                   owned: bool = False, **cols: Any) -> bool:
        """The one place a trial's state changes: UPDATE the row from one of frm to to (and set cols) when it
        is in one of frm (and, with owned, RUNNING under this process). False when the row is not in such a
        state (another sweep took it, or it is gone); TransitionError for a pair TRANSITIONS lacks."""
        bad = [f for f in frm if (f, to) not in TRANSITIONS]
        if bad:
            raise TransitionError(f"trial {tid}: {bad[0].value} -> {to.value} is not an allowed state change; "
                                  f"allowed: {', '.join(f'{a}->{b}' for a, b in TRANSITIONS)}")  # fmt: skip
        sets = ", ".join(f"{k}=?" for k in ("state", *cols))
        where = f"id=? AND state IN ({','.join('?' * len(frm))})"
        args: list[Any] = [to.value, *cols.values(), tid, *(f.value for f in frm)]
        if owned:
            where += " AND owner_host=? AND owner_pid=?"
            args += [self.host, self.pid]
        return db.execute(f"UPDATE trials SET {sets} WHERE {where}", args).rowcount == 1

    def _stale_ids(self, ids: Iterable[str] | None = None, *, mine_too: bool = False) -> list[str]:
        now = time.time()
        rows = self.db.execute("SELECT id, owner_host, owner_pid, heartbeat FROM trials WHERE state = ?",
                               (State.RUNNING.value,)).fetchall()  # fmt: skip
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
        args = (study.name, study.description, study.path, study.select, _j(_columns(study)), _j(study.spec()),
                now, now)
        sql = ("INSERT INTO studies VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
               "description=excluded.description, path=excluded.path, select_metric=excluded.select_metric, "
               "factors=excluded.factors, spec=excluded.spec, updated=excluded.updated")
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
                db.execute("INSERT OR IGNORE INTO trials (id, config, seed, state, created) VALUES (?,?,?,?,?)",
                           (t.id, _j(t.config.to_dict()), t.seed, State.WAITING.value, now))  # fmt: skip
                # the cell follows the study file: an arm added later may share an existing trial
                db.execute("INSERT INTO study_trials VALUES (?,?,?,?) ON CONFLICT(study, budget, trial) DO UPDATE "
                           "SET cell=excluded.cell", (study.name, study.budget, t.id, _j(t.cell)))  # fmt: skip
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
            s = states.get(tid, State.WAITING.value)
            {"COMPLETE": p.done, "FAILED": p.failed, "RUNNING": p.running, "WAITING": p.todo}[s].append(tid)
        return p

    def states(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT id, state FROM trials WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r["id"]: r["state"] for r in self.db.execute(q, chunk)})
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
                if n is not None and self.transition(db, tid, R, (W,), owner_host=self.host, owner_pid=self.pid,
                                                heartbeat=now, started=now, attempts=(n[0] or 0) + 1):  # fmt: skip
                    got.append(tid)
                    if first:
                        break
        return got

    def heartbeat(self) -> None:
        with self.tx() as db:
            db.execute("UPDATE trials SET heartbeat=? WHERE state=? AND owner_host=? AND owner_pid=?",
                       (time.time(), State.RUNNING.value, self.host, self.pid))  # fmt: skip

    def add_epoch(self, tid: str, row: dict[str, float]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?)",
                       (tid, int(row["epoch"]), *(row.get(c) for c in EPOCH_COLS)))  # fmt: skip

    def complete(self, tid: str, result: Any, log: str, ckpt: Path) -> bool:
        """The trial's row, epochs and artifact paths in one transaction, once the sweep has written its
        checkpoint files into ckpt (files first, then the row); drops the resume state."""
        now = time.time()
        with self.tx() as db:
            if not self.transition(db, tid, C, (R,), owned=True, finished=now, metrics=_j(result.metrics),
                              timings=_j(result.timings), env=_j(result.env), best_epoch=result.best_epoch,
                              stop_reason=result.stop_reason, n_params=result.n_params, log=log, owner_pid=None,
                              heartbeat=None):  # fmt: skip
                return False  # no longer ours (taken back as stale): the other owner writes it
            db.execute("DELETE FROM epochs WHERE trial = ?", (tid,))
            for row in result.epochs:
                db.execute("INSERT INTO epochs VALUES (?,?,?,?,?,?,?,?)",
                           (tid, int(row["epoch"]), *(row.get(c) for c in EPOCH_COLS)))  # fmt: skip
            for kind, name in (("weights", "best.safetensors"), ("trial_json", "trial.json")):
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (tid, kind, str(ckpt / name), now))
        shutil.rmtree(self.state_dir(tid), ignore_errors=True)
        return True

    def import_complete(self, tid: str, *, metrics: dict[str, float], timings: dict[str, Any], env: dict[str, Any],
                        best_epoch: int | None, stop_reason: str | None, n_params: int | None,
                        epochs: list[dict[str, Any]], started: float | None = None,
                        finished: float | None = None, state: str = State.COMPLETE.value,
                        error: str | None = None) -> None:  # fmt: skip
        """Mark a planned trial COMPLETE (or FAILED, with its error) with results from elsewhere (`fmlab
        import`); its epochs replace any. A RUNNING trial (a live sweep) is left alone."""
        with self.tx() as db:
            to = State(state)
            frm = tuple(f for f in (W, F, C) if (f, to) in TRANSITIONS)  # never a RUNNING row (a live sweep)
            if not self.transition(db, tid, to, frm, started=started, finished=finished or time.time(),
                              metrics=_j(metrics or None), timings=_j(timings or None), env=_j(env),
                              best_epoch=best_epoch, stop_reason=stop_reason, n_params=n_params, error=error,
                              traceback=None, log="imported by fmlab import", owner_host=None, owner_pid=None,
                              heartbeat=None):  # fmt: skip
                return
            db.execute("DELETE FROM epochs WHERE trial = ?", (tid,))
            for row in epochs:
                db.execute("INSERT INTO epochs VALUES (?,?,?,?,?,?,?,?)",
                           (tid, int(row["epoch"]), *(row.get(c) for c in EPOCH_COLS)))  # fmt: skip
        shutil.rmtree(self.state_dir(tid), ignore_errors=True)

    def add_artifacts(self, tid: str, paths: dict[str, Path]) -> None:
        with self.tx() as db:
            for kind, p in paths.items():
                db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)", (tid, kind, str(p), time.time()))

    def fail(self, tid: str, error: str, traceback: str, log: str = "") -> None:
        with self.tx() as db:
            self.transition(db, tid, F, (R,), owned=True, finished=time.time(), error=error, traceback=traceback,
                            log=log, owner_pid=None, heartbeat=None)  # fmt: skip

    def release(self, tids: Iterable[str], error: str | None = None) -> None:
        """Give trials back (WAITING) so the next sweep redoes them from their last saved epoch."""
        with self.tx() as db:
            for tid in tids:
                self.transition(db, tid, W, (R,), owned=True, owner_host=None, owner_pid=None, heartbeat=None,
                                error=error)

    # ------------------------------------------------------------ reading

    def studies(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM studies ORDER BY name").fetchall()
        return [{**dict(r), "factors": json.loads(r["factors"]), "spec": json.loads(r["spec"])} for r in rows]

    def study(self, name: str) -> dict[str, Any]:
        for s in self.studies():
            if s["name"] == name:
                s["budgets"] = [r[0] for r in self.db.execute(
                    "SELECT DISTINCT budget FROM study_trials WHERE study=? ORDER BY budget", (name,))]  # fmt: skip
                return s
        known = ", ".join(s["name"] for s in self.studies()) or "none yet"
        raise StoreError(f"{self.path}: no study '{name}'; studies in this store: {known}")

    def pick_budget(self, name: str, budget: str | None = None) -> str:
        """The budget to read: the one asked for, or the only one there is (reports never mix budgets)."""
        budgets = self.study(name)["budgets"]
        if budget is not None:
            if budget not in budgets:
                raise StoreError(f"study '{name}' has no trials under budget '{budget}'; it has: "
                                 f"{', '.join(budgets) or 'none'}")  # fmt: skip
            return budget
        if len(budgets) == 1:
            return budgets[0]
        raise StoreError(f"study '{name}' has trials under budgets {', '.join(budgets)}; pick one with --budget "
                         f"(or {name}@{budgets[0]}:best)")  # fmt: skip

    def records(self, study: str | None = None, budget: str | None = None, states: Iterable[str] | None = None,
                ids: Iterable[str] | None = None) -> list[TrialRecord]:  # fmt: skip
        """One record per (study, budget, trial) link: id, study, budget, label, state, seed, cell, config,
        metrics, timings, ... Trials not linked to any study appear with study None."""
        q = ("SELECT t.*, st.study, st.budget, st.cell FROM trials t LEFT JOIN study_trials st ON st.trial = t.id "
             "WHERE 1=1")
        args: list[Any] = []
        if study is not None:
            q += " AND st.study = ?"
            args.append(study)
        if budget is not None:
            q += " AND st.budget = ?"
            args.append(budget)
        if states is not None:
            st = [State(s).value for s in states]
            q += f" AND t.state IN ({','.join('?' * len(st))})"
            args += st
        if ids is not None:
            idl = list(ids)
            q += f" AND t.id IN ({','.join('?' * len(idl))})"
            args += idl
        q += " ORDER BY st.study, st.budget, t.created, t.id"
        from .study import budget_label

        out = []
        for r in self.db.execute(q, args):
            d = dict(r)
            rec: TrialRecord = {"id": d["id"], "study": d["study"], "budget": d["budget"],
                   "label": budget_label(d["budget"]) if d["budget"] else None, "state": d["state"],
                   "seed": d["seed"], "cell": json.loads(d["cell"]) if d["cell"] else {},
                   "config": json.loads(d["config"]), "metrics": json.loads(d["metrics"] or "{}"),
                   "best_epoch": d["best_epoch"], "stop_reason": d["stop_reason"], "n_params": d["n_params"],
                   "timings": json.loads(d["timings"] or "{}"), "attempts": d["attempts"], "error": d["error"],
                   "owner": f"{d['owner_host']}:{d['owner_pid']}" if d["owner_pid"] else None,
                   "started": d["started"], "finished": d["finished"]}  # fmt: skip
            out.append(rec)
        return out

    def epochs(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        idl = list(ids)
        out: list[dict[str, Any]] = []
        for i in range(0, len(idl), 500):
            chunk = idl[i : i + 500]
            q = f"SELECT * FROM epochs WHERE trial IN ({','.join('?' * len(chunk))}) ORDER BY trial, epoch"
            out += [dict(r) for r in self.db.execute(q, chunk)]
        return out

    def find(self, ref: str) -> str:
        """A trial id from an id or a unique prefix of one."""
        rows = [r[0] for r in self.db.execute("SELECT id FROM trials WHERE id LIKE ? ORDER BY id",
                                              (ref.replace("%", "").replace("_", "") + "%",))]  # fmt: skip
        if ref in rows:
            return ref
        if len(rows) == 1 and ref:
            return rows[0]
        if not rows:
            raise StoreError(f"no trial '{ref}' in {self.path}; 'fmlab ls' lists the trials")
        raise StoreError(f"trial prefix '{ref}' is ambiguous: {', '.join(rows[:8])}; give more characters")

    def trial(self, ref: str) -> dict[str, Any]:
        """A trial with everything: studies it belongs to, per-epoch rows, traceback and log."""
        tid = self.find(ref)
        recs = self.records(ids=[tid])
        r = self.db.execute("SELECT traceback, log, env FROM trials WHERE id = ?", (tid,)).fetchone()
        rec = {**recs[0], "studies": [{"study": x["study"], "budget": x["budget"]} for x in recs if x["study"]]}
        rec.update(traceback=r["traceback"], log=r["log"], env=json.loads(r["env"] or "{}"),
                   checkpoint=str(self.trial_dir(tid)) if rec["state"] == State.COMPLETE.value else None,
                   epochs=self.epochs([tid]))  # fmt: skip
        return rec

    def best(self, study: str, budget: str | None = None) -> dict[str, Any]:
        """The COMPLETE trial of a study with the best selection metric (on validation)."""
        s = self.study(study)
        budget = self.pick_budget(study, budget)
        metric = s["select_metric"]
        recs = [r for r in self.records(study, budget, states=[State.COMPLETE]) if metric in r["metrics"]]
        if not recs:
            raise StoreError(f"study '{study}' ({budget}) has no COMPLETE trial yet")
        sign = 1 if metric == "val_loss" else -1
        return min(recs, key=lambda r: (sign * r["metrics"][metric], r["id"]))


def resolve_checkpoint(ref: str, store_path: str | Path = DEFAULT_PATH) -> Path:
    """A checkpoint directory from a trial id (or unique prefix), STUDY:best, STUDY@BUDGET:best,
    or a checkpoint directory (holding trial.json and best.safetensors). The one resolver: the CLI, the
    API and inference (fmlab.infer.resolve) all come here."""
    p = Path(ref)
    if p.is_dir():
        if (p / "trial.json").is_file():
            return p
        raise StoreError(f"{p}: not a checkpoint directory (no trial.json); give a trial id, STUDY:best or "
                         "a directory with trial.json and best.safetensors")  # fmt: skip
    if p.exists():
        raise StoreError(f"{p}: not a checkpoint directory (want a folder with trial.json and best.safetensors)")
    if "/" in str(ref) or str(ref).startswith("."):
        raise StoreError(f"{p}: no such checkpoint directory; give a folder with trial.json and best.safetensors, "
                         "a trial id or STUDY:best")  # fmt: skip
    s = Store(store_path, create=False)
    try:
        if ref.endswith(":best"):
            study, _, budget = ref[: -len(":best")].partition("@")
            tid = s.best(study, budget or None)["id"]
        else:
            tid = s.find(ref)
            state = s.states([tid])[tid]
            if state != State.COMPLETE.value:
                raise StoreError(f"trial {tid} is {state}; only COMPLETE trials have a checkpoint")
        d = s.trial_dir(tid)
        if not (d / "trial.json").is_file():
            raise StoreError(f"{d}: checkpoint files missing for COMPLETE trial {tid}")
        return d
    finally:
        s.close()

