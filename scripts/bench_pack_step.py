"""One training step (forward + backward) of K seed nets: K separate nets vs one grouped-conv pack vs
torch.func vmap over stacked weights. Decides the packed layout on a CPU (BENCHMARKS.md "Packs").

    .venv/bin/python scripts/bench_pack_step.py [K] [batch] [reps]
"""

from __future__ import annotations

import copy
import sys
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fmlab.config.schema import ModelConfig
from fmlab.model.nets import build

K, B, REPS = (int(a) for a in (sys.argv[1:] + ["8", "64", "5"][len(sys.argv) - 1 :]))
torch.set_num_threads(1)
CL = torch.channels_last
nets = [build(ModelConfig(dropout=0.0)).to(memory_format=CL) for _ in range(K)]
x = torch.randn(K, B, 1, 28, 28)


class Grouped(nn.Module):
    """K seed nets side by side: convs with groups=K over K x C channels, the FC as one batched matmul."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 1
        for w in widths:
            layers += [nn.Conv2d(K * c, K * w, 3, padding=1, groups=K), nn.ReLU(), nn.AvgPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.w = nn.Parameter(torch.randn(K, c * 9, 10) * 0.01)
        self.b = nn.Parameter(torch.zeros(K, 1, 10))

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        h = self.features(xs).reshape(xs.shape[0], K, -1).transpose(0, 1)
        return torch.log_softmax(torch.baddbmm(self.b, h, self.w), -1)


grouped = Grouped().to(memory_format=CL)
xg = x[:, :, 0].permute(1, 0, 2, 3).contiguous(memory_format=CL)  # [B, K, 28, 28]: network k's batch in channel k
params, bufs = stack_module_state(nets)
meta = copy.deepcopy(nets[0]).to("meta")
xs = [x[k].contiguous(memory_format=CL) for k in range(K)]


def singles() -> None:
    for k in range(K):
        nets[k](xs[k]).sum().backward()


def packed() -> None:
    grouped(xg).sum().backward()


def vmapped() -> None:
    vmap(lambda p, b, xx: functional_call(meta, (p, b), (xx,)))(params, bufs, x).sum().backward()


def timed(f) -> float:  # noqa: ANN001
    f()  # warm-up
    t0 = time.perf_counter()
    for _ in range(REPS):
        f()
    return (time.perf_counter() - t0) / REPS


rows = {}
for _round in range(2):  # A B C A B C: the machine is shared, so alternate
    for name, f in (("singles", singles), ("grouped", packed), ("vmap", vmapped)):
        rows.setdefault(name, []).append(timed(f))
base = min(rows["singles"])
print(f"K={K} batch={B} threads=1 reps={REPS}; best of 2 rounds, s per step of all K nets (img/s)")
for name, ts in rows.items():
    s = min(ts)
    print(
        f"  {name:8s} {s:.3f} s  ({K * B / s:.0f} img/s)  x{base / s:.2f} vs singles  rounds: "
        + ", ".join(f"{t:.3f}" for t in ts)
    )
