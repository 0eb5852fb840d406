"""Issue 7's speedrun runner and issue 9's best.toml: file checks, one tiny real run each, and the
records' arithmetic (mean, CI, median wall time, met or not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from fmlab.study import spec as fstudy
from fmlab.timing import speedrun

ROOT = Path(__file__).resolve().parents[1]
TINY_SETS = '"data.train_subset" = 300\n"data.val_size" = 100\n"model.widths" = [4, 8, 8]\n"train.max_epochs" = 1\n'


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "sr.toml"
    f.write_text(text)
    return f


def test_shipped_speedrun_file_loads_with_five_seeds_and_both_records():
    spec = speedrun.load(ROOT / "studies" / "speedrun.toml")
    assert len(spec.seeds) >= 5
    targets = sorted((r.target_s, r.target_acc) for r in spec.recipes.values())
    assert targets == [(60.0, 0.93), (180.0, 0.94)]
    for r in spec.recipes.values():  # a record is a fixed schedule: nothing stops it on the test set
        assert r.sets.get("train.monitor", "val_loss") in ("val_loss", "val_acc")


@pytest.mark.parametrize(
    "text,msg",
    [
        (
            'seeds = [0]\n[recipes.a]\ntarget_acc = 0.9\ntarget_s = 60\n[recipes.a.set]\n"model.widht" = 3\n',
            "recipes.a.set: unknown config key 'model.widht'",
        ),
        (
            "seeds = [0]\n[recipes.a]\ntarget_acc = 93\ntarget_s = 60\n",
            "recipes.a.target_acc: expected a number in (0, 1]",
        ),
        ("seeds = [0]\n[recipes.a]\ntarget_acc = 0.9\ntarget_s = 60\ntarget = 1\n", "recipes.a: unknown key 'target'"),
        ("seeds = [0]\n[recipes.a]\ntarget_acc = 0.9\ntarget_s = 60\n[recipes.a.set]\nseed = 3\n", "'seed' is set by"),
        ("seeds = []\n[recipes.a]\ntarget_acc = 0.9\ntarget_s = 60\n", "key 'seeds': bad value []"),
        ("seeds = [0]\n", "no [recipes.<name>] table"),
        ("speed = 1\n", "unknown key 'speed'; allowed top-level keys: name, description, seeds, recipes"),
    ],
)
def test_bad_speedrun_files_fail_with_one_line_naming_the_key(tmp_path, text, msg):
    f = write(tmp_path, text)
    p = run_cli("speedrun", str(f), "--log", str(tmp_path / "log.jsonl"))
    assert p.returncode == 2
    assert msg in p.stderr and str(f) in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "log.jsonl").exists()


def test_summary_arithmetic():
    r = speedrun.Recipe("a", "", 0.9, 60.0, {})
    runs = [
        {"test_acc": a, "wall_s": w, "epochs": 1, "n_params": 5} for a, w in [(0.90, 50.0), (0.92, 70.0), (0.91, 55.0)]
    ]
    s = speedrun.summarise(r, runs)
    assert s["test_acc_mean"] == pytest.approx(0.91) and s["wall_s_median"] == 55.0 and s["wall_s_max"] == 70.0
    assert s["test_acc_lo"] < 0.91 < s["test_acc_hi"] and s["met"] is True
    assert speedrun.summarise(speedrun.Recipe("a", "", 0.915, 60.0, {}), runs)["met"] is False
    assert speedrun.summarise(speedrun.Recipe("a", "", 0.9, 54.0, {}), runs)["met"] is False


def test_tiny_speedrun_runs_each_seed_as_a_process_and_logs_every_run(tmp_path):
    f = write(
        tmp_path,
        f'name = "t"\nseeds = [0, 1]\n[recipes.tiny]\ntarget_acc = 0.05\ntarget_s = 600\n'
        f"[recipes.tiny.set]\n{TINY_SETS}[recipes.never]\ntarget_acc = 0.999\ntarget_s = 600\n"
        f'[recipes.never.set]\n{TINY_SETS}"model.pool" = "max"\n',
    )
    log = tmp_path / "log.jsonl"
    p = run_cli("speedrun", str(f), "--log", str(log), "--threads", "1", check=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["recipe"], r["seed"]) for r in rows] == [("tiny", 0), ("tiny", 1), ("never", 0), ("never", 1)]
    assert all(r["wall_s"] > r["total_s"] > r["train_s"] > 0 and r["epochs"] == 1 for r in rows)
    assert rows[0]["trial_id"] != rows[1]["trial_id"]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    met = {s["recipe"]: s["met"] for s in out["recipes"]}
    assert met == {"tiny": True, "never": False} and out["recipes"][0]["n"] == 2
    only = run_cli(
        "speedrun", str(f), "--log", str(log), "--recipe", "tiny", "--seeds", "5,", "--threads", "1", check=True
    )
    assert [r["recipe"] for r in json.loads(only.stdout.strip().splitlines()[-1])["recipes"]] == ["tiny"]
    assert len(log.read_text().splitlines()) == 5
    bad = run_cli("speedrun", str(f), "--recipe", "nope", "--log", str(log))
    assert bad.returncode == 2 and "no recipe 'nope'; recipes: tiny, never" in bad.stderr


def test_best_study_loads_and_its_smoke_budget_sweeps_reports_and_exports(tmp_path):
    best = fstudy.load(ROOT / "studies" / "best.toml", "cpu")
    (t,) = {t.config.model for t in best.trials()}
    assert t.arch == "resnet" and len(best.seeds) >= 3 and best.select == "val_acc"
    from fmlab.model.nets import build, count_params

    assert count_params(build(t)) <= 1_000_000
    db = tmp_path / "s.db"
    run_cli(
        "sweep",
        str(ROOT / "studies" / "best.toml"),
        "--budget",
        "smoke",
        "--store",
        str(db),
        "--workers",
        "1",
        check=True,
    )
    out = tmp_path / "rep"
    run_cli("report", "best", "--budget", "smoke", "--store", str(db), "--out", str(out), check=True)
    summary = (out / "summary.md").read_text()
    assert (out / "index.html").exists() and "model.arch=resnet" in summary and "## Setup" in summary
    onnx = tmp_path / "best.onnx"
    run_cli("export", "best@smoke:best", "--store", str(db), "--onnx", str(onnx), "--int8", check=True)
    assert onnx.stat().st_size > 0
