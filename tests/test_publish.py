"""fmlab publish / import: a results folder round-trips through a fresh store, real data, real SQLite."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import TINY, run_cli, tiny_study_file

from fmlab.api import handles as api
from fmlab.config.states import State

REPO = Path(__file__).resolve().parents[1]


def _study(root: Path, extra: str = "") -> Path:
    return tiny_study_file(root, epochs=1, extra=extra)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny study in progress (seed 0 of seeds [0, 1]: 2 of 4 trials), published from its store."""
    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy

    root = tmp_path_factory.mktemp("pub")
    st = fstudy.load(_study(root), "t")
    s = Store(root / "runs" / "fmlab.db")  # all 4 trials planned, as a sweep stopped half-way leaves them
    s.plan(st, st.trials())
    s.close()
    run_cli(
        "sweep",
        "studies/tiny.toml",
        "--budget",
        "t",
        "--seeds",
        "0,",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--store",
        "runs/fmlab.db",
        check=True,
        cwd=root,
    )
    p = run_cli("publish", "studies/tiny.toml", "--budget", "t", "--store", "runs/fmlab.db", check=True, cwd=root)
    assert "2 of 4 planned trials COMPLETE" in p.stderr
    return root, root / "results" / "tiny-t"


def test_publish_writes_the_folder_and_nothing_else(published):
    root, d = published
    names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert {"trials.csv", "epochs.csv", "summary.md", "run.json", "best/best.safetensors", "best/trial.json"} <= names
    assert any(n.endswith(".png") for n in names)
    assert not [n for n in names if n.endswith((".db", ".db-wal", ".sqlite", ".html"))]
    assert not [p for p in (root / "results").iterdir() if p.name.startswith(".")]  # no temp folder left
    run = json.loads((d / "run.json").read_text())
    assert run["study_file"] == "studies/tiny.toml" and run["counts"] == {
        "planned": 4,
        "complete": 2,
        "failed": 0,
        "missing": 2,
    }
    assert run["best"] == json.loads((d / "best" / "trial.json").read_text())["trial_id"]
    copy = (d / "study.toml").read_bytes()  # the study file as published travels with it
    assert (
        copy == (root / "studies" / "tiny.toml").read_bytes()
        and hashlib.sha256(copy).hexdigest() == run["study_sha256"]
    )
    assert run["wall_s"] > 0 and run["hardware"]["torch"] and run["first_trial_started"] <= run["last_trial_finished"]
    for p in d.rglob("*"):  # no absolute path of this machine anywhere in the folder
        if p.is_file():
            blob = p.read_bytes()
            for s in {str(root), str(root.resolve()), str(REPO)}:
                assert s.encode() not in blob, f"{p.name} holds {s}"


def test_import_regenerates_the_tables_then_sweep_runs_only_the_missing(published, tmp_path):
    root, d = published
    fresh = tmp_path / "fresh" / "fmlab.db"
    p = run_cli("import", str(d), "--store", str(fresh), check=True, cwd=root)
    assert "imported 2 COMPLETE" in p.stderr
    p = run_cli("import", str(d), "--store", str(fresh), check=True, cwd=root)  # idempotent
    assert "imported 0 COMPLETE trial(s), 2 already" in p.stderr
    h = api.open_store(fresh).study("tiny", "t")
    h.export(tmp_path / "tables")
    for t in ("trials.csv", "epochs.csv"):
        assert (tmp_path / "tables" / t).read_text() == (d / t).read_text(), t
    h.report(tmp_path / "rep")
    published_tables = {p.name for p in d.glob("*.csv")} - {"trials.csv", "epochs.csv"}
    assert "cells.csv" in published_tables  # 2 trials: too few for a fitted model, so no effects.csv here
    assert {p.name for p in (tmp_path / "rep").glob("*.csv")} == published_tables
    for t in sorted(published_tables):
        assert (tmp_path / "rep" / t).read_text() == (d / t).read_text(), t
    run = json.loads((d / "run.json").read_text())
    assert (Store_dir := fresh.parent / "trials" / run["best"] / "best.safetensors").is_file(), Store_dir
    p = run_cli(
        "sweep",
        "studies/tiny.toml",
        "--budget",
        "t",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--store",
        str(fresh),
        check=True,
        cwd=root,
    )
    assert "to run: 2 " in p.stderr and "4/4 COMPLETE (2 run now)" in p.stderr
    with sqlite3.connect(fresh) as db:
        logs = [r[0] for r in db.execute("SELECT log FROM trials WHERE state = 'COMPLETE'")]
    assert len(logs) == 4 and logs.count("imported by fmlab import") == 2


def test_predict_from_the_published_best(published, tmp_path):
    from PIL import Image

    from fmlab.data import idx as data

    _, d = published
    ds = data.load(api.make_config(TINY).data)
    Image.fromarray(ds.test.x[0].numpy()).save(tmp_path / "img.png")  # one 28x28 test image
    p = run_cli("predict", str(d / "best"), str(tmp_path / "img.png"), "--format", "json", check=True)
    top = json.loads(p.stdout)[0]["top"]
    assert top[0]["class"] in data.CLASSES and 0 < top[0]["prob"] <= 1


def test_bad_folders_are_one_line_errors(published, tmp_path):
    root, d = published
    store = str(tmp_path / "s" / "fmlab.db")
    cases = []
    bad = tmp_path / "no_run"
    shutil.copytree(d, bad)
    (bad / "run.json").unlink()
    cases.append((bad, "run.json: not found"))
    bad = tmp_path / "bad_config"
    shutil.copytree(d, bad)
    t = (bad / "trials.csv").read_text()
    (bad / "trials.csv").write_text(t.replace('""lr"": 0.01', '""lr"": 0.03', 1))
    cases.append((bad, "config hashes to"))
    bad = tmp_path / "twice"  # an epoch row listed twice: refused, not silently replaced by the store
    shutil.copytree(d, bad)
    lines = (bad / "epochs.csv").read_text().splitlines(keepends=True)
    (bad / "epochs.csv").write_text("".join([*lines, lines[1]]))
    row = dict(zip(lines[0].strip().split(","), lines[1].strip().split(","), strict=True))
    cases.append((bad, f"epochs.csv: line {len(lines) + 1}: trial {row['trial_id']} epoch {row['epoch']} listed twice"))
    for folder, want in cases:
        p = run_cli("import", str(folder), "--store", store, cwd=root)
        assert p.returncode == 2 and want in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    # the study file changed since publishing: every id differs; the error names the file and the fix
    changed = tmp_path / "changed"
    shutil.copytree(root / "studies", changed / "studies")
    shutil.copytree(d, changed / "results" / "tiny-t")
    _study(changed, '\n"data.split_seed" = 7')
    p = run_cli("import", "results/tiny-t", "--store", store, cwd=changed)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "trials.csv" in p.stderr and "studies/tiny.toml" in p.stderr and "republish" in p.stderr
    assert not Path(store).exists() or not api.open_store(store).studies()["trials"].sum()


COMMITTED = sorted(REPO.glob("results/*/run.json"))


def assert_same_table(got: Path, want: Path) -> None:
    """The same CSV: the same cells, numbers equal to 1e-9 relative (a fit that is rank-deficient until
    every cell has a trial leaves its last digits to the BLAS and the machine's floating-point order)."""
    a, b = (list(csv.reader(p.open())) for p in (got, want))
    assert len(a) == len(b) and a[0] == b[0], want.name
    for ra, rb in zip(a[1:], b[1:], strict=True):
        for col, x, y in zip(a[0], ra, rb, strict=True):
            try:
                same = math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12) or x == y
            except ValueError:
                same = x == y
            assert same, f"{want.name}: {col} is {x}, committed {y}"


@pytest.mark.skipif(not COMMITTED, reason="no results/*/run.json committed yet (the mechanism tests above still run)")
@pytest.mark.parametrize("run_json", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_results_regenerate(run_json, tmp_path):
    """Every committed results folder imports into a fresh store and regenerates its own tables."""
    d = run_json.parent
    run = json.loads(run_json.read_text())
    store = tmp_path / "fmlab.db"
    run_cli("import", str(d), "--store", str(store), check=True, cwd=REPO)
    h = api.open_store(store).study(run["study"], run["budget"])
    h.export(tmp_path / "tables")
    for t in ("trials.csv", "epochs.csv"):
        assert (tmp_path / "tables" / t).read_text() == (d / t).read_text(), t
    assert run["counts"]["complete"] == int((h.trials()["state"] == State.COMPLETE).sum())
    h.report(tmp_path / "rep")
    for t in ("cells.csv", "effects.csv"):
        if (d / t).exists():
            assert_same_table(tmp_path / "rep" / t, d / t)
    from fmlab.study import spec as fstudy  # the published summary follows the study file's claims

    claims = fstudy.load(REPO / run["study_file"], run["budget"]).claims
    committed = json.loads((d / "summary.json").read_text())["claims"]
    assert [c["text"] for c in committed] == [c["text"] for c in claims]
    regenerated = json.loads((tmp_path / "rep" / "summary.json").read_text())["claims"]  # verdicts not stale
    assert [(c["text"], c["verdict"]) for c in regenerated] == [(c["text"], c["verdict"]) for c in committed]


@pytest.mark.skipif(not COMMITTED, reason="no results/*/run.json committed yet")
@pytest.mark.parametrize("run_json", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_best_predicts_real_test_images(run_json, tmp_path):
    """`fmlab predict results/<folder>/best IMG...` from the repository as committed (no store, no training):
    40 real test images as PNG files, labelled from the upstream IDX; the published net gets most right."""
    from PIL import Image

    from fmlab.data import idx as data

    if not (run_json.parent / "best").is_dir():  # only a folder with nothing chosen yet, or nothing to choose on
        run = json.loads(run_json.read_text())
        assert run["counts"]["complete"] == 0 or "no_validation" in run, f"{run_json.parent.name}: no best/"
        pytest.skip(f"{run_json.parent.name}: no COMPLETE trial published yet, so no best/")
    ds = data.load(api.make_config({}).data)
    for i in range(40):
        Image.fromarray(ds.test.x[i].numpy()).save(tmp_path / f"{i:02d}.png")
    p = run_cli("predict", str(run_json.parent / "best"), str(tmp_path), "--format", "json", check=True, cwd=REPO)
    rows = json.loads(p.stdout)
    assert len(rows) == 40
    right = sum(r["top"][0]["class"] == data.CLASSES[int(ds.test.y[int(Path(r["file"]).stem)])] for r in rows)
    assert right >= 32, f"{run_json.parent.name}/best: {right} of 40 right"  # a ~92-94% net: P(< 33) is tiny
