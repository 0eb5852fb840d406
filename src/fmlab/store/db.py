"""The store: one SQLite file (WAL) of studies, trials, their per-epoch rows and artifacts.

Only the sweep's parent process writes. A RUNNING trial names its owner (host, pid) and carries a
heartbeat; it is taken back (to WAITING) only when its owner is gone: the heartbeat expired, or the
owner pid on this host no longer exists. Claims are atomic (BEGIN IMMEDIATE + conditional UPDATE),
so concurrent sweeps never run the same trial twice (the writes: fmlab.store.lifecycle; the states: fmlab.store.states).
Checkpoints live next to the file:
<store dir>/trials/<id>/best.safetensors + trial.json, resume state in <id>/state/ until COMPLETE.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fmlab.config.metrics import EPOCH_COLS as EPOCH_COLS  # defined once, in fmlab.config.metrics
from fmlab.store.lifecycle import HEARTBEAT_S as HEARTBEAT_S
from fmlab.store.lifecycle import HEARTBEAT_TTL_S as HEARTBEAT_TTL_S
from fmlab.store.lifecycle import Lifecycle
from fmlab.store.states import TRANSITIONS as TRANSITIONS  # re-exported: the store's callers import them from here
from fmlab.store.states import Plan as Plan
from fmlab.store.states import State, StoreError, TrialRecord
from fmlab.store.states import TransitionError as TransitionError

SCHEMA_VERSION = 1
DEFAULT_PATH = Path("runs/fmlab.db")

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


class Store(Lifecycle):
    """A store file: the connection, the checkpoint layout and the reads; the writes are Lifecycle's."""

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
        q = ("SELECT t.*, st.study, st.budget, st.cell, s.spec AS study_spec FROM trials t LEFT JOIN study_trials st "
             "ON st.trial = t.id LEFT JOIN studies s ON s.name = st.study WHERE 1=1")
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
        from fmlab.study.spec import spec_label

        out = []
        for r in self.db.execute(q, args):
            d = dict(r)
            label = spec_label(json.loads(d["study_spec"] or "{}"), d["budget"]) if d["budget"] else None
            rec: TrialRecord = {"id": d["id"], "study": d["study"], "budget": d["budget"], "label": label,
                   "state": d["state"],
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

    def envs(self, states: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each trial's recorded provenance (device, device_name, cpu_bf16, threads, ...) by id, for the trials
        in these states; {} for a trial that recorded none."""
        st = [State(s).value for s in states]
        q = f"SELECT id, env FROM trials WHERE state IN ({','.join('?' * len(st))})"
        return {r["id"]: json.loads(r["env"] or "{}") for r in self.db.execute(q, st)}

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
    API and inference (fmlab.deploy.infer.resolve) all come here."""
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
