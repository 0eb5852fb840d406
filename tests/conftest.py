"""Shared fixtures: one tiny real-data dataset, one tiny trained checkpoint, for the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmlab import checkpoint, data
from fmlab.config import Config, with_overrides
from fmlab.env import RunOptions
from fmlab.train import train

# Narrow net, few hundred images, one epoch: mechanics, not accuracy.
TINY = {
    "model.widths": "8,16,16",
    "data.train_subset": 600,
    "data.val_size": 300,
    "train.max_epochs": 1,
    "train.batch_size": 64,
}
OPTS = RunOptions(device="cpu", threads=1)


def tiny_config(**extra) -> Config:
    return with_overrides(Config(), {**TINY, **extra})


def run_cli(*args: str, check: bool = False, env: dict | None = None, timeout: float = 600, cwd=None):
    """Run `python -m fmlab ARGS` as a user would; returns CompletedProcess with text output."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "fmlab", *args], capture_output=True, text=True,
                       env=e, timeout=timeout, cwd=cwd)  # fmt: skip
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
