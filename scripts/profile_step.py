"""Where a training step's time goes: torch.profiler over steady-state steps of any config.

    PYTHONPATH=src python scripts/profile_step.py --set model.batch_norm=true --set model.widths=32,64,128,256 \
        --set model.pool=max --set model.dropout=0 --set train.precision=bf16 --set train.optimizer=sgd \
        --set train.nesterov=true --batch-size 256

Builds the config's network (channels_last, fmlab's thread and allocator set-up) and optimizer, one
random batch; 5 warm-up steps, then 10 profiled steps (forward under the config's
precision, NLL, backward, optimizer step). Prints ms/step, img/s and the top operators by self CPU time,
grouped into convolution / batch norm / pooling / activation / optimizer / other.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_train_levers import step  # the same training step the levers benchmark times
from torch.profiler import profile

from fmlab.config.schema import Config, parse_sets, with_overrides
from fmlab.model.nets import build
from fmlab.training import env
from fmlab.training.loop import make_optimizer

GROUPS = {
    "conv": ("convolution", "conv"),
    "batch norm": ("batch_norm",),
    "pooling": ("pool",),
    "activation": ("threshold", "clamp_min", "relu", "gelu"),
    "optimizer": ("Optimizer", "_foreach", "add_", "mul_", "addcmul", "lerp"),
    "dropout": ("bernoulli", "dropout"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    cfg = with_overrides(Config(), parse_sets(a.set))
    env.setup(env.RunOptions())
    net = build(cfg.model).to(memory_format=torch.channels_last)
    opt = make_optimizer(net.parameters(), cfg.train)
    x = torch.randn(a.batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch_size,))

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")

    for _ in range(5):
        step(net, opt, x, y, autocast)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step(net, opt, x, y, autocast)
    dt = (time.perf_counter() - t0) / a.steps
    with profile() as prof:
        for _ in range(a.steps):
            step(net, opt, x, y, autocast)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    grouped: dict[str, float] = {}
    for e in events:
        g = next((k for k, pats in GROUPS.items() if any(p in e.key for p in pats)), "other")
        grouped[g] = grouped.get(g, 0.0) + e.self_cpu_time_total
    print(
        f"{dt * 1e3:.1f} ms/step, {a.batch_size / dt:,.0f} img/s (batch {a.batch_size}, "
        f"{torch.get_num_threads()} threads, {cfg.train.precision}); share of self CPU time by group:"
    )
    for g, t in sorted(grouped.items(), key=lambda kv: -kv[1]):
        print(f"  {g:12s} {100 * t / total:5.1f}%")
    print("top operators:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {e.key:40s} {100 * e.self_cpu_time_total / total:5.1f}%  {e.count // a.steps} calls/step")


if __name__ == "__main__":
    main()
