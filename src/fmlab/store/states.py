"""The allowed changes between a trial's states, and the records the store hands out.

The store (fmlab.store.db) is the only writer of these states; every change goes through
Store.transition (fmlab.store.lifecycle), which refuses any pair TRANSITIONS lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

from fmlab.config.states import State as State  # defined once there (the analysis, a floor below, reads it too)
from fmlab.errors import FmlabError


class StoreError(FmlabError):
    """A missing or unusable store, or a trial reference that matches nothing."""


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
    state: State
    seed: int
    cell: dict[str, Any]  # factor values, or {"arm": name, "also": [...]}
    config: dict[str, Any]
    metrics: dict[str, float]  # fmlab.config.metrics.METRICS once COMPLETE
    best_epoch: int | None
    stop_reason: str | None
    n_params: int | None
    timings: dict[str, Any]
    precision: str | None  # what it trained in (timings' record, else its config's fp32/bf16); None: not known yet
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
