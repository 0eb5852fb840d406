"""Trials as Ray tasks, behind the same Executor interface as local workers (executors.py).

Each trial is one Ray task with num_cpus / num_gpus of its own. The worker trains from its own
machine's dataset and returns every event of the trial (epoch rows, then the result with the best
weights, or the failure) in one object; the sweep process stays the only store writer. Nothing is
shared on disk, so no per-epoch resume state either: a trial cut off on Ray restarts from its first
epoch. Ray's own task retries are off: a task lost with its worker or node comes back as a "lost"
event and the sweep's retry logic (store.release, MAX_ATTEMPTS) reruns it, exactly as with local
workers, and a store row written COMPLETE is never written again (store.complete checks ownership).

`import ray` happens only here, inside RayExecutor, so fmlab works without the extra installed.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from .errors import FmlabError
from .executors import FAULT_ENV, Event, Handler, Task, run_task

EXTRA = "ray"


def ray_trial(task: Task) -> list[Event]:
    """Runs in a Ray worker: the trial's events, in order, for the driver to replay."""
    events: list[Event] = []
    run_task(task, events.append)
    return events


def worker_task(task: Task, gpus_per_trial: float) -> Task:
    """The task as a Ray worker gets it. No resume-state folder: the store's folder means nothing on the
    worker's machine. Device auto: a trial given no GPU runs on CPU even on a GPU node (Ray may leave the
    node's GPUs visible); one given a GPU sees that one alone (CUDA_VISIBLE_DEVICES), so auto picks it."""
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

    def __init__(self, address: str | None = None, cpus_per_trial: float = 1.0, gpus_per_trial: float | None = None,
                 device: str = "auto") -> None:  # fmt: skip
        ray = self.ray = import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            if not ray.is_initialized():
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, SystemExit) as e:  # Ray exits on a GCS it never reached
            raise FmlabError(f"--executor ray: cannot connect to Ray at {address or 'a new local instance'}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__} (a cluster with token "
                             "auth also needs RAY_AUTH_MODE=token and its token here)") from None  # fmt: skip
        res = ray.cluster_resources()
        if gpus_per_trial is None:  # auto: one GPU per trial when the cluster has any and the device allows cuda
            gpus_per_trial = 1.0 if res.get("GPU", 0) > 0 and device in ("auto", "cuda") else 0.0
        if device.startswith("cuda") and (gpus_per_trial <= 0 or res.get("GPU", 0) <= 0):
            raise FmlabError(f"--device {device} on Ray needs GPUs: the cluster has {res.get('GPU', 0):g}; "
                             f"pass --gpus-per-trial F (F > 0) on a cluster with GPUs, or --device auto|cpu")
        if cpus_per_trial <= 0 or gpus_per_trial < 0:
            raise FmlabError(f"bad --cpus-per-trial {cpus_per_trial:g} / --gpus-per-trial {gpus_per_trial:g}")
        self.cpus, self.gpus = cpus_per_trial, gpus_per_trial
        env = {FAULT_ENV: os.environ[FAULT_ENV]} if os.environ.get(FAULT_ENV) else None  # test-only faults
        self.remote = ray.remote(ray_trial).options(
            num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_retries=0, retry_exceptions=False,
            **({"runtime_env": {"env_vars": env}} if env else {}))  # fmt: skip
        self.running: dict[Any, Task] = {}  # ObjectRef -> task
        self._slots_at = 0.0
        self._slots = self._count_slots(res)

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

    def submit(self, task: Task) -> None:
        task = worker_task(task, self.gpus)
        self.running[self.remote.remote(task)] = task

    def poll(self, timeout_s: float, handle: Handler) -> None:
        if not self.running:
            time.sleep(timeout_s)
            return
        ray = self.ray
        refs = list(self.running)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            task = self.running.pop(ref)
            try:
                events = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # raised outside run_task: e.g. fmlab missing on the worker
                cause = e.cause if getattr(e, "cause", None) is not None else e
                handle(Event("failed", task.trial_id, error=f"Ray task failed: {type(cause).__name__}: {cause}",
                             traceback=str(e)))  # fmt: skip
                continue
            except ray.exceptions.RayError as e:  # the worker or its node died, the object was lost, ...
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                handle(Event("lost", task.trial_id, error=f"Ray worker lost ({type(e).__name__}: {first[:200]})"))
                continue
            for ev in events:
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
