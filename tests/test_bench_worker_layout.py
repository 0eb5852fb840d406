"""scripts/bench_worker_layout.py, run as a user runs it: each layout's processes really train side by side,
a row per layout (in each precision asked), the one-process layout the reference; an unknown arm is a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = """name = "layout"
[base]
"model.widths" = [8, 16]
"train.batch_size" = 16
[arms.wider]
"model.widths" = [16, 16]
"""


def bench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_worker_layout.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_each_layout_trains_in_its_processes_and_the_one_process_layout_is_the_reference(tmp_path):
    f = tmp_path / "layout.toml"
    f.write_text(STUDY)
    p = bench(str(f), "--arm", "wider", "--seconds", "0.5", "--rounds", "1")
    assert p.returncode == 0, p.stderr
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in p.stdout.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [("fp32", "1 x 2 threads"), ("fp32", "2 x 1 thread")]  # the arm's
    ips_one, ips_two = (float(r[2].split()[0].replace(",", "")) for r in rows)
    assert rows[0][3] == "1.00x" and ips_one > 0 and abs(ips_two / ips_one / float(rows[1][3][:-1]) - 1) < 0.02


def test_an_unknown_arm_is_one_line(tmp_path):
    f = tmp_path / "layout.toml"
    f.write_text(STUDY)
    p = bench(str(f), "--arm", "nope")
    assert p.returncode == 2 and p.stderr.strip() == f"bench_worker_layout: {f}: no arm 'nope' in budget full"


def test_layouts_asked_run_each_the_first_the_reference_and_a_bad_one_is_one_line(tmp_path):
    f = tmp_path / "layout.toml"
    f.write_text(STUDY)
    p = bench(str(f), "--seconds", "0.3", "--rounds", "1", "--layouts", "2x1", "3x1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].endswith("| vs 2 x 1 thread |")
    rows = [[c.strip() for c in r.split("|")[1:-1]] for r in lines[2:]]
    assert [r[1] for r in rows] == ["2 x 1 thread", "3 x 1 thread"] and rows[0][3] == "1.00x"
    p = bench(str(f), "--layouts", "3y1")
    assert p.returncode == 2 and "'3y1': a layout is WORKERSxTHREADS, e.g. 2x1" in p.stderr
