"""The public Python API: stores, studies as DataFrames, their analysis, HiPlot, training and prediction.

    import fmlab
    st = fmlab.open_store("runs/fmlab.db").study("seed", budget="quick")
    st.trials()            # one row per trial: id, state, seed, one column per factor, metrics, timings
    st.analysis().effects  # the numbers the report shows
    st.hiplot().display()  # the report's HiPlot experiment, inline in Jupyter

The CLI is a thin layer over these functions (plus printing); nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import EPOCH_COLS as EPOCH_METRICS
from .store import DEFAULT_PATH

if TYPE_CHECKING:  # the heavy imports wait for the call that needs them: `import fmlab` stays fast
    import hiplot
    import pandas as pd

    from .analysis import Analysis
    from .config import Config
    from .store import Plan, Store
    from .study import Study, Trial
    from .sweep import Progress
    from .train import TrialResult

STATES = ("WAITING", "RUNNING", "COMPLETE", "FAILED")
METRIC_COLS = ("val_loss", "val_acc", "test_loss", "test_acc", "train_s", "total_s", "train_images_per_s")


@contextmanager
def _opened(path: Path) -> Iterator[Store]:
    from .store import Store

    s = Store(path, create=False)
    try:
        yield s
    finally:
        s.close()


def open_store(path: str | Path = DEFAULT_PATH) -> StoreHandle:
    """A handle on an existing store (a missing file is an error naming it; nothing is created)."""
    with _opened(Path(path)):
        pass
    return StoreHandle(Path(path))


@dataclass(frozen=True)
class StoreHandle:
    """A store file; every call reads it afresh, so a handle sees trials a running sweep adds."""

    path: Path

    def studies(self) -> pd.DataFrame:
        """One row per study: name, description, path (its file), select, design, factors, budgets, trials."""
        import pandas as pd

        rows = []
        with _opened(self.path) as s:
            for info in s.studies():
                full = s.study(info["name"])
                rows.append({"name": info["name"], "description": info["description"], "path": info["path"],
                             "select": info["select_metric"], "design": info["spec"].get("design", "grid"),
                             "factors": list(info["factors"]), "budgets": full["budgets"],
                             "trials": len(s.records(info["name"]))})  # fmt: skip
        cols = ["name", "description", "path", "select", "design", "factors", "budgets", "trials"]
        return pd.DataFrame(rows, columns=cols).astype({"trials": "int64"})

    def study(self, name: str, budget: str | None = None) -> StudyHandle:
        """One study under one budget (None: the only budget it has; several is an error naming them)."""
        with _opened(self.path) as s:
            return StudyHandle(self, name, s.pick_budget(name, budget))

    def records(self, study: str | None = None, budget: str | None = None,
                state: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Trial records as `fmlab ls --format json` prints them (an unknown study is an error)."""
        with _opened(self.path) as s:
            if study:
                s.study(study)
            return s.records(study, budget, states=[state] if state else None)

    def trial(self, ref: str) -> dict[str, Any]:
        """One trial (id or unique prefix) with its epochs, log and traceback: `fmlab show --format json`."""
        with _opened(self.path) as s:
            return s.trial(ref)

    def checkpoint(self, ref: str) -> Path:
        """The checkpoint directory of a trial id, STUDY:best or STUDY@BUDGET:best."""
        from .store import resolve_checkpoint

        return resolve_checkpoint(ref, self.path)


def _typed_trials(rows: list[dict[str, Any]], factors: Mapping[str, list[Any]]) -> pd.DataFrame:
    """Stable columns and dtypes whatever the states: metrics float64, seed int64, state categorical,
    each factor column typed by the study's levels (bool, int64, float64, or str)."""
    import pandas as pd

    head = ["id", "study", "budget", "label", "state", "seed", *factors]
    tail = ["val_loss", "val_acc", "test_loss", "test_acc", "epochs", "best_epoch", "stop_reason", "n_params",
            "train_s", "total_s", "train_images_per_s", "error", "config"]  # fmt: skip
    df = pd.DataFrame(rows, columns=head + tail)
    types: dict[str, Any] = {c: "float64" for c in METRIC_COLS}
    types.update(seed="int64", epochs="int64", best_epoch="Int64", n_params="Int64",
                 state=pd.CategoricalDtype(list(STATES)))  # fmt: skip
    for f, levels in factors.items():
        types[f] = _level_dtype(levels)
    return df.astype(types)


def _level_dtype(levels: list[Any]) -> str:
    if levels and all(isinstance(v, bool) for v in levels):
        return "bool"
    if levels and all(isinstance(v, int) and not isinstance(v, bool) for v in levels):
        return "int64"
    if levels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels):
        return "float64"
    return "object"


@dataclass(frozen=True)
class StudyHandle:
    """One study under one budget in a store: its trials and epochs as DataFrames, analysis, report."""

    store: StoreHandle
    name: str
    budget: str

    def inputs(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """(trials, epochs, meta): the contract of fmlab.analysis.analyse, typed (see trials())."""
        import pandas as pd

        from .results import report_inputs

        with _opened(self.store.path) as s:
            trials, epochs, meta = report_inputs(s, self.name, self.budget)
        tdf = _typed_trials(trials, meta["factors"])
        ecols = ["trial_id", "seed", *meta["factors"], "epoch", *EPOCH_METRICS]
        types = {"seed": "int64", "epoch": "int64", **{c: "float64" for c in EPOCH_METRICS}}
        if meta["design"] != "arms":  # an arms study's epoch rows name the sharing arms, comma-joined
            types.update({f: _level_dtype(v) for f, v in meta["factors"].items()})
        edf = pd.DataFrame(epochs, columns=ecols).astype(types)
        return tdf, edf, meta

    def meta(self) -> dict[str, Any]:
        """study, budget, label, select, planned, description, design, base, factors, baseline (arms: arms)."""
        return self.inputs()[2]

    def trials(self) -> pd.DataFrame:
        """One row per trial of this budget, every state (an arms study: one row per arm)."""
        return self.inputs()[0]

    def epochs(self) -> pd.DataFrame:
        """One row per trial and epoch: trial_id, seed, factors, epoch, lr, losses, accuracies, epoch_s."""
        return self.inputs()[1]

    def analysis(self) -> Analysis:
        """cells (ranked, mean/std/95% CI over seeds), effects, interactions, anova, curves, findings;
        for an arms study effects are each arm vs the baseline and test_effects the same on test_acc."""
        from .analysis import analyse

        return analyse(*self.inputs())

    def best(self) -> pd.Series | None:
        """The COMPLETE trial that is best on the study's validation selection metric (None if none)."""
        from .analysis import best_trial

        tdf, _, meta = self.inputs()
        tid = best_trial(tdf, meta["select"]) if len(tdf) else None
        return None if tid is None else tdf[tdf["id"] == tid].iloc[0]

    def checkpoint(self) -> Path | None:
        """The best trial's checkpoint directory, or None when there is none (yet)."""
        b = self.best()
        return None if b is None else self._ckpt(str(b["id"]))

    def _ckpt(self, tid: str | None) -> Path | None:
        from .store import Store

        d = Store.trial_dir_of(self.store.path, tid) if tid else None
        return d if d is not None and (d / "trial.json").is_file() else None

    def default_report_dir(self) -> Path:
        return Path("reports") / (self.name if self.budget == "full" else f"{self.name}-{self.budget}")

    def report(self, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Write the report (index.html, summary.md, figures, CSV tables, hiplot.html); returns its summary
        dict (what `fmlab report --format json` prints). Default folder: reports/<study>[-<budget>]."""
        from .analysis import best_trial
        from .report import build_report

        tdf, edf, meta = self.inputs()
        ckpt = self._ckpt(best_trial(tdf, meta["select"]) if len(tdf) else None)
        return build_report(tdf, edf, meta, Path(out_dir) if out_dir else self.default_report_dir(), ckpt)

    def hiplot(self) -> hiplot.Experiment:
        """The report's HiPlot experiment (one row per trial): .display() in Jupyter, .to_html(path)."""
        from .report import hiplot_experiment

        tdf, _, meta = self.inputs()
        return hiplot_experiment(tdf, meta)

    def export(self, out_dir: str | Path, fmt: str = "csv") -> list[Path]:
        """trials.<fmt> and epochs.<fmt> (csv or jsonl) in out_dir: what `fmlab results` writes."""
        from . import results

        with _opened(self.store.path) as s:
            return results.export(s, self.name, out_dir, fmt, self.budget)

    def tensorboard(self, logdir: str | Path) -> list[str]:
        """One TensorBoard run per trial in logdir (epoch scalars, HParams), rewritten from the store;
        returns the trial ids written (those with epochs or ended). Needs fmlab[tensorboard]."""
        from . import tboard

        tboard.require()
        with _opened(self.store.path) as s:
            return tboard.write_from_store(logdir, s, self.name, self.budget)


# ---------------------------------------------------------------- running


def sweep_slots(workers: int | None = None, threads: int = 0) -> tuple[int, int]:
    """(worker processes, threads each): by default one single-thread worker per core (BENCHMARKS.md
    "Studies": that beats one multi-thread worker); workers 0 runs inline."""
    from .env import cores
    from .errors import FmlabError

    workers = cores() if workers is None else workers
    if workers < 0:
        raise FmlabError(f"bad --workers {workers}; use 0 (inline) or a count of processes")
    return workers, threads or max(1, cores() // max(workers, 1))


def check_device(device: str = "auto") -> str:
    """A device this machine lacks (cuda on a CPU-only box) is one clear error before anything runs;
    returns the device it resolves to ("auto" -> "cuda" or "cpu")."""
    from .env import check_device as check

    return str(check(device))


def check_dataset(data_dir: str | Path | None = None) -> None:
    """A missing dataset is one clear error before a sweep, not a study of FAILED trials."""
    from . import data

    for name in data.FILES:
        data.find_file(name, data_dir)


@dataclass(frozen=True)
class SweepLayout:
    """Where a sweep's trials run. executor: "local" or "ray"; workers: local processes (0 = inline) or
    Ray trials at once (1 until the cluster is asked); threads: intra-op threads per trial; where: one line."""

    executor: str
    workers: int
    threads: int
    where: str
    pack: int | None = None  # None: every trial alone; 0: each pack as one model; K: packs of at most K


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep does: all its trials, those it runs (todo), the store's split of the planned ids by
    state (plan; None when the store does not exist yet), the upper-bound estimate of its wall time
    (calibrated: the speed measured on this store's COMPLETE trials, else assumed) and the layout."""

    study: Study
    trials: list[Trial]
    todo: list[Trial]
    plan: Plan | None
    estimate_s: float
    calibrated: bool
    layout: SweepLayout
    store: Path
    packs: list[list[str]] = field(default_factory=list)

    def power_line(self) -> str | None:
        """The seed plan (fmlab.power) at the planned seeds, from the COMPLETE trials the store already
        holds; None when it holds none or they fit no model."""
        import pandas as pd

        from . import power
        from .analysis import analyse, unit
        from .errors import FmlabError
        from .results import report_inputs

        if self.plan is None or not self.plan.done:
            return None
        st = self.study
        try:
            with _opened(self.store) as s:
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
    the planned trials' records in plan order, the best COMPLETE one (None: none yet) and the first
    TensorBoard write error (None: none, or no board)."""

    progress: Progress
    wall_s: float
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    board_error: str | None

    def in_state(self, state: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["state"] == state]


def _layout(executor: str, workers: int | None, threads: int, address: str | None, cpus_per_trial: float,
            ray: Any = None, pack: str | int = "off", device: str = "auto",
            gpus_per_trial: float | None = None) -> SweepLayout:  # fmt: skip
    """ray: a connected rayexec.RayExecutor (its slots and GPUs); None: the layout before Ray is asked.
    pack: --pack, resolved for the device the trials get (fmlab.packs.resolve)."""
    from . import packs
    from .errors import FmlabError

    if executor == "local":
        workers, threads = sweep_slots(workers, threads)
        k = packs.resolve(pack, check_device(device).split(":")[0])
        where = "inline (this process)" if workers == 0 else f"{workers} worker process(es)"
        return SweepLayout("local", workers, threads, where + _pack_words(k), k)
    if executor != "ray":
        raise FmlabError(f"bad executor {executor!r}; use local or ray")
    gpus = ray.gpus if ray is not None else (gpus_per_trial or 0.0)
    k = packs.resolve(pack, "cuda" if gpus > 0 else "cpu")
    where = f"Ray ({address or 'local instance'}), {cpus_per_trial:g} CPU(s) per trial"
    if ray is not None:
        where += f", {ray.gpus:g} GPU(s) per trial; {ray.slots} at once"
    return SweepLayout("ray", ray.slots if ray is not None else 1, threads or max(1, int(cpus_per_trial)),
                       where + _pack_words(k), k)  # fmt: skip


def _pack_words(k: int | None) -> str:
    return "" if k is None else ", each pack trained as one model" + (f" (at most {k} trials)" if k else "")


def _plan(st: Study, store: Store | None, path: Path, layout: SweepLayout, retry_failed: bool,
          record: bool) -> SweepPlan:  # fmt: skip
    from . import packs, sweep

    trials = st.trials()
    if record:
        assert store is not None
        plan: Plan | None = store.plan(st, trials, retry_failed=retry_failed)
        runnable: set[str] | None = set(plan.todo)
    else:  # read-only: what a sweep would plan (FAILED rows are only reset when it starts)
        plan = store.status([t.id for t in trials]) if store else None
        runnable = set(plan.todo) | (set(plan.failed) if retry_failed else set()) if plan else None
    todo = [t for t in trials if runnable is None or t.id in runnable]
    calib = sweep.calibration(store, layout.threads) if store else 1.0
    est = sweep.estimate_s(todo, layout.workers, layout.threads, calib)
    groups = [] if layout.pack is None else [[t.id for t in g] for g in packs.group(todo, layout.pack)]
    return SweepPlan(st, trials, todo, plan, est, calib != 1.0, layout, path, groups)


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

        from . import sweep

        p, st, board = self.plan, self.plan.study, self._board
        assert p.plan is not None, "open_sweep records the plan"
        ex, self._ex = self._ex, None  # sweep.run shuts the executor down, whatever happens
        try:
            prog = sweep.run(self._store, st, p.plan, workers=p.layout.workers, opts=self._opts,
                             on_update=on_update or (lambda _: None), estimate=p.estimate_s, executor=ex, board=board,
                             pack=p.layout.pack)  # fmt: skip
        finally:
            self._board = None
            if board is not None:
                board.close()
        wall = time.time() - prog.started
        recs = {r["id"]: r for r in self._store.records(st.name, st.budget)}
        planned = [recs[t.id] for t in p.trials]
        best = self._store.best(st.name, st.budget) if any(r["state"] == "COMPLETE" for r in planned) else None
        return SweepOutcome(prog, wall, planned, best, board.error if board is not None else None)

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None
        if self._ex is not None:  # connected to Ray but never run
            self._ex.shutdown()
            self._ex = None
        self._store.close()


def open_sweep(path: str | Path, budget: str = "full", *, seeds: tuple[int, ...] | None = None,
               workers: int | None = None, threads: int = 0, store: str | Path = DEFAULT_PATH,
               device: str = "auto", data_dir: str | None = None, retry_failed: bool = False,
               executor: str = "local", address: str | None = None, cpus_per_trial: float = 1.0,
               gpus_per_trial: float | None = None, tensorboard: str | Path | None = None,
               pack: str | int = "auto") -> Sweep:  # fmt: skip
    """A sweep ready to run, with every check done before the store is touched: the study file, the
    tensorboard package, the Ray connection (executor "ray"), then (local executor) the device, once, and
    the dataset; Ray workers read the dataset on their own machines, where data_dir is a path, and the
    cluster's resources decide the device. Then the store, the plan recorded in it (see plan_sweep) and
    the TensorBoard board. Arguments as run_study's."""
    from . import study as fstudy
    from .env import RunOptions
    from .store import Store

    st = fstudy.load(path, budget, seeds)
    if tensorboard is not None:
        from . import tboard

        tboard.require()
    ray = None
    if executor == "ray":
        from .rayexec import RayExecutor

        ray = RayExecutor(address, cpus_per_trial, gpus_per_trial, device)
    s = board = None
    try:
        layout = _layout(executor, workers, threads, address, cpus_per_trial, ray, pack, device)
        if ray is None:
            check_device(device)  # once, not one FAILED trial per missing GPU
            check_dataset(data_dir)
        s = Store(Path(store))
        p = _plan(st, s, Path(store), layout, retry_failed, record=True)
        board = tboard.for_sweep(tensorboard, st, s, p.plan) if tensorboard is not None else None
        return Sweep(p, s, ray, board, RunOptions(device=device, threads=layout.threads, data_dir=data_dir))
    except BaseException:
        if ray is not None:
            ray.shutdown()
        if s is not None:
            s.close()
        raise


def plan_sweep(path: str | Path, budget: str = "full", *, seeds: tuple[int, ...] | None = None,
               workers: int | None = None, threads: int = 0, store: str | Path = DEFAULT_PATH,
               retry_failed: bool = False, executor: str = "local", address: str | None = None,
               cpus_per_trial: float = 1.0, record: bool = False, device: str = "auto",
               data_dir: str | None = None, gpus_per_trial: float | None = None,
               pack: str | int = "auto") -> SweepPlan:  # fmt: skip
    """A sweep's plan without running a trial: its trials, those it would run, the store's split by state,
    the estimate and the layout (what `fmlab sweep --dry-run` prints). By default read-only: a missing
    store is not created and Ray is not contacted (the layout then counts one trial at once).
    record=True does what a sweep does before its first trial: open_sweep's checks (device, dataset,
    Ray), then the plan written to the store (new trials WAITING, stale RUNNING rows recovered, with
    retry_failed the FAILED ones WAITING again). Arguments as run_study's."""
    from . import study as fstudy
    from .store import Store

    args = dict(seeds=seeds, workers=workers, threads=threads, store=store, retry_failed=retry_failed,
                executor=executor, address=address, cpus_per_trial=cpus_per_trial, pack=pack)  # fmt: skip
    if record:
        with open_sweep(path, budget, **args, device=device, data_dir=data_dir, gpus_per_trial=gpus_per_trial) as sw:
            return sw.plan
    st = fstudy.load(path, budget, seeds)
    layout = _layout(executor, workers, threads, address, cpus_per_trial, pack=pack, device=device,
                     gpus_per_trial=gpus_per_trial)  # fmt: skip
    s = Store(Path(store)) if Path(store).exists() else None
    try:
        return _plan(st, s, Path(store), layout, retry_failed, record=False)
    finally:
        if s is not None:
            s.close()


def run_study(path: str | Path, budget: str = "full", *, seeds: tuple[int, ...] | None = None,
              workers: int | None = None, threads: int = 0, store: str | Path = DEFAULT_PATH,
              device: str = "auto", data_dir: str | None = None, retry_failed: bool = False,
              executor: str = "local", address: str | None = None, cpus_per_trial: float = 1.0,
              gpus_per_trial: float | None = None, on_update: Callable[[Progress], None] | None = None,
              tensorboard: str | Path | None = None, pack: str | int = "auto") -> StudyHandle:  # fmt: skip
    """Run a study file's trials into the store (resumes: COMPLETE trials are not redone), as
    `fmlab sweep` does; returns the study's handle. FAILED trials stay in the store (see trials()).
    executor: "local" (workers processes, 0 = inline; threads each) or "ray" (one Ray task per trial with
    cpus_per_trial CPUs and gpus_per_trial GPUs, default 1 when the cluster has GPUs; address: auto,
    HOST:PORT or ray://HOST:PORT, default RAY_ADDRESS or a new local instance; needs fmlab[ray]).
    tensorboard: a folder for one TensorBoard run per trial, written as epochs finish (fmlab[tensorboard]).
    pack: "auto" (each pack of trials trained as one model on a GPU, not on a CPU: fmlab.packs), "off",
    "on" or K (packs of at most K trials); an execution choice: trial ids and results do not depend on it."""
    with open_sweep(path, budget, seeds=seeds, workers=workers, threads=threads, store=store, device=device,
                    data_dir=data_dir, retry_failed=retry_failed, executor=executor, address=address,
                    cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, tensorboard=tensorboard,
                    pack=pack) as sw:
        sw.run(on_update)
    return StoreHandle(Path(store)).study(sw.plan.study.name, sw.plan.study.budget)


def make_config(overrides: Mapping[str, Any] | None = None, base: Config | None = None) -> Config:
    """A Config from the defaults (or base) plus {"train.lr": 1e-3, ...} (values or `--set` strings)."""
    from .config import Config, with_overrides

    return with_overrides(base or Config(), dict(overrides or {})).resolved()


@dataclass(frozen=True)
class Trained:
    """What train_trial() returns: the plain TrialResult and where its checkpoint went (None: not saved)."""

    result: TrialResult
    checkpoint: Path | None


def default_train_dir(cfg: Config) -> Path:
    return Path("runs/train") / cfg.trial_id()


def train_trial(config: Config | Mapping[str, Any] | None = None, *, out: str | Path | None = None, save: bool = True,
          device: str = "auto", threads: int = 0, data_dir: str | None = None,
          on_epoch: Callable[[dict[str, float]], None] | None = None) -> Trained:  # fmt: skip
    """Train one network (a Config, or overrides of the defaults like the CLI's --set); with save, write
    the checkpoint to out (default runs/train/<trial id>), as `fmlab train` does. (Not `fmlab.train`:
    that name is the fmlab.train module, which Python binds on the package once anything imports it.)"""
    from . import checkpoint
    from .env import RunOptions
    from .train import train as train_one

    cfg = config.resolved() if config is not None and not isinstance(config, Mapping) else make_config(config)
    res = train_one(cfg, opts=RunOptions(device=device, threads=threads, data_dir=data_dir), on_epoch=on_epoch)
    ckpt = checkpoint.save_trial(res, Path(out) if out else default_train_dir(cfg)) if save else None
    return Trained(res, ckpt)


# ---------------------------------------------------------------- inference


def predict(ckpt: str | Path, images: Any, *, store: str | Path = DEFAULT_PATH,
            names: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """Class probabilities for images: a list of files/folders (PNG, JPEG, ...), or uint8 pixels
    [N, 28, 28] in Fashion-MNIST form. ckpt: a trial id, STUDY:best or a checkpoint directory.
    One row per image: image, class, index, prob (the top class), then one column per class."""
    import numpy as np
    import pandas as pd

    from . import infer

    ld = infer.load(ckpt, store)
    if isinstance(images, np.ndarray):
        preds = infer.predict_pixels(ld, images, names or [str(i) for i in range(len(images))], len(ld.classes))
    else:
        preds = infer.predict(ld, [images] if isinstance(images, (str, Path)) else list(images), len(ld.classes))
    rows = []
    for p in preds:
        probs = {t["class"]: t["prob"] for t in p["top"]}
        rows.append({"image": p["file"], "class": p["top"][0]["class"], "index": p["top"][0]["index"],
                     "prob": p["top"][0]["prob"], **{c: probs[c] for c in ld.classes}})  # fmt: skip
    cols = ["image", "class", "index", "prob", *ld.classes]
    return pd.DataFrame(rows, columns=cols).astype({"index": "int64", "prob": "float64",
                                                     **{c: "float64" for c in ld.classes}})  # fmt: skip
