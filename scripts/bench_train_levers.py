"""Which levers pay for the seed net's training step on this CPU: interleaved A/B, medians.

    PYTHONPATH=src python scripts/bench_train_levers.py [--only steps,eval,mallopt,compile,workers]

steps    in one process, one net + Adam per variant (same initial weights), the same batches; rounds
         of `--block` timed steps per variant in turn (after warm-up), so a slow spell hits all of
         them: fmlab's default (channels_last, fp32), NCHW (channels_last off), bf16 autocast.
eval     forward-only evaluation throughput (no_grad, eval mode, channels_last) at eval batch sizes
         128 / 256 / 512 / 1024 over the same images, sizes interleaved per round.
mallopt  fmlab's allocator tuning on / off. mallopt is process-wide and glibc's default adapts its
         mmap threshold as blocks are freed, so each arm is a fresh process (alternating on, off,
         on, off, ...): median step time and minor page faults per step.
compile  torch.compile(net) vs eager, in one process: compile time (first compiled steps minus an
         eager step) counted separately, then interleaved rounds; prints the break-even step count.
workers  src/fmlab/timing/baseline_loop.py with DataLoader num_workers 0 vs 1, alternating processes:
         its training img/s.

The last stdout line is one JSON object with every figure. Step figures are ms per step of batch
`--batch-size` (default 64), median over rounds; the machine's load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from fmlab.config.schema import Config, with_overrides
from fmlab.data import idx as fdata
from fmlab.model.nets import build
from fmlab.training import env

ROOT = Path(__file__).resolve().parents[1]


def batches(n_img: int, bs: int, fmt: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = with_overrides(Config(), {"data.train_subset": n_img})
    ds = fdata.load(cfg.data)
    x = fdata.normalize(ds.train.x, cfg.data.mean, cfg.data.std).contiguous(memory_format=fmt)
    return x, ds.train.y


def make(fmt: torch.memory_format, seed: int = 0):
    torch.manual_seed(seed)
    net = build(Config().model).to(memory_format=fmt)
    return net, torch.optim.Adam(net.parameters(), lr=1e-3)


def step(net, opt, xb, yb, autocast) -> None:
    with autocast():
        out = net(xb)
    loss = F.nll_loss(out.float(), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def lever_steps(a: argparse.Namespace) -> dict:
    env.setup(env.RunOptions(threads=a.threads))
    x, y = batches(a.images, a.batch_size, torch.channels_last)
    xs = {"cl": x, "nchw": x.contiguous()}
    variants = {
        "channels_last fp32 (fmlab default)": ("cl", nullcontext),
        "NCHW fp32": ("nchw", nullcontext),
        "channels_last bf16 autocast": ("cl", bf16),
    }
    models = {k: make(torch.channels_last if f == "cl" else torch.contiguous_format) for k, (f, _) in variants.items()}
    n_b = len(y) // a.batch_size
    idx = [slice(i * a.batch_size, (i + 1) * a.batch_size) for i in range(n_b)]
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for k, (f, ac) in variants.items():  # warm-up: oneDNN primitives, allocator
        for i in range(a.warmup):
            step(*models[k], xs[f][idx[i % n_b]], y[idx[i % n_b]], ac)
    j = 0
    for _ in range(a.rounds):
        for k, (f, ac) in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(a.block):
                b = idx[(j + i) % n_b]
                step(*models[k], xs[f][b], y[b], ac)
            times[k].append((time.perf_counter() - t0) / a.block * 1e3)
            cpu[k].append((time.process_time() - c0) / a.block * 1e3)
        j += a.block
    base = next(iter(variants))
    # paired by round: each variant's wall time over the default's in the same round (< 1 = faster)
    return {
        k: {
            "ms_per_step": statistics.median(v),
            "img_per_s": a.batch_size / statistics.median(v) * 1e3,
            "cpu_ms_per_step": statistics.median(cpu[k]),
            "ratio_to_default": statistics.median(x / d for x, d in zip(v, times[base])),
            "rounds_ms": v,
            "rounds_cpu_ms": cpu[k],
        }
        for k, v in times.items()
    }


@torch.no_grad()
def lever_eval(a: argparse.Namespace) -> dict:
    env.setup(env.RunOptions(threads=a.threads))
    x, y = batches(a.eval_images, 1024, torch.channels_last)
    net, _ = make(torch.channels_last)
    net.eval()
    sizes = (128, 256, 512, 1024)
    times: dict[int, list[float]] = {b: [] for b in sizes}
    for b in sizes:
        net(x[:b])
    for _ in range(a.rounds):
        for b in sizes:
            t0 = time.perf_counter()
            for i in range(0, len(y), b):
                net(x[i : i + b]).argmax(1)
            times[b].append(len(y) / (time.perf_counter() - t0))
    return {str(b): {"img_per_s": statistics.median(v), "rounds": v} for b, v in times.items()}


def child_mallopt(a: argparse.Namespace) -> dict:
    """One arm in a fresh process: fmlab's setup with or without tune_allocator."""
    torch.set_num_threads(a.threads or env.cores())
    if a.child == "mallopt-on":
        env.tune_allocator()
    x, y = batches(a.images, a.batch_size, torch.channels_last)
    net, opt = make(torch.channels_last)
    n_b = len(y) // a.batch_size
    for i in range(a.warmup):
        step(
            net,
            opt,
            x[(i % n_b) * a.batch_size :][: a.batch_size],
            y[(i % n_b) * a.batch_size :][: a.batch_size],
            nullcontext,
        )
    ts, f0 = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(a.rounds * a.block):
        b = slice((i % n_b) * a.batch_size, (i % n_b + 1) * a.batch_size)
        t0 = time.perf_counter()
        step(net, opt, x[b], y[b], nullcontext)
        ts.append((time.perf_counter() - t0) * 1e3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / len(ts)
    return {"ms_per_step": statistics.median(ts), "minor_faults_per_step": faults}


def last_json(cmd: list[str]) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def lever_mallopt(a: argparse.Namespace) -> dict:
    base = [
        sys.executable,
        __file__,
        "--threads",
        str(a.threads),
        "--images",
        str(a.images),
        "--rounds",
        str(a.rounds),
        "--block",
        str(a.block),
        "--warmup",
        str(a.warmup),
        "--batch-size",
        str(a.batch_size),
    ]
    res: dict[str, list[dict]] = {"on": [], "off": []}
    for _ in range(a.procs):
        for arm in ("on", "off"):
            res[arm].append(last_json(base + ["--child", f"mallopt-{arm}"]))
    return {
        arm: {
            "ms_per_step": statistics.median(r["ms_per_step"] for r in rs),
            "minor_faults_per_step": statistics.median(r["minor_faults_per_step"] for r in rs),
            "procs": rs,
        }
        for arm, rs in res.items()
    }


def lever_compile(a: argparse.Namespace) -> dict:
    env.setup(env.RunOptions(threads=a.threads))
    x, y = batches(a.images, a.batch_size, torch.channels_last)
    eager = make(torch.channels_last)
    cnet, copt = make(torch.channels_last)
    compiled = (torch.compile(cnet), copt)
    bs, n_b = a.batch_size, len(y) // a.batch_size

    def b(i):
        return slice((i % n_b) * bs, (i % n_b + 1) * bs)

    for i in range(a.warmup):
        step(*eager, x[b(i)], y[b(i)], nullcontext)
    t0 = time.perf_counter()
    for i in range(2):  # first two calls: compile (forward and backward graphs)
        step(*compiled, x[b(i)], y[b(i)], nullcontext)
    first2_s = time.perf_counter() - t0
    for i in range(a.warmup):
        step(*compiled, x[b(i)], y[b(i)], nullcontext)
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(a.rounds):
        for k, m in (("eager", eager), ("compiled", compiled)):
            t0 = time.perf_counter()
            for i in range(a.block):
                step(*m, x[b(r * a.block + i)], y[b(r * a.block + i)], nullcontext)
            times[k].append((time.perf_counter() - t0) / a.block * 1e3)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    compile_s = first2_s - 2 * c / 1e3
    gain_ms = e - c
    return {
        "eager_ms_per_step": e,
        "compiled_ms_per_step": c,
        "compile_s": compile_s,
        "break_even_steps": compile_s * 1e3 / gain_ms if gain_ms > 0 else None,
        "rounds_ms": times,
    }


def lever_workers(a: argparse.Namespace) -> dict:
    script = str(ROOT / "src" / "fmlab" / "timing" / "baseline_loop.py")
    sets = ["--set", f"data.train_subset={a.conv_images}", "--set", "train.max_epochs=1", "--set", "data.val_size=500"]
    res: dict[str, list[float]] = {"0": [], "1": []}
    for _ in range(a.procs):
        for w in res:
            r = last_json([sys.executable, script, *sets, "--workers", w])
            res[w].append(r["train_images_per_s"])
    return {f"num_workers={w}": {"img_per_s": statistics.median(v), "runs": v} for w, v in res.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="steps,eval,mallopt,workers,compile")
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores (fmlab's default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=2048, help="training images the steps cycle over")
    ap.add_argument("--eval-images", type=int, default=4096)
    ap.add_argument("--conv-images", type=int, default=2000, help="workers: train subset per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=5, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--procs", type=int, default=3, help="processes per arm (mallopt, workers)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child_mallopt(a)))
        return 0
    out: dict = {"args": vars(a), "loadavg_start": os.getloadavg(), "torch": torch.__version__, "cores": env.cores()}
    levers = {
        "steps": lever_steps,
        "eval": lever_eval,
        "mallopt": lever_mallopt,
        "compile": lever_compile,
        "workers": lever_workers,
    }
    for name in a.only.split(","):
        t0 = time.perf_counter()
        out[name] = levers[name](a)
        out[name + "_wall_s"] = time.perf_counter() - t0
        print(f"{name}: {json.dumps(out[name], default=str)[:600]}", file=sys.stderr, flush=True)
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
