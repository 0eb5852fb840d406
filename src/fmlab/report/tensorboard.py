"""--tensorboard: a study's TensorBoard runs, one per trial (the writer is fmlab.report.tensorboard_writer).

Written only by the sweep's parent process (as the store is), live as each epoch's row arrives, or from
the store for an existing study (`fmlab results STUDY --tensorboard DIR`): a board holds the study's
trials, their factors' levels and seeds; a resumed sweep's board first gets the trials that ended before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fmlab.config.states import State
from fmlab.errors import FmlabError
from fmlab.report.tensorboard_writer import Board
from fmlab.study.spec import BASELINE


def _hparams(cell: Mapping[str, Any], seed: int, columns: list[str]) -> dict[str, Any]:
    return {**{c: cell.get(c) for c in columns}, "seed": seed}


def for_study(logdir: str | Path, study: Any) -> Board:
    """A board for a sweep of study (a loaded fmlab.study.spec.Study): its trials, factor levels and seeds."""
    trials = study.trials()
    columns = ["arm"] if study.arms else list(study.factors)
    domains = {"arm": [BASELINE, *study.arms]} if study.arms else {k: list(v) for k, v in study.factors.items()}
    domains["seed"] = sorted({t.seed for t in trials})
    return Board(
        logdir,
        {t.id: _hparams(t.cell, t.seed, columns) for t in trials},
        domains,
        f"fmlab study {study.name} ({study.budget})",
    )


def board_from_store(logdir: str | Path, store: Any, study: str, budget: str) -> tuple[Board, list[dict[str, Any]]]:
    """A board for a study already in the store, and its trial records (one per trial)."""
    info = store.study(study)
    spec = info["spec"]
    columns = list(info["factors"])
    if spec.get("design") == "arms":
        domains: dict[str, list[Any]] = {"arm": [BASELINE, *(spec.get("arm_tables") or spec.get("arms", {}))]}
    else:
        domains = {k: list(v) for k, v in spec.get("factors", {}).items()}
    recs = store.records(study, budget)
    domains["seed"] = sorted({r["seed"] for r in recs})
    trials = {r["id"]: _hparams(r["cell"], r["seed"], columns) for r in recs}
    return Board(logdir, trials, domains, f"fmlab study {study} ({budget})"), recs


def write_from_store(
    logdir: str | Path, store: Any, study: str, budget: str, *, replace: bool = True, ids: Iterable[str] | None = None
) -> list[str]:
    """Write the runs of a study's trials (those that have epochs or have ended) from the store; returns
    the ids written. replace=False skips trials whose run already has event files."""
    board, recs = board_from_store(logdir, store, study, budget)
    want = set(ids) if ids is not None else None
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for e in store.epochs([r["id"] for r in recs]):
        by_trial.setdefault(e["trial"], []).append(e)
    done = []
    try:
        for r in recs:
            if want is not None and r["id"] not in want or (not replace and board.has_run(r["id"])):
                continue
            if by_trial.get(r["id"]) or r["state"] in (State.COMPLETE, State.FAILED):
                board.write_record(r, by_trial.get(r["id"], []), replace=replace)
                done.append(r["id"])
    finally:
        board.close()
    return done


def for_sweep(logdir: str | Path, study: Any, store: Any, plan: Any) -> Board:
    """The sweep's board: the plan's trials that ended before this sweep (COMPLETE or FAILED, no run in
    logdir yet) are written from the store first, so a resumed sweep's logdir holds the whole study."""
    try:
        Path(logdir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FmlabError(f"--tensorboard {logdir}: cannot create it ({e.strerror or e})") from None
    board = for_study(logdir, study)
    write_from_store(logdir, store, study.name, study.budget, replace=False, ids=[*plan.done, *plan.failed])
    return board
