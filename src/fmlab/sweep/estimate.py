"""A sweep's time estimate: an upper bound of its wall time from each trial's size (forward FLOPs, images,
epochs), a reference speed calibrated on the store's COMPLETE trials from a machine like this one or, with none,
on a probe of a few training steps here (fmlab.training.probe; BENCHMARKS.md, "Studies" and "Any CPU")."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fmlab.config.schema import ModelConfig, from_dict
from fmlab.store.db import State
from fmlab.sweep.layout import SweepLayout, check_device
from fmlab.training.probe import bf16_step_ratio, train_ips

if TYPE_CHECKING:
    from fmlab.store.db import Store
    from fmlab.study.spec import Trial

REF_IMAGES_PER_S = 700.0  # seed net (64,128,256), one thread, fp32, this 2-core box, measured before the trainer work
REF_MODEL = ModelConfig()  # the seed net (64, 128, 256) that REF_IMAGES_PER_S was measured on

Machine = tuple[str, "bool | None"]  # (device_name: CPU model or GPU name, native bf16 on that CPU)


@dataclass(frozen=True)
class Estimate:
    """A plan's estimate: seconds (upper bound), where its speed came from, and a line to say first (None:
    nothing to say; else bf16 is emulated here and what that costs)."""

    seconds: float
    speed_from: str  # "this machine" (its trials), "probed here" (fmlab.training.probe), "other machines" or "assumed"
    note: str | None
    precision: str | None = None  # what train.precision = "auto" picks here and why; None: no trial asks auto
    auto: str = ""  # that pick, which the local workers then train auto's trials in ("": none, or Ray's own)


@functools.lru_cache(maxsize=256)
def _flops(m: ModelConfig) -> float:
    """Forward FLOPs per image of the conv and linear layers of m's network (any arch)."""
    from fmlab.model.nets import build, forward_flops

    return float(forward_flops(build(m))["total"])


def _reference_ips(m: ModelConfig, threads: int) -> float:
    """The assumed training speed (images/s) of m's network on `threads` threads: the reference speed scaled
    by forward FLOPs."""
    return REF_IMAGES_PER_S * _flops(REF_MODEL) / _flops(m) * threads**0.75


def estimate_s(
    trials: list[Any], workers: int, threads: int, calib: float = 1.0, bf16_slow: float = 1.0, auto: str = "fp32"
) -> float:
    """Upper bound (every trial runs to max_epochs) of a sweep's wall time; calib = measured / assumed speed,
    bf16_slow = how many times slower a bf16 trial trains here (bf16_step_ratio where bf16 is emulated),
    auto = the precision train.precision = "auto" trains in here."""
    ref = _flops(REF_MODEL)
    total = 0.0
    for t in trials:
        c = t.config
        ips = REF_IMAGES_PER_S * calib * ref / _flops(c.model) * threads**0.75
        n = c.data.train_subset or 60_000 - c.data.val_size
        trial_s = c.train.max_epochs * (n + c.data.val_size / 3) / ips + (c.data.test_subset or 10_000) / 3 / ips + 3.0
        total += trial_s * (bf16_slow if _picked(c.train.precision, auto) == "bf16" else 1.0)
    return total / max(workers, 1)


def _picked(asked: str, auto: str) -> str:
    return auto if asked == "auto" else asked


def like_machine(env: dict[str, Any], machine: Machine) -> bool:
    """Whether a trial's provenance says it ran on a machine like this one: the same device_name and, on a
    CPU, the same native bf16 (two CPUs of one model name may differ there, and bf16 then runs 25x apart:
    BENCHMARKS.md); a trial that did not record it (older) is not like a machine that knows."""
    name, bf16 = machine
    if env.get("device_name") != name:
        return False
    return str(env.get("device", "")).startswith("cuda") or env.get("cpu_bf16") == bf16


def calibration(
    store: Store, threads: int, machine: Machine | None = None, precision: str | None = None
) -> tuple[float, str]:
    """Measured / assumed training speed of COMPLETE trials in the store (those that trained in `precision`,
    when given), and where it comes from: "this machine" (trials from a machine like this one, like_machine:
    only theirs count, since a store imported from another box says little about this one's speed), "other
    machines" (none like it) or "assumed" (1.0: no COMPLETE trial with a speed). Each trial is set against
    the assumed speed at the threads it ran on (its provenance; `threads` for one that did not record them),
    so trials of 2 threads do not make a sweep of 1-thread workers look as fast per worker."""
    recs = store.records(states=[State.COMPLETE])
    recs = [r for r in recs if precision is None or r["precision"] == precision]
    ran_on = store.envs([State.COMPLETE])
    same = [r for r in recs if machine and like_machine(ran_on.get(r["id"], {}), machine)]
    ratios = []
    for r in (same or recs)[-50:]:
        ips = r["timings"].get("train_images_per_s")
        if ips:
            ran_threads = ran_on.get(r["id"], {}).get("threads") or threads
            ratios.append(ips / _reference_ips(from_dict(r["config"]).model, ran_threads))
    if not ratios:
        return 1.0, "assumed"
    return sorted(ratios)[len(ratios) // 2], "this machine" if same else "other machines"


def probed_calibration(todo: list[Trial], threads: int, precision: str) -> float:
    """Measured / assumed training speed of the plan's most common network at its most common batch size,
    probed here in a few steps (fmlab.training.probe); the estimate scales the other networks by FLOPs."""
    from collections import Counter

    model = Counter(t.config.model for t in todo).most_common(1)[0][0]
    batch = Counter(t.config.train.batch_size for t in todo).most_common(1)[0][0]
    return train_ips(model, threads, precision, batch) / _reference_ips(model, threads)


def this_machine(device: str) -> Machine:
    """This machine as trials record it: the device's name and the CPU's native bf16."""
    import torch

    from fmlab.training.env import cpu_bf16, device_name

    return device_name(torch.device(check_device(device))), cpu_bf16()


def plan_estimate(store: Store | None, todo: list[Trial], layout: SweepLayout, device: str) -> Estimate:
    """The estimate of running todo with this layout: a local sweep calibrates on the store's trials from a
    machine like this one that trained in the precision todo trains in here, else, on a CPU, on a probe of a few
    training steps here (fmlab.training.probe); a Ray cluster's CPUs are not known from here, and there auto is
    taken as fp32. A local sweep's auto is decided here, once (env.pick_precision), for all its trials."""
    import torch

    from fmlab.training.env import pick_precision, precision_note

    local = layout.executor == "local"
    machine = this_machine(device) if local else None
    dev = check_device(device).split(":")[0] if local else "ray"
    asks_auto = any(t.config.train.precision == "auto" for t in todo)
    auto, why = ("fp32", "no trial asks for auto") if not asks_auto else ("fp32", "each Ray worker picks its own")
    if asks_auto and local:  # decided once, here, for every trial (a probe of seconds where bf16 is native)
        auto, why = pick_precision("auto", torch.device(dev), threads=layout.threads)
    precisions = {_picked(t.config.train.precision, auto) for t in todo}
    one = next(iter(precisions)) if len(precisions) == 1 else None
    calib, speed_from = calibration(store, layout.threads, machine, one) if store else (1.0, "assumed")
    if dev == "cpu" and speed_from != "this machine" and todo:  # no trial says how fast this CPU is: measure
        calib, speed_from = probed_calibration(todo, layout.threads, one or "fp32"), "probed here"
    note = precision_note(dev, precisions)
    slow = 1.0
    if note and speed_from != "this machine":
        slow = bf16_step_ratio(layout.threads)
        note = precision_note(dev, precisions, slow)
        if one == "bf16" and speed_from == "probed here":
            slow = 1.0  # the probe trained in this CPU's (emulated) bf16 already
    seconds = estimate_s(todo, layout.workers, layout.threads, calib, bf16_slow=slow, auto=auto)
    line = f"precision: auto -> {auto} here ({why})" if asks_auto else None
    return Estimate(seconds, speed_from, note, line, auto if asks_auto and local else "")
