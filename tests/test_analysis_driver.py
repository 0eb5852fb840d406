"""One analysis driver (fmlab.analysis.driver) runs the pipeline for grid and arms studies alike, the designs
supplying only what differs; one ranking rule (fmlab.analysis.ranking) names the best trial for the store's
STUDY:best and for the analysis."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import synth_arms, synth_grid, write_study

from fmlab.analysis import driver
from fmlab.analysis.arms import ArmsDesign
from fmlab.analysis.grid import GridDesign
from fmlab.analysis.ranking import best_id, best_trial
from fmlab.report import export
from fmlab.store.db import Store
from fmlab.study import spec as fstudy

ANALYSIS = Path(driver.__file__).parent
# the pipeline's steps and the modules that hold them: only the driver may call them
STEP_MODULES = {
    "anova",
    "bestset",
    "cells",
    "claims",
    "claimparse",
    "diagnostics",
    "seedcheck",
    "driver",
    "power",
    "seedpower",
    "prose",
}
STEPS = {
    "anova",
    "type2_anova",
    "best_set",
    "mark_best_set",
    "check_claims",
    "simple_effects",
    "diagnose",
    "apply_transform",
    "limit_lines",
    "seed_plan",
    "plan_seeds",
    "warnings_for",
    "best_line",
    "cell_table",
    "complete_and_counts",
    "curve_table",
    "analyse",
    "run",
}


def test_one_driver_serves_grid_and_arms(monkeypatch):
    seen = []
    real = driver.run

    def spy(design, *args):
        seen.append(design)
        return real(design, *args)

    monkeypatch.setattr(driver, "run", spy)
    g = driver.analyse(*synth_grid(seeds=range(3)))
    a = driver.analyse(*synth_arms(seeds=range(3)))
    assert [type(d) for d in seen] == [GridDesign, ArmsDesign]
    assert (g.design, a.design) == ("grid", "arms")
    for res in (g, a):  # every step ran for both, in the one driver
        assert res.anova is not None and res.best is not None and res.diagnostics is not None
        assert res.findings[0].startswith("best: ") and res.counts["cells_complete"] == len(res.cells)
    assert g.plan is not None and a.plan is not None
    assert list(a.cells.columns).count("changes") == 1 and "changes" not in g.cells  # the design's own column


def _uses(path: Path) -> tuple[set[str], set[str]]:
    """(the fmlab.analysis modules a file imports, the names it calls)."""
    tree = ast.parse(path.read_text())
    mods, called = set(), set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("fmlab.analysis"):
            mods.add(n.module.removeprefix("fmlab.analysis").lstrip("."))
            mods.update(a.name for a in n.names if n.module == "fmlab.analysis")
        elif isinstance(n, ast.Import):
            mods.update(a.name.removeprefix("fmlab.analysis.") for a in n.names if a.name.startswith("fmlab.analysis."))
        elif isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute)):
            called.add(n.func.id if isinstance(n.func, ast.Name) else n.func.attr)
    return mods, called


@pytest.mark.parametrize("name", ["grid.py", "arms.py"])
def test_designs_call_no_pipeline_step(name):
    mods, called = _uses(ANALYSIS / name)
    assert not mods & STEP_MODULES, f"{name} imports pipeline modules {sorted(mods & STEP_MODULES)}"
    assert not called & STEPS, f"{name} calls pipeline steps {sorted(called & STEPS)}"
    mods, called = _uses(ANALYSIS / "driver.py")  # the check sees the steps where they are called
    assert {"anova", "bestset", "claims", "power"} <= mods and {"anova", "best_set", "diagnose"} <= called


def test_best_id_rule():
    assert best_id([("b", 0.9), ("a", 0.9), ("c", 0.8)], "val_acc") == "a"  # ties go to the smaller id
    assert best_id([("b", 0.2), ("a", 0.3), ("c", math.nan), ("d", None)], "val_loss") == "b"  # lower; no NaN
    assert best_id([("c", math.nan)], "val_acc") is None
    with pytest.raises(ValueError, match="never on test"):
        best_id([("a", 0.9)], "test_acc")


@pytest.mark.parametrize("select", ["val_acc", "val_loss"])
def test_store_best_and_analysis_name_the_same_trial(tmp_path, select):
    f = write_study(tmp_path, "rank", {"train.lr": [0.01, 0.02, 0.03, 0.04]})
    f.write_text(f'select = "{select}"\n' + f.read_text())
    st = fstudy.load(f)
    s = Store(tmp_path / "s.db")
    s.plan(st, st.trials())
    ts = sorted(st.trials(), key=lambda t: t.id, reverse=True)  # the larger id first: a tie must not go by order
    accs = [0.93, 0.93, 0.91, None]  # a tie at the top, and one trial without the selection metric
    for t, acc in zip(ts, accs, strict=True):
        metrics = {"val_acc": acc, "val_loss": 0.5 - acc / 2} if acc is not None else {"test_acc": 0.99}
        s.import_complete(
            t.id, metrics=metrics, timings={}, env={}, best_epoch=1, stop_reason="max_epochs", n_params=1, epochs=[]
        )
    want = min(ts[0].id, ts[1].id)
    assert s.best("rank")["id"] == want
    trials, _, meta = export.report_inputs(s, "rank")
    assert meta["select"] == select and best_trial(pd.DataFrame(trials), select) == want
    s.close()
