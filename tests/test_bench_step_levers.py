"""scripts/bench_step_levers.py's master_bf16 variant: bf16 weights stepped through an fp32 master copy."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "bench_step_levers", Path(__file__).resolve().parents[1] / "scripts" / "bench_step_levers.py"
)
levers = importlib.util.module_from_spec(_spec)  # a benchmark script, not the package
sys.modules["bench_step_levers"] = levers  # its dataclass resolves its annotations through it
_spec.loader.exec_module(levers)


def test_master_bf16_steps_the_fp32_master_and_rounds_it_onto_the_bf16_weights():
    torch.manual_seed(0)
    net = levers.seed_net()
    start = [p.detach().to(torch.bfloat16).float() for p in net.parameters()]  # the master's start
    step = levers.Master(net, "default")
    x = torch.randn(8, 1, 28, 28).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    loss, hits = step(x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and 0 <= int(hits) <= 8
    assert all(p.dtype == torch.bfloat16 for p in step.params)
    assert all(m.dtype == torch.float32 for m in step.master)
    for p, m, p0 in zip(step.params, step.master, start, strict=True):
        assert torch.equal(p, m.to(torch.bfloat16))  # the weights are the master, rounded
        assert (p.float() - m).abs().max() <= m.abs().max() * 2**-8  # within bf16's rounding
        assert 0 < (m - p0).abs().max() <= 1.001e-3  # Adam's first step moves each weight by at most lr


def test_master_bf16_weights_train():
    torch.manual_seed(0)
    step = levers.Master(levers.seed_net(), "foreach")
    step.net.eval()  # no dropout: the same batch's loss must fall
    x = torch.randn(16, 1, 28, 28).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (16,))
    losses = [float(step(x, y)[0]) for _ in range(5)]
    assert losses[-1] < losses[0] - 0.1
