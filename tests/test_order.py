"""The order a sweep runs its trials in (fmlab.sweep.order): seed by seed, the most informative cell next, so that
a study cut off part-way has as many of its fitted model's effects estimable as its trials allow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from conftest import run_cli, write_study

from fmlab.api import handles as api
from fmlab.study import spec as fstudy
from fmlab.sweep import order

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "studies" / "seed.toml"


def seed0(st) -> list:
    """The study's seed-0 trials: one replicate of the 24 cells."""
    return [t for t in st.trials() if t.seed == 0]


def ranks(trials, factors) -> list[int]:
    x = np.array([order.model_row(t.cell, factors) for t in trials])
    return [int(np.linalg.matrix_rank(x[:k])) for k in range(1, len(trials) + 1)]


def test_model_rows_span_the_formula_statsmodels_fits():
    """model_row's columns are the fitted model's: the same rank as statsmodels' (a+b+c+d)^2 design."""
    st = fstudy.load(SEED, "cpu")
    trials = seed0(st)
    names = {f: f"f{i}" for i, f in enumerate(st.factors)}
    df = pd.DataFrame([{names[f]: str(t.cell[f]) for f in st.factors} for t in trials]).assign(y=0.0)
    ref = smf.ols("y ~ (" + " + ".join(f"C({n})" for n in names.values()) + ")**2", df)
    ours = np.array([order.model_row(t.cell, st.factors) for t in trials])
    assert ours.shape[1] == ref.exog.shape[1] == 15
    assert np.linalg.matrix_rank(np.hstack([ours, ref.exog])) == np.linalg.matrix_rank(ours) == 15


def test_every_prefix_of_the_seed_grid_is_as_estimable_as_its_size_allows():
    st = fstudy.load(SEED, "cpu")  # 24 cells; one seed: 15 model columns
    trials = seed0(st)
    ordered = order.run_order(trials, st.factors, [0])
    assert sorted(t.id for t in ordered) == sorted(t.id for t in trials)
    assert ranks(ordered, st.factors) == [min(k, 15) for k in range(1, 25)]  # full rank after 15 trials
    file_order = ranks(trials, st.factors)
    assert file_order[14] < 15 and file_order.index(15) == 18  # the file's cell-by-cell order needs 19
    assert ordered == order.run_order(trials, st.factors, [0])  # deterministic


def test_seeds_go_one_at_a_time_and_each_seed_covers_the_grid():
    st = fstudy.load(SEED, "quick")  # 24 cells x seeds 0, 1
    ordered = order.run_order(st.trials(), st.factors, st.seeds)
    assert [t.seed for t in ordered] == [0] * 24 + [1] * 24
    cells = [json.dumps(t.cell, sort_keys=True) for t in ordered]
    assert len(set(cells[:24])) == 24 and set(cells[24:]) == set(cells[:24])


def test_complete_trials_count_as_run_and_come_first():
    """The long CPU run's state: every no-BN cell done, 2 BN cells done. The order then runs BN cells that
    make the rest estimable, not the next cells of the file."""
    st = fstudy.load(SEED, "cpu")
    trials = seed0(st)
    done = [t for t in trials if not t.cell["model.batch_norm"]]
    done += [
        t
        for t in trials
        if t.cell["model.batch_norm"] and t.cell["model.pool"] == "avg" and t.cell["model.dropout"] == 0.0
    ][:2]
    ordered = order.run_order(trials, st.factors, [0], done={t.id for t in done})
    assert {t.id for t in ordered[: len(done)]} == {t.id for t in done}
    r = ranks(ordered, st.factors)
    start = r[len(done) - 1]
    assert start < 15 and r[len(done) - 1 + (15 - start)] == 15  # each next trial adds a dimension until full


def test_arms_keep_the_file_order_within_a_seed():
    class T:
        def __init__(self, tid, arm, seed):
            self.id, self.cell, self.seed = tid, {"arm": arm}, seed

    ts = [T(f"{a}{s}", a, s) for a in ("baseline", "x", "y") for s in (0, 1)]
    assert [t.id for t in order.run_order(ts, {}, (0, 1))] == ["baseline0", "x0", "y0", "baseline1", "x1", "y1"]


def test_the_sweep_claims_in_the_planned_order(tmp_path):
    """2 cells x seeds 0 and 1, inline: the trials start in plan_sweep's todo order (store timestamps)."""
    small = {"train.max_epochs": 1, "data.train_subset": 300, "data.val_size": 100}
    f = write_study(tmp_path, "ordered", {"model.pool": ["avg", "max"]}, seeds=(0, 1), base=small)
    db = tmp_path / "s" / "fm.db"
    plan = api.plan_sweep(f, store=db, workers=0)
    assert [t.seed for t in plan.todo] == [0, 0, 1, 1]  # the file's order is cell by cell: 0, 1, 0, 1
    run_cli("sweep", str(f), "--store", str(db), "--workers", "0", "--plain", check=True)
    started = {r["id"]: r["started"] for r in api.open_store(db).records()}
    assert sorted(started, key=started.get) == [t.id for t in plan.todo]


def test_trials_cut_off_part_way_resume_before_any_fresh_one():
    st = fstudy.load(SEED, "quick")
    trials = st.trials()
    assert (trials[5].seed, trials[6].seed, trials[-1].seed) == (1, 0, 1)  # the file's order: cell by cell
    done, cut = {trials[0].id}, {trials[-1].id, trials[5].id, trials[6].id}
    ordered = order.run_order(trials, st.factors, st.seeds, done=done, started=cut)
    want = [trials[0].id, trials[6].id, trials[5].id, trials[-1].id]  # done, then cut off: seed, then file order
    assert [t.id for t in ordered[:4]] == want
    assert len({t.id for t in ordered}) == 48
