"""Run a study: plan it in the store, claim trials one at a time, hand them to an executor, write
what comes back. The parent is the only writer; a heartbeat thread keeps its RUNNING rows alive.

Ctrl-C (or SIGTERM) kills the workers and gives their trials back (WAITING, resume state kept);
a killed worker's trial is retried from its last saved epoch (up to MAX_ATTEMPTS, then FAILED); on Ray
too: the state comes back with each epoch's row (rayexec.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fmlab.config.schema import ModelConfig, from_dict
from fmlab.store.db import HEARTBEAT_S, Plan, State, Store
from fmlab.study.spec import Study
from fmlab.sweep import local as executors
from fmlab.training import packs
from fmlab.training.env import RunOptions

MAX_ATTEMPTS = 3
REF_IMAGES_PER_S = 700.0  # seed net (64,128,256), one thread, fp32, this 2-core box, measured before the trainer work
REF_MODEL = ModelConfig()  # the seed net (64, 128, 256) that REF_IMAGES_PER_S was measured on


@dataclass
class Progress:
    """A snapshot for the display; times in seconds."""

    total: int
    done: int = 0  # COMPLETE, whoever ran it
    failed: int = 0
    ran: int = 0  # completed by this sweep
    failed_here: int = 0
    running: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {started, epoch, max_epochs}
    elsewhere: int = 0  # RUNNING in another sweep
    trial_s: list[float] = field(default_factory=list)  # wall time of trials finished here
    started: float = field(default_factory=time.time)
    estimate_s: float = 0.0  # the plan's estimate, used until trials finish
    slots: int = 1
    last: str = ""  # one line about the latest event
    events: int = 0  # trials finished, failed or lost so far (the plain display prints one line each)
    epochs: int = 0  # epochs finished so far (the plain display prints one now and then)

    def eta_s(self) -> float:
        left = self.total - self.done - self.failed
        if self.trial_s:
            return sum(self.trial_s) / len(self.trial_s) * left / self.slots
        return self.estimate_s * left / max(self.total, 1)


@functools.lru_cache(maxsize=256)
def _flops(m: ModelConfig) -> float:
    """Forward FLOPs per image of the conv and linear layers of m's network (any arch)."""
    from fmlab.model.nets import build, forward_flops

    return float(forward_flops(build(m))["total"])


def estimate_s(trials: list[Any], workers: int, threads: int, calib: float = 1.0, bf16_slow: float = 1.0) -> float:
    """Upper bound (every trial runs to max_epochs) of a sweep's wall time; calib = measured / assumed speed,
    bf16_slow = how many times slower a bf16 trial trains here (bf16_step_ratio where bf16 is emulated)."""
    ref = _flops(REF_MODEL)
    total = 0.0
    for t in trials:
        c = t.config
        ips = REF_IMAGES_PER_S * calib * ref / _flops(c.model) * threads**0.75
        n = c.data.train_subset or 60_000 - c.data.val_size
        trial_s = c.train.max_epochs * (n + c.data.val_size / 3) / ips + 10_000 / 3 / ips + 3.0
        total += trial_s * (bf16_slow if c.train.precision == "bf16" else 1.0)
    return total / max(workers, 1)


Machine = tuple[str, "bool | None"]  # (device_name: CPU model or GPU name, native bf16 on that CPU)


def like_machine(env: dict[str, Any], machine: Machine) -> bool:
    """Whether a trial's provenance says it ran on a machine like this one: the same device_name and, on a
    CPU, the same native bf16 (two CPUs of one model name may differ there, and bf16 then runs 25x apart:
    BENCHMARKS.md); a trial that did not record it (older) is not like a machine that knows."""
    name, bf16 = machine
    if env.get("device_name") != name:
        return False
    return str(env.get("device", "")).startswith("cuda") or env.get("cpu_bf16") == bf16


def calibration(store: Store, threads: int, machine: Machine | None = None) -> tuple[float, str]:
    """Measured / assumed training speed of COMPLETE trials in the store, and where it comes from:
    "this machine" (trials from a machine like this one, fmlab.sweep.loop.like_machine: only theirs count, since
    a store imported from another box says little about this one's speed), "other machines" (none like it)
    or "assumed" (1.0: no COMPLETE trial with a speed)."""
    ratios = []
    ref = _flops(REF_MODEL)
    recs = store.records(states=[State.COMPLETE])
    ran_on = {i: json.loads(e or "{}") for i, e in store.db.execute(
        "SELECT id, env FROM trials WHERE state = ?", (State.COMPLETE.value,))}  # fmt: skip
    same = [r for r in recs if machine and like_machine(ran_on.get(r["id"], {}), machine)]
    for r in (same or recs)[-50:]:
        ips = r["timings"].get("train_images_per_s")
        if ips:
            m = from_dict(r["config"]).model
            ratios.append(ips / (REF_IMAGES_PER_S * ref / _flops(m) * threads**0.75))
    if not ratios:
        return 1.0, "assumed"
    return sorted(ratios)[len(ratios) // 2], "this machine" if same else "other machines"


@functools.cache
def bf16_step_ratio(threads: int, batch: int = 64, rounds: int = 3) -> float:
    """The wall time of one training step of the seed net in bf16 autocast over fp32's on this CPU (channels_last,
    as train() runs it), alternating the two for `rounds` rounds after one warm-up each: the median ratio. A
    probe of a few seconds that the sweep's estimate uses when bf16 is emulated here (BENCHMARKS.md)."""
    import torch

    from fmlab.model.nets import build

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net = build(REF_MODEL).to(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,), generator=g)

        def step(bf16: bool) -> float:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.nll_loss(net(x).float(), y)
            net.zero_grad(set_to_none=True)
            loss.backward()
            return time.perf_counter() - t0

        for warm in (False, True):
            step(warm)
        ratios = sorted(step(True) / step(False) for _ in range(rounds))
        return ratios[len(ratios) // 2]
    finally:
        torch.set_num_threads(old)


class _Heartbeat(threading.Thread):
    def __init__(self, path: Any) -> None:
        super().__init__(daemon=True, name="fmlab-heartbeat")
        self.path, self.stop = path, threading.Event()

    def run(self) -> None:
        store = Store(self.path)
        try:
            while not self.stop.wait(HEARTBEAT_S):
                try:
                    store.heartbeat()
                except sqlite3.Error:  # busy for a minute: try again next beat
                    pass
        finally:
            store.close()


def pack_id(ids: list[str]) -> str:
    """A pack's id: its trials' ids, hashed (packing is an execution choice: trial ids never change)."""
    return hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:12]


def run(store: Store, study: Study, plan: Plan, *, workers: int, opts: RunOptions,
        on_update: Callable[[Progress], None] = lambda p: None, estimate: float = 0.0,
        executor: executors.Executor | None = None, board: Any = None,
        pack: int | None = None) -> Progress:  # fmt: skip
    """Run the plan's WAITING trials (and any that become WAITING) on executor (default: `workers`
    local processes, 0 = inline); returns the final progress. The executor is shut down at the end.
    board (a tboard.Board, optional) is handed each recorded epoch and result, after the store.
    pack: None runs every trial on its own; 0 trains each pack (fmlab.training.packs) as one model, K caps a
    pack at K trials. A pack takes one executor slot; its trials are claimed together."""
    trials = {t.id: t for t in study.trials()}
    ids = plan.ids
    groups = None if pack is None else [[t.id for t in g] for g in packs.group([trials[i] for i in ids], pack)]

    def claim() -> list[str]:
        if groups is None:
            tid = store.claim(ids)
            return [tid] if tid else []
        for g in groups:
            got = store.claim_all(g)
            if got:
                return got
        return []

    ex = executor or executors.make(workers)
    prog = Progress(total=len(ids), done=len(plan.done), failed=len(plan.failed), estimate_s=estimate,
                    slots=max(ex.slots, 1))  # fmt: skip
    hb = _Heartbeat(store.path)
    hb.start()
    mine: dict[str, float] = {}  # id -> claimed at

    def handle(ev: executors.Event) -> None:
        tid = ev.trial_id
        if ev.kind == "epoch":
            store.add_epoch(tid, ev.row)
            prog.running[tid]["epoch"] = int(ev.row["epoch"])
            prog.epochs += 1
            r = ev.row
            took = f" ({r['epoch_s']:.0f}s)" if r.get("epoch_s") else ""
            prog.last = (f"{tid} epoch {int(r['epoch'])}/{prog.running[tid]['max_epochs']}: val loss "
                         f"{r['val_loss']:.4f} acc {r['val_acc']:.4f}{took}")  # fmt: skip
        elif ev.kind == "done":
            from fmlab.training.checkpoint import save_trial  # files first (the sweep's), then the row (the store's)

            store.complete(tid, ev.result, ev.log, save_trial(ev.result, store.trial_dir(tid)))
            prog.done += 1
            prog.ran += 1
            prog.trial_s.append(time.time() - mine.pop(tid))
            m = ev.result.metrics
            prog.last = f"{tid} COMPLETE: val acc {m['val_acc']:.4f} loss {m['val_loss']:.4f} ({ev.result.stop_reason})"
        elif ev.kind == "failed":
            store.fail(tid, ev.error or "failed", ev.traceback or "", ev.log)
            prog.failed += 1
            prog.failed_here += 1
            mine.pop(tid, None)
            prog.last = f"{tid} FAILED: {ev.error}"
        elif ev.kind == "lost":
            attempts = store.records(ids=[tid])[0]["attempts"]
            mine.pop(tid, None)
            if attempts >= MAX_ATTEMPTS:
                store.fail(tid, f"{ev.error}; gave up after {attempts} attempts", "", "")
                prog.failed += 1
                prog.failed_here += 1
            else:
                store.release([tid], error=f"{ev.error}; retrying (from its last saved epoch, if any)")
            prog.last = f"{tid}: {ev.error}"
        if board is not None:
            board.record(ev)
        if ev.kind != "epoch":
            prog.running.pop(tid, None)
            prog.events += 1
        on_update(prog)

    try:
        while True:
            while ex.free() > 0:
                got = claim()
                if not got:
                    break
                tasks = []
                for tid in got:
                    t = trials[tid]
                    mine[tid] = time.time()
                    prog.running[tid] = {"started": mine[tid], "epoch": 0, "max_epochs": t.config.train.max_epochs}
                    tasks.append(executors.Task(tid, t.config.to_dict(), str(store.state_dir(tid)), opts))
                ex.submit(tasks[0] if len(tasks) == 1 else executors.Pack(pack_id(got), tuple(tasks)))
                on_update(prog)
            if not mine:
                states = store.states(ids)
                prog.done = sum(s == State.COMPLETE.value for s in states.values())
                prog.failed = sum(s == State.FAILED.value for s in states.values())
                prog.elsewhere = sum(s == State.RUNNING.value for s in states.values())
                if not prog.elsewhere and not any(s == State.WAITING.value for s in states.values()):
                    break
                if prog.elsewhere:  # another sweep runs them: wait, and take them over if it dies
                    store.recover_stale(ids)
                    on_update(prog)
                    time.sleep(1.0)
                continue
            ex.poll(1.0, handle)
    except BaseException:
        ex.shutdown()
        store.release(list(mine), error="interrupted; will resume from the last saved epoch")
        mine.clear()
        raise
    finally:
        ex.shutdown()
        hb.stop.set()
        hb.join(timeout=HEARTBEAT_S + 1)
    return prog
