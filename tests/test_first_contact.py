"""What a new user hits first: a device this machine lacks, a closed stdout pipe, a bad store file.

Each is one line on stderr and an exit code, never a traceback (a closed pipe: nothing and exit 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli

import fmlab
from fmlab.errors import FmlabError
from fmlab.store.db import Store

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")


def one_line_error(p: subprocess.CompletedProcess, *words: str) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
    line = p.stderr.strip()
    assert line.startswith("fmlab: error: ") and all(w in line for w in words), line
    return line


@pytest.fixture(scope="module")
def tiny_study_file(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fc")
    lines = [
        'name = "fc"',
        "seeds = [0]",
        "[base]",
        *[f'"{k}" = {json.dumps(v)}' for k, v in TINY.items()],
        "[factors]",
        '"model.pool" = ["avg", "max"]',
    ]
    (tmp / "fc.toml").write_text("\n".join(lines) + "\n")
    return tmp / "fc.toml"


@pytest.mark.parametrize(
    "device, words",
    [
        pytest.param("cuda", ("--device cuda", "CUDA", "--device cpu"), marks=NO_CUDA),
        pytest.param("cuda:1", ("--device cuda:1", "CUDA", "--device cpu"), marks=NO_CUDA),
        pytest.param("mps", ("--device mps", "MPS", "--device cpu"), marks=NO_MPS),
        pytest.param("gpu", ("'gpu'", "auto, cpu, cuda, cuda:N or mps")),
    ],
)
def test_train_on_a_missing_device_is_one_line(device, words, tmp_path):
    p = run_cli("train", "--device", device, "--threads", "1", "--out", str(tmp_path / "ck"))
    one_line_error(p, *words)
    assert not (tmp_path / "ck").exists()


@NO_CUDA
def test_sweep_on_a_missing_device_refuses_once_before_any_trial(tiny_study_file, tmp_path):
    db = tmp_path / "fmlab.db"
    p = run_cli(
        "sweep", str(tiny_study_file), "--device", "cuda", "--workers", "1", "--threads", "1", "--store", str(db)
    )
    one_line_error(p, "--device cuda", "--device cpu")
    assert not db.exists()  # nothing planned, no trial started (let alone FAILED)


@NO_CUDA
def test_run_study_on_a_missing_device_raises_before_the_store(tiny_study_file, tmp_path):
    with pytest.raises(FmlabError, match="--device cuda"):
        fmlab.run_study(tiny_study_file, store=tmp_path / "fmlab.db", device="cuda", workers=0)
    assert not (tmp_path / "fmlab.db").exists()


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "fmlab.db"
    Store(path).close()
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("ls", "--format", "json"),
        ("ls",),
        ("data", "check", "--format", "json"),
    ],
)
def test_a_closed_stdout_pipe_ends_quietly(args, empty_store):
    """A pipe whose reader has gone before fmlab writes: the first write fails (EPIPE) for certain."""
    r, w = os.pipe()
    os.close(r)
    store = ["--store", str(empty_store)] if args[0] == "ls" else []
    try:
        p = subprocess.run(
            [sys.executable, "-m", "fmlab", *args, *store], stdout=w, stderr=subprocess.PIPE, text=True, timeout=300
        )
    finally:
        os.close(w)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_ls_json_into_head_exits_zero(empty_store):
    """The issue's own command line, through a shell: fmlab's exit status (not head's) is 0, stderr empty."""
    cmd = f"set -o pipefail; {sys.executable} -m fmlab ls --format json --store {empty_store} | head -c 300"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stderr == "" and p.stdout == "[]\n", p.stderr


@pytest.mark.parametrize("args", [("ls",), ("show", "abc"), ("results", "x", "--out", "OUT")])
def test_bad_store_files_are_one_line(args, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database, just text " * 10)
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    one_line_error(run_cli(*args, "--store", str(bad)), str(bad), "not an fmlab store")
    one_line_error(run_cli(*args, "--store", str(tmp_path / "none.db")), "no store here")


def test_debug_shows_the_traceback_behind_a_one_line_error(tmp_path):
    from conftest import run_cli

    plain = run_cli("show", "nope", "--store", str(tmp_path / "missing.db"))
    debug = run_cli("show", "nope", "--store", str(tmp_path / "missing.db"), "--debug")
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" not in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    assert "Traceback" in debug.stderr and debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
