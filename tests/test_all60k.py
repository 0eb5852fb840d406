"""data.val_size = 0: a recipe trained on all 60,000 training images with its fixed schedule, no validation
split, tested at its last epoch (nothing chosen); its study sweeps, reports, publishes and imports, labelled."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import OPTS, TINY, run_cli, script, tiny_config

from fmlab.config.schema import Config, ConfigError, with_overrides
from fmlab.data import idx as data
from fmlab.training import checkpoint, step
from fmlab.training.loop import train

ALL = {"data.val_size": 0, "train.patience": 1000}  # no split; a fixed schedule (no early stopping)
FAST = {**ALL, "data.test_subset": 500}


def test_no_split_means_every_one_of_the_60000_training_images_trains():
    full = data.load(with_overrides(Config(), ALL).data)
    tx, ty, _, _ = data.load_raw()
    assert len(full.val) == 0 and len(full.train) == 60_000
    assert torch.equal(full.train.x, torch.from_numpy(np.array(tx))) and torch.equal(
        full.train.y, torch.from_numpy(np.array(ty, dtype=np.int64))
    )
    sub = data.load(tiny_config(**ALL).data)  # train_subset = 600, drawn from all 60,000 (not from 55,000)
    held = data.load(tiny_config().data)
    assert len(sub.train) == 600 and len(sub.val) == 0
    rows = data.stratified_pick(ty, 600, 1)
    assert torch.equal(sub.train.x, torch.from_numpy(np.array(tx[rows])))
    assert not torch.equal(sub.train.x, held.train.x)


def test_a_trial_trains_on_each_of_its_images_once_per_epoch_and_validates_nothing(monkeypatch):
    cfg = tiny_config(**{**FAST, "train.max_epochs": 2})
    ds = data.load(cfg.data)
    seen: list[torch.Tensor] = []
    real = step.train_step

    def counting(run, lanes, idx, lr):
        seen.append(idx[0].clone())
        return real(run, lanes, idx, lr)

    monkeypatch.setattr(step, "train_step", counting)
    r = train(cfg, ds, OPTS)
    rows = torch.cat(seen)
    assert len(rows) == 2 * 600 and sorted(rows[:600].tolist()) == list(range(600))  # one epoch: each image once
    assert r.timings["train_images_per_s"] * r.timings["train_s"] == pytest.approx(2 * 600)
    assert all(e["val_loss"] is None and e["val_acc"] is None for e in r.epochs)
    assert r.metrics["val_loss"] is None and r.metrics["val_acc"] is None
    assert 0 < r.metrics["test_acc"] <= 1 and all(math.isfinite(e["train_loss"]) for e in r.epochs)


def test_the_chosen_epoch_is_the_last_even_where_validation_would_pick_an_earlier_one(tmp_path):
    """100 images, 6 epochs: with a validation split an earlier epoch is best (epoch 5 here); with none, the last
    is chosen: best_epoch, the test metrics and best.safetensors are the last epoch's."""
    small = {"data.train_subset": 100, "train.batch_size": 16, "train.lr": 0.01, "train.max_epochs": 6}
    hot = {**small, "train.patience": 1000, "data.test_subset": 500}
    split = train(tiny_config(**hot), None, OPTS)
    assert split.best_epoch < 6  # the premise: validation would choose an earlier epoch
    cfg = tiny_config(**{**hot, **ALL})
    r = train(cfg, None, OPTS, state_dir=tmp_path / "state")
    assert r.best_epoch == 6 == len(r.epochs) and r.stop_reason == "max_epochs"
    last = checkpoint.ResumeState.read(tmp_path / "state")  # the state after epoch 6: the net as it ended
    assert last.train["best_epoch"] == 6 and last.train["best"] is None
    ckpt = checkpoint.save_trial(r, tmp_path / "ckpt")
    _, saved, tj = checkpoint.load_trial(ckpt)
    for k, v in last.net.items():
        assert torch.equal(saved[k], v), k
    shorter = train(with_overrides(cfg, {"train.max_epochs": 5}), None, OPTS)  # epoch 5's weights differ
    assert any(not np.array_equal(shorter.weights[k], r.weights[k]) for k in r.weights)
    assert tj["best_epoch"] == 6 and tj["metrics"]["val_acc"] is None


def test_early_stopping_without_a_split_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        with_overrides(Config(), {"data.val_size": 0})  # patience 4 < max_epochs 30
    msg = str(e.value)
    assert "\n" not in msg and "data.val_size=0" in msg and "train.patience >= train.max_epochs" in msg
    assert "4 < 30" in msg
    ok = with_overrides(Config(), {"data.val_size": 0, "train.patience": 30})
    assert ok.data.val_size == 0 and ok.trial_id() != Config().trial_id()
    with pytest.raises(ConfigError, match="allowed range 0..59000"):
        with_overrides(Config(), {"data.val_size": -1})
    p = run_cli("train", "--set", "data.val_size=0", "--set", "train.max_epochs=5")
    assert p.returncode != 0 and p.stderr.strip().count("\n") == 0 and "train.patience" in p.stderr


def test_fmlab_train_with_no_split(tmp_path):
    sets = [f"{k}={v}" for k, v in {**TINY, **FAST, "train.max_epochs": 2}.items()]
    p = run_cli("train", *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / "t"), "--threads", "1")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["best_epoch"] == 2 and out["val_acc"] is None and out["test_acc"] > 0
    assert "600 training images (no validation split)" in p.stderr and "no validation" in p.stderr


def test_a_cut_off_trial_resumes_to_the_uncut_rows(tmp_path):
    cfg = tiny_config(**{**FAST, "train.max_epochs": 3})
    uncut = train(cfg, None, OPTS)
    two = train(with_overrides(cfg, {"train.max_epochs": 2}), None, OPTS, state_dir=tmp_path)  # cut after epoch 2
    assert json.loads((tmp_path / "state.json").read_text())["train"]["history"][1]["val_acc"] is None
    resumed = train(cfg, None, OPTS, state_dir=tmp_path)
    assert len(two.epochs) == 2
    strip = lambda rows: [{k: v for k, v in e.items() if k != "epoch_s"} for e in rows]  # noqa: E731
    assert strip(resumed.epochs) == strip(uncut.epochs)
    assert resumed.best_epoch == 3 and resumed.metrics == uncut.metrics
    for k, v in uncut.weights.items():
        assert np.array_equal(resumed.weights[k], v), k


def test_a_pack_of_trials_with_no_split_tests_each_at_its_last_epoch(tiny_ds, tmp_path):
    from fmlab.training.packed import train_pack

    cfgs = [tiny_config(**{**FAST, "train.max_epochs": 2}, seed=s) for s in (0, 1)]
    out = train_pack(cfgs, None, OPTS, state_dirs=[tmp_path / "a", tmp_path / "b"])
    for c in cfgs:
        r = out[c.trial_id()]
        assert r.best_epoch == 2 and r.metrics["val_acc"] is None and all(e["val_loss"] is None for e in r.epochs)
        last = checkpoint.ResumeState.read(tmp_path / ("a" if c.seed == 0 else "b"))
        for k, v in last.net.items():
            assert np.array_equal(r.weights[k], v.numpy()), k


# ---------------------------------------------------------------- a study: sweep, report, publish, import

STUDY = """name = "whole"
seeds = [0, 1]
select = "val_acc"
[base]
"model.widths" = [8, 16, 16]
"data.train_subset" = 600
"data.test_subset" = 500
"train.max_epochs" = 2
"train.monitor" = "val_acc"
"train.patience" = 1000
[factors]
"model.depth" = [1]
[budgets.t]
"data.val_size" = 300
[budgets.t_all]                 # t retrained with no validation split, tested at its last epoch
"data.val_size" = 0
"""
COMMON = ("--workers", "0", "--device", "cpu", "--threads", "1")


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    root = tmp_path_factory.mktemp("whole")
    (root / "studies").mkdir()
    (root / "studies" / "whole.toml").write_text(STUDY)
    p = run_cli("sweep", "studies/whole.toml", "--budget", "t_all", "--store", "a/fmlab.db", *COMMON, cwd=root)
    assert p.returncode == 0, p.stderr
    assert "2/2 COMPLETE" in p.stderr and "no best trial by val_acc" in p.stderr and "no validation" in p.stderr
    p = run_cli("publish", "studies/whole.toml", "--budget", "t_all", "--store", "a/fmlab.db", cwd=root)
    assert p.returncode == 0, p.stderr
    assert "best none: The trials trained on 600 training images" in p.stderr
    return root, root / "results" / "whole-t_all"


def test_the_study_reports_its_test_mean_and_says_nothing_was_chosen(whole):
    root, _ = whole
    p = run_cli("report", "whole", "--budget", "t_all", "--store", "a/fmlab.db", "--out", "rep", cwd=root)
    assert p.returncode == 0, p.stderr
    assert "2 of 2 planned trials complete" in p.stdout and "no validation split (data.val_size = 0)" in p.stdout
    assert "cells not ranked, with no validation split" in p.stdout
    summ = json.loads((root / "rep" / "summary.json").read_text())
    assert summ["counts"]["complete"] == summ["counts"]["no_validation"] == 2
    assert summ["best_set"] is None and summ["effects"] == []
    assert "nothing is chosen" in summ["answer"]["use"] and "never counts toward the goal" in summ["answer"]["use"]
    trials = pd.read_csv(root / "results" / "whole-t_all" / "trials.csv")
    cells = pd.read_csv(root / "rep" / "cells.csv")
    acc = trials["test_acc"].to_numpy(float)
    half = 12.706204736174698 * acc.std(ddof=1) / math.sqrt(2)  # t(0.975, df 1)
    assert cells["test_acc_mean"][0] == pytest.approx(acc.mean())
    assert (cells["test_acc_lo"][0], cells["test_acc_hi"][0]) == pytest.approx((acc.mean() - half, acc.mean() + half))
    assert cells["val_acc_mean"].isna().all()
    md = (root / "rep" / "summary.md").read_text()
    assert "No validation split (data.val_size = 0)" in md and "| - | depth=1 | 2 | n/a |" in md
    p = run_cli("params", "whole@t_all:best", "--store", "a/fmlab.db", cwd=root)
    assert p.returncode != 0 and "no trial is chosen" in p.stderr and p.stderr.strip().count("\n") == 0


def test_the_published_folder_says_how_its_trials_trained_and_imports_and_reports_alike(whole, tmp_path):
    root, d = whole
    run = json.loads((d / "run.json").read_text())
    assert run["best"] is None and not (d / "best").exists()
    assert run["no_validation"].startswith("The trials trained on 600 training images (data.train_subset, drawn")
    assert "no validation split (data.val_size = 0)" in run["no_validation"]
    assert "tested at their last epoch" in run["no_validation"] and "2 epochs" in run["no_validation"]
    assert "No validation split (data.val_size = 0)" in (d / "summary.md").read_text()
    with open(d / "epochs.csv", newline="") as f:
        eps = list(csv.DictReader(f))
    assert len(eps) == 4 and all(e["val_loss"] == "" == e["val_acc"] and e["train_loss"] for e in eps)
    with open(d / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["val_acc"] == "" and r["best_epoch"] == "2" and float(r["test_acc"]) > 0 for r in rows)
    other = tmp_path / "other"
    (other / "studies").mkdir(parents=True)
    (other / "studies" / "whole.toml").write_text(STUDY)
    p = run_cli("import", str(d), "--store", "s/fmlab.db", cwd=other)
    assert p.returncode == 0 and "imported 2 COMPLETE" in p.stderr, p.stderr
    p = run_cli("report", "whole", "--budget", "t_all", "--store", "s/fmlab.db", "--out", "rep", cwd=other)
    assert p.returncode == 0, p.stderr
    assert (other / "rep" / "summary.md").read_text() == (d / "summary.md").read_text()
    p = run_cli("sweep", "studies/whole.toml", "--budget", "t_all", "--store", "s/fmlab.db", *COMMON, cwd=other)
    assert p.returncode == 0 and "0 run now" in p.stderr, p.stderr
    (tid, *_) = [r["id"] for r in rows]
    p = run_cli("show", tid, "--store", "s/fmlab.db", cwd=other)
    assert p.returncode == 0 and "val_loss" in p.stdout, p.stderr


def test_the_validation_selected_budget_beside_it_is_unchanged(whole):
    """The same study's budget with a split still chooses on validation (a best trial, its best/)."""
    root, _ = whole
    p = run_cli("sweep", "studies/whole.toml", "--budget", "t", "--store", "a/fmlab.db", *COMMON, cwd=root)
    assert p.returncode == 0 and "best trial by val_acc" in p.stderr, p.stderr
    p = run_cli("publish", "studies/whole.toml", "--budget", "t", "--store", "a/fmlab.db", cwd=root)
    run = json.loads((root / "results" / "whole-t" / "run.json").read_text())
    assert p.returncode == 0 and run["best"] and "no_validation" not in run
    assert (root / "results" / "whole-t" / "best" / "best.safetensors").is_file()


# ---------------------------------------------------------------- the best study's budget and the scripts


def test_best_toml_has_the_labelled_all_60k_retrain_of_the_cpu_budget():
    from fmlab.archive.provenance import no_validation
    from fmlab.study import spec as fstudy

    repo = Path(__file__).resolve().parents[1]
    cpu, whole = (fstudy.load(repo / "studies" / "best.toml", b) for b in ("cpu", "cpu_all60k"))
    for a, b in zip(cpu.trials(), whole.trials(), strict=True):
        assert b.config.data.val_size == 0 and b.config.train.max_epochs == a.config.train.max_epochs == 20
        assert b.config.data.train_subset == 0 and b.config.train.patience >= 20
        assert with_overrides(a.config, {"data.val_size": 0}) == b.config  # only the split differs
    words = no_validation(whole)
    assert words.startswith("The trials trained on all 60,000 training images with no validation split")
    assert "fixed schedule of 20 epochs" in words and "never counts toward the goal" in words
    assert no_validation(cpu) is None
    text = (repo / "studies" / "best.toml").read_text()
    assert "[budgets.cpu_all60k]" in text and "never counts toward the goal" in text


def test_epochs_curve_keeps_all_60k_trials_apart_and_says_they_have_no_validation(tmp_path, capsys):
    curve = script("epochs_curve")
    recipe = {"model": {"arch": "resnet"}, "train": {"lr": 0.2}}

    def folder(name: str, val_size: int, epochs: int, val: float | None) -> Path:
        rows = []
        for s in range(2):
            cfg = {**json.loads(json.dumps(recipe)), "data": {"val_size": val_size}, "seed": s}
            cfg["train"]["max_epochs"] = epochs
            acc = 0.9 + epochs / 1000 + s / 1000
            rows.append(
                {"id": f"{name}{s}", "state": "COMPLETE", "seed": s, "model.depth": 3}
                | {"val_loss": None if val is None else 0.3, "val_acc": None if val is None else acc}
                | {"test_acc": acc, "config": json.dumps(cfg)}
            )
        (tmp_path / name).mkdir()
        pd.DataFrame(rows).to_csv(tmp_path / name / "trials.csv", index=False)
        return tmp_path / name

    dirs = [folder("v10", 100, 10, 1.0), folder("v20", 100, 20, 1.0), folder("a10", 0, 10, None)]
    dirs.append(folder("a20", 0, 20, None))
    d = pd.concat([curve.load(x) for x in dirs], ignore_index=True)
    groups = [sorted(set(g.folder)) for _, g in d.groupby("recipe") if g.epochs.nunique() > 1]
    assert sorted(groups) == [["a10", "a20"], ["v10", "v20"]]
    assert curve.main([str(x) for x in dirs]) == 0
    out = capsys.readouterr().out
    assert "## a10: model.depth=3; a20: model.depth=3" in out and "## v10: model.depth=3; v20" in out
    assert "| 10 | a10 | 2 | - | 91.05 [" in out
    assert out.count("- validation: none, no validation split (data.val_size = 0") == 1


def test_the_readme_labels_an_all_60k_folder_and_never_counts_it_as_the_best_network(whole):
    """scripts/readme_answer.py over the published folder: its row is labelled, points at no best/ (there is
    none), and the best network is chosen among validated folders only."""
    ans = script("readme_answer")
    _, d = whole
    (row,) = ans.best_rows([d])[4:5]
    assert "depth=1 (no validation split: all training images, tested at the last epoch; never counts" in row
    assert row.endswith("| no best/: nothing is chosen |") and "fmlab predict" not in row
    assert ans.best_network([d]) == []


def test_the_analysis_of_unvalidated_trials_measures_test_and_chooses_nothing():
    """Synthetic frames: a grid whose COMPLETE trials have no validation metric (data.val_size = 0) is analysed on
    test accuracy alone, unranked; beside validated trials, unvalidated ones are left out and counted."""
    from conftest import synth_grid

    from fmlab.analysis.cells import t_ci
    from fmlab.analysis.driver import analyse
    from fmlab.analysis.prose import NO_VALIDATION

    t, e, meta = synth_grid(seeds=range(3))
    blind = t.assign(val_acc=math.nan, val_loss=math.nan)
    a = analyse(blind, e.assign(val_acc=math.nan, val_loss=math.nan), meta)
    assert not a.validated and a.counts["complete"] == a.counts["no_validation"] == 36
    assert a.best is None and a.effects.empty and a.anova is None and NO_VALIDATION in a.warnings
    first = a.cells.iloc[0]
    assert len(a.cells) == 12 and a.cells["val_acc_mean"].isna().all()
    mine = a.complete[a.complete["cell"] == first["cell"]]["test_acc"]
    assert first["test_acc_mean"] == pytest.approx(t_ci(mine)["mean"]) and first["n"] == len(mine) == 3
    mixed = t.copy()
    mixed.loc[:1, ["val_acc", "val_loss"]] = math.nan  # two trials with no split beside 70 with one
    m = analyse(mixed, e, meta)
    assert m.validated and m.counts["complete"] == 34 and m.counts["left_out_no_validation"] == 2
    assert "no_validation" not in m.counts and m.best is not None
    assert any(w.startswith("2 COMPLETE trial(s) trained with no validation split") for w in m.warnings)
    assert "no_validation" not in analyse(t, e, meta).counts  # a validated study's counts are as they were
