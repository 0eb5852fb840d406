"""Shared fixtures and helpers: one tiny real-data dataset, one tiny trained checkpoint, for the whole session;
the synthetic studies and store helpers several test files use (no test file imports another)."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmlab.config.schema import Config, with_overrides
from fmlab.config.states import State
from fmlab.data import idx as data
from fmlab.study import spec as fstudy
from fmlab.training import checkpoint
from fmlab.training.env import RunOptions
from fmlab.training.loop import train

# A test run started in the background of a non-interactive shell (`make test &`) inherits SIGINT ignored, and so
# would every sweep a test starts: the Ctrl-C tests would then test the shell, not fmlab. Run them as from a
# terminal: a handler here (not SIG_IGN) is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Narrow net, few hundred images, one epoch: mechanics, not accuracy.
TINY = {
    "model.widths": "8,16,16",
    "data.train_subset": 600,
    "data.val_size": 300,
    "train.max_epochs": 1,
    "train.batch_size": 64,
}
OPTS = RunOptions(device="cpu", threads=1)


def script(name: str):
    """scripts/<name>.py as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_config(**extra) -> Config:
    return with_overrides(Config(), {**TINY, **extra})


def run_cli(*args: str, check: bool = False, env: dict | None = None, timeout: float = 600, cwd=None):
    """Run `python -m fmlab ARGS` as a user would; returns CompletedProcess with text output."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    p = subprocess.run(
        [sys.executable, "-m", "fmlab", *args], capture_output=True, text=True, env=e, timeout=timeout, cwd=cwd
    )
    if check and p.returncode != 0:
        raise AssertionError(f"fmlab {' '.join(args)} exited {p.returncode}:\n{p.stderr}")
    return p


@pytest.fixture(scope="session")
def tiny_ds():
    return data.load(tiny_config().data)


@pytest.fixture(scope="session")
def tiny_result(tiny_ds):
    return train(tiny_config(), tiny_ds, OPTS)


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_result, tmp_path_factory) -> Path:
    """A checkpoint directory (best.safetensors + trial.json) of a tiny trained net."""
    return checkpoint.save_trial(tiny_result, tmp_path_factory.mktemp("ckpt") / tiny_result.trial_id)


TINY_STUDY = """name = "tiny"
seeds = [0, 1]
[base]
{base}
[factors]
"train.lr" = [0.01, 0.02]
[budgets.t]
"train.max_epochs" = {epochs}
"""


def tiny_study_file(root: Path, epochs: int = 1, extra: str = "") -> Path:
    """root/studies/tiny.toml: 2 cells (lr) x 2 seeds on the TINY config, budget t = epochs epochs; extra is
    appended to [base]."""
    import json

    p = root / "studies" / "tiny.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    base = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in TINY.items() if k != "train.max_epochs")
    p.write_text(TINY_STUDY.format(base=base + extra, epochs=epochs))
    return p


# ---------------------------------------------------------------- a synthetic grid study with known effects
# (test_report, test_claims, test_diagnostics, test_power)

GRID_FACTORS = {"model.batch_norm": [False, True], "model.pool": ["avg", "max"], "train.batch_size": [32, 64, 128]}
GRID_BASELINE = {"model.batch_norm": False, "model.pool": "avg", "train.batch_size": 64}
BN_EFFECT = 0.010  # batch norm adds 1.0 point of val accuracy
BS128_EFFECT = -0.006  # batch 128 loses 0.6 points against the baseline 64; pool has no effect


def synth_grid(seeds=range(6), noise=0.002, fail=(), states=None, drop=(), budget="full", select="val_acc", rng_seed=1):
    """A study where the truth is known: acc = 0.88 + effects + seed offset + N(0, noise)."""
    rng = np.random.default_rng(rng_seed)
    rows, eps = [], []
    for s in seeds:
        offset = rng.normal(0, 0.003)  # seeds differ as a whole: what pairing by seed removes
        for bn, pool, bs in itertools.product(*GRID_FACTORS.values()):
            tid = f"s{s}-{int(bn)}{pool}{bs}"
            acc = 0.88 + BN_EFFECT * bn + (BS128_EFFECT if bs == 128 else 0) + offset + rng.normal(0, noise)
            if tid in drop:
                continue
            state = State.FAILED if tid in fail else (states or {}).get(tid, State.COMPLETE)
            ok = state == State.COMPLETE
            rows.append(
                {
                    "id": tid,
                    "state": state,
                    "seed": s,
                    "model.batch_norm": bn,
                    "model.pool": pool,
                    "train.batch_size": bs,
                    "val_acc": acc if ok else math.nan,
                    "val_loss": 0.4 - acc / 4 if ok else math.nan,
                    "test_acc": acc - 0.004 if ok else math.nan,
                    "test_loss": 0.41 - acc / 4 if ok else math.nan,
                    "epochs": 5,
                    "best_epoch": 4,
                    "train_s": 9.5,
                    "total_s": 10.0,
                    "n_params": 392_714,
                }
            )
            for e in range(1, 6 if ok else 2):
                eps.append(
                    {
                        "trial_id": tid,
                        "epoch": e,
                        "train_loss": 0.9 / e,
                        "train_acc": acc - 0.06 / e,
                        "val_loss": 0.5 / e + 0.2,
                        "val_acc": acc - 0.05 / e,
                        "epoch_s": 2.0,
                        "lr": 1e-3,
                    }
                )
    n_planned = len(list(seeds)) * 12
    meta = {
        "study": "synth",
        "budget": budget,
        "factors": GRID_FACTORS,
        "baseline": GRID_BASELINE,
        "select": select,
        "planned": n_planned,
    }
    return pd.DataFrame(rows), pd.DataFrame(eps), meta


# ---------------------------------------------------------------- a synthetic arms study with a known effect
# (test_arms, test_diagnostics, test_power)

ARMS_GOOD = 0.010  # the 'good' arm adds 1.0 point of validation accuracy; 'null' adds nothing


def synth_arms(seeds=range(6), noise=0.002, rng_seed=3):
    rng = np.random.default_rng(rng_seed)
    rows, eps = [], []
    arms = {"good": {"train.schedule": "cosine"}, "null": {"model.activation": "gelu"}, "twin": {"train.momentum": 0.5}}
    for s in seeds:
        offset = rng.normal(0, 0.004)  # seeds differ as a whole: what pairing removes
        for arm, eff in (("baseline", 0.0), ("good", ARMS_GOOD), ("null", 0.0)):
            acc = 0.90 + eff + offset + rng.normal(0, noise)
            test = acc - 0.003 + rng.normal(0, 0.001)
            names = [arm, "twin"] if arm == "baseline" else [arm]
            for name in names:  # the twin arm resolves to the baseline's trials: same id, one row per arm
                rows.append(
                    {
                        "id": f"{arm}-{s}",
                        "state": State.COMPLETE,
                        "seed": s,
                        "arm": name,
                        "val_acc": acc,
                        "val_loss": 0.3 - acc / 4,
                        "test_acc": test,
                        "test_loss": 0.31 - acc / 4,
                        "epochs": 3,
                        "best_epoch": 3,
                        "train_s": 5.0,
                        "total_s": 6.0,
                        "n_params": 1000,
                    }
                )
            eps += [
                {
                    "trial_id": f"{arm}-{s}",
                    "epoch": e,
                    "train_loss": 1 / e,
                    "train_acc": acc - 0.05 / e,
                    "val_loss": 0.4 / e,
                    "val_acc": acc - 0.04 / e,
                    "epoch_s": 1.0,
                    "lr": 1e-3,
                }
                for e in (1, 2, 3)
            ]
    meta = {
        "study": "synth-arms",
        "budget": "full",
        "design": "arms",
        "select": "val_acc",
        "factors": {"arm": ["baseline", *arms]},
        "baseline": {"arm": "baseline"},
        "arms": arms,
        "planned": len(rows),
    }
    return pd.DataFrame(rows), pd.DataFrame(eps), meta


# ---------------------------------------------------------------- simulated 2x2x2x3 grids for fmlab.analysis.stats
# (test_stats, test_power)

STATS_FACTORS = {"a": ["0", "1"], "b": ["0", "1"], "c": ["0", "1"], "d": ["0", "1", "2"]}
STATS_BASE = {f: v[0] for f, v in STATS_FACTORS.items()}
STATS_SIGMA = 1.0


def stats_grid(seeds: int) -> pd.DataFrame:
    rows = [
        dict(zip([*STATS_FACTORS, "seed"], (*c, s), strict=True))
        for s in range(seeds)
        for c in itertools.product(*STATS_FACTORS.values())
    ]
    d = pd.DataFrame(rows)
    d["cell"] = d[list(STATS_FACTORS)].agg(",".join, axis=1)
    return d


def stats_truth(d: pd.DataFrame, a: float = 0.0, ab: float = 0.0) -> np.ndarray:
    """Planted means: a main effect of a (level 1 vs 0) and an a x b interaction ab, plus a seed offset."""
    return (a * (d["a"] == "1") + ab * ((d["a"] == "1") & (d["b"] == "1")) + 0.3 * d["seed"]).to_numpy(float)


# ---------------------------------------------------------------- study files and store queries for sweeps
# (test_studies, test_ray, test_store_states, test_infer)

STUDY_BASE = {"model.widths": "8,16,16", "data.train_subset": 600, "data.val_size": 300, "train.max_epochs": 2}


def write_study(tmp: Path, name: str, factors: dict, seeds=(0,), base: dict | None = None, text: str = "") -> Path:
    def val(v):
        return json.dumps(v)

    lines = [f'name = "{name}"', f"seeds = {list(seeds)}", "[base]"]
    lines += [f'"{k}" = {val(v)}' for k, v in {**STUDY_BASE, **(base or {})}.items()]
    lines += ["[factors]"] + [f'"{k}" = {val(v)}' for k, v in factors.items()]
    p = tmp / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n" + text)
    return p


def ids_of(path: Path, budget: str = "full") -> list[str]:
    return [t.id for t in fstudy.load(path, budget).trials()]


def q(db: Path, sql: str, *args) -> list[tuple]:
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):  # the sweep is still creating the schema
            return []
        raise
    finally:
        con.close()


def states(db: Path) -> dict[str, str]:
    return dict(q(db, "SELECT id, state FROM trials"))


def wait_for(cond, timeout_s: float = 120, what: str = "condition") -> None:
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def assert_exactly_complete(db: Path, planned: list[str]) -> None:
    assert sorted(states(db)) == sorted(planned)
    assert set(states(db).values()) == {"COMPLETE"}
    for tid, n, distinct, max_e in q(
        db, "SELECT trial, COUNT(*), COUNT(DISTINCT epoch), MAX(epoch) FROM epochs GROUP BY trial"
    ):
        assert n == distinct == max_e, tid
    for tid in planned:
        assert (db.parent / "trials" / tid / "best.safetensors").is_file()
        assert not (db.parent / "trials" / tid / "state").exists()  # resume state dropped once COMPLETE


# ---------------------------------------------------------------- a sweep running in the background
# (test_watch, test_livereport)


def tiny_study(root: Path) -> Path:
    """A 4-trial study (2 cells x 2 seeds, 2 epochs of the TINY budget) in root/studies/tiny.toml."""
    return tiny_study_file(root, epochs=2)


def start_sweep(root: Path, *extra: str, hold_s: float = 1.0) -> subprocess.Popen:
    """Plan the study in root/runs/fmlab.db (so a watcher finds it at once), then run it in the background,
    each trial held hold_s after every epoch (FMLAB_FAULT sleep: slow trials that cost no CPU)."""
    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy

    st = fstudy.load(tiny_study(root), "t")
    s = Store(root / "runs" / "fmlab.db")
    s.plan(st, st.trials())
    s.close()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "FMLAB_FAULT": ",".join(f"sleep:{t.id}:{hold_s}" for t in st.trials()),
    }
    cmd = [
        sys.executable,
        "-m",
        "fmlab",
        "sweep",
        "studies/tiny.toml",
        "--budget",
        "t",
        "--workers",
        "1",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--store",
        "runs/fmlab.db",
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
