"""fmlab watch: a live view of a running tiny sweep, in a real 80x24 terminal (tmux) and in a pipe."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli, start_sweep, tiny_study

TMUX = shutil.which("tmux")


def test_watch_in_an_80x24_tmux_pane(tmp_path):
    if TMUX is None:
        pytest.skip("tmux not installed: scripts/install-deps.sh --test (apt-get install -y tmux)")
    sock = f"fmlab-test-{os.getpid()}"
    tmux = lambda *a: subprocess.run([TMUX, "-L", sock, *a], capture_output=True, text=True, timeout=30)  # noqa: E731
    sweep = start_sweep(tmp_path)
    watch = shlex.join([sys.executable, "-m", "fmlab", "watch", "tiny", "--store", "runs/fmlab.db", "--every", "0.5"])
    screens: list[str] = []
    try:
        r = tmux(
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "80",
            "-y",
            "24",
            "-c",
            str(tmp_path),
            f"{watch}; echo watch exited $?; sleep 600",
        )
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", "w").stdout
            if not screens or screen != screens[-1]:
                screens.append(screen)
            if "watch exited" in screen:
                break
            time.sleep(0.25)
        out, errs = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        tmux("kill-server")
    assert sweep.returncode == 0, errs
    last = screens[-1]
    assert "watch exited 0" in last, last
    assert not any("Traceback" in s for s in screens), next(s for s in screens if "Traceback" in s)
    size = [(len(s.splitlines()), max(map(len, s.splitlines()))) for s in screens if s.strip()]
    assert all(h <= 24 and w <= 80 for h, w in size), size
    for s in screens:  # redrawn in place: one view on the screen, never a scrolled stack of them
        assert s.count("tiny study (t: indicative only)") <= 1, s
    counts = [int(m.group(1)) for s in screens for m in [re.search(r"(\d)/4 COMPLETE", s)] if m]
    assert counts == sorted(counts) and counts[-1] == 4, counts
    assert len(set(counts) - {4}) >= 2, f"the view did not update as trials completed: {counts}"
    running = [s for s in screens if re.search(r"\d/4 COMPLETE, 1 running", s)]
    assert running and "━" in running[-1], running[-1:]
    assert re.search(r"^[0-9a-f]{8} +0\.0[12] +\d/2", running[-1], re.M), running[-1]  # trial, cell, epoch/max
    mid = [s for s in screens if re.search(r"[123]/4 COMPLETE", s) and "ranking so far (" in s]
    assert mid and re.search(r"^1 +0\.0[12] +1 ", mid[0], re.M), mid[:1]  # a cell ranked while trials run
    assert re.search(r"ranking so far \(4 COMPLETE\)", last)
    # rank, cell, n, mean [CI], test acc
    row = r"^([12]) +(0\.0[12]) +2 +(\d\.\d{4}) \[(\d\.\d{4}), (\d\.\d{4})\] +(\d+\.\d\d)$"
    ranked = re.findall(row, last, re.M)
    assert [r[0] for r in ranked] == ["1", "2"], last
    assert "nothing left to run: 4/4 COMPLETE, 0 failed" in last

    # the same numbers as the report: cells, mean and CI from fmlab.analysis.driver via fmlab.api.handles
    from fmlab.api import handles as api
    from fmlab.report.tables import cell_rows

    rows = cell_rows(api.open_store(tmp_path / "runs" / "fmlab.db").study("tiny", "t").analysis())
    assert re.search(r"^# +lr +n +val_loss mean \[95% CI\] +test %$", last, re.M), last  # the header names the factor
    assert [[r[0], r[1], r[3]] for r in rows] == [[r[0], f"lr={r[1]}", f"{r[2]} [{r[3]}, {r[4]}]"] for r in ranked]

    # not a terminal: plain lines, the ranking at the end, exit 0 at once (nothing left to run)
    p = run_cli("watch", "tiny", "--store", "runs/fmlab.db", cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "tiny study (t: indicative only): 4/4 COMPLETE, 0 running, 0 failed, 0 waiting; done" in lines[0]
    assert lines[1].split()[:3] == ["#", "lr", "n"] and len(lines) == 4 and "\x1b" not in p.stdout

    p = run_cli("watch", "nosuch", "--store", "runs/fmlab.db", cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no study 'nosuch'" in p.stderr


def test_watch_plain_lines_while_running_and_ctrl_c_exits_0(tmp_path):
    sweep = start_sweep(tmp_path, hold_s=2.0)
    cmd = [sys.executable, "-m", "fmlab", "watch", "tiny", "--store", "runs/fmlab.db", "--every", "0.3"]
    w = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = w.stdout.readline()
        assert re.search(r"tiny study \(t: indicative only\): 0/4 COMPLETE, \d running, 0 failed, \d waiting", first)
        w.send_signal(signal.SIGINT)
        out, errs = w.communicate(timeout=60)
    finally:
        for p in (w, sweep):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        sweep.communicate(timeout=120)
    assert w.returncode == 0 and "Traceback" not in errs and errs == "", errs


def test_view_of_failures_and_many_running_trials_fits_80x24(tmp_path):
    """No training: trials claimed and failed by hand in a real store, the view rendered at 80x24."""
    import io

    from rich.console import Console

    from fmlab.cli.watch import render
    from fmlab.cli.watch_view import Ranker, look
    from fmlab.store.db import Store
    from fmlab.study import spec as fstudy

    p = tiny_study(tmp_path)
    p.write_text(p.read_text().replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3, 4]"))
    st = fstudy.load(p, "t")
    s = Store(tmp_path / "fm.db")
    s.plan(st, st.trials())
    ids = [s.claim([t.id for t in st.trials()]) for _ in range(9)]
    s.add_epoch(
        ids[0],
        {"epoch": 1, "lr": 0.01, "train_loss": 2.0, "train_acc": 0.3, "val_loss": 1.5, "val_acc": 0.41, "epoch_s": 3.0},
    )
    s.fail(ids[8], "training loss is nan at epoch 2\nsecond line of detail", "Traceback ...")
    waiting = next(t.id for t in st.trials() if t.id not in ids)
    s.add_epoch(  # cut off after its first epoch in an earlier sweep: it resumes at its second
        waiting,
        {"epoch": 1, "lr": 0.01, "train_loss": 2.0, "train_acc": 0.3, "val_loss": 1.5, "val_acc": 0.4, "epoch_s": 3.0},
    )
    ro = Store(tmp_path / "fm.db", read_only=True)
    v = look(ro, "tiny", "t", Ranker())
    assert (v.planned, v.done, v.failed, v.waiting, len(v.running)) == (10, 0, 1, 1, 8)
    assert v.eta_s == pytest.approx((1 + 1 + 7 * 2) * 3.0 / 8)  # epochs left x the median epoch over 8 at once
    assert v.failures[0]["error"] == "training loss is nan at epoch 2"
    con = Console(file=io.StringIO(), width=80, height=24, force_terminal=False, color_system=None)
    con.print(render(v, 24, ro.path, 2.0))
    lines = con.file.getvalue().rstrip("\n").splitlines()
    assert len(lines) <= 23 and max(map(len, lines)) <= 80, lines  # one line left for the exit message
    text = "\n".join(lines)
    assert "... 2 more" in text and "training loss is nan at epoch 2" in text and "second line" not in text
    assert re.search(rf"^{ids[0][:8]} +0\.01 +1/2 +1\.5000", text, re.M), text  # its latest epoch row
    assert "no COMPLETE trial yet" in text
    ro.close()
    s.close()


def test_a_plain_sweep_log_shows_trials_and_now_and_then_an_epoch(tmp_path, capsys):
    """Without a terminal the sweep prints a line per finished trial and, after EPOCH_LINE_S without a line, one
    for the next finished epoch: a log of hour-long trials moves, a quick study stays one line per trial. The
    snapshots come from a real tiny sweep (2 epochs x 4 trials), the clock is the test's."""
    from fmlab.api import handles as api
    from fmlab.cli import progress

    snaps = []
    api.run_study(
        tiny_study(tmp_path),
        "t",
        store=tmp_path / "fm.db",
        workers=0,
        threads=1,
        on_update=lambda p: snaps.append((p.events, p.epochs, p.last)),
    )
    assert [e for e, _, _ in snaps][-1] == 4 and snaps[-1][1] == 8  # 4 trials, 2 epochs each
    epoch_lines = [last for _, _, last in snaps if " epoch " in last]
    assert len(epoch_lines) == 8 and all(
        re.search(r"epoch [12]/2: val loss [0-9.]+ acc [0-9.]+", x) for x in epoch_lines
    )

    class Snap:
        def __init__(self, events, epochs, last):
            self.events, self.epochs, self.last = events, epochs, last
            self.done, self.total, self.running, self.elsewhere, self.failed = events, 4, {}, 0, 0
            self.started = time.time()

        def eta_s(self):
            return 0.0

    now = [0.0]
    disp = progress.SweepDisplay("tiny", live=False, clock=lambda: now[0])
    for i, (events, epochs, last) in enumerate(snaps):
        now[0] = i * progress.EPOCH_LINE_S / 2  # half the interval between snapshots (3 a trial: 2 epochs, its end)
        disp.update(Snap(events, epochs, last))
    lines = capsys.readouterr().err.splitlines()
    assert sum(" COMPLETE: " in x for x in lines) == 4  # every finished trial
    shown = [x for x in lines if " epoch " in x]
    assert 0 < len(shown) < 8  # some epochs, not all: only after EPOCH_LINE_S without a line
    quick = progress.SweepDisplay("tiny", live=False, clock=lambda: 0.0)  # a clock that never moves: no epoch line
    for s in snaps:
        quick.update(Snap(*s))
    assert [x for x in capsys.readouterr().err.splitlines() if " epoch " in x] == []
