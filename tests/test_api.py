"""The Python API (fmlab.api.handles) against the CLI on one tiny grid study, and the notebook executed headless.

The study is run once by `fmlab sweep` (a subprocess, as a user would), so the API reads what the CLI wrote.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_cli

import fmlab
from fmlab.config.states import State
from fmlab.data import idx as data
from fmlab.errors import FmlabError

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
FACTORS = {"model.batch_norm": [False, True], "model.pool": ["avg", "max"]}
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """A 2 x 2 grid, 2 seeds, 1 epoch on 600 images: 8 trials in a fresh store; returns the store path."""
    tmp = tmp_path_factory.mktemp("api")
    lines = ['name = "tiny"', f"seeds = {list(SEEDS)}", 'select = "val_acc"', "[base]"]
    lines += [f'"{k}" = {json.dumps(v)}' for k, v in TINY.items()]
    lines += ["[factors]"] + [f'"{k}" = {json.dumps(v)}' for k, v in FACTORS.items()]
    lines += ["[budgets.quick]"]
    (tmp / "tiny.toml").write_text("\n".join(lines) + "\n")
    db = tmp / "runs" / "fmlab.db"
    run_cli(
        "sweep",
        str(tmp / "tiny.toml"),
        "--budget",
        "quick",
        "--workers",
        "0",
        "--threads",
        "1",
        "--store",
        str(db),
        check=True,
    )
    return db


def test_import_fmlab_is_light():
    code = "import sys, fmlab; fmlab.open_store; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_trials_and_epochs_dataframes(tiny_study):
    store = fmlab.open_store(tiny_study)
    studies = store.studies()
    assert studies["name"].tolist() == ["tiny"] and studies.loc[0, "budgets"] == ["quick"]
    assert studies.loc[0, "trials"] == 8 and studies.loc[0, "select"] == "val_acc"
    st = store.study("tiny")  # the only budget is picked
    assert st.budget == "quick"
    t = st.trials()
    assert len(t) == 8 and list(t.columns[:8]) == ["id", "study", "budget", "label", "state", "seed", *FACTORS]
    for c in ("val_loss", "val_acc", "test_loss", "test_acc", "train_s", "total_s"):
        assert t[c].dtype == "float64", c
    assert t["seed"].dtype == "int64" and sorted(set(t["seed"])) == list(SEEDS)
    assert isinstance(t["state"].dtype, pd.CategoricalDtype) and set(t["state"]) == {State.COMPLETE}
    assert t["model.batch_norm"].dtype == bool and set(t["model.pool"]) == {"avg", "max"}
    assert str(t["best_epoch"].dtype) == "Int64" and (t["epochs"] == 1).all()
    e = st.epochs()
    assert list(e.columns) == [
        "trial_id",
        "seed",
        *FACTORS,
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "epoch_s",
    ]
    assert len(e) == 8 and e["epoch"].dtype == "int64" and e["val_loss"].dtype == "float64"
    assert set(e["trial_id"]) == set(t["id"])


def test_api_trials_match_cli_ls_json(tiny_study):
    recs = json.loads(run_cli("ls", "tiny", "--store", str(tiny_study), "--format", "json", check=True).stdout)
    t = fmlab.open_store(tiny_study).study("tiny", "quick").trials().set_index("id")
    assert sorted(r["id"] for r in recs) == sorted(t.index)
    for r in recs:
        for m in ("val_acc", "val_loss", "test_acc", "test_loss"):
            assert t.loc[r["id"], m] == r["metrics"][m]
        assert t.loc[r["id"], "seed"] == r["seed"] and t.loc[r["id"], "state"] == r["state"]
        assert {k: bool(v) if k == "model.batch_norm" else v for k, v in r["cell"].items()} == {
            k: t.loc[r["id"], k] for k in FACTORS
        }
    assert fmlab.open_store(tiny_study).records("tiny") == recs
    show = json.loads(run_cli("show", recs[0]["id"], "--store", str(tiny_study), "--format", "json", check=True).stdout)
    assert fmlab.open_store(tiny_study).trial(recs[0]["id"])["epochs"] == show["epochs"]


def test_analysis_matches_the_report(tiny_study, tmp_path):
    p = run_cli(
        "report", "tiny", "--store", str(tiny_study), "--out", str(tmp_path / "rep"), "--format", "json", check=True
    )
    rep = json.loads(p.stdout)
    st = fmlab.open_store(tiny_study).study("tiny")
    a = st.analysis()
    for name, df in (("effects", a.effects), ("interactions", a.interactions), ("cells", a.cells)):
        csv = pd.read_csv(tmp_path / "rep" / f"{name}.csv")
        num = [c for c in csv.columns if pd.api.types.is_float_dtype(csv[c])]
        assert num and len(csv) == len(df)
        np.testing.assert_allclose(csv[num].to_numpy(float), df[num].to_numpy(float), rtol=1e-9, equal_nan=True)
    assert {"term", "estimate", "lo", "hi", "n_seeds", "p", "p_holm", "verdict"} <= set(a.effects.columns)
    assert a.anova is not None and "share_ss" in a.anova.columns
    best = st.best()
    assert rep["best"]["trial_id"] == best["id"] and best["val_acc"] == st.trials()["val_acc"].max()
    assert st.checkpoint() == tiny_study.parent / "trials" / best["id"]
    resolved = json.loads(
        run_cli("params", "tiny:best", "--store", str(tiny_study), "--format", "json", check=True).stdout
    )["checkpoint"]
    assert Path(resolved) == st.checkpoint()  # STUDY:best and the report pick the same trial


def test_hiplot_is_the_reports_experiment(tiny_study, tmp_path):
    st = fmlab.open_store(tiny_study).study("tiny")
    exp = st.hiplot()
    assert len(exp.datapoints) == 8 and exp.colorby == "val_acc"
    assert {d.values["id"] for d in exp.datapoints} == set(st.trials()["id"])
    assert exp.datapoints[0].values["model.batch_norm"] in ("true", "false")
    exp.to_html(tmp_path / "h.html")
    assert (tmp_path / "h.html").stat().st_size > 10_000
    st.report(tmp_path / "rep")
    page = (tmp_path / "rep" / "hiplot.html").read_text()  # the experiment is a JSON string inside the page
    for d in exp.datapoints:
        assert json.dumps(d.values)[1:-1].replace('"', '\\"') in page


def test_predict_files_and_pixels_agree_with_the_cli(tiny_study, tmp_path):
    from PIL import Image

    x = data.load_file("t10k-images-idx3-ubyte")[:3]
    files = []
    for i, img in enumerate(x):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(files[-1])
    by_pixels = fmlab.predict("tiny:best", x, store=tiny_study)
    by_files = fmlab.predict("tiny:best", files, store=tiny_study)
    assert list(by_files.columns) == ["image", "class", "index", "prob", *data.CLASSES]
    assert by_files["image"].tolist() == [str(f) for f in files]
    np.testing.assert_allclose(by_files[list(data.CLASSES)].sum(axis=1), 1.0, rtol=1e-5)
    cli = json.loads(
        run_cli(
            "predict", "tiny:best", *map(str, files), "--store", str(tiny_study), "--format", "json", check=True
        ).stdout
    )
    assert by_files["class"].tolist() == [p["top"][0]["class"] for p in cli]
    np.testing.assert_allclose(by_files["prob"], [p["top"][0]["prob"] for p in cli], rtol=1e-6)
    assert by_pixels["image"].tolist() == ["0", "1", "2"] and by_pixels["prob"].between(0, 1).all()


def test_train_trial_writes_a_checkpoint(tmp_path):
    cfg = fmlab.make_config(TINY)
    run = fmlab.train_trial(cfg, out=tmp_path / "ck", device="cpu", threads=1)
    assert run.result.trial_id == cfg.trial_id() and (tmp_path / "ck" / "best.safetensors").is_file()
    again = fmlab.train_trial({**TINY}, save=False, device="cpu", threads=1)
    assert again.checkpoint is None and again.result.metrics == run.result.metrics  # seeded: same numbers


def test_run_study_runs_then_resumes(tiny_study, tmp_path):
    db = tmp_path / "fmlab.db"
    seen = []
    st = fmlab.run_study(
        tiny_study.parent.parent / "tiny.toml",
        "quick",
        seeds=(0,),
        workers=0,
        threads=1,
        store=db,
        device="cpu",
        on_update=lambda p: seen.append(p.done),
    )
    t = st.trials()
    assert (st.name, st.budget, len(t)) == ("tiny", "quick", 4) and set(t["state"]) == {State.COMPLETE}
    assert seen[-1] == 4
    ref = fmlab.open_store(tiny_study).study("tiny").trials().set_index("id")  # same configs and seed 0: same ids
    assert set(t["id"]) == set(ref[ref["seed"] == 0].index)
    again = fmlab.run_study(tiny_study.parent.parent / "tiny.toml", "quick", seeds=(0,), workers=0, store=db)
    assert again.trials()["id"].tolist() == t["id"].tolist()  # nothing left to run


def test_plan_sweep_reads_the_store_and_writes_nothing(tiny_study, tmp_path):
    f = tiny_study.parent.parent / "tiny.toml"
    fresh = fmlab.plan_sweep(f, "quick", store=tmp_path / "none" / "fmlab.db", workers=0, threads=1)
    assert not (tmp_path / "none").exists()  # a dry run creates no store
    assert fresh.plan is None and len(fresh.trials) == len(fresh.todo) == 8 and fresh.estimate_s > 0
    assert (fresh.layout.executor, fresh.layout.workers, fresh.layout.where) == ("local", 0, "inline (this process)")
    done = fmlab.plan_sweep(f, "quick", store=tiny_study, workers=2, threads=1)
    assert done.todo == [] and sorted(done.plan.done) == sorted(t.id for t in done.trials) and done.calibrated
    ray = fmlab.plan_sweep(f, "quick", store=tiny_study, executor="ray", cpus_per_trial=2)  # Ray is not asked
    assert (ray.layout.workers, ray.layout.threads) == (1, 2) and ray.layout.where.startswith("Ray (local instance)")
    with pytest.raises(FmlabError, match="bad executor 'dask'"):
        fmlab.plan_sweep(f, "quick", store=tiny_study, executor="dask")


def test_plan_sweep_record_writes_the_trials_waiting_and_runs_none(tiny_study, tmp_path):
    db = tmp_path / "fmlab.db"
    p = fmlab.plan_sweep(
        tiny_study.parent.parent / "tiny.toml", "quick", seeds=(1,), store=db, workers=0, device="cpu", record=True
    )
    assert sorted(p.plan.todo) == sorted(t.id for t in p.trials) and len(p.trials) == 4
    recs = fmlab.open_store(db).records("tiny")
    assert {r["state"] for r in recs} == {State.WAITING} and len(recs) == 4
    assert all(r["attempts"] == 0 for r in recs)
    assert fmlab.open_store(db).study("tiny").epochs().empty


def test_a_missing_dataset_is_refused_before_any_trial(tiny_study, tmp_path):
    from fmlab.data.idx import DataError

    empty = tmp_path / "nodata"
    empty.mkdir()
    f, db = tiny_study.parent.parent / "tiny.toml", tmp_path / "fmlab.db"
    with pytest.raises(DataError, match="not found in --data-dir"):
        fmlab.run_study(f, "quick", store=db, workers=0, device="cpu", data_dir=str(empty))
    with pytest.raises(DataError, match="not found in --data-dir"):
        fmlab.plan_sweep(f, "quick", store=db, workers=0, device="cpu", data_dir=str(empty), record=True)
    assert not db.exists()  # refused before the store, so no trial was planned, let alone FAILED
    assert fmlab.plan_sweep(f, "quick", store=db, data_dir=str(empty)).todo  # a dry run needs no dataset


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, c.source[:60]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory, monkeypatch_module) -> str:
    """A kernelspec for this interpreter in a temp prefix (a fresh CI venv has no registered kernel)."""
    prefix = tmp_path_factory.mktemp("kernel")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "fmlab-test"],
        check=True,
        capture_output=True,
    )
    monkeypatch_module.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return "fmlab-test"


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def notebook_checkout(tiny_study, kernel, monkeypatch_module) -> Path:
    """A repository root as `make run` leaves it: runs/fmlab.db (the tiny study) and notebooks/explore.ipynb
    (with a probe cell appended); the environment the README's command runs in, without FMLAB_STORE."""
    root = tiny_study.parent.parent
    mp = monkeypatch_module
    mp.delenv("FMLAB_STORE", raising=False)  # the notebook must find root/runs/fmlab.db by itself
    mp.setenv("FMLAB_STUDY", "tiny")
    mp.setenv("FMLAB_BUDGET", "quick")
    mp.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the figures
    # the kernel runs in another folder: make it import the fmlab under test (a relative PYTHONPATH=src would not)
    src = str(Path(fmlab.__file__).resolve().parents[1])
    mp.setenv("PYTHONPATH", os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    probe = (
        "import json; print(json.dumps({'ranked': ranked['cell'].tolist(), 'effects': list(effects.columns), "
        "'terms': effects['term'].tolist(), 'hiplot_rows': len(exp.datapoints), 'best': str(best['id']), "
        "'pred': predictions[['true', 'class', 'prob']].to_dict('records'), 'cwd': os.getcwd(), "
        "'store': STORE}))"
    )
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    (root / "notebooks").mkdir(exist_ok=True)
    nbformat.write(nb, root / "notebooks" / "explore.ipynb")
    return root


def check_executed(nb, tiny_study: Path) -> dict:
    """Every tagged cell produced what it shows; the probe's numbers equal the API's. Returns the probe."""
    outs = {c.metadata.get("tags", ["probe"])[0]: c.outputs for c in nb.cells if c.cell_type == "code"}
    assert not [o for o_list in outs.values() for o in o_list if o.get("output_type") == "error"]
    kinds = {tag: {k for o in o_list for k in o.get("data", {})} for tag, o_list in outs.items()}
    for tag in ("studies", "trials", "ranked", "effects", "predict"):
        assert "text/html" in kinds[tag], tag  # a DataFrame
    for tag in ("effects_plot", "curves", "predict_plot"):
        assert "image/png" in kinds[tag], tag
    assert "text/html" in kinds["hiplot"] and any(
        "hiplot" in o["data"].get("text/html", "").lower() for o in outs["hiplot"] if "data" in o
    )
    got = json.loads(outs["probe"][0]["text"])
    assert Path(got["store"]).resolve() == tiny_study.resolve()  # the default store, found without FMLAB_STORE
    st = fmlab.open_store(tiny_study).study("tiny")
    a = st.analysis()
    assert got["ranked"] == a.cells["cell"].tolist() and len(got["ranked"]) == 4
    assert {"term", "estimate", "lo", "hi", "p_holm", "verdict"} <= set(got["effects"])
    assert got["terms"] == [*a.effects["term"], *a.interactions["term"]] and len(got["terms"]) == 3
    assert got["hiplot_rows"] == 8 and got["best"] == st.best()["id"]
    assert len(got["pred"]) == 8 and all(p["class"] in data.CLASSES and 0 < p["prob"] <= 1 for p in got["pred"])
    labels = data.load_file("t10k-labels-idx1-ubyte")
    assert [p["true"] for p in got["pred"]] == [data.CLASSES[labels[i]] for i in range(0, 10_000, 1_250)]
    assert not math.isnan(got["pred"][0]["prob"])
    return got


def test_notebook_runs_as_the_readme_says(notebook_checkout, tiny_study):
    """`jupyter nbconvert --to notebook --execute notebooks/explore.ipynb --output OUT.ipynb` from the
    repository root, FMLAB_STORE unset: nbconvert starts the kernel in notebooks/."""
    root = notebook_checkout
    jupyter = Path(sys.executable).with_name("jupyter")
    p = subprocess.run(
        [
            str(jupyter),
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "notebooks/explore.ipynb",
            "--output",
            "OUT.ipynb",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = check_executed(nbformat.read(root / "notebooks" / "OUT.ipynb", as_version=4), tiny_study)
    assert Path(got["cwd"]).resolve() == (root / "notebooks").resolve()


def test_notebook_runs_with_the_kernel_in_the_repository_root(notebook_checkout, tiny_study, kernel):
    from nbclient import NotebookClient

    root = notebook_checkout
    nb = nbformat.read(root / "notebooks" / "explore.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(root)}}).execute()
    got = check_executed(nb, tiny_study)  # execute() raised CellExecutionError on any cell error
    assert Path(got["cwd"]).resolve() == root.resolve()
