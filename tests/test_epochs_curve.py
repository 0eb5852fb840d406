"""scripts/epochs_curve.py: one recipe's accuracy at each length across published folders, and its gain per
doubling of epochs, checked against a hand computation of the same least squares and on planted lines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import script
from scipy import stats

curve = script("epochs_curve")
RECIPE = {"model": {"arch": "resnet", "widths": [16, 32, 64]}, "data": {"flip": 0.5}, "train": {"lr": 0.2}}


def folder(root: Path, name: str, rows: list[dict], arm: bool = True) -> Path:
    """A published folder's trials.csv: rows of (epochs, seed, val, test[, state, lr, precision])."""
    out = []
    for r in rows:
        cfg = json.loads(json.dumps(RECIPE))
        cfg["train"].update(max_epochs=r["epochs"], precision=r.get("precision", "bf16"), lr=r.get("lr", 0.2))
        cfg["seed"] = r["seed"]
        cell = {"arm": r.get("arm", "baseline")} if arm else {"model.depth": 3}
        out.append(
            {"id": f"{name}{len(out)}", "state": r.get("state", "COMPLETE"), "seed": r["seed"], **cell}
            | {"val_loss": 0.3, "val_acc": r["val"] / 100, "test_acc": r["test"] / 100, "config": json.dumps(cfg)}
        )
    (root / name).mkdir()
    pd.DataFrame(out).to_csv(root / name / "trials.csv", index=False)
    return root / name


def test_the_gain_per_doubling_is_the_least_squares_slope_with_its_t_interval(tmp_path, capsys):
    """Three lengths over two folders (precision differs between them, as round 2's auto does), noise planted;
    another recipe at one length only and a FAILED trial are left out."""
    rng = np.random.default_rng(0)
    rows = {10: [], 20: [], 40: []}
    for e in rows:
        for seed in range(3):
            v = 92 + 0.8 * math.log2(e / 10) + rng.normal(0, 0.2)
            rows[e].append({"epochs": e, "seed": seed, "val": v, "test": v - 0.1 + rng.normal(0, 0.1)})
    a = folder(tmp_path, "r1", rows[10] + [{"epochs": 10, "seed": 0, "val": 99, "test": 99, "lr": 0.1, "arm": "x"}])
    extra = [{"epochs": 40, "seed": 3, "val": 10, "test": 10, "state": "FAILED", "precision": "fp32"}]
    b = folder(tmp_path, "r2", [dict(r, precision="fp32") for r in rows[20] + rows[40]] + extra, arm=False)
    d = pd.concat([curve.load(a), curve.load(b)], ignore_index=True)
    groups = [g for _, g in d.groupby("recipe") if g.epochs.nunique() > 1]
    assert len(groups) == 1 and len(groups[0]) == 9
    fit = curve.slope(groups[0], "val_acc")
    x = np.log2([r["epochs"] for e in rows for r in rows[e]])
    y = np.array([r["val"] for e in rows for r in rows[e]])
    b_hat = np.polyfit(x, y, 1)[0]  # the same least squares, by hand
    se = math.sqrt(np.sum((y - np.polyval(np.polyfit(x, y, 1), x)) ** 2) / 7 / np.sum((x - x.mean()) ** 2))
    assert fit["b"] == pytest.approx(b_hat) and fit["df"] == 7
    assert (fit["lo"], fit["hi"]) == pytest.approx(
        (b_hat - stats.t.ppf(0.975, 7) * se, b_hat + stats.t.ppf(0.975, 7) * se)
    )
    assert fit["lo"] < 0.8 < fit["hi"]  # the planted slope
    assert curve.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "## r1: baseline; r2: model.depth=3" in out and "| 20 | r2 | 3 |" in out and "df 7" in out
    means = {e: np.mean([r["val"] for r in rows[e]]) for e in rows}
    assert f"10->20: {means[20] - means[10]:+.2f}, 20->40: {means[40] - means[20]:+.2f}" in out


def test_the_epochs_for_a_target_follow_the_fitted_line(tmp_path, capsys):
    """A noise-free line 90 + log2(epochs / 10): 93% at 80 epochs; a flat one never reaches it."""
    rows = [
        {"epochs": e, "seed": s, "val": 90 + math.log2(e / 10), "test": 90 + math.log2(e / 10) + 0.001 * s}
        for e in (10, 20)
        for s in range(2)
    ]
    f = curve.slope(curve.load(folder(tmp_path, "r", rows)), "test_acc")
    assert curve.epochs_for(f, 93.0, f["b"]) == pytest.approx(80, rel=1e-3)
    assert curve.main([str(tmp_path / "r"), "--target", "93"]) == 0
    assert "93.0% test: ~80 epochs at the fitted rate" in capsys.readouterr().out
    flat = [dict(r, test=91.0 + 0.01 * r["seed"]) for r in rows]
    g = curve.slope(curve.load(folder(tmp_path, "flat", flat)), "test_acc")
    assert curve.reach(g, 93.0, 20).startswith("the fit does not show a gain from more epochs")
    slow = dict(f, b=0.001, lo=0.0005)  # rising, but 3 points at a thousandth of a point per doubling
    assert curve.reach(slow, 93.0, 20).startswith("over 1,000x the longest run")


def test_bad_folders_are_refused_in_one_line(tmp_path, capsys):
    assert curve.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"epochs_curve: {tmp_path / 'nowhere'}: no readable trials.csv") and "\n" not in err
    one = folder(tmp_path, "one", [{"epochs": 10, "seed": s, "val": 90, "test": 90} for s in range(2)])
    assert curve.main([str(one)]) == 1
    assert "no recipe was trained at two lengths" in capsys.readouterr().err
