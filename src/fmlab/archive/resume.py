"""Unfinished trials' resume states in a results folder, so that a trial cut off part-way continues anywhere.

    results/<study>-<budget>/resume/<trial id>/
      state.safetensors   the trial's tensors after its last finished epoch: weights, best weights,
                          optimizer state, random streams (fmlab.training.checkpoint.ResumeState)
      state.json          its loop state (epoch n, early stopping, the n epoch rows), optimizer scalars

Both are byte copies of the store's <store dir>/trials/<id>/state/ (safetensors + JSON; nothing is ever
unpickled). The trial's row in trials.csv is WAITING with epochs n, and epochs.csv holds its rows 1..n.
`fmlab publish` copies the state of each WAITING trial of the study, and of each RUNNING trial whose sweep
is gone (a live sweep's trials are left out: their states change under it); a trial whose store lacks one
of its epoch rows 1..n (a sweep killed between saving the state and recording the row) is published as
without a state. `fmlab import` checks every folder here (the one-line error names the file) and puts
each state, with its epoch rows, into the store, where the trial is WAITING and the store has no state as
far along: the next `fmlab sweep` of the same file and budget resumes the trial after epoch n. A trial
that completes drops its state, so the next publish leaves its folder out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.config.metrics import EPOCH_COLS
from fmlab.config.states import State
from fmlab.errors import FmlabError
from fmlab.training.checkpoint import ResumeState

if TYPE_CHECKING:
    from fmlab.store.db import Store

RESUME_DIR = "resume"


class ResumeError(FmlabError):
    """A resume state that cannot be published or imported; the message names the file and the fix."""


@dataclass(frozen=True)
class Saved:
    """A resume state as its files' bytes by name (ResumeState.FILES), and the epochs it has finished."""

    files: dict[str, bytes]
    epochs: int


def unfinished_states(s: Store, states: Mapping[str, State]) -> dict[str, Saved]:
    """The resume states of the WAITING trials of states (id -> state), and of the RUNNING ones whose sweep
    is gone, by trial id; trials without a whole state are left out."""
    running = [tid for tid, st in states.items() if st == State.RUNNING]
    ids = [tid for tid, st in states.items() if st == State.WAITING] + s.stale_ids(running)
    out = {}
    for tid in ids:
        d = s.state_dir(tid)
        files = ResumeState.files_as_bytes(d)
        if files:
            fix = "delete that folder (the trial then restarts from epoch 0) and publish again"
            out[tid] = Saved(files, len(epoch_rows(files[ResumeState.META], d / ResumeState.META, fix)))
    return out


def epoch_rows(meta: bytes, path: Path, fix: str) -> list[dict[str, Any]]:
    """A state.json's epoch rows (its loop state's history), checked: epochs 1..n where n is its epoch."""
    try:
        train = json.loads(meta)["train"]
        n, rows = int(train["epoch"]), list(train["history"])
        ok = [int(r["epoch"]) for r in rows] == list(range(1, n + 1))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ResumeError(f"{path}: not a resume state's JSON ({e}); {fix}") from None
    if not ok:
        raise ResumeError(f"{path}: its epoch rows are not epochs 1..{n}; {fix}")
    return rows


def write_states(folder: Path, states: Mapping[str, Saved]) -> None:
    """resume/<id>/ with each state's files (tensors first, the JSON last, as ResumeState writes them)."""
    for tid, saved in states.items():
        d = folder / RESUME_DIR / tid
        d.mkdir(parents=True)
        for name in ResumeState.FILES:
            (d / name).write_bytes(saved.files[name])


def check_folder(
    d: Path, rows: list[dict[str, str]], epochs: Mapping[str, list[dict[str, Any]]], configs: Mapping[str, Any]
) -> dict[str, Saved]:
    """The states in d/resume/, checked against trials.csv (rows), epochs.csv (epochs by trial) and the
    planned trials' configs (configs: id -> Config): each must be whole and readable, of a WAITING trial of
    trials.csv with n epochs and epochs.csv's rows 1..n, its weights the shapes of the trial's network."""
    root = d / RESUME_DIR
    if not root.exists():
        return {}
    waiting = {r.get("id", ""): r for r in rows if r.get("state") == State.WAITING}
    out = {}
    for sub in sorted(root.iterdir()):
        if not sub.is_dir() or sub.name not in waiting:
            raise ResumeError(
                f"{sub}: not the resume state of a WAITING trial of {d / 'trials.csv'}; remove it or republish"
            )
        n = int(waiting[sub.name].get("epochs") or 0)
        out[sub.name] = Saved(_check_state(sub, n, epochs.get(sub.name, [])), n)
        _check_shapes(sub / ResumeState.TENSORS, configs[sub.name])
    return out


def _check_state(sub: Path, n_rows: int, rows: list[dict[str, Any]]) -> dict[str, bytes]:
    """One resume folder's files, whole and readable, its epoch rows those of trials.csv and epochs.csv."""
    fix = "republish the folder with 'fmlab publish' (or remove the folder: the trial then restarts)"
    for name in ResumeState.FILES:
        if not (sub / name).is_file():
            raise ResumeError(
                f"{sub / name}: not found; a resume folder holds {' and '.join(ResumeState.FILES)}; {fix}"
            )
    files = {name: (sub / name).read_bytes() for name in ResumeState.FILES}
    meta = sub / ResumeState.META
    history = epoch_rows(files[ResumeState.META], meta, fix)
    if len(history) != n_rows or len(rows) != n_rows:
        raise ResumeError(
            f"{meta}: {len(history)} epochs, but trials.csv says {n_rows} and epochs.csv has {len(rows)} rows; {fix}"
        )
    for h, r in zip(history, sorted(rows, key=lambda r: r["epoch"]), strict=True):
        bad = [c for c in EPOCH_COLS if not _same(h.get(c), r.get(c))]
        if int(h["epoch"]) != r["epoch"] or bad:
            raise ResumeError(f"{meta}: epoch {h['epoch']} differs from epochs.csv ({', '.join(bad)}); {fix}")
    return files


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)


def _check_shapes(path: Path, cfg: Any) -> None:
    """The state's network tensors (net.*, best.*) are the trial's network's, name for name, shape for shape."""
    from safetensors import SafetensorError, safe_open

    from fmlab.model.nets import build

    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise ResumeError(f"{path}: not a readable safetensors file ({e}); republish the folder") from None
    want = {k: tuple(v.shape) for k, v in build(cfg.resolved().model).state_dict().items()}
    for part in ("net", "best"):
        got = {k[len(part) + 1 :]: v for k, v in shapes.items() if k.startswith(part + ".")}
        if got != want:
            raise ResumeError(f"{path}: its {part} weights are not the trial's network's; republish the folder")


def place(s: Store, tid: str, files: dict[str, bytes], rows: list[dict[str, Any]]) -> bool:
    """A checked state put into the store with its epoch rows, when the trial is WAITING there and the store's
    own state (if any) is not as far along; whether it was placed."""
    d = s.state_dir(tid)
    if s.states([tid]).get(tid) != State.WAITING:
        return False
    if ResumeState.exists(d):
        try:
            if ResumeState.epoch(d) >= len(rows):
                return False
        except (OSError, ValueError, KeyError):
            pass  # an unreadable state of its own: the published one replaces it
    ResumeState.replace_files(d, files)
    return s.import_epochs(tid, rows)
