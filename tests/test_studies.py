"""Studies end to end: real `fmlab sweep` subprocesses, a real SQLite store, tiny budgets.

The store is read here with plain sqlite3 (not fmlab.store.db) so the checks do not trust the code under test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_exactly_complete, ids_of, q, run_cli, states, wait_for, write_study

from fmlab.config.states import State
from fmlab.store.db import resolve_checkpoint
from fmlab.study import spec as fstudy


def sweep_popen(*args: str, env: dict | None = None) -> subprocess.Popen:
    """A sweep in its own session (process group), as a user's terminal would run it."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "fmlab", "sweep", *args],
        env=e,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def live_group(pgid: int) -> list[int]:
    """Processes of a process group that are not zombies (PID 1 in a container may not reap)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(d.name))
    return out


# ---------------------------------------------------------------- bad study files


BAD = {
    "unknown_top_key": ('name = "b"\nseedz = [0]\n', "seedz"),
    "unknown_factor": ('name = "b"\n[factors]\n"model.widthz" = [1]\n', "model.widthz"),
    "bad_value": ('name = "b"\n[factors]\n"model.pool" = ["avg", "median"]\n', "model.pool"),
    "bad_base_value": ('name = "b"\n[base]\n"train.lr" = "fast"\n', "train.lr"),
    "empty_grid": ('name = "b"\n[factors]\n"model.dropout" = []\n', "model.dropout"),
    "bad_toml": ('name = "b"\n[factors\n', "TOML"),
    "test_metric": ('name = "b"\nselect = "test_acc"\n', "select"),
    "budget_key": ('name = "b"\n[budgets.quick]\n"train.max_epoch" = 3\n', "train.max_epoch"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_file_fails_before_running(tmp_path, case):
    text, key = BAD[case]
    f = tmp_path / "bad.toml"
    f.write_text(text)
    db = tmp_path / "s" / "fm.db"
    p = run_cli("sweep", str(f), "--budget", "quick" if case == "budget_key" else "full", "--store", str(db))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert str(f) in lines[0] and key in lines[0]
    assert not db.parent.exists()  # the store is untouched


def test_bad_value_names_allowed_values_and_keeps_existing_store(tmp_path):
    good = write_study(tmp_path, "good", {"model.pool": ["avg"]})
    db = tmp_path / "fm.db"
    run_cli("sweep", str(good), "--store", str(db), "--workers", "0", "--threads", "1", check=True)
    before = db.read_bytes()
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('["avg"]', '["avg", "median"]'))
    p = run_cli("sweep", str(bad), "--store", str(db))
    assert p.returncode == 2 and "'avg', 'max'" in p.stderr and "model.pool" in p.stderr
    assert db.read_bytes() == before


# ---------------------------------------------------------------- kill, resume, concurrency


def test_sigkill_sweep_then_rerun_finishes_exactly_the_plan(tmp_path):
    f = write_study(tmp_path, "k", {"model.pool": ["avg", "max"], "model.batch_norm": [False, True]})
    planned = ids_of(f)
    held = planned[-1]  # held after its first epoch, so the kill cuts it mid-way
    db = tmp_path / "fm.db"
    p = sweep_popen(str(f), "--store", str(db), "--workers", "2", env={"FMLAB_FAULT": f"sleep:{held}:60"})
    try:
        wait_for(
            lambda: "COMPLETE" in states(db).values() and q(db, "SELECT 1 FROM epochs WHERE trial=?", held),
            what="a COMPLETE trial and the held trial's first epoch",
        )
        assert states(db)[held] == "RUNNING"
        os.kill(p.pid, signal.SIGKILL)  # the parent only: its workers must die with it
        p.wait(10)
        wait_for(lambda: not live_group(p.pid), 20, "the workers to die with their parent")
    finally:
        if live_group(p.pid):
            os.killpg(p.pid, signal.SIGKILL)
    r = run_cli("sweep", str(f), "--store", str(db), "--workers", "2", check=True)
    assert "recovered from a dead sweep" in r.stderr
    assert_exactly_complete(db, planned)
    show = json.loads(run_cli("show", held, "--store", str(db), "--format", "json", check=True).stdout)
    assert "resuming after epoch 1" in show["log"] and [e["epoch"] for e in show["epochs"]] == [1, 2]


def test_trial_killed_midway_resumes_with_the_same_metrics(tmp_path):
    f = write_study(tmp_path, "m", {"model.batch_norm": [True]}, base={"train.max_epochs": 3})
    (tid,) = ids_of(f)
    a, b = tmp_path / "a" / "fm.db", tmp_path / "b" / "fm.db"
    common = ["--workers", "1", "--threads", "1"]
    ra = run_cli("sweep", str(f), "--store", str(a), *common, env={"FMLAB_FAULT": f"kill:{tid}:1"}, check=True)
    assert "worker process died" in ra.stderr
    run_cli("sweep", str(f), "--store", str(b), *common, check=True)
    sa = json.loads(run_cli("show", tid, "--store", str(a), "--format", "json", check=True).stdout)
    sb = json.loads(run_cli("show", tid, "--store", str(b), "--format", "json", check=True).stdout)
    assert sa["attempts"] == 2 and "resuming after epoch 1" in sa["log"]
    assert sb["attempts"] == 1 and "resuming" not in sb["log"]
    assert sa["metrics"] == sb["metrics"]
    drop = ("epoch_s",)
    assert [{k: v for k, v in e.items() if k not in drop} for e in sa["epochs"]] == [
        {k: v for k, v in e.items() if k not in drop} for e in sb["epochs"]
    ]


def test_two_concurrent_sweeps_never_run_a_trial_twice(tmp_path):
    f = write_study(
        tmp_path, "c", {"model.pool": ["avg", "max"], "model.dropout": [0.0, 0.2]}, base={"train.max_epochs": 1}
    )
    planned = ids_of(f)
    db = tmp_path / "fm.db"
    procs = [sweep_popen(str(f), "--store", str(db), "--workers", "1", "--threads", "1") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert_exactly_complete(db, planned)
    assert {n for (n,) in q(db, "SELECT attempts FROM trials")} == {1}
    ran = [int(err.split(" run now)")[0].rsplit("(", 1)[1]) for _, err in outs]
    assert sum(ran) == len(planned)


def test_ctrl_c_gives_running_trials_back(tmp_path):
    f = write_study(tmp_path, "i", {"model.pool": ["avg"]}, seeds=(0, 1))
    planned = ids_of(f)
    db = tmp_path / "fm.db"
    p = sweep_popen(
        str(f), "--store", str(db), "--workers", "1", "--threads", "1", env={"FMLAB_FAULT": f"sleep:{planned[0]}:60"}
    )
    wait_for(lambda: q(db, "SELECT 1 FROM epochs"), what="the first epoch")
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    wait_for(lambda: not live_group(p.pid), 20, "no process left")
    assert set(states(db).values()) == {"WAITING"}
    run_cli("sweep", str(f), "--store", str(db), "--workers", "1", "--threads", "1", check=True)
    assert_exactly_complete(db, planned)


# ---------------------------------------------------------------- failures, listings, results, ids


@pytest.fixture(scope="module")
def failed_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nan")
    f = write_study(tmp, "n", {"model.pool": ["avg", "max"]}, seeds=(0, 1))
    planned = ids_of(f)
    db = tmp / "fm.db"
    p = run_cli(
        "sweep",
        str(f),
        "--store",
        str(db),
        "--workers",
        "0",
        "--threads",
        "1",
        env={"FMLAB_FAULT": f"nan:{planned[1]}"},
    )
    return f, db, planned, p


def test_nan_trial_is_failed_and_the_study_goes_on(failed_store):
    f, db, planned, p = failed_store
    assert p.returncode == 1 and "--retry-failed" in p.stderr
    st = states(db)
    assert st[planned[1]] == "FAILED" and [st[t] for t in planned if t != planned[1]] == ["COMPLETE"] * 3
    show = json.loads(run_cli("show", planned[1][:6], "--store", str(db), "--format", "json", check=True).stdout)
    assert show["error"].startswith("Diverged") and "Traceback" in show["traceback"] and "epoch 1" in show["log"]
    table = run_cli("show", planned[1], "--store", str(db), check=True).stdout
    assert "Diverged" in table and "Traceback" in table


def test_ls_json_records(failed_store):
    f, db, planned, _ = failed_store
    recs = json.loads(run_cli("ls", "n", "--store", str(db), "--format", "json", check=True).stdout)
    assert sorted(r["id"] for r in recs) == sorted(planned)
    for r in recs:
        assert {"id", "study", "state", "config", "seed", "metrics", "budget"} <= set(r)
        assert r["study"] == "n" and r["config"]["seed"] == r["seed"]
        if r["state"] == "COMPLETE":
            assert {"val_loss", "val_acc", "test_loss", "test_acc"} <= set(r["metrics"])
    assert "COMPLETE" in run_cli("ls", "--store", str(db), check=True).stdout
    bad = run_cli("ls", "nope", "--store", str(db))
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_results_tables(failed_store, tmp_path):
    _, db, planned, _ = failed_store
    run_cli("results", "n", "--store", str(db), "--out", str(tmp_path / "csv"), check=True)
    import csv

    trials = list(csv.DictReader(open(tmp_path / "csv" / "trials.csv")))
    epochs = list(csv.DictReader(open(tmp_path / "csv" / "epochs.csv")))
    assert {
        "id",
        "study",
        "budget",
        "state",
        "seed",
        "model.pool",
        "val_loss",
        "val_acc",
        "test_loss",
        "test_acc",
        "best_epoch",
        "epochs",
        "train_s",
        "total_s",
        "n_params",
        "config",
    } <= set(trials[0])
    assert {
        "trial_id",
        "seed",
        "model.pool",
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "epoch_s",
    } <= set(epochs[0])
    assert sorted(t["id"] for t in trials) == sorted(planned)
    n_rows = {t: sum(e["trial_id"] == t for e in epochs) for t in planned}
    assert all(int(t["epochs"]) == n_rows[t["id"]] for t in trials)
    run_cli("results", "n", "--store", str(db), "--out", str(tmp_path / "j"), "--as", "jsonl", check=True)
    rows = [json.loads(x) for x in (tmp_path / "j" / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["label"] == "full"


def test_resolve_checkpoint(failed_store):
    _, db, planned, _ = failed_store
    d = resolve_checkpoint(planned[0][:5], db)
    assert d == db.parent / "trials" / planned[0] and (d / "best.safetensors").is_file()
    best = resolve_checkpoint("n:best", db)
    recs = {r["id"]: r for r in json.loads(run_cli("ls", "n", "--store", str(db), "--format", "json").stdout)}
    done = [r for r in recs.values() if r["state"] == "COMPLETE"]
    assert best.name == min(done, key=lambda r: r["metrics"]["val_loss"])["id"]
    assert resolve_checkpoint(str(d), db) == d
    from fmlab.report import export as results
    from fmlab.store.db import Store

    trials, ep, meta = results.report_inputs(Store(db, create=False), "n")  # fmlab.analysis.driver.analyse's contract
    assert meta["factors"] == {"model.pool": ["avg", "max"]} and meta["baseline"] == {"model.pool": "avg"}
    assert meta["select"] == "val_loss" and meta["planned"] == 4 and len(trials) == 4 and meta["budget"] == "full"
    complete = {t["id"] for t in trials if t["state"] == State.COMPLETE}
    assert len(complete) == 3 and complete <= {e["trial_id"] for e in ep}
    from fmlab.errors import FmlabError

    with pytest.raises(FmlabError, match="FAILED"):
        resolve_checkpoint(planned[1], db)


def test_retry_failed(failed_store):
    f, db, planned, _ = failed_store
    again = run_cli("sweep", str(f), "--store", str(db), "--workers", "0", "--threads", "1")
    assert again.returncode == 1 and states(db)[planned[1]] == "FAILED"  # not retried unless asked
    run_cli("sweep", str(f), "--store", str(db), "--workers", "0", "--threads", "1", "--retry-failed", check=True)
    assert_exactly_complete(db, planned)


def test_same_config_and_seed_in_two_studies_runs_once(tmp_path):
    a = write_study(tmp_path, "a", {"model.pool": ["avg", "max"]})
    b = write_study(tmp_path, "b", {"model.pool": ["max"], "model.batch_norm": [False, True]})
    shared = set(ids_of(a)) & set(ids_of(b))
    assert len(shared) == 1
    db = tmp_path / "fm.db"
    run_cli("sweep", str(a), "--store", str(db), "--workers", "0", "--threads", "1", check=True)
    dry = run_cli("sweep", str(b), "--store", str(db), "--dry-run", check=True).stdout
    assert "to run: 1, already COMPLETE: 1" in dry
    assert "speed from this store's trials on a machine like this one" in dry  # a's trial ran here
    rb = run_cli("sweep", str(b), "--store", str(db), "--workers", "0", "--threads", "1", check=True)
    assert "(1 run now)" in rb.stderr
    (tid,) = shared
    assert q(db, "SELECT attempts FROM trials WHERE id=?", tid) == [(1,)]
    assert sorted(q(db, "SELECT study FROM study_trials WHERE trial=?", tid)) == [("a",), ("b",)]


def test_budgets_and_seeds_change_the_plan(tmp_path):
    f = write_study(
        tmp_path,
        "q",
        {"model.pool": ["avg", "max"]},
        seeds=(0, 1, 2),
        text='[budgets.quick]\n"train.max_epochs" = 1\nseeds = [0, 1]\n',
    )
    full, quick = fstudy.load(f), fstudy.load(f, "quick")
    assert len(full.trials()) == 6 and len(quick.trials()) == 4 and quick.label == "quick: indicative only"
    assert not {t.id for t in full.trials()} & {t.id for t in quick.trials()}  # a budget is part of the config
    assert len(fstudy.load(f, "quick", fstudy.parse_seeds("5,")).trials()) == 2
    out = run_cli(
        "sweep", str(f), "--budget", "quick", "--seeds", "3", "--dry-run", "--store", str(tmp_path / "x.db"), check=True
    ).stdout
    assert "quick: indicative only" in out and "= 6 trials" in out and not (tmp_path / "x.db").exists()
    assert "speed probed here" in out  # no store, no trials to measure the speed on: a few steps on this CPU
    seed_toml = Path(__file__).resolve().parents[1] / "studies" / "seed.toml"
    assert len(fstudy.load(seed_toml, "quick").trials()) == 48 and len(fstudy.load(seed_toml).trials()) == 72


def test_budgets_section_splits_the_chosen_budget_and_checks_every_table(tmp_path):
    """[budgets] in fmlab.study.sections: the chosen budget's seeds, finding and label are not config overrides
    (they leave trial ids alone); every table is checked, chosen or not, each error naming the file and key."""
    from fmlab.study import checks, sections

    text = (
        '[budgets.quick]\n"train.max_epochs" = 1\nseeds = [0, 1]\n'
        '[budgets.cpu]\n"train.precision" = "bf16"\nfinding = true\nlabel = "bf16 on CPU"\n'
    )
    f = write_study(tmp_path, "b", {"model.pool": ["avg", "max"]}, text=text)
    doc = checks.read_toml(f, "study file", fstudy.TOP_KEYS)
    factors = {"model.pool": ["avg", "max"]}
    quick = sections.budgets_section(f, doc, "quick", factors, {})
    assert (quick.known, quick.overrides, quick.seeds, quick.finding) == (
        ("full", "quick", "cpu"),
        {"train.max_epochs": 1},
        (0, 1),
        False,
    )
    cpu = sections.budgets_section(f, doc, "cpu", factors, {})
    assert (cpu.overrides, cpu.seeds, cpu.finding, cpu.note) == ({"train.precision": "bf16"}, None, True, "bf16 on CPU")
    assert sections.budgets_section(f, doc, "full", factors, {}).finding is True
    st = fstudy.load(f, "cpu")
    assert st.label == "cpu: bf16 on CPU" and st.overrides == {"train.precision": "bf16"} and st.seeds == (0,)
    bad = {
        "unknown": ("quick", "unknown budget 'nope'"),
        "factor": ('[budgets.x]\n"model.pool" = "avg"\n', "[budgets.x] key 'model.pool' is also a factor"),
        "finding": ("[budgets.x]\nfinding = 1\n", "[budgets.x] key 'finding': bad value 1"),
        "seeds": ("[budgets.x]\nseeds = []\n", "[budgets.x] key 'seeds': bad value []"),
    }
    for case, (extra, want) in bad.items():
        g = write_study(tmp_path, f"bad_{case}", factors, text=extra if case != "unknown" else text)
        with pytest.raises(fstudy.StudyError, match=re.escape(want)):
            fstudy.load(g, "nope" if case == "unknown" else "full")  # table x is checked though full is chosen


def test_finding_budget_is_labelled_by_its_label_not_indicative(tmp_path):
    """A budget with finding = true (seed.toml's cpu) carries its label through the store spec and
    results.report_inputs to the analysis; quick stays indicative only."""
    from fmlab.analysis.driver import analyse
    from fmlab.report.export import report_inputs
    from fmlab.store.db import Store

    root = Path(__file__).resolve().parents[1] / "studies" / "seed.toml"
    cpu, quick = fstudy.load(root, budget="cpu"), fstudy.load(root, budget="quick")
    assert cpu.label == "cpu: full data, bf16 on CPU" and "indicative" not in cpu.label
    assert quick.label == "quick: indicative only"
    import pandas as pd

    for st, want in ((cpu, "cpu: full data, bf16 on CPU"), (quick, "quick: indicative only")):
        store = Store(tmp_path / f"{st.budget}.db")
        store.plan(st, st.trials())
        trials, epochs, meta = report_inputs(store, "seed", st.budget)
        assert meta["label"] == want
        a = analyse(pd.DataFrame(trials), pd.DataFrame(epochs), meta)
        assert want in a.label and (("indicative" in a.label) == (st.budget == "quick"))
        assert {r["label"] for r in store.records("seed", st.budget)} == {want}  # what `fmlab ls` shows
