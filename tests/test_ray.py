"""`fmlab sweep --executor ray` against a real local Ray instance (CI installs the ray extra).

The head node runs from its own empty folder and the sweep from another, each store in a third, so
nothing relies on a shared working directory: workers import fmlab from the installed package (or
PYTHONPATH given to `ray start`), read the dataset from the usual search path, and send results back
as objects. Ray is torn down whatever happens, and the test checks that none of its processes remain.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import assert_exactly_complete, ids_of, q, states, wait_for, write_study

import fmlab

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not importable: pip install 'fmlab[ray]' to run these")
SRC = str(Path(fmlab.__file__).resolve().parents[1])


def _env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # RAY_AUTH_MODE explicit: Ray >= 2.5x turns token auth on for `ray start` when ~/.ray/auth_token
    # exists (any earlier plain ray.init() writes one), and a driver then needs the mode set to connect.
    e.update(
        PYTHONPATH=os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])]),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return e


def _session(sid: int) -> list[int]:
    """Live (not zombie) processes of a session: everything `ray start` and its raylet spawned."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ray_procs(marker: str) -> list[int]:
    return [
        p
        for p in map(int, filter(str.isdigit, os.listdir("/proc")))
        if marker in _cmdline(p) and ("raylet" in _cmdline(p) or "gcs_server" in _cmdline(p))
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A one-node Ray cluster on 127.0.0.1 (2 CPUs), started from an empty folder; yields its address."""
    temp = tempfile.mkdtemp(prefix="fmray", dir="/tmp")  # short: Ray's socket paths live under it
    cwd = Path(temp) / "cwd"
    cwd.mkdir()
    port = _free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli)] if ray_cli.exists() else [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
    cmd += [
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--num-cpus",
        "2",
        "--num-gpus",
        "0",
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--object-store-memory",
        str(100 * 2**20),
        "--temp-dir",
        temp,
    ]
    log = open(Path(temp) / "ray-start.log", "w+")
    p = subprocess.Popen(
        cmd, cwd=cwd, env=_env(OMP_NUM_THREADS="1"), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        t0 = time.time()
        while "Ray runtime started" not in Path(log.name).read_text():
            if p.poll() is not None or time.time() - t0 > 120:
                raise AssertionError(f"ray start failed (exit {p.poll()}):\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"address": f"127.0.0.1:{port}", "cwd": cwd, "temp": temp}
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # `ray start --block` stops its node on SIGTERM
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                pass
        for pid in _session(p.pid) + _ray_procs(temp):  # whatever did not stop: ours alone, never `ray stop`
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not _session(p.pid) and not _ray_procs(temp), 30, "Ray's processes to end")
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(*args: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fmlab", "sweep", *args, "--plain"],
        cwd=cwd,
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _workers_running() -> list[int]:
    """Ray worker processes running a trial now (their process title names the task)."""
    return [p for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if _cmdline(p).startswith("ray::ray_trial")]


def _kill_ray_workers(p: subprocess.Popen, ready, what: str, look=lambda: None) -> tuple[object, str]:
    """Once ready(), note look(), SIGKILL every Ray worker running a trial (what a worker node's death does
    to the trials on it) and wait for the sweep p to finish them; returns (look's value, p's stderr)."""
    try:
        wait_for(ready, 150, what)
        seen = look()
        for pid in _workers_running():
            os.kill(pid, signal.SIGKILL)
        _, err = p.communicate(timeout=150)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert p.returncode == 0, err
    assert "Ray worker lost" in err, err
    return seen, err


def test_missing_ray_is_one_line_naming_the_extra(tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray (test stand-in)')\n")
    f = write_study(tmp_path, "nr", {"model.pool": ["avg"]})
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env["PYTHONPATH"]])
    args = ["sweep", str(f), "--executor", "ray", "--store", str(tmp_path / "s" / "fm.db")]
    p = subprocess.run([sys.executable, "-m", "fmlab", *args], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "fmlab[ray]" in lines[0], p.stderr
    assert not (tmp_path / "s").exists()  # nothing touched before Ray is there


@needs_ray
def test_ray_sweep_runs_the_planned_trials(ray_head, tmp_path):
    f = write_study(tmp_path, "ray4", {"model.pool": ["avg", "max"]}, seeds=(0, 1), base={"train.max_epochs": 1})
    planned = ids_of(f)  # what the local executor would plan (study.load)
    driver = tmp_path / "driver"
    driver.mkdir()
    db = tmp_path / "store" / "fm.db"
    t0 = time.time()
    p = _sweep(str(f), "--executor", "ray", "--address", ray_head["address"], "--store", str(db), cwd=driver)
    out, err = p.communicate(timeout=150)
    wall = time.time() - t0
    assert p.returncode == 0, err
    assert "4/4 COMPLETE (4 run now)" in err and "2 at once" in err, err
    assert_exactly_complete(db, planned)
    assert {n for (n,) in q(db, "SELECT attempts FROM trials")} == {1}
    assert dict(q(db, "SELECT trial, COUNT(*) FROM epochs GROUP BY trial")) == {t: 1 for t in planned}
    assert all('"device": "cpu"' in e for (e,) in q(db, "SELECT env FROM trials"))
    # Only the driver wrote: the store's folder holds the database and the checkpoints it wrote, and
    # the workers' working folder stays empty.
    assert {x.name for x in (db.parent / "trials").iterdir()} == set(planned)
    assert not any(ray_head["cwd"].iterdir()) and not any(driver.iterdir())
    print(f"ray: 4 trials, wall {wall:.1f}s (driver start included)")


@needs_ray
def test_run_study_on_ray_from_python(ray_head, tmp_path):
    """api.run_study(executor="ray"): the sweep `fmlab sweep --executor ray` runs, from Python (a fresh
    interpreter, so this test process never joins the cluster)."""
    f = write_study(tmp_path, "rayapi", {"model.pool": ["avg", "max"]}, base={"train.max_epochs": 1})
    planned = ids_of(f)
    db = tmp_path / "store" / "fm.db"
    code = (
        "import sys, fmlab\n"
        "seen = []\n"
        "st = fmlab.run_study(sys.argv[1], store=sys.argv[2], executor='ray', address=sys.argv[3],\n"
        "                     cpus_per_trial=1, on_update=lambda p: seen.append(p.done))\n"
        "print(sorted(set(st.trials()['state'])), seen[-1])\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(f), str(db), ray_head["address"]],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["['COMPLETE']", "2"], p.stdout
    assert_exactly_complete(db, planned)
    assert all('"device": "cpu"' in e for (e,) in q(db, "SELECT env FROM trials"))


@needs_ray
def test_killed_driver_then_rerun_completes_without_duplicates(ray_head, tmp_path):
    # Two 1-epoch trials finish first; the two longer ones are still running when the driver dies.
    f = write_study(tmp_path, "rayk", {"train.max_epochs": [1, 6]}, seeds=(0, 1))
    planned = ids_of(f)
    db = tmp_path / "fm.db"
    p = _sweep(str(f), "--executor", "ray", "--address", ray_head["address"], "--store", str(db), cwd=tmp_path)
    try:
        wait_for(lambda: "COMPLETE" in states(db).values(), 150, "a COMPLETE trial")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    before = states(db)
    done_before = {t for t, s in before.items() if s == "COMPLETE"}
    assert 1 <= len(done_before) < 4 and "RUNNING" in before.values(), before
    # Ray ends a dead driver's tasks: nothing of that sweep trains on (and nothing could write anyway).
    wait_for(lambda: not _workers_running(), 30, "the dead driver's Ray tasks to end")
    r = _sweep(str(f), "--executor", "ray", "--address", ray_head["address"], "--store", str(db), cwd=tmp_path)
    out, err = r.communicate(timeout=150)
    assert r.returncode == 0, err
    assert "recovered from a dead sweep" in err and f"({4 - len(done_before)} run now)" in err, err
    assert_exactly_complete(db, planned)
    attempts = dict(q(db, "SELECT id, attempts FROM trials"))
    assert all(attempts[t] == 1 for t in done_before)
    # Each trial's epochs once, from one attempt: 1-epoch trials 1 row, 6-epoch trials 6 (early stopping aside).
    n = dict(q(db, "SELECT trial, COUNT(*) FROM epochs GROUP BY trial"))
    assert sorted(n) == sorted(planned) and all(
        n[t] == m for t, m in q(db, "SELECT trial, MAX(epoch) FROM epochs GROUP BY trial")
    )
    assert len(q(db, "SELECT id FROM trials")) == 4


@needs_ray
def test_dead_ray_workers_lose_only_their_trials_which_resume_from_their_last_epoch(ray_head, tmp_path):
    f = write_study(
        tmp_path, "rayw", {"model.pool": ["avg"]}, seeds=(0, 1), base={"train.max_epochs": 6, "train.patience": 100}
    )
    planned = ids_of(f)
    db = tmp_path / "fm.db"
    p = _sweep(str(f), "--executor", "ray", "--address", ray_head["address"], "--store", str(db), cwd=tmp_path)
    # epoch rows (and resume state) reach the store as each epoch ends, not only with the result
    with_epochs, err = _kill_ray_workers(
        p,
        lambda: (
            q(db, "SELECT 1 FROM epochs e JOIN trials t ON t.id = e.trial WHERE t.state = 'RUNNING'")
            and len(_workers_running()) == 2
        ),
        "an epoch of a running trial",
        look=lambda: {t for (t,) in q(db, "SELECT DISTINCT trial FROM epochs")},
    )
    assert "2/2 COMPLETE" in err, err
    assert_exactly_complete(db, planned)
    attempts = dict(q(db, "SELECT id, attempts FROM trials"))
    logs = dict(q(db, "SELECT id, log FROM trials"))
    for t in with_epochs - {t for t in planned if attempts[t] == 1}:  # killed after an epoch: resumed after it
        assert "resuming after epoch" in logs[t], logs[t]
    assert all(n == 6 for (n,) in q(db, "SELECT COUNT(*) FROM epochs GROUP BY trial"))  # each epoch once
    assert max(attempts.values()) == 2


def test_worker_task_has_no_store_paths_and_a_device_that_matches_its_resources():
    from fmlab.sweep.ray import worker_task
    from fmlab.sweep.work import Task
    from fmlab.training.env import RunOptions

    t = Task("abc", {}, "/driver/store/trials/abc/state", RunOptions(device="auto", threads=2))
    assert worker_task(t, 0).state_dir is None and worker_task(t, 0).opts.device == "cpu"
    assert worker_task(t, 0.5).opts.device == "auto"  # Ray shows the task its GPU alone: auto picks cuda
    assert worker_task(Task("abc", {}, None, RunOptions(device="cuda")), 0).opts.device == "cuda"  # user's call


@needs_ray
def test_a_failing_trial_on_ray_is_failed_and_the_study_goes_on(ray_head, tmp_path):
    f = write_study(tmp_path, "rayf", {"model.pool": ["avg", "max"]}, base={"train.max_epochs": 1})
    planned = ids_of(f)
    db = tmp_path / "fm.db"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "fmlab",
            "sweep",
            str(f),
            "--executor",
            "ray",
            "--address",
            ray_head["address"],
            "--store",
            str(db),
            "--plain",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
        env=_env(FMLAB_FAULT=f"nan:{planned[0]}"),
    )
    assert p.returncode == 1 and "--retry-failed" in p.stderr, p.stderr
    assert states(db) == {planned[0]: "FAILED", planned[1]: "COMPLETE"}
    (err,) = q(db, "SELECT error FROM trials WHERE id = ?", planned[0])
    assert err[0].startswith("Diverged")  # raised on the worker, recorded by the driver


@needs_ray
def test_ctrl_c_gives_ray_trials_back(ray_head, tmp_path):
    f = write_study(
        tmp_path,
        "rayc",
        {"model.pool": ["avg"]},
        seeds=(0, 1),
        base={"data.train_subset": 3000, "train.max_epochs": 50, "train.patience": 100},
    )
    db = tmp_path / "fm.db"
    p = _sweep(str(f), "--executor", "ray", "--address", ray_head["address"], "--store", str(db), cwd=tmp_path)
    try:
        wait_for(lambda: len(_workers_running()) == 2, 150, "both trials running on Ray")
        os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the driver's foreground group (Ray's workers are not in it)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    assert p.returncode == 130, err
    assert set(states(db).values()) == {"WAITING"}
    wait_for(lambda: not _workers_running(), 30, "the cancelled Ray tasks to end")


@needs_ray
def test_a_pack_is_one_ray_task_and_a_lost_pack_resumes_each_trial(ray_head, tmp_path):
    """--pack on: the 4 trials of one pack (dropout 0 / 0.2 x 2 seeds) train as one model in one Ray task;
    killing its worker loses all 4, which come back together and resume from their last epoch."""
    f = write_study(
        tmp_path,
        "raypack",
        {"model.dropout": [0.0, 0.2]},
        seeds=(0, 1),
        base={"train.max_epochs": 3, "train.patience": 100},
    )
    planned = ids_of(f)
    db = tmp_path / "fm.db"
    held = planned[0]  # sleeps after each epoch, which holds the whole pack there
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmlab",
            "sweep",
            str(f),
            "--executor",
            "ray",
            "--address",
            ray_head["address"],
            "--store",
            str(db),
            "--pack",
            "on",
            "--plain",
        ],
        cwd=tmp_path,
        env=_env(FMLAB_FAULT=f"sleep:{held}:2"),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    n_tasks, err = _kill_ray_workers(
        p,
        lambda: len(q(db, "SELECT DISTINCT trial FROM epochs")) == 4,
        "epoch 1 of the whole pack",
        look=lambda: len(_workers_running()),
    )
    assert n_tasks == 1  # one Ray task for the 4 trials
    assert "4/4 COMPLETE" in err, err
    assert_exactly_complete(db, planned)
    attempts = dict(q(db, "SELECT id, attempts FROM trials"))
    logs = dict(q(db, "SELECT id, log FROM trials"))
    assert set(attempts.values()) == {2} and all("resuming after epoch" in logs[t] for t in planned)
    assert all(n == 3 for (n,) in q(db, "SELECT COUNT(*) FROM epochs GROUP BY trial"))  # each epoch once
    assert all('"k": 4' in e for (e,) in q(db, "SELECT env FROM trials"))
