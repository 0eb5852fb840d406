"""fmlab.training.clock: the clock a trial's epoch_s and total_s come from leaves out the time its process was
stopped (SIGSTOP ... SIGCONT, as scripts/cpu_longrun.sh pause does), and only that. Real processes, real
signals."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import os, sys, time
from fmlab.training import clock
busy = sys.argv[1] == "busy"
t0, w0 = clock.now(), time.perf_counter()
print("ready", flush=True)
if sys.argv[2] == "fork":  # the clock read in a forked child goes on from its parent's reading
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        sys.exit(0)
while time.perf_counter() < w0 + 4.0:
    if not busy:
        time.sleep(0.05)  # busy: pure Python holding the GIL between switches
print(clock.now() - t0, time.perf_counter() - w0, flush=True)
"""


def child(mode: str, fork: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, fork or "-"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def readings(p: subprocess.Popen) -> tuple[float, float]:
    out, _ = p.communicate(timeout=60)
    ran, wall = map(float, out.split()[-2:])
    return ran, wall


def stopped_for(p: subprocess.Popen, seconds: float) -> None:
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.killpg(p.pid, signal.SIGCONT)


def test_a_stop_is_left_out_and_running_is_not():
    p = child("sleepy")
    stopped_for(p, 2.5)
    ran, wall = readings(p)
    assert wall >= 4.0 and 2.0 < wall - ran < 2.7, (ran, wall)  # the 2.5 s stop, less at most one tick
    q = child("busy")  # a CPU-bound process is running all the time, however slowly its ticks come
    ran, wall = readings(q)
    assert abs(wall - ran) < 0.05, (ran, wall)


def test_one_long_torch_op_is_running_not_a_stop():
    """torch releases the GIL inside an op, so the ticks go on through one that outlasts the 2 s slack."""
    code = (
        "import time, torch; from fmlab.training import clock; torch.set_num_threads(1)\n"
        "a = torch.randn(6000, 6000); t0, w0 = clock.now(), time.perf_counter(); a @ a\n"
        "print(clock.now() - t0, time.perf_counter() - w0)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    ran, wall = map(float, out.split())
    assert wall > 2.5 and abs(wall - ran) < 0.05, (ran, wall)  # one op longer than a tick gap could be


def test_a_forked_child_reads_on_from_its_parents_clock_and_leaves_its_own_stop_out():
    p = child("sleepy", "fork")
    stopped_for(p, 2.5)  # the process group: the forked child is stopped too
    ran, wall = readings(p)
    assert 2.0 < wall - ran < 2.7, (ran, wall)


def test_a_trials_epoch_s_and_total_s_leave_a_pause_out(tmp_path):
    """A real training run paused mid-way for 6 s: no epoch and no total carries the pause (total_s also holds
    the set-up and the per-epoch saves outside epoch_s: up to ~3 s on a box busy with the whole test suite)."""
    cfg = {"model.widths": "8,16,16", "data.train_subset": 12000, "data.val_size": 300, "train.max_epochs": 6}
    sets = [a for k, v in cfg.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "fmlab", "train", *sets, "--out", str(tmp_path / "ck"), "--threads", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    for line in p.stderr:
        if line.startswith("epoch   2"):
            break
    os.killpg(p.pid, signal.SIGSTOP)
    time.sleep(6)
    os.killpg(p.pid, signal.SIGCONT)
    p.communicate(timeout=300)
    assert p.returncode == 0
    trial = json.loads((tmp_path / "ck" / "trial.json").read_text())
    took = [e["epoch_s"] for e in trial["epochs"]]
    assert len(took) == 6 and max(took) < statistics.median(took) + 2.0, took
    t = trial["timings"]
    assert t["total_s"] < sum(took) + t["test_eval_s"] + 4.5, (t, took)  # with the pause it would be >= 6 s over
