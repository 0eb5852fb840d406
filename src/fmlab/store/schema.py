"""The store file's SQLite tables and opening one: the DDL, its schema version, the connection's pragmas.

Opening checks the version (a newer store is refused, a new file gets the tables); fmlab.store.db.Store
holds the connection this returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fmlab.store.states import StoreError

SCHEMA_VERSION = 1

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


@contextmanager
def write_tx(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock up front (no lock upgrades, no deadlocks)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """The store file's connection (rows as sqlite3.Row), its schema checked, created on a new file unless
    read_only (mode=ro: no write lock, so any number of readers beside the sweep)."""
    if read_only:
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60, isolation_level=None, check_same_thread=False
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not an fmlab store ({e})") from None
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path}: store schema {version} is newer than this fmlab ({SCHEMA_VERSION}); upgrade fmlab")
    db.execute("PRAGMA busy_timeout = 60000")
    if version < SCHEMA_VERSION and read_only:
        raise StoreError(f"{path}: not an fmlab store (schema {version}); 'fmlab sweep' creates one")
    if version < SCHEMA_VERSION:
        db.execute("PRAGMA journal_mode = WAL")
        with write_tx(db):
            for stmt in DDL.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute("PRAGMA synchronous = NORMAL")
    return db
