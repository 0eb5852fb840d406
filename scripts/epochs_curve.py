#!/usr/bin/env python3
"""What more epochs give: each recipe's accuracy at every length it was trained for, across published results
folders (the same config but for train.max_epochs and train.precision), and its gain per doubling of epochs.

    scripts/epochs_curve.py results/search-r1 results/best-cpu [results/search-r2 results/best-final ...]
    ... --target 96.0     # and the epochs that the fitted line would need to reach this test accuracy (%)

For each recipe trained at two or more lengths: n, validation and test accuracy mean [95% CI] per length, and
the slope of an OLS fit of accuracy (%) on log2(epochs) over its COMPLETE trials, with df and 95% CI. Each trial
is one observation: another length changes the one-cycle schedule from the first step, so seeds are not paired.
Validation is what selection uses; test is evaluated only. The epochs for --target carry a straight line in
log epochs past the data: a guide to the order of the compute, not a prediction. Trials with no validation split
(data.val_size = 0: all 60,000 images trained, tested at the last epoch) are a recipe of their own (the config
differs in data.val_size), never mixed into a validation-selected one's curve; their validation is "-".
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

FAR = 1000  # a projection beyond this many times the longest run is only said to be out of reach
WHETHER = {False: "two lengths cannot show whether it does", True: "the gains between lengths say whether it does"}
LENGTH_KEYS = (("train", "max_epochs"), ("train", "precision"))  # what may differ between lengths of one recipe


class CurveError(Exception):
    """A folder cannot be read; the message names it and what to do."""


def recipe_key(config: dict) -> str:
    """The config without its length, precision and seed: the recipe a trial trains."""
    c = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items() if k != "seed"}
    for section, key in LENGTH_KEYS:
        c.get(section, {}).pop(key, None)
    return json.dumps(c, sort_keys=True)


def label_of(row: pd.Series, cols: list[str]) -> str:
    """A trial's cell as its folder shows it: the arm, else its factor levels."""
    if "arm" in cols:
        return str(row["arm"])
    return ", ".join(f"{c}={row[c]}" for c in cols) or "the one cell"


def load(folder: Path) -> pd.DataFrame:
    """The folder's COMPLETE trials: folder, cell, seed, epochs, val_acc and test_acc (%), recipe."""
    try:
        t = pd.read_csv(folder / "trials.csv")
    except (OSError, ValueError) as e:
        raise CurveError(f"{folder}: no readable trials.csv ({e}); publish the study with fmlab publish") from e
    need = {"state", "seed", "val_acc", "test_acc", "config"}
    if not need <= set(t.columns):
        raise CurveError(f"{folder}/trials.csv: missing {sorted(need - set(t.columns))}; publish it again")
    cols = list(t.columns)
    cell_cols = cols[cols.index("seed") + 1 : cols.index("val_loss")] if "val_loss" in cols else []
    t = t[t.state == "COMPLETE"]
    configs = [json.loads(c) for c in t.config]
    return pd.DataFrame(
        {
            "folder": folder.name,
            "cell": [label_of(r, cell_cols) for _, r in t.iterrows()],
            "seed": t.seed.astype(int).to_numpy(),
            "epochs": [int(c["train"]["max_epochs"]) for c in configs],
            "val_acc": 100 * t.val_acc.to_numpy(float),
            "test_acc": 100 * t.test_acc.to_numpy(float),
            "recipe": [recipe_key(c) for c in configs],
        }
    )


def mean_ci(x: pd.Series) -> str:
    from fmlab.analysis.cells import t_ci

    c = t_ci(x)
    if c["n"] == 0:  # nothing measured: no validation split (data.val_size = 0)
        return "-"
    return f"{c['mean']:.2f}" if c["n"] < 2 else f"{c['mean']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def slope(d: pd.DataFrame, metric: str) -> dict | None:
    """The OLS fit metric ~ log2(epochs), centred: slope per doubling with its 95% CI and df, the fitted mean at
    the mean log2 epochs; None with fewer than 3 trials (no residual df)."""
    import numpy as np
    import statsmodels.api as sm

    if len(d) < 3:
        return None
    x = np.log2(d.epochs.to_numpy(float))
    fit = sm.OLS(d[metric].to_numpy(float), sm.add_constant(x - x.mean())).fit()
    lo, hi = fit.conf_int(0.05)[1]
    return {"b": fit.params[1], "lo": lo, "hi": hi, "df": int(fit.df_resid), "m": fit.params[0], "c": x.mean()}


def epochs_for(fit: dict, target: float, b: float) -> float:
    """The epochs at which the fitted line with slope b (> 0) reaches target."""
    return 2 ** min(fit["c"] + (target - fit["m"]) / b, 60.0)


def render(d: pd.DataFrame, target: float | None) -> list[str]:
    names = "; ".join(f"{f}: {c}" for (f, c), _ in d.groupby(["folder", "cell"], sort=False))
    lines = [f"## {names}", "", "| epochs | from | n | val_acc % mean [95% CI] | test_acc % mean [95% CI] |"]
    lines.append("|---|---|---|---|---|")
    for e, g in d.groupby("epochs"):
        lines.append(
            f"| {e} | {', '.join(sorted(set(g.folder)))} | {len(g)} | {mean_ci(g.val_acc)} | {mean_ci(g.test_acc)} |"
        )
    lines.append("")
    for metric, what in (("val_acc", "validation"), ("test_acc", "test (evaluated only)")):
        if d[metric].isna().all():
            lines.append(f"- {what}: none, no validation split (data.val_size = 0: tested at the last epoch)")
            continue
        f = slope(d.dropna(subset=[metric]), metric)
        if f is None:
            lines.append(f"- {what}: too few trials for a fit (3 or more over 2 or more lengths)")
            continue
        lines.append(
            f"- {what}: {f['b']:+.2f} [{f['lo']:+.2f}, {f['hi']:+.2f}] pts per doubling of epochs "
            f"(OLS on log2 epochs, n = {len(d)}, df {f['df']})"
        )
        if d.epochs.nunique() > 2:
            lines.append(f"  - per doubling between lengths: {intervals(d, metric)}")
        if target is not None and metric == "test_acc":
            lines.append(f"  - {target:.1f}% test: {reach(f, target, int(d.epochs.max()), d.epochs.nunique())}")
    return lines


def intervals(d: pd.DataFrame, metric: str) -> str:
    """The gain per doubling between each two next lengths (difference of means over log2 of their ratio): where
    it shrinks, the straight line over-promises."""
    means = d.groupby("epochs")[metric].mean()
    pairs = zip(means.index[:-1], means.index[1:])
    return ", ".join(f"{a}->{b}: {(means[b] - means[a]) / math.log2(b / a):+.2f}" for a, b in pairs)


def reach(f: dict, target: float, longest: int, lengths: int = 2) -> str:
    """Where the test fit's line reaches target, in words; no projection from a slope whose CI reaches 0."""
    if f["lo"] <= 0:
        return "the fit does not show a gain from more epochs (its slope's CI reaches 0): no projection"
    at, fast = epochs_for(f, target, f["b"]), epochs_for(f, target, f["hi"])
    if at <= longest:
        return f"within the lengths run (the line crosses it at ~{at:,.0f} epochs)"
    if at > FAR * longest:
        return f"over {FAR:,}x the longest run ({longest} epochs) at the fitted rate: out of reach by length alone"
    return (
        f"~{at:,.0f} epochs at the fitted rate (~{fast:,.0f} at the CI's upper slope): a straight line in log epochs "
        f"carried past {longest}, as if each doubling kept paying the same ({WHETHER[lengths > 2]})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="published results folders, e.g. results/search-r1")
    ap.add_argument("--target", type=float, help="a test accuracy (%%) to project the epochs for")
    a = ap.parse_args(argv)
    try:
        d = pd.concat([load(f) for f in a.folders], ignore_index=True)
    except CurveError as e:
        print(f"epochs_curve: {e}", file=sys.stderr)
        return 2
    groups = [g for _, g in d.groupby("recipe", sort=False) if g.epochs.nunique() > 1]
    if not groups:
        print("epochs_curve: no recipe was trained at two lengths in these folders", file=sys.stderr)
        return 1
    out = ["# What more epochs give", ""]
    for g in groups:
        out += render(g, a.target) + [""]
    print("\n".join(out).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
