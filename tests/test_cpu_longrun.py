"""scripts/cpu_longrun.sh: a long study run from its own worktree at a fixed commit, its store outside the
repository, published into the repository's results/ as it goes. On a clone of this repository with a tiny
study committed in it, this test's own venv (LONGRUN_VENV), a real sweep and a real publish."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import q, write_study

ROOT = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def clone(tmp_path) -> tuple[Path, str, dict]:
    """A clone of this repository's HEAD with a tiny study committed (1 trial, 20 short epochs), and the
    script's env."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    base = {"train.max_epochs": 20, "train.patience": 20, "data.train_subset": 3000}
    write_study(repo / "studies", "long", {"model.pool": ["avg"]}, base=base)
    git(repo, "add", "studies/long.toml")
    git(repo, "commit", "-q", "-m", "a tiny study")
    env = {
        **os.environ,
        "LONGRUN_DIR": str(tmp_path / "longrun"),
        "LONGRUN_VENV": str(Path(sys.executable).parent.parent),
        "LONGRUN_POLL_S": "1",
        "LONGRUN_SWEEP_ARGS": "--workers 1 --threads 1",
    }
    return repo, git(repo, "rev-parse", "HEAD"), env


def script(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(repo / "scripts" / "cpu_longrun.sh"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bad_input_is_one_line_and_starts_nothing(clone):
    repo, _, env = clone
    for args, needle in (
        (("status",), "run.env: no run started here"),
        (("start", "studies/nope.toml", "full"), "studies/nope.toml: no such study file"),
        (("start", "studies/long.toml", "full", "not-a-commit"), "not-a-commit: not a commit"),
        (("pause",), "no sweep runs from"),
    ):
        p = script(repo, env, *args)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and needle in p.stderr, (args, p.stderr)
    assert not (Path(env["LONGRUN_DIR"]) / "wt").exists()


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_for(what, deadline: float, why: str):
    while not (got := what()):
        assert time.time() < deadline, why
        time.sleep(0.5)
    return got


def test_start_returns_at_once_and_pause_stop_and_a_second_start_reach_the_sweep_itself(clone):
    """The pid file names the sweep's own process group: pause stops its worker, stop gives the running trial
    back at its last epoch, and the next start resumes it there."""
    repo, head, env = clone
    d, deadline = Path(env["LONGRUN_DIR"]), time.time() + 240
    db = d / "fmlab.db"
    p = script(repo, env, "start", "studies/long.toml", "full")
    assert p.returncode == 0, p.stderr
    assert "sweep running" in script(repo, env, "status").stdout  # start came back while its sweep runs on
    pid = int((d / "sweep.pid").read_text())
    me = repo / "scripts" / "cpu_longrun.sh"  # a session edits the script while its publisher loops
    me.write_text(me.read_text().replace("set -euo pipefail\n", "set -euo pipefail\n" + "# an edit\n" * 40, 1))
    assert os.getpgid(pid) == pid and "fmlab sweep" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    wait_for(lambda: q(db, "select count(*) from epochs") >= [(2,)], deadline, "no second epoch")
    me = repo / "scripts" / "cpu_longrun.sh"  # a session edits the script while its publisher loops
    me.write_text(me.read_text().replace("set -euo pipefail\n", "set -euo pipefail\n" + "# an edit\n" * 40, 1))
    assert script(repo, env, "pause").returncode == 0
    assert wait_for(lambda: proc_state(pid) == "T", deadline, "the sweep was not stopped")
    assert script(repo, env, "resume").returncode == 0
    wait_for(lambda: proc_state(pid) != "T", deadline, "the sweep was not continued")
    assert script(repo, env, "stop").returncode == 0
    wait_for(lambda: "sweep stopped, publisher stopped" in script(repo, env, "status").stdout, deadline, "no stop")
    assert q(db, "select state from trials") == [("WAITING",)]  # given back, its epochs kept
    kept = q(db, "select count(*) from epochs")[0][0]
    assert 2 <= kept < 20
    run = json.loads((repo / "results" / "long-full" / "run.json").read_text())
    assert run["counts"]["complete"] == 0  # published when it stopped
    assert script(repo, env, "start", "studies/long.toml", "full").returncode == 0
    wait_for(lambda: "sweep stopped, publisher stopped" in script(repo, env, "status").stdout, deadline, "no end")
    assert q(db, "select state from trials") == [("COMPLETE",)]
    assert f"resuming after epoch {kept}" in q(db, "select log from trials")[0][0]  # not started again
    assert q(db, "select count(*), count(distinct epoch) from epochs") == [(20, 20)]
    run = json.loads((repo / "results" / "long-full" / "run.json").read_text())
    assert run["counts"]["complete"] == run["counts"]["planned"] == 1
    assert run["commit"] == head and run["study_file"] == "studies/long.toml"  # published by the run's own code
    assert git(d / "wt", "rev-parse", "HEAD") == head
    log = (d / "publish.log").read_text()
    assert "the sweep ended; published: 1 " in log, log
    assert all(ln.startswith(("wrote ", "20")) for ln in log.splitlines()), log  # publishes and their times only
    assert not (d / "wt" / "results" / "long-full").exists()  # into the repository only
    again = script(repo, env, "start", "studies/long.toml", "full")  # a new session: imports, runs nothing more
    assert again.returncode == 0 and "1 already in" in again.stdout + again.stderr, again.stderr
    wait_for(lambda: "sweep stopped, publisher stopped" in script(repo, env, "status").stdout, deadline, "no end")
    assert "to run: 0" in (d / "sweep.log").read_text().split("study long")[-1]
