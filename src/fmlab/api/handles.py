"""The public Python API: stores, studies as DataFrames, their analysis, HiPlot, training and prediction.

    import fmlab
    st = fmlab.open_store("runs/fmlab.db").study("seed", budget="quick")
    st.trials()            # one row per trial: id, state, seed, one column per factor, metrics, timings
    st.analysis().effects  # the numbers the report shows
    st.hiplot().display()  # the report's HiPlot experiment, inline in Jupyter

The CLI is a thin layer over these functions (plus printing); nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.api.frames import METRIC_COLS as METRIC_COLS
from fmlab.api.frames import STATES as STATES
from fmlab.api.frames import typed_epochs, typed_trials
from fmlab.api.single import Trained, default_train_dir, make_config, predict, train_trial
from fmlab.config.metrics import EPOCH_COLS as EPOCH_METRICS
from fmlab.store.db import DEFAULT_PATH
from fmlab.sweep.layout import SweepLayout, check_dataset, check_device, sweep_slots
from fmlab.sweep.plan import Sweep, SweepOutcome, SweepPlan, open_sweep, plan_sweep

if TYPE_CHECKING:  # the heavy imports wait for the call that needs them: `import fmlab` stays fast
    import hiplot
    import pandas as pd

    from fmlab.analysis.record import Analysis
    from fmlab.store.db import Store
    from fmlab.sweep.progress import Progress

__all__ = [
    "EPOCH_METRICS",
    "METRIC_COLS",
    "STATES",
    "StoreHandle",
    "StudyHandle",
    "Sweep",
    "SweepLayout",
    "SweepOutcome",
    "SweepPlan",
    "Trained",
    "check_dataset",
    "check_device",
    "default_train_dir",
    "make_config",
    "open_store",
    "open_sweep",
    "plan_sweep",
    "predict",
    "run_study",
    "sweep_slots",
    "train_trial",
]


@contextmanager
def _opened(path: Path) -> Iterator[Store]:
    from fmlab.store.db import Store

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
                rows.append(
                    {
                        "name": info["name"],
                        "description": info["description"],
                        "path": info["path"],
                        "select": info["select_metric"],
                        "design": info["spec"].get("design", "grid"),
                        "factors": list(info["factors"]),
                        "budgets": full["budgets"],
                        "trials": len(s.records(info["name"])),
                    }
                )
        cols = ["name", "description", "path", "select", "design", "factors", "budgets", "trials"]
        return pd.DataFrame(rows, columns=cols).astype({"trials": "int64"})

    def study(self, name: str, budget: str | None = None) -> StudyHandle:
        """One study under one budget (None: the only budget it has; several is an error naming them)."""
        with _opened(self.path) as s:
            return StudyHandle(self, name, s.pick_budget(name, budget))

    def records(
        self, study: str | None = None, budget: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
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
        from fmlab.store.db import resolve_checkpoint

        return resolve_checkpoint(ref, self.path)


@dataclass(frozen=True)
class StudyHandle:
    """One study under one budget in a store: its trials and epochs as DataFrames, analysis, report."""

    store: StoreHandle
    name: str
    budget: str

    def inputs(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """(trials, epochs, meta): the contract of fmlab.analysis.driver.analyse, typed (see trials())."""
        from fmlab.report.export import report_inputs

        with _opened(self.store.path) as s:
            trials, epochs, meta = report_inputs(s, self.name, self.budget)
        return typed_trials(trials, meta["factors"]), typed_epochs(epochs, meta), meta

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
        from fmlab.analysis.driver import analyse

        return analyse(*self.inputs())

    def best(self) -> pd.Series | None:
        """The COMPLETE trial that is best on the study's validation selection metric (None if none)."""
        from fmlab.analysis.ranking import best_trial

        tdf, _, meta = self.inputs()
        tid = best_trial(tdf, meta["select"]) if len(tdf) else None
        return None if tid is None else tdf[tdf["id"] == tid].iloc[0]

    def checkpoint(self) -> Path | None:
        """The best trial's checkpoint directory, or None when there is none (yet)."""
        b = self.best()
        return None if b is None else self._ckpt(str(b["id"]))

    def _ckpt(self, tid: str | None) -> Path | None:
        from fmlab.store.db import Store

        d = Store.trial_dir_of(self.store.path, tid) if tid else None
        return d if d is not None and (d / "trial.json").is_file() else None

    def default_report_dir(self) -> Path:
        return Path("reports") / (self.name if self.budget == "full" else f"{self.name}-{self.budget}")

    def report(self, out_dir: str | Path | None = None) -> dict[str, Any]:
        """Write the report (index.html, summary.md, figures, CSV tables, hiplot.html); returns its summary
        dict (what `fmlab report --format json` prints). Default folder: reports/<study>[-<budget>]."""
        from fmlab.analysis.ranking import best_trial
        from fmlab.report.build import build_report

        tdf, edf, meta = self.inputs()
        ckpt = self._ckpt(best_trial(tdf, meta["select"]) if len(tdf) else None)
        return build_report(tdf, edf, meta, Path(out_dir) if out_dir else self.default_report_dir(), ckpt)

    def hiplot(self) -> hiplot.Experiment:
        """The report's HiPlot experiment (one row per trial): .display() in Jupyter, .to_html(path)."""
        from fmlab.report.hiplot_page import hiplot_experiment

        tdf, _, meta = self.inputs()
        return hiplot_experiment(tdf, meta)

    def export(self, out_dir: str | Path, fmt: str = "csv") -> list[Path]:
        """trials.<fmt> and epochs.<fmt> (csv or jsonl) in out_dir: what `fmlab results` writes."""
        from fmlab.report import export as results

        with _opened(self.store.path) as s:
            return results.export(s, self.name, out_dir, fmt, self.budget)

    def tensorboard(self, logdir: str | Path) -> list[str]:
        """One TensorBoard run per trial in logdir (epoch scalars, HParams), rewritten from the store;
        returns the trial ids written (those with epochs or ended). Needs fmlab[tensorboard]."""
        from fmlab.report import tensorboard as tboard
        from fmlab.report.tensorboard_writer import require

        require()
        with _opened(self.store.path) as s:
            return tboard.write_from_store(logdir, s, self.name, self.budget)


# ---------------------------------------------------------------- running (fmlab.sweep.plan)


def run_study(
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
    on_update: Callable[[Progress], None] | None = None,
    tensorboard: str | Path | None = None,
    pack: str | int = "auto",
) -> StudyHandle:
    """Run a study file's trials into the store (resumes: COMPLETE trials are not redone), as
    `fmlab sweep` does; returns the study's handle. FAILED trials stay in the store (see trials()).
    executor: "local" (workers processes, 0 = inline; threads each) or "ray" (one Ray task per trial with
    cpus_per_trial CPUs and gpus_per_trial GPUs, default 1 when the cluster has GPUs; address: auto,
    HOST:PORT or ray://HOST:PORT, default RAY_ADDRESS or a new local instance; needs fmlab[ray]).
    tensorboard: a folder for one TensorBoard run per trial, written as epochs finish (fmlab[tensorboard]).
    pack: "auto" (each pack of trials trained as one model on a GPU, not on a CPU: fmlab.training.packs), "off",
    "on" or K (packs of at most K trials); an execution choice: trial ids and results do not depend on it."""
    with open_sweep(
        path,
        budget,
        seeds=seeds,
        workers=workers,
        threads=threads,
        store=store,
        device=device,
        data_dir=data_dir,
        retry_failed=retry_failed,
        executor=executor,
        address=address,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        tensorboard=tensorboard,
        pack=pack,
    ) as sw:
        sw.run(on_update)
    return StoreHandle(Path(store)).study(sw.plan.study.name, sw.plan.study.budget)
