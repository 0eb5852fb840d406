"""A normal (non-editable) install works: the wheel holds every module bench-train needs, and the commands
run from a folder outside the repository with only the wheel's copy of fmlab on the path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


def build_wheel(tmp: Path) -> Path:
    """The wheel of the working tree, built from a copy (an in-tree build would leave build/ and egg-info)."""
    src = tmp / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # offline CI: build with this interpreter's setuptools when it has one (an isolated build downloads it)
    has_setuptools = subprocess.run([sys.executable, "-c", "import setuptools"], capture_output=True).returncode == 0
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *(["--no-build-isolation"] if has_setuptools else []),
            "--disable-pip-version-check",
            "-q",
            str(src),
            "-w",
            str(tmp / "wheels"),
        ],
        cwd=tmp,
    )
    (wheel,) = (tmp / "wheels").glob("fmlab-*.whl")
    return wheel


def test_wheel_install_runs_bench_train_outside_the_repository(tmp_path):
    wheel = build_wheel(tmp_path)
    target = tmp_path / "site"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        cwd=tmp_path,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert REPO not in work.resolve().parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(target)  # the wheel's copy first; the editable install (if any) comes after

    where = run(
        [
            sys.executable,
            "-c",
            "import fmlab, fmlab.timing.baseline_loop as c, fmlab.cli as cli; "
            "print(fmlab.__file__); print(c.__file__); print(cli.__file__)",
        ],
        cwd=work,
        env=env,
    )
    for f in where.stdout.split():
        assert Path(f).resolve().is_relative_to(target.resolve()), f"{f} is not the wheel's copy under {target}"
    script = target / "bin" / "fmlab"  # the console entry point, fmlab.cli:main
    if script.exists():
        version = run([str(script), "--version"], cwd=work, env=env).stdout.split()
        assert version == ["fmlab", wheel.name.split("-")[1]]  # pyproject reads fmlab.version

    p = run(
        [
            sys.executable,
            "-m",
            "fmlab",
            "bench-train",
            "--train-subset",
            "500",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--threads",
            "1",
            "--set",
            "model.widths=8,16,16",
            "--set",
            "data.val_size=300",
            "--peak-sizes",
            "128",
            "--peak-repeats",
            "2",
        ],
        cwd=work,
        env=env,
    )
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert [r["side"] for r in rep["runs"]] == ["conventional", "fmlab"]
    for side in ("conventional", "fmlab"):
        assert rep[side]["train_images_per_s"] > 0 and 0 <= rep[side]["test_acc"]["mean"] <= 1, side
    assert all(r["epochs"] == 1 for r in rep["runs"]) and rep["speedup"] > 0
