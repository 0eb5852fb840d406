"""One look at a study for `fmlab watch`: counts, the running trials with their latest epoch row, failures
with their one-line reason, an ETA, and the ranking so far (cells with mean and 95% CI exactly as the report
computes them: fmlab.analysis.driver on fmlab.report.export's frames, rows formatted by fmlab.report.tables).

Reads only (the store connection is the caller's, read-only); fmlab.cli.watch draws the View.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from fmlab.store.db import State, Store


@dataclass
class View:
    """One look at the study; times in seconds."""

    label: str
    select: str
    planned: int
    done: int
    failed: int
    waiting: int
    running: list[dict[str, Any]] = field(default_factory=list)  # id, cell, epoch, max_epochs, metric, elapsed_s
    failures: list[dict[str, str]] = field(default_factory=list)  # id, cell, error
    cells: str = "cell"  # the cell column's header: the factors' short names
    header: list[str] = field(default_factory=list)  # the ranking: rank, cell, n, select mean [CI], test
    ranking: list[list[str]] = field(default_factory=list)
    eta_s: float | None = None
    note: str = ""

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.running


def _cell(cell: dict[str, Any]) -> str:
    """A cell by its levels only ('true, 0.2, avg, 64'); the column header names the factors."""
    return ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for k, v in cell.items() if k != "also")


def _levels(name: str) -> str:
    """tables.cell_rows' 'batch_norm=true, dropout=0.2' as 'true, 0.2' (the header names the factors)."""
    return ", ".join(part.split("=", 1)[-1] for part in name.split(", "))


def _eta(recs: list[dict[str, Any]], epochs: dict[str, list[dict]], running: list[dict]) -> float | None:
    """The epochs left (each WAITING or RUNNING trial's max_epochs less those it has run: a trial cut off part-way
    resumes there) x the median time of the running trials' latest epochs (the pace of this sweep's layout; else
    of every epoch), over the trials running at once; an upper bound when trials stop early. None until an epoch
    has a time, or while nothing runs."""
    latest = [epochs[r["id"]][-1].get("epoch_s") for r in running if epochs.get(r["id"])]
    ep_s = [x for x in latest if x] or [e["epoch_s"] for rows in epochs.values() for e in rows if e.get("epoch_s")]
    if not ep_s or not running:
        return None
    left = sum(
        max(int(r["config"]["train"]["max_epochs"]) - len(epochs.get(r["id"], [])), 0)
        for r in recs
        if r["state"] in (State.WAITING, State.RUNNING)
    )
    return left * statistics.median(ep_s) / len(running)


class Ranker:
    """The ranking so far, refitted only when the set of finished trials changes (a fit takes ~1 s)."""

    def __init__(self) -> None:
        self.key: Any = None
        self.header: list[str] = []
        self.rows: list[list[str]] = []

    def __call__(self, store: Store, study: str, budget: str, recs: list[dict[str, Any]]) -> None:
        key = tuple(sorted((r["id"], r["state"]) for r in recs if r["state"] in (State.COMPLETE, State.FAILED)))
        if key == self.key:
            return
        from fmlab.analysis import arms as farms
        from fmlab.analysis.driver import analyse
        from fmlab.analysis.formatting import unit
        from fmlab.report import tables
        from fmlab.report.export import report_frames

        trials, epochs, meta = report_frames(store, study, budget)
        # a partial grid fits rank-deficient models; a warning would print over the view. record=True: the
        # filter statsmodels adds when first imported (inside this block) cannot print either
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("ignore")
            a = analyse(trials, epochs, meta)
        arms = a.design == "arms"
        rows = farms.ranked_rows(a) if arms else tables.cell_rows(a)
        pick = (0, 1, 3, 4) if arms else (0, 1, 2, 3)  # rank, cell, n, select mean [CI]
        _, u = unit(a.select, level=True)
        self.header = ["#", cell_header(meta), "n", f"{a.select} mean [95% CI]{u}", "test %"]
        self.rows = [[r[i] for i in pick] + [r[-1].split(" ")[0]] for r in rows]  # test acc: its mean only
        if not arms:
            for r in self.rows:
                r[1] = _levels(r[1])
        self.key = key


def cell_header(meta: dict[str, Any]) -> str:
    """'arm', or the factors' short names in file order: the header over _cell's levels."""
    from fmlab.analysis.formatting import short_names

    return "arm" if meta.get("design") == "arms" else ", ".join(short_names(list(meta["factors"])).values())


def look(store: Store, study: str, budget: str | None, ranker: Ranker) -> View:
    from fmlab.report.export import spec_label

    info = store.study(study)
    budget = store.pick_budget(study, budget)
    select = info["select_metric"]
    recs = store.records(study, budget)
    now = time.time()
    by_state = {s: [r for r in recs if r["state"] == s] for s in State}
    run_recs = by_state[State.RUNNING]
    eps: dict[str, list[dict]] = {}
    for e in store.epochs(r["id"] for r in recs):
        eps.setdefault(e["trial"], []).append(e)
    running = []
    for r in run_recs:
        last = eps.get(r["id"], [{}])[-1]
        running.append(
            {
                "id": r["id"],
                "cell": _cell(r["cell"]),
                "epoch": last.get("epoch", 0),
                "max_epochs": int(r["config"]["train"]["max_epochs"]),
                "metric": last.get(select),
                "elapsed_s": now - (r["started"] or now),
            }
        )
    failures = [
        {"id": r["id"], "cell": _cell(r["cell"]), "error": (r["error"] or "failed").splitlines()[0]}
        for r in by_state[State.FAILED]
    ]
    ranker(store, study, budget, recs)
    waiting = len(by_state[State.WAITING])
    note = "nothing RUNNING: is a sweep running this study? (fmlab sweep STUDY_FILE)" if waiting and not running else ""
    return View(
        label=f"{study} study ({spec_label(info['spec'], budget)})",
        select=select,
        planned=len(recs),
        done=len(by_state[State.COMPLETE]),
        failed=len(failures),
        waiting=waiting,
        running=running,
        failures=failures,
        cells=ranker.header[1] if ranker.header else "cell",
        header=ranker.header,
        ranking=ranker.rows,
        eta_s=_eta(recs, eps, running),
        note=note,
    )
