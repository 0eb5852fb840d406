"""Where a sweep's trials run (SweepLayout): local processes or Ray, threads each, packs; and the checks done
before a sweep touches the store (the device this machine has, the dataset)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sweep_slots(workers: int | None = None, threads: int = 0) -> tuple[int, int]:
    """(worker processes, threads each): by default one single-thread worker per core (BENCHMARKS.md
    "Studies": that beats one multi-thread worker); workers 0 runs inline."""
    from fmlab.errors import FmlabError
    from fmlab.training.env import cores

    workers = cores() if workers is None else workers
    if workers < 0:
        raise FmlabError(f"bad --workers {workers}; use 0 (inline) or a count of processes")
    return workers, threads or max(1, cores() // max(workers, 1))


def check_device(device: str = "auto") -> str:
    """A device this machine lacks (cuda on a CPU-only box) is one clear error before anything runs;
    returns the device it resolves to ("auto" -> "cuda" or "cpu")."""
    from fmlab.training.env import check_device as check

    return str(check(device))


def check_dataset(data_dir: str | Path | None = None) -> None:
    """A missing dataset is one clear error before a sweep, not a study of FAILED trials."""
    from fmlab.data import idx as data

    for name in data.FILES:
        data.find_file(name, data_dir)


@dataclass(frozen=True)
class SweepLayout:
    """Where a sweep's trials run. executor: "local" or "ray"; workers: local processes (0 = inline) or
    Ray trials at once (1 until the cluster is asked); threads: intra-op threads per trial; where: one line."""

    executor: str
    workers: int
    threads: int
    where: str
    pack: int | None = None  # None: every trial alone; 0: each pack as one model; K: packs of at most K


def layout_for(
    executor: str,
    workers: int | None,
    threads: int,
    address: str | None,
    cpus_per_trial: float,
    ray: Any = None,
    pack: str | int = "off",
    device: str = "auto",
    gpus_per_trial: float | None = None,
) -> SweepLayout:
    """ray: a connected fmlab.sweep.ray.RayExecutor (its slots and GPUs); None: the layout before Ray is asked.
    pack: --pack, resolved for the device the trials get (fmlab.training.packs.resolve)."""
    from fmlab.errors import FmlabError
    from fmlab.training import packs

    if executor == "local":
        workers, threads = sweep_slots(workers, threads)
        k = packs.resolve(pack, check_device(device).split(":")[0])
        where = "inline (this process)" if workers == 0 else f"{workers} worker process(es)"
        return SweepLayout("local", workers, threads, where + _pack_words(k), k)
    if executor != "ray":
        raise FmlabError(f"bad executor {executor!r}; use local or ray")
    gpus = ray.gpus if ray is not None else (gpus_per_trial or 0.0)
    k = packs.resolve(pack, "cuda" if gpus > 0 else "cpu")
    where = f"Ray ({address or 'local instance'}), {cpus_per_trial:g} CPU(s) per trial"
    if ray is not None:
        where += f", {ray.gpus:g} GPU(s) per trial; {ray.slots} at once"
    return SweepLayout(
        "ray", ray.slots if ray is not None else 1, threads or max(1, int(cpus_per_trial)), where + _pack_words(k), k
    )


def _pack_words(k: int | None) -> str:
    return "" if k is None else ", each pack trained as one model" + (f" (at most {k} trials)" if k else "")
