"""Trials as Ray tasks, behind the same Executor interface as local workers (sweep/local.py).

Each trial (or pack of trials, trained as one model: fmlab.training.packed) is one Ray task with num_cpus /
num_gpus of its own, streaming its events back as objects:
each epoch's row with the trial's resume state (its files' bytes: training.checkpoint.ResumeState), then the
result with the best weights, or the failure. The sweep process stays the only store writer and keeps
the resume state in the store's folder, as local workers do; nothing is shared on disk. A worker saves
state into a temporary folder of its own machine, and a rerun trial gets the saved state back in its
task, so it resumes after its last finished epoch. Ray's own task retries are off: a task lost with
its worker or node comes back as a "lost" event and the sweep's retry logic (store.release,
MAX_ATTEMPTS) reruns it, exactly as with local workers; a COMPLETE row is never written twice.

`import ray` happens only here, inside RayExecutor, so fmlab works without the extra installed.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from fmlab.errors import FmlabError
from fmlab.sweep.work import FAULT_ENV, Event, Handler, Pack, Task, Work, members, run_work
from fmlab.training.checkpoint import ResumeState

EXTRA = "ray"


def ray_trial(work: Work, states: dict[str, dict[str, bytes]]) -> Iterator[Event]:
    """Runs in a Ray worker: trains a trial (or a pack) in a thread and yields its events as they come;
    each epoch event carries its trial's resume state saved after that epoch in extra["state"].
    states: each trial's saved state by trial id (absent: none)."""
    tmp = Path(tempfile.mkdtemp(prefix="fmlab-trial-"))  # on the worker's own machine
    dirs = {t.trial_id: tmp / t.trial_id for t in members(work)}
    for tid, state in states.items():
        if state:
            ResumeState.replace_files(dirs[tid], state)
    local: Work = (
        replace(work, tasks=tuple(replace(t, state_dir=str(dirs[t.trial_id])) for t in work.tasks))
        if isinstance(work, Pack)
        else replace(work, state_dir=str(dirs[work.trial_id]))
    )
    events: queue.Queue[Event] = queue.Queue()

    def emit(ev: Event) -> None:
        if ev.kind == "epoch":  # train() saved the state before reporting the epoch
            ev.extra["state"] = ResumeState.files_as_bytes(dirs[ev.trial_id])
        events.put(ev)

    open_ = set(dirs)
    t = threading.Thread(target=run_work, args=(local, emit), daemon=True)
    t.start()
    try:
        while open_:
            try:
                ev = events.get(timeout=1.0)
            except queue.Empty:
                if t.is_alive() or not events.empty():
                    continue
                for tid in sorted(open_):
                    yield Event("failed", tid, error="the trial's thread ended without a result")
                return
            yield ev
            if ev.kind in ("done", "failed"):
                open_.discard(ev.trial_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def worker_task(task: Work, gpus_per_trial: float) -> Work:
    """The work as a Ray worker gets it. No store paths: the store's folder means nothing on the worker's
    machine (its resume state travels as bytes). Device auto: a trial given no GPU runs on CPU even on a
    GPU node (Ray may leave the node's GPUs visible); one given a GPU sees that one alone
    (CUDA_VISIBLE_DEVICES), so auto picks it."""
    if isinstance(task, Pack):
        return replace(task, tasks=tuple(worker_task(t, gpus_per_trial) for t in task.tasks))  # type: ignore[misc]
    opts = task.opts
    if opts.device == "auto" and gpus_per_trial <= 0:
        opts = replace(opts, device="cpu")
    return replace(task, state_dir=None, opts=opts)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FmlabError(f"--executor ray needs Ray: pip install 'fmlab[{EXTRA}]' (or 'ray>=2.9')") from None
    return ray


class RayExecutor:
    """Submits trials to a Ray cluster; at most as many at once as the cluster has room for."""

    def __init__(
        self,
        address: str | None = None,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float | None = None,
        device: str = "auto",
    ) -> None:
        ray = self.ray = import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            if not ray.is_initialized():
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, SystemExit) as e:  # Ray exits on a GCS it never reached
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            hint = (
                " (a cluster with token auth also needs RAY_AUTH_MODE=token and its token here)"
                if isinstance(e, ConnectionError | SystemExit) or "auth" in msg.lower()
                else ""
            )
            raise FmlabError(
                f"--executor ray: cannot connect to Ray at {address or 'a new local instance'}: {msg}{hint}"
            ) from None
        res = ray.cluster_resources()
        if gpus_per_trial is None:  # auto: one GPU per trial when the cluster has any and the device allows cuda
            gpus_per_trial = 1.0 if res.get("GPU", 0) > 0 and device in ("auto", "cuda") else 0.0
        if device.startswith("cuda") and (gpus_per_trial <= 0 or res.get("GPU", 0) <= 0):
            raise FmlabError(
                f"--device {device} on Ray needs GPUs: the cluster has {res.get('GPU', 0):g}; "
                f"pass --gpus-per-trial F (F > 0) on a cluster with GPUs, or --device auto|cpu"
            )
        if cpus_per_trial <= 0 or gpus_per_trial < 0:
            raise FmlabError(f"bad --cpus-per-trial {cpus_per_trial:g} / --gpus-per-trial {gpus_per_trial:g}")
        self.cpus, self.gpus = cpus_per_trial, gpus_per_trial
        env = {FAULT_ENV: os.environ[FAULT_ENV]} if os.environ.get(FAULT_ENV) else None  # test-only faults
        self.remote = ray.remote(ray_trial).options(
            num_cpus=cpus_per_trial,
            num_gpus=gpus_per_trial,
            max_retries=0,
            retry_exceptions=False,
            num_returns="streaming",
            **({"runtime_env": {"env_vars": env}} if env else {}),
        )
        self.running: dict[Any, tuple[dict[str, Task], set[str]]] = {}  # event stream -> (its trials, open ones)
        self._slots, self._slots_at = self._count_slots(res), time.monotonic()

    def _count_slots(self, res: dict[str, float]) -> int:
        n = int(res.get("CPU", 0) // self.cpus)
        if self.gpus > 0:
            n = min(n, int(res.get("GPU", 0) // self.gpus))
        return max(n, 1)

    @property
    def slots(self) -> int:
        """Trials the cluster can run at once (nodes come and go: counted again every 10 s)."""
        if time.monotonic() - self._slots_at > 10:
            self._slots, self._slots_at = self._count_slots(self.ray.cluster_resources()), time.monotonic()
        return self._slots

    def free(self) -> int:
        return max(0, self.slots - len(self.running))

    def submit(self, task: Work) -> None:
        """One Ray task per trial, or per pack (trained as one model on one worker)."""
        tasks = {t.trial_id: t for t in members(task)}
        states = {tid: ResumeState.files_as_bytes(t.state_dir) for tid, t in tasks.items()}
        self.running[self.remote.remote(worker_task(task, self.gpus), states)] = (tasks, set(tasks))

    def poll(self, timeout_s: float, handle: Handler) -> None:
        if not self.running:
            time.sleep(timeout_s)
            return
        ray = self.ray
        ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
        if not ready:
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=timeout_s)
        for gen in ready:  # one event each; the sweep polls again at once
            tasks, open_ = self.running[gen]
            evs: list[Event]
            try:
                evs = [ray.get(next(gen))]
            except StopIteration:  # ended without its last events (cannot happen: ray_trial yields them)
                evs = [Event("lost", tid, error="Ray task ended without a result") for tid in sorted(open_)]
            except ray.exceptions.RayTaskError as e:  # raised outside run_task: e.g. fmlab missing on the worker
                cause = e.cause if getattr(e, "cause", None) is not None else e
                evs = [
                    Event("failed", tid, error=f"Ray task failed: {type(cause).__name__}: {cause}", traceback=str(e))
                    for tid in sorted(open_)
                ]
            except ray.exceptions.RayError as e:  # the worker or its node died, the object was lost, ...
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                evs = [
                    Event("lost", tid, error=f"Ray worker lost ({type(e).__name__}: {first[:200]})")
                    for tid in sorted(open_)
                ]
            for ev in evs:
                state = ev.extra.pop("state", None)
                sd = tasks[ev.trial_id].state_dir
                if state and sd:  # the sweep's own folder: a rerun resumes from here
                    ResumeState.replace_files(sd, state)
                if ev.kind != "epoch":
                    open_.discard(ev.trial_id)
                if not open_:
                    self.running.pop(gen, None)
                handle(ev)

    def shutdown(self) -> None:
        ray = self.ray
        for ref in list(self.running):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort: ray.shutdown() ends the job's tasks anyway
                pass
        self.running.clear()
        if ray.is_initialized():
            ray.shutdown()
