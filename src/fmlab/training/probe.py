"""How fast a network trains on this CPU, measured in seconds: a few training steps of it (forward, loss,
backward, SGD step; channels_last and the precision's autocast, as train() runs them). The sweep's estimate
scales each trial by train_ips when no trial of its store ran on a machine like this one
(fmlab.sweep.estimate), so a first sweep on a new CPU is not estimated at another CPU's speed; bf16_step_ratio
says whether bf16 pays here, which train.precision = "auto" asks (fmlab.training.env.pick_precision): on a
CPU with avx512_bf16 but no AMX a bf16 step can be slower than fp32's (BENCHMARKS.md, "Any CPU")."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from fmlab.config.schema import ModelConfig

STEPS = 4  # timed steps after one warm-up step; the fastest counts (a noisy shared box only adds time)
BUDGET_S = 3.0  # stop timing a network once this much has gone (a big net on a slow CPU: fewer steps)


def training_step(m: ModelConfig, precision: str, batch: int = 64) -> Callable[[], None]:
    """One training step of m's network on a fixed random batch (forward, loss, backward, SGD step;
    channels_last and the precision's autocast, as train() runs them), as a callable."""
    import torch

    from fmlab.model.nets import build

    if precision not in ("fp32", "bf16"):  # "auto" is resolved first (env.pick_precision), never taken as fp32
        raise ValueError(f"training_step: precision {precision!r} is not fp32 or bf16; resolve 'auto' first")
    torch.manual_seed(0)
    net = build(m).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    bf16 = precision == "bf16"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


@functools.cache
def train_ips(m: ModelConfig, threads: int, precision: str, batch: int = 64) -> float:
    """Training images per second of m's network here: batch / the fastest of a few timed steps."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = training_step(m, precision, batch)

        def step() -> float:
            t0 = time.perf_counter()
            run()
            return time.perf_counter() - t0

        t_end = time.perf_counter() + BUDGET_S
        step()  # warm-up: oneDNN picks and caches its kernels
        times = [step()]
        while len(times) < STEPS and time.perf_counter() < t_end:
            times.append(step())
        return batch / min(times)
    finally:
        torch.set_num_threads(old)


@functools.cache
def bf16_step_ratio(threads: int, batch: int = 64, rounds: int = 3) -> float:
    """The wall time of one training step of the seed net in bf16 autocast over fp32's on this CPU (channels_last,
    as train() runs it), alternating the two for `rounds` rounds after one warm-up each: the median ratio."""
    import torch

    from fmlab.model.nets import build

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = build(ModelConfig()).to(memory_format=torch.channels_last)
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
