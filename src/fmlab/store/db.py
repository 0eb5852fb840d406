"""The store: one SQLite file (WAL) of studies, trials, their per-epoch rows and artifacts.

Only the sweep's parent process writes. A RUNNING trial names its owner (host, pid) and carries a
heartbeat; it is taken back (to WAITING) only when its owner is gone: the heartbeat expired, or the
owner pid on this host no longer exists. Claims are atomic (BEGIN IMMEDIATE + conditional UPDATE),
so concurrent sweeps never run the same trial twice (the writes: fmlab.store.lifecycle and fmlab.store.planning;
the states: fmlab.store.states; the tables: fmlab.store.schema).
Checkpoints live next to the file:
<store dir>/trials/<id>/best.safetensors + trial.json, resume state in <id>/state/ until COMPLETE.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from fmlab.analysis.ranking import best_id
from fmlab.config.metrics import ALL_TRAIN
from fmlab.config.metrics import EPOCH_COLS as EPOCH_COLS  # defined once, in fmlab.config.metrics
from fmlab.store.lifecycle import HEARTBEAT_S as HEARTBEAT_S
from fmlab.store.lifecycle import HEARTBEAT_TTL_S as HEARTBEAT_TTL_S
from fmlab.store.lifecycle import Lifecycle
from fmlab.store.planning import Planning
from fmlab.store.schema import connect, write_tx
from fmlab.store.states import TRANSITIONS as TRANSITIONS  # re-exported: the store's callers import them from here
from fmlab.store.states import Plan as Plan
from fmlab.store.states import State, StoreError, TrialRecord
from fmlab.store.states import TransitionError as TransitionError

DEFAULT_PATH = Path("runs/fmlab.db")


class Store(Lifecycle, Planning):
    """A store file: the connection, the checkpoint layout and the reads; the writes are Lifecycle's and
    Planning's."""

    def __init__(self, path: str | Path = DEFAULT_PATH, *, create: bool = True, read_only: bool = False):
        """read_only: a connection that cannot write (mode=ro), for watchers and live reports: it takes
        no write lock, so any number of them read beside the sweep (WAL); implies create=False."""
        self.path = Path(path)
        if not self.path.exists() and (not create or read_only):
            raise StoreError(f"{self.path}: no store here; run 'fmlab sweep STUDY_FILE' first or pass --store PATH")
        self.root = self.path.parent
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.db = connect(self.path, read_only=read_only)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:  # `with Store(path, create=False) as s:` closes it after
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no lock upgrades, no deadlocks)."""
        return write_tx(self.db)

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
                s["budgets"] = [
                    r[0]
                    for r in self.db.execute(
                        "SELECT DISTINCT budget FROM study_trials WHERE study=? ORDER BY budget", (name,)
                    )
                ]
                return s
        known = ", ".join(s["name"] for s in self.studies()) or "none yet"
        raise StoreError(f"{self.path}: no study '{name}'; studies in this store: {known}")

    def pick_budget(self, name: str, budget: str | None = None) -> str:
        """The budget to read: the one asked for, or the only one there is (reports never mix budgets)."""
        budgets = self.study(name)["budgets"]
        if budget is not None:
            if budget not in budgets:
                raise StoreError(
                    f"study '{name}' has no trials under budget '{budget}'; it has: {', '.join(budgets) or 'none'}"
                )
            return budget
        if len(budgets) == 1:
            return budgets[0]
        raise StoreError(
            f"study '{name}' has trials under budgets {', '.join(budgets)}; pick one with --budget "
            f"(or {name}@{budgets[0]}:best)"
        )

    def records(
        self,
        study: str | None = None,
        budget: str | None = None,
        states: Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> list[TrialRecord]:
        """One record per (study, budget, trial) link: id, study, budget, label, state, seed, cell, config,
        metrics, timings, ... Trials not linked to any study appear with study None."""
        q = (
            "SELECT t.*, st.study, st.budget, st.cell, s.spec AS study_spec FROM trials t LEFT JOIN study_trials st "
            "ON st.trial = t.id LEFT JOIN studies s ON s.name = st.study WHERE 1=1"
        )
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
            rec: TrialRecord = {
                "id": d["id"],
                "study": d["study"],
                "budget": d["budget"],
                "label": label,
                "state": State(d["state"]),
                "seed": d["seed"],
                "cell": json.loads(d["cell"]) if d["cell"] else {},
                "config": json.loads(d["config"]),
                "metrics": json.loads(d["metrics"] or "{}"),
                "best_epoch": d["best_epoch"],
                "stop_reason": d["stop_reason"],
                "n_params": d["n_params"],
                "timings": json.loads(d["timings"] or "{}"),
                "precision": None,
                "attempts": d["attempts"],
                "error": d["error"],
                "owner": f"{d['owner_host']}:{d['owner_pid']}" if d["owner_pid"] else None,
                "started": d["started"],
                "finished": d["finished"],
            }
            rec["precision"] = trained_precision(rec["config"], rec["timings"])
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
        rows = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM trials WHERE id LIKE ? ORDER BY id", (ref.replace("%", "").replace("_", "") + "%",)
            )
        ]
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
        rec.update(
            traceback=r["traceback"],
            log=r["log"],
            env=json.loads(r["env"] or "{}"),
            checkpoint=str(self.trial_dir(tid)) if rec["state"] == State.COMPLETE.value else None,
            epochs=self.epochs([tid]),
        )
        return rec

    def best(self, study: str, budget: str | None = None) -> dict[str, Any]:
        """The COMPLETE trial of a study with the best selection metric (on validation; fmlab.analysis.ranking);
        a StoreError when none has one (no COMPLETE trial yet, or none validated: data.val_size = 0)."""
        s = self.study(study)
        budget = self.pick_budget(study, budget)
        metric = s["select_metric"]
        recs = {r["id"]: r for r in self.records(study, budget, states=[State.COMPLETE])}
        tid = best_id(((i, r["metrics"].get(metric)) for i, r in recs.items()), metric)  # the one ranking rule
        if tid is None and recs:  # complete, and none validated (data.val_size = 0): nothing to choose on
            raise StoreError(
                f"study '{study}' ({budget}): no trial is chosen, since its trials trained on {ALL_TRAIN} with "
                f"no validation split (data.val_size = 0) and the test set never chooses; give a trial id (fmlab ls)"
            )
        if tid is None:
            raise StoreError(f"study '{study}' ({budget}) has no COMPLETE trial yet")
        return recs[tid]


def resolve_checkpoint(ref: str, store_path: str | Path = DEFAULT_PATH) -> Path:
    """A checkpoint directory from a trial id (or unique prefix), STUDY:best, STUDY@BUDGET:best,
    or a checkpoint directory (holding trial.json and best.safetensors). The one resolver: the CLI, the
    API and inference (fmlab.deploy.infer.resolve) all come here."""
    p = Path(ref)
    if p.is_dir():
        if (p / "trial.json").is_file():
            return p
        raise StoreError(
            f"{p}: not a checkpoint directory (no trial.json); give a trial id, STUDY:best or "
            "a directory with trial.json and best.safetensors"
        )
    if p.exists():
        raise StoreError(f"{p}: not a checkpoint directory (want a folder with trial.json and best.safetensors)")
    if "/" in str(ref) or str(ref).startswith("."):
        raise StoreError(
            f"{p}: no such checkpoint directory; give a folder with trial.json and best.safetensors, "
            "a trial id or STUDY:best"
        )
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


def trained_precision(config: dict[str, Any], timings: dict[str, Any]) -> str | None:
    """The precision a trial trained in: recorded in its timings since train.precision may be "auto" (chosen
    by the machine); before that, its config's (fp32 or bf16). None: auto and not trained yet."""
    asked = config.get("train", {}).get("precision", "fp32")
    return timings.get("precision") or (None if asked == "auto" else asked)
