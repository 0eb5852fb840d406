"""The training-step levers issue 34 item 4 left to measure, for one precision: interleaved A/B, medians.

    PYTHONPATH=src python scripts/bench_step_levers.py --precision bf16|fp32 [--only step2,eval2]

step2  in one process, every variant of ONE training step of the seed net (Config()'s model, Adam lr 1e-3,
       channels_last, batch --batch-size) from the same initial weights, over the same batches: rounds of
       --block timed steps per variant in turn (after warm-up), so a slow spell hits all of them; median
       ms/step and the median over rounds of each variant's time / ref's in the same round (< 1 = faster).
       A step is fmlab's (fmlab.training.step.train_step without augmentation): forward, loss in float32,
       zero_grad(set_to_none), backward, optimizer step, the loss and hit count summed on the device (read
       once at the end: no host sync per step). Variants (--variants; '+' combines, e.g. compile+fused):
         ref          what fmlab does: bf16 autocast for bf16, else fp32; Adam as make_optimizer builds it
                      (foreach and fused unset: on the CPU torch then runs the per-parameter for loop)
         foreach      Adam(foreach=True)            fused   Adam(fused=True) (a note where it raises)
         master_bf16  (bf16 only) the weights held in bf16, inputs bf16 (converted once, as a bf16 data
                      set would be), no autocast; Adam steps an fp32 master copy, copied back each step
         compile      torch.compile(net) (default mode, dynamic=False) under the same autocast
         compile_step torch.compile of the whole step function as written (dynamo breaks the graph at
                      zero_grad, backward and opt.step); its graph breaks are counted
         compile_full forward, loss and backward as one compiled graph (dynamo's trace_autograd_ops),
                      opt.step eager after it
       compile_step and compile_full are not in the defaults: with torch 2.13 on the CPU each corrupted the
       heap within 4 steps in a check outside this harness (glibc "malloc(): unaligned tcache chunk
       detected", abort), and compile_step's training loss drifted from the others' in a smoke run here;
       name them in --variants only to look again (a newer torch), and trust no figure that comes back.
       The first two steps of each variant are timed apart (compile_s: those two minus two steady steps);
       a compiled variant's break-even step count against ref is printed.
eval2  a net trained --train-steps steps (ref, this precision) validated through fmlab's evaluate (no_grad,
       eval mode) on the first --eval-images validation images in fp32 and bf16 autocast at batch 1024 and
       4096, interleaved rounds: img/s, and each arm's accuracy and mean loss minus fp32 at 1024's.

The last stdout line is one JSON object with every figure, the torch version, the CPU's flags,
ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA, the threads and the load average. Under the AVX2 stand-in
(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2) bf16 is emulated: run --precision fp32 there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from fmlab.config.schema import Config, with_overrides
from fmlab.data import idx as fdata
from fmlab.model.nets import build
from fmlab.training import env
from fmlab.training.layout import evaluate
from fmlab.training.optim import make_optimizer
from fmlab.training.step import autocast_for

DEFAULT = {
    "bf16": "ref,foreach,fused,master_bf16,compile",
    "fp32": "ref,foreach,fused,compile",
}
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> dict:
    """What the figures depend on: torch, the CPU's flags, the ISA caps, the threads."""
    flags = next((ln.split() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), [])
    return {
        "torch": torch.__version__,
        "cpu_flags": {f: f in flags for f in FLAGS},
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "aten_cpu_capability_in_use": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "cores": env.cores(),
    }


def load(n_train: int, n_val: int) -> tuple[torch.Tensor, ...]:
    """n_train training and n_val validation images, normalised, channels_last, and their labels."""
    cfg = with_overrides(Config(), {"data.train_subset": n_train})
    ds = fdata.load(cfg.data)

    def prep(x: torch.Tensor) -> torch.Tensor:
        return fdata.normalize(x, cfg.data.mean, cfg.data.std).contiguous(memory_format=torch.channels_last)

    return prep(ds.train.x), ds.train.y, prep(ds.val.x[:n_val]), ds.val.y[:n_val]


def seed_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(Config().model).to(memory_format=torch.channels_last)


def autocast(precision: str) -> Callable:
    """The context fmlab's step and validation run in for precision, on the CPU."""
    return autocast_for(precision, torch.device("cpu"))


def adam(params, kind: str) -> torch.optim.Optimizer:
    """Adam as make_optimizer builds it (kind "default"), or with foreach / fused asked for."""
    if kind == "default":
        return make_optimizer(params, Config().train)
    return torch.optim.Adam(params, lr=Config().train.lr, **{kind: True})


# ---------------------------------------------------------------- the variants


@dataclass
class Arm:
    """One variant: its step (a batch -> the loss and hit count, on the device) and the inputs it reads."""

    name: str
    step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    x: torch.Tensor
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    first2_s: float = 0.0
    graph_breaks: dict | None = None


def eager_step(net, opt, autocast) -> Callable:
    def one(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast():
            out = net(xb)
        loss = F.nll_loss(out.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), (out.detach().argmax(1) == yb).sum()

    return one


class Master:
    """bf16 weights stepped through an fp32 master copy: the gradients (bf16) widened onto the master, the
    optimizer steps the master, the master rounded back onto the weights."""

    def __init__(self, net: torch.nn.Module, kind: str) -> None:
        self.net = net.to(torch.bfloat16)
        self.params = list(self.net.parameters())
        self.master = [p.detach().float() for p in self.params]
        self.opt = adam(self.master, kind)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(xb)  # the seed net's log_softmax reads its logits in float32
        loss = F.nll_loss(out.float(), yb)
        self.net.zero_grad(set_to_none=True)
        loss.backward()
        for m, p in zip(self.master, self.params, strict=True):
            m.grad = p.grad.float() if p.grad is not None else None
        self.opt.step()
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.master)
        return loss.detach(), (out.detach().argmax(1) == yb).sum()


def make_arm(name: str, precision: str, x: torch.Tensor) -> Arm:
    """The variant a name ('+'-joined parts) describes, from seed_net()'s initial weights."""
    parts = set(name.split("+"))
    unknown = parts - {"ref", "foreach", "fused", "master_bf16", "compile", "compile_step", "compile_full"}
    if unknown:
        raise SystemExit(f"unknown variant part(s) {sorted(unknown)} in {name!r}")
    kind = "fused" if "fused" in parts else "foreach" if "foreach" in parts else "default"
    net = seed_net()
    if "master_bf16" in parts:
        if precision != "bf16":
            raise ValueError("master_bf16 is a bf16 variant")
        return Arm(name, Master(net, kind), x.to(torch.bfloat16))
    if "compile" in parts:
        net = torch.compile(net, dynamic=False)
    one = eager_step(net, adam(net.parameters(), kind), autocast(precision))
    if "compile_step" in parts:
        one = torch.compile(one, dynamic=False)
    if "compile_full" in parts:
        one = full_graph_step(net, adam(net.parameters(), kind), autocast(precision))
    return Arm(name, one, x)


def full_graph_step(net, opt, autocast) -> Callable:
    """Forward, loss and backward compiled as one graph (dynamo tracing backward: trace_autograd_ops; the
    gradients cleared in the graph, as Optimizer.zero_grad is a graph break), opt.step eager after it (dynamo
    fails resuming a closure after opt.step's deliberate graph break in torch 2.13)."""
    params = list(net.parameters())

    def fwd_bwd(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast():
            out = net(xb)
        loss = F.nll_loss(out.float(), yb)
        for p in params:
            p.grad = None
        loss.backward()
        return loss.detach(), (out.detach().argmax(1) == yb).sum()

    compiled = torch.compile(fwd_bwd, dynamic=False)

    def traced(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            out = compiled(xb, yb)
        opt.step()
        return out

    return traced


# ---------------------------------------------------------------- step2


def graph_breaks_during(fn: Callable[[], None]) -> dict:
    """Dynamo's graph-break reasons (and graph count) counted while fn runs."""
    from torch._dynamo.utils import counters

    before, graphs0 = dict(counters["graph_break"]), counters["stats"]["unique_graphs"]
    fn()
    new = {k: v - before.get(k, 0) for k, v in counters["graph_break"].items() if v > before.get(k, 0)}
    return {
        "count": sum(new.values()),
        "reasons": [r[:160] for r in new],
        "graphs": counters["stats"]["unique_graphs"] - graphs0,
    }


def warm(arm: Arm, x_at: Callable[[Arm, int], tuple[torch.Tensor, torch.Tensor]], n: int, sums: list) -> None:
    """The arm's first two steps timed apart (compilation, oneDNN primitives), then n more."""

    def first2() -> None:
        t0 = time.perf_counter()
        for i in range(2):
            sums.append(arm.step(*x_at(arm, i)))
        arm.first2_s = time.perf_counter() - t0

    if "compile" in arm.name:
        arm.graph_breaks = graph_breaks_during(first2)
    else:
        first2()
    for i in range(n):
        sums.append(arm.step(*x_at(arm, 2 + i)))


def lever_step2(a: argparse.Namespace) -> dict:
    x, y, _, _ = load(a.images, 0)
    n_b, bs = len(y) // a.batch_size, a.batch_size

    def x_at(arm: Arm, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = slice((i % n_b) * bs, (i % n_b + 1) * bs)
        return arm.x[b], y[b]

    arms, notes = [], {}
    for name in a.variants.split(","):
        try:
            arms.append(make_arm(name, a.precision, x))
            sums: list = []
            warm(arms[-1], x_at, a.warmup, sums)
        except Exception as e:  # noqa: BLE001 - a lever this torch lacks is a note, not a failed run
            notes[name] = f"{type(e).__name__}: {str(e)[:300]}"
            arms = [r for r in arms if r.name != name]
            print(f"{name}: skipped ({notes[name]})", file=sys.stderr, flush=True)
    loss_sum = {r.name: torch.zeros(()) for r in arms}
    for rd in range(a.rounds):
        for arm in arms:
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(a.block):
                loss, _ = arm.step(*x_at(arm, rd * a.block + i))
                loss_sum[arm.name] += loss
            arm.times.append((time.perf_counter() - t0) / a.block * 1e3)
            arm.cpu.append((time.process_time() - c0) / a.block * 1e3)
    out = {"variants": summarize(arms, loss_sum, a), "skipped": notes}
    if any("compile" in arm.name for arm in arms):  # what inductor generated code for (it reads ATEN_CPU_CAPABILITY)
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        out["inductor_vec_isa"] = str(pick_vec_isa())
    return out


def summarize(arms: list[Arm], loss_sum: dict, a: argparse.Namespace) -> dict:
    ref = arms[0]  # the first variant (ref by default) is what the others are paired with
    ref_ms = statistics.median(ref.times)
    out = {}
    for arm in arms:
        ms = statistics.median(arm.times)
        compiled = "compile" in arm.name
        compile_s = arm.first2_s - 2 * ms / 1e3 if compiled else None
        gain = ref_ms - ms
        out[arm.name] = {
            "ms_per_step": ms,
            "img_per_s": a.batch_size / ms * 1e3,
            "cpu_ms_per_step": statistics.median(arm.cpu),
            f"ratio_to_{ref.name}": statistics.median(t / r for t, r in zip(arm.times, ref.times, strict=True)),
            "rounds_faster_than_ref": sum(t < r for t, r in zip(arm.times, ref.times, strict=True)),
            "first2_s": arm.first2_s,
            "compile_s": compile_s,
            "break_even_steps": compile_s * 1e3 / gain if compiled and gain > 0 else None,
            "mean_train_loss_timed": float(loss_sum[arm.name]) / (a.rounds * a.block),
            "graph_breaks": arm.graph_breaks,
            "rounds_ms": arm.times,
        }
    return out


# ---------------------------------------------------------------- eval2


def lever_eval2(a: argparse.Namespace) -> dict:
    x, y, xv, yv = load(a.train_steps * a.batch_size, a.eval_images)
    net = seed_net()
    one, bs = eager_step(net, adam(net.parameters(), "default"), autocast(a.precision)), a.batch_size
    t0 = time.perf_counter()
    for i in range(a.train_steps):  # ref's steps: what fmlab trains
        one(x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs])
    train_s = time.perf_counter() - t0
    precs = ["fp32", "bf16"] if a.eval_bf16 else ["fp32"]
    cells = [(p, b) for p in precs for b in (1024, 4096)]

    def run(p: str, b: int) -> dict[str, float]:
        return evaluate(net, xv, yv, b, autocast(p))

    figures = {c: run(*c) for c in cells}  # also the warm-up
    speed: dict[tuple[str, int], list[float]] = {c: [] for c in cells}
    for _ in range(a.rounds):
        for c in cells:
            t0 = time.perf_counter()
            run(*c)
            speed[c].append(len(yv) / (time.perf_counter() - t0))
    base = figures[("fp32", 1024)]
    return {
        "max_abs_acc_diff": max(abs(f["acc"] - base["acc"]) for f in figures.values()),
        "max_abs_loss_diff": max(abs(f["loss"] - base["loss"]) for f in figures.values()),
        "train_steps": a.train_steps,
        "train_s": train_s,
        "images": len(yv),
        "arms": {
            f"{p} batch {b}": {
                "img_per_s": statistics.median(speed[(p, b)]),
                "acc": figures[(p, b)]["acc"],
                "loss": figures[(p, b)]["loss"],
                "acc_minus_fp32_1024": figures[(p, b)]["acc"] - base["acc"],
                "loss_minus_fp32_1024": figures[(p, b)]["loss"] - base["loss"],
                "rounds_img_per_s": speed[(p, b)],
            }
            for p, b in cells
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=("bf16", "fp32"), required=True)
    ap.add_argument("--only", default="step2,eval2")
    ap.add_argument(
        "--variants", help="comma-separated; default: " + "; ".join(f"{k}: {v}" for k, v in DEFAULT.items())
    )
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores (fmlab's default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=2048, help="step2: training images the steps cycle over")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--block", type=int, default=5, help="step2: timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=3, help="step2: steps per variant after its first two")
    ap.add_argument("--train-steps", type=int, default=200, help="eval2: steps the validated net trains")
    ap.add_argument("--eval-images", type=int, default=4096)
    ap.add_argument(
        "--eval-bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="eval2: a bf16 arm (default: native bf16)",
    )
    a = ap.parse_args()
    a.variants = a.variants or DEFAULT[a.precision]
    env.setup(env.RunOptions(threads=a.threads))
    if a.eval_bf16 is None:
        a.eval_bf16 = env.pick_precision("auto", torch.device("cpu"))[0] == "bf16"
    out: dict = {"args": vars(a), "loadavg_start": os.getloadavg(), **machine()}
    levers = {"step2": lever_step2, "eval2": lever_eval2}
    for name in a.only.split(","):
        t0 = time.perf_counter()
        out[name] = levers[name](a)
        out[name + "_wall_s"] = time.perf_counter() - t0
        print(f"{name}: {json.dumps(out[name], default=str)[:800]}", file=sys.stderr, flush=True)
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
