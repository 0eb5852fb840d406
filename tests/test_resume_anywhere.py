"""A trial cut off part-way continues anywhere: its resume state travels in the results folder (resume/<id>/),
`fmlab import` puts it into a fresh store elsewhere, and the same sweep there resumes it mid-trial."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import ids_of, run_cli, write_study

COMMON = ("--workers", "0", "--device", "cpu", "--threads", "1")  # inline: the kill fault stops the sweep itself


def _show(tid: str, store: Path, cwd: Path) -> dict:
    return json.loads(run_cli("show", tid, "--store", str(store), "--format", "json", check=True, cwd=cwd).stdout)


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    """A 3-epoch tiny trial whose sweep is SIGKILLed after epoch 1, then published: (root, folder, trial id)."""
    root = tmp_path_factory.mktemp("cut")
    (root / "studies").mkdir()
    f = write_study(root / "studies", "cut", {"model.batch_norm": [True]}, base={"train.max_epochs": 3})
    (tid,) = ids_of(f)
    p = run_cli(
        "sweep", "studies/cut.toml", "--store", "a/fmlab.db", *COMMON, env={"FMLAB_FAULT": f"kill:{tid}:1"}, cwd=root
    )
    assert p.returncode != 0  # killed after epoch 1's resume state was saved
    p = run_cli("publish", "studies/cut.toml", "--store", "a/fmlab.db", check=True, cwd=root)
    assert "0 of 1 planned trials COMPLETE" in p.stderr and "1 with a resume state in resume/" in p.stderr
    return root, root / "results" / "cut-full", tid


def test_cut_trial_resumes_elsewhere_at_epoch_2_with_the_uncut_rows(cut, tmp_path):
    root, d, tid = cut
    names = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() and "resume" in p.parts)
    assert names == [f"resume/{tid}/state.json", f"resume/{tid}/state.safetensors"]
    assert json.loads((d / "run.json").read_text())["resume"] == {tid: 1}
    cut_rows = _show(tid, root / "a" / "fmlab.db", root)["epochs"]
    assert [e["epoch"] for e in cut_rows] == [1]
    # another machine: the repository (study file and results folder) and a fresh store, nothing else
    other = tmp_path / "other"
    shutil.copytree(root / "studies", other / "studies")
    shutil.copytree(d, other / "results" / "cut-full")
    p = run_cli("import", "results/cut-full", "--store", "s/fmlab.db", check=True, cwd=other)
    assert "1 to resume mid-trial" in p.stderr
    assert (other / "s" / "trials" / tid / "state" / "state.safetensors").is_file()
    run_cli("results", "cut", "--store", "s/fmlab.db", "--out", "tables", check=True, cwd=other)
    for t in ("trials.csv", "epochs.csv"):  # the fresh store holds what the folder says, epoch 1 included
        assert (other / "tables" / t).read_text() == (d / t).read_text(), t
    p = run_cli("sweep", "studies/cut.toml", "--store", "s/fmlab.db", *COMMON, check=True, cwd=other)
    assert "1/1 COMPLETE" in p.stderr
    run_cli("sweep", "studies/cut.toml", "--store", "u/fmlab.db", *COMMON, check=True, cwd=other)  # uncut
    got, uncut = _show(tid, other / "s" / "fmlab.db", other), _show(tid, other / "u" / "fmlab.db", other)
    assert got["attempts"] == 1 and got["log"].startswith("resuming after epoch 1")  # its first epoch here: 2
    assert "epoch 1:" not in got["log"] and "epoch 2:" in got["log"]
    assert got["epochs"][0] == cut_rows[0]  # epoch 1 as the cut run measured it (its epoch_s too): not rerun
    assert [e["epoch"] for e in got["epochs"]] == [e["epoch"] for e in uncut["epochs"]] == [1, 2, 3]
    for a, b in zip(got["epochs"], uncut["epochs"], strict=True):
        for k, v in b.items():
            if k not in ("trial", "epoch_s"):
                assert math.isclose(a[k], v, rel_tol=0, abs_tol=1e-6), (a["epoch"], k, a[k], v)
    for k, v in uncut["metrics"].items():
        assert math.isclose(got["metrics"][k], v, rel_tol=0, abs_tol=1e-6), k
    # complete now: republished, the folder drops its resume state
    run_cli("publish", "studies/cut.toml", "--store", "s/fmlab.db", check=True, cwd=other)
    again = other / "results" / "cut-full"
    assert not (again / "resume").exists() and "resume" not in json.loads((again / "run.json").read_text())
    assert "COMPLETE" in (again / "trials.csv").read_text()


def _bad(d: Path, tid: str, name: str, change) -> tuple[Path, str]:
    bad = d.parent / f"bad-{name}"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(d, bad)
    return bad, change(bad, bad / "resume" / tid)


def test_bad_resume_folders_are_one_line_errors_naming_the_file(cut, tmp_path):
    root, d, tid = cut

    def no_tensors(b, r):
        (r / "state.safetensors").unlink()
        return f"resume/{tid}/state.safetensors: not found"

    def truncated(b, r):
        (r / "state.safetensors").write_bytes((r / "state.safetensors").read_bytes()[:100])
        return f"resume/{tid}/state.safetensors: not a readable safetensors file"

    def bad_json(b, r):
        (r / "state.json").write_text((r / "state.json").read_text()[:50])
        return f"resume/{tid}/state.json: not a resume state's JSON"

    def no_rows(b, r):
        lines = (b / "epochs.csv").read_text().splitlines(keepends=True)
        (b / "epochs.csv").write_text(lines[0])
        return f"resume/{tid}/state.json: 1 epochs, but trials.csv says 1 and epochs.csv has 0 rows"

    def stray(b, r):
        shutil.copytree(r, b / "resume" / "0123456789ab")
        return "resume/0123456789ab: not the resume state of a WAITING trial"

    for change in (no_tensors, truncated, bad_json, no_rows, stray):
        folder, want = _bad(d, tid, change.__name__, change)
        store = tmp_path / change.__name__ / "fmlab.db"
        p = run_cli("import", str(folder), "--store", str(store), cwd=root)
        assert p.returncode == 2 and want in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not store.exists()  # refused before anything is written
