"""Plan and run a sweep from Python: what it would do (SweepPlan, plan_sweep; where its trials run is
fmlab.sweep.layout's SweepLayout, its time fmlab.sweep.estimate's), and the sweep itself (open_sweep ->
Sweep.run -> SweepOutcome). fmlab.api.handles re-exports all of it and adds run_study, which returns the
study's handle; `fmlab sweep` is a thin layer over these.

Every check (study file, device, dataset, Ray, TensorBoard) is done before the store is touched; nothing
here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.config.states import State
from fmlab.store.db import DEFAULT_PATH
from fmlab.sweep.layout import SweepLayout, check_dataset, check_device, layout_for

if TYPE_CHECKING:
    from fmlab.store.db import Plan, Store
    from fmlab.study.spec import Study, Trial
    from fmlab.sweep.progress import Progress


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep does: all its trials (file order), those it runs (todo, in the order it claims them:
    fmlab.sweep.order), the store's split of the planned ids by
    state (plan; None when the store does not exist yet), the upper-bound estimate of its wall time
    (speed_from: measured on this store's COMPLETE trials from this machine or others, else assumed) and the
    layout."""

    study: Study
    trials: list[Trial]
    todo: list[Trial]
    plan: Plan | None
    estimate_s: float
    layout: SweepLayout
    store: Path
    packs: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # lines worth saying before it runs (auto's pick, bf16 emulated)
    speed_from: str = "assumed"  # the estimate's speed: "this machine", "probed here", "other machines" or assumed
    auto_precision: str = ""  # what train.precision = "auto" trains in, decided once for the local workers

    @property
    def calibrated(self) -> bool:
        """Whether the estimate's speed was measured on trials (of any machine) rather than assumed."""
        return self.speed_from != "assumed"

    def power_line(self) -> str | None:
        """The seed plan (fmlab.analysis.power) at the planned seeds, from the COMPLETE trials the store already
        holds; None when it holds none or they fit no model."""
        import pandas as pd

        from fmlab.analysis import power
        from fmlab.analysis.driver import analyse
        from fmlab.analysis.formatting import unit
        from fmlab.errors import FmlabError
        from fmlab.report.export import report_inputs
        from fmlab.store.db import Store

        if self.plan is None or not self.plan.done:
            return None
        st = self.study
        try:
            with Store(self.store, create=False) as s:
                trials, epochs, meta = report_inputs(s, st.name, st.budget)
            a = analyse(pd.DataFrame(trials), pd.DataFrame(epochs), meta)
        except (FmlabError, KeyError, ValueError):  # a store too thin or too old to analyse: the plan stands
            return None
        if a.plan is None:
            return None
        k, u = unit(a.select)
        return f"{power.dry_run_line(a.plan, len(st.seeds), k, u)} (from {a.counts['complete']} COMPLETE trials)"


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished sweep leaves: its last progress (ran: trials completed by this sweep), wall time,
    the planned trials' records in plan order, the best COMPLETE one (None: none yet, or none validated) and the first
    TensorBoard write error (None: none, or no board)."""

    progress: Progress
    wall_s: float
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    board_error: str | None

    def in_state(self, state: State) -> list[dict[str, Any]]:
        return [r for r in self.records if r["state"] == state]


def _plan(
    st: Study, store: Store | None, path: Path, layout: SweepLayout, retry_failed: bool, record: bool, device: str
) -> SweepPlan:
    from fmlab.sweep.estimate import plan_estimate
    from fmlab.sweep.order import run_order
    from fmlab.training import packs
    from fmlab.training.checkpoint import ResumeState

    trials = st.trials()
    done = set(store.status([t.id for t in trials]).done) if store else set()
    started = {t.id for t in trials if t.id not in done and store and ResumeState.exists(store.state_dir(t.id))}
    # the sweep claims in this order: trials cut off part-way first, then seed by seed, the most
    # informative cell next (fmlab.sweep.order)
    ordered = run_order(trials, {} if st.arms else st.factors, st.seeds, done, started)
    if record:
        assert store is not None
        plan: Plan | None = store.plan(st, ordered, retry_failed=retry_failed)
        runnable: set[str] | None = set(plan.todo)
    else:  # read-only: what a sweep would plan (FAILED rows are only reset when it starts)
        plan = store.status([t.id for t in ordered]) if store else None
        runnable = set(plan.todo) | (set(plan.failed) if retry_failed else set()) if plan else None
    todo = [t for t in ordered if runnable is None or t.id in runnable]
    est = plan_estimate(store, todo, layout, device)
    groups = [] if layout.pack is None else [[t.id for t in g] for g in packs.group(todo, layout.pack)]
    return SweepPlan(
        st,
        trials,
        todo,
        plan,
        est.seconds,
        layout,
        path,
        groups,
        [n for n in (est.precision, est.note) if n],
        est.speed_from,
        est.auto,
    )


class Sweep:
    """A planned sweep holding its store (and Ray connection, TensorBoard board): open_sweep() makes one;
    run() it once; close() (or a with block) lets go of what it holds."""

    def __init__(self, plan: SweepPlan, store: Store, executor: Any, board: Any, opts: Any) -> None:
        self.plan, self._store, self._ex, self._board, self._opts = plan, store, executor, board, opts

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, on_update: Callable[[Progress], None] | None = None) -> SweepOutcome:
        """Run the plan's trials (and any that become WAITING); each progress snapshot goes to on_update.
        Ctrl-C (KeyboardInterrupt) gives the running trials back (WAITING, resume state kept) and propagates."""
        import time

        from fmlab.sweep import loop as sweep

        p, st, board = self.plan, self.plan.study, self._board
        assert p.plan is not None, "open_sweep records the plan"
        ex, self._ex = self._ex, None  # sweep.run shuts the executor down, whatever happens
        try:
            prog = sweep.run(
                self._store,
                st,
                p.plan,
                workers=p.layout.workers,
                opts=self._opts,
                on_update=on_update or (lambda _: None),
                estimate=p.estimate_s,
                executor=ex,
                board=board,
                pack=p.layout.pack,
            )
        finally:
            self._board = None
            if board is not None:
                board.close()
        wall = time.time() - prog.started
        recs = {r["id"]: r for r in self._store.records(st.name, st.budget)}
        planned = [recs[t.id] for t in p.trials]
        ranks = any(r["state"] == State.COMPLETE and r["metrics"].get(st.select) is not None for r in planned)
        best = self._store.best(st.name, st.budget) if ranks else None  # None: none yet, or none validated
        return SweepOutcome(prog, wall, planned, best, board.error if board is not None else None)

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None
        if self._ex is not None:  # connected to Ray but never run
            self._ex.shutdown()
            self._ex = None
        self._store.close()


def open_sweep(
    path: str | Path,
    budget: str = "full",
    *,
    seeds: tuple[int, ...] | None = None,
    workers: int | None = None,
    threads: int = 0,
    store: str | Path = DEFAULT_PATH,
    device: str = "auto",
    data_dir: str | None = None,
    retry_failed: bool = False,
    executor: str = "local",
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float | None = None,
    tensorboard: str | Path | None = None,
    pack: str | int = "auto",
) -> Sweep:
    """A sweep ready to run, with every check done before the store is touched: the study file, the
    tensorboard package, the Ray connection (executor "ray"), then (local executor) the device, once, and
    the dataset; Ray workers read the dataset on their own machines, where data_dir is a path, and the
    cluster's resources decide the device. Then the store, the plan recorded in it (see plan_sweep) and
    the TensorBoard board. Arguments as run_study's."""
    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy
    from fmlab.training.env import RunOptions

    st = fstudy.load(path, budget, seeds)
    if tensorboard is not None:
        from fmlab.report import tensorboard as tboard
        from fmlab.report.tensorboard_writer import require

        require()
    ray = None
    if executor == "ray":
        from fmlab.sweep.ray import RayExecutor

        ray = RayExecutor(address, cpus_per_trial, gpus_per_trial, device)
    s = board = None
    try:
        layout = layout_for(executor, workers, threads, address, cpus_per_trial, ray, pack, device)
        if ray is None:
            check_device(device)  # once, not one FAILED trial per missing GPU
            check_dataset(data_dir)
        s = Store(Path(store))
        p = _plan(st, s, Path(store), layout, retry_failed, record=True, device=device)
        board = tboard.for_sweep(tensorboard, st, s, p.plan) if tensorboard is not None else None
        opts = RunOptions(device=device, threads=layout.threads, data_dir=data_dir, auto_precision=p.auto_precision)
        return Sweep(p, s, ray, board, opts)
    except BaseException:
        if ray is not None:
            ray.shutdown()
        if s is not None:
            s.close()
        raise


def plan_sweep(
    path: str | Path,
    budget: str = "full",
    *,
    seeds: tuple[int, ...] | None = None,
    workers: int | None = None,
    threads: int = 0,
    store: str | Path = DEFAULT_PATH,
    retry_failed: bool = False,
    executor: str = "local",
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    record: bool = False,
    device: str = "auto",
    data_dir: str | None = None,
    gpus_per_trial: float | None = None,
    pack: str | int = "auto",
) -> SweepPlan:
    """A sweep's plan without running a trial: its trials, those it would run, the store's split by state,
    the estimate and the layout (what `fmlab sweep --dry-run` prints). By default read-only: a missing
    store is not created and Ray is not contacted (the layout then counts one trial at once).
    record=True does what a sweep does before its first trial: open_sweep's checks (device, dataset,
    Ray), then the plan written to the store (new trials WAITING, stale RUNNING rows recovered, with
    retry_failed the FAILED ones WAITING again). Arguments as run_study's."""
    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy

    args = dict(
        seeds=seeds,
        workers=workers,
        threads=threads,
        store=store,
        retry_failed=retry_failed,
        executor=executor,
        address=address,
        cpus_per_trial=cpus_per_trial,
        pack=pack,
    )
    if record:
        with open_sweep(path, budget, **args, device=device, data_dir=data_dir, gpus_per_trial=gpus_per_trial) as sw:
            return sw.plan
    st = fstudy.load(path, budget, seeds)
    layout = layout_for(
        executor, workers, threads, address, cpus_per_trial, pack=pack, device=device, gpus_per_trial=gpus_per_trial
    )
    s = Store(Path(store)) if Path(store).exists() else None
    try:
        return _plan(st, s, Path(store), layout, retry_failed, record=False, device=device)
    finally:
        if s is not None:
            s.close()
