"""`fmlab speedrun`: time-to-accuracy records. Each recipe of a speedrun file is trained once per seed
as its own `python -m fmlab train` process, started as a user would start it; the clock is that
process's whole wall time (interpreter start, imports, data loading, every epoch, validation, TTA,
the single test evaluation at the end and the checkpoint write). A recipe meets its record when the
mean test accuracy over its seeds reaches target_acc and the median wall time is within target_s.

    name, description, seeds               top-level keys
    [recipes.<name>]                       target_acc (fraction), target_s (seconds), description
    [recipes.<name>.set]                   config keys, as with --set

Nothing in a recipe can look at the test set early: `fmlab train` evaluates it once, after the
epochs, on the weights that validation chose. Results are appended to a JSONL file run by run, so an
interrupted speedrun keeps every finished run.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlab.config.schema import Config, ConfigError, with_overrides
from fmlab.errors import FmlabError

TOP_KEYS = ("name", "description", "seeds", "recipes")
RECIPE_KEYS = ("description", "target_acc", "target_s", "set")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    target_acc: float
    target_s: float
    sets: dict[str, Any]

    def set_args(self, seed: int) -> list[str]:
        sets = {**self.sets, "seed": seed}
        return [a for k, v in sets.items() for a in ("--set", f"{k}={_arg(v)}")]


def _arg(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


@dataclass(frozen=True)
class Speedrun:
    name: str
    path: str
    seeds: tuple[int, ...]
    recipes: dict[str, Recipe]


def load(path: str | Path) -> Speedrun:
    """Read and check a speedrun file; every error names the file and the key."""
    from fmlab.study.spec import check_seeds, read_toml

    p = Path(path)
    raw = read_toml(p, "speedrun file", TOP_KEYS)
    seeds = check_seeds(p, "key 'seeds'", raw.get("seeds", [0, 1, 2, 3, 4]))
    recipes = {}
    for name, r in (raw.get("recipes") or {}).items():
        where = f"{p}: recipes.{name}"
        if not isinstance(r, dict):
            raise FmlabError(f"{where}: must be a table with target_acc, target_s and a [set] table")
        for k in r:
            if k not in RECIPE_KEYS:
                raise FmlabError(f"{where}: unknown key '{k}'; allowed: {', '.join(RECIPE_KEYS)}")
        for k, lo, hi in (("target_acc", 0.0, 1.0), ("target_s", 1.0, 1e6)):
            v = r.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v <= hi:
                raise FmlabError(f"{where}.{k}: expected a number in ({lo:g}, {hi:g}], got {v!r}")
        sets = r.get("set", {})
        if "seed" in sets:
            raise FmlabError(f"{where}.set: 'seed' is set by the file's seeds list, not by a recipe")
        try:
            with_overrides(Config(), sets)
        except ConfigError as e:
            raise FmlabError(f"{where}.set: {e}") from None
        recipes[name] = Recipe(name, r.get("description", ""), float(r["target_acc"]), float(r["target_s"]), sets)
    if not recipes:
        raise FmlabError(f"{p}: no [recipes.<name>] table; each recipe needs target_acc, target_s and a [set] table")
    return Speedrun(raw.get("name", p.stem), str(p), tuple(seeds), recipes)


def summarise(recipe: Recipe, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean test accuracy with its t 95% CI, median and max wall time, and whether the record is met."""
    from fmlab.analysis.cells import t_ci

    accs = [r["test_acc"] for r in runs]
    walls = [r["wall_s"] for r in runs]
    ci = t_ci(accs)
    med = statistics.median(walls)
    lo, hi = (None, None) if len(runs) < 2 else (ci["lo"], ci["hi"])  # no interval from one run
    return {
        "recipe": recipe.name,
        "n": len(runs),
        "test_acc_mean": ci["mean"],
        "test_acc_lo": lo,
        "test_acc_hi": hi,
        "wall_s_median": med,
        "wall_s_max": max(walls),
        "epochs": runs[0]["epochs"],
        "n_params": runs[0]["n_params"],
        "target_acc": recipe.target_acc,
        "target_s": recipe.target_s,
        "met": bool(ci["mean"] >= recipe.target_acc and med <= recipe.target_s),
    }


def run(
    spec: Speedrun,
    names: list[str],
    seeds: tuple[int, ...],
    log: Path,
    threads: int = 0,
    data_dir: str | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    timeout_s: float = 3600,
) -> list[dict[str, Any]]:
    """Train each named recipe once per seed, one process at a time; append each run to log (JSONL)."""
    from fmlab.timing.benchtrain import run_process

    log.parent.mkdir(parents=True, exist_ok=True)
    summaries = []
    for name in names:
        recipe = spec.recipes[name]
        runs = []
        for seed in seeds:
            with tempfile.TemporaryDirectory(prefix="fmlab-speedrun-") as out:
                cmd = [sys.executable, "-m", "fmlab", "train", *recipe.set_args(seed), "--out", out]
                cmd += ["--threads", str(threads)] if threads else []
                cmd += ["--data-dir", data_dir] if data_dir else []
                res = run_process(cmd, timeout_s)
            row = {
                "speedrun": spec.name,
                "recipe": name,
                "seed": seed,
                "wall_s": res["wall_s"],
                "test_acc": res["test_acc"],
                "val_acc": res["val_acc"],
                "epochs": res["epochs"],
                "best_epoch": res["best_epoch"],
                "train_s": res["train_s"],
                "eval_s": res["eval_s"],
                "total_s": res["total_s"],
                "n_params": res["n_params"],
                "trial_id": res["trial_id"],
            }
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            runs.append(row)
            if on_run:
                on_run(row)
        summaries.append(summarise(recipe, runs))
    return summaries
