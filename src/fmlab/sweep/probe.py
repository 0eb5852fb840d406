"""How fast a network trains on this CPU, measured in seconds: a few training steps of it (forward, loss,
backward, SGD step; channels_last and the precision's autocast, as train() runs them) at the sweep's threads
and the trial's batch size. The sweep's estimate scales each trial by it when no trial of this store ran on a
machine like this one (fmlab.sweep.estimate), so a first sweep on a new CPU is not estimated at another CPU's
speed (BENCHMARKS.md, "Studies")."""

from __future__ import annotations

import functools
import time

from fmlab.config.schema import ModelConfig

STEPS = 4  # timed steps after one warm-up step; the fastest counts (a noisy shared box only adds time)
BUDGET_S = 3.0  # stop timing a network once this much has gone (a big net on a slow CPU: fewer steps)


@functools.cache
def train_ips(m: ModelConfig, threads: int, precision: str, batch: int = 64) -> float:
    """Training images per second of m's network here: batch / the fastest of a few timed steps."""
    import torch

    from fmlab.model.nets import build

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = build(m).to(memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 1, 28, 28, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,), generator=g)
        bf16 = precision == "bf16"

        def step() -> float:
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = net(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - t0

        t_end = time.perf_counter() + BUDGET_S
        step()  # warm-up: oneDNN picks and caches its kernels
        times = [step()]
        while len(times) < STEPS and time.perf_counter() < t_end:
            times.append(step())
        return batch / min(times)
    finally:
        torch.set_num_threads(old)
