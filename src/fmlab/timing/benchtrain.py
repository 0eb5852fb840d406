"""`fmlab bench-train`: fmlab's trainer against a conventional DataLoader loop, like for like.

Both sides train the same network (same config, same initial weights for a seed), with Adam, the same
batch size, epochs and train/val split, each in its own process started as a user would start it:
`python -m fmlab.timing.baseline_loop --set ...` (torch's default environment) and
`python -m fmlab train --set ...` (with whatever fmlab sets up for itself). The runs alternate,
conventional first (conv, fmlab, conv, fmlab, ...), so a slow spell on a shared machine hits both.

What the figures cover: img/s = training images / training-loop time over every epoch of a run
(first steps included, evaluation excluded), median over runs; wall = the whole process (interpreter
start, imports, data loading, training, evaluations). GFLOP/s counts a training step as 3x the forward
FLOPs (a multiply-add = 2 FLOPs; conv and linear layers only), compared with the GEMM peak of the
loop's precision (fp32 and bf16 are both probed) measured by this run at the same thread count.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fmlab.errors import FmlabError

CONVENTIONAL_SCRIPT = Path(__file__).resolve().with_name("baseline_loop.py")  # shipped in the package
CONVENTIONAL_MODULE = "fmlab.timing.baseline_loop"  # what bench-train runs by default
SIDES = ("conventional", "fmlab")


@dataclass(frozen=True)
class BenchTrainOptions:
    sets: tuple[str, ...] = ()  # fmlab config overrides (KEY=VALUE), passed to both sides
    epochs: int = 3  # epochs each run trains (early stopping is held off so both run them all)
    batch_size: int = 64  # images per step
    train_subset: int = 0  # 0 = the whole training split, else a stratified subset (quick runs)
    seeds: tuple[int, ...] = (0, 1, 2)  # run pair i uses seeds[i % len(seeds)]
    repeats: int = 0  # run pairs (conv, fmlab); 0 = one pair per seed
    threads: int = 0  # both sides' intra-op threads; 0 = each side's default (torch's / fmlab's)
    conv_workers: int = 1  # the conventional DataLoader's num_workers (1 beat 0 here: BENCHMARKS.md)
    data_dir: str | None = None
    script: str | None = None  # a conventional script file (default: python -m fmlab.timing.baseline_loop)
    timeout_s: float = 7200  # per run
    peak_sizes: tuple[int, ...] = (1024, 2048)  # n of the GEMM peak probe's n x n products
    peak_repeats: int = 20  # timed calls per kernel and size in the probe (the fastest counts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- FLOPs and the GEMM peak


def model_flops(sets: tuple[str, ...] = ()) -> dict[str, int]:
    """forward_flops of the network the config (with these --set overrides) builds."""
    from fmlab.config import schema as config
    from fmlab.model.nets import build, forward_flops

    cfg = config.with_overrides(config.Config(), config.parse_sets(list(sets))).resolved()
    return forward_flops(build(cfg.model))


PEAK_DTYPES = ("fp32", "bf16")


def gemm_peak_gflops(threads: int, dtype: str = "fp32", sizes: tuple[int, ...] = (1024, 2048),
                     repeats: int = 20, warmup: int = 3) -> dict[str, Any]:  # fmt: skip
    """Best GFLOP/s of an n x n by n x n product at `threads` threads, over two kernels:

    - packed_linear: an nn.Linear(n, n) whose weight is converted once to an oneDNN tensor
      (torch.utils.mkldnn.to_mkldnn, fp32 or bf16), called on an oneDNN (mkldnn) input, under no_grad:
      the library torch's CPU convolutions use, with no per-call conversion of either operand by torch;
    - torch.mm on plain tensors (MKL's sgemm for fp32, which on AMD CPUs may not take its AVX-512 path).

    Per kernel and size: `warmup` untimed calls, then the fastest of `repeats` timed calls (2 n^3 FLOPs
    each; the bias add, n^2, is not counted). A timing is the best case the hardware gave, not a mean."""
    import torch
    from torch import nn

    try:  # a submodule torch does not import by itself; built on torch.jit, which torch deprecates
        from torch.utils import mkldnn
    except ImportError:  # a torch without it: torch.mm alone
        mkldnn = None

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    by_kernel: dict[str, float] = {}
    best, best_n, best_kernel = 0.0, 0, ""
    try:
        with torch.no_grad():
            for n in sizes:
                a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
                calls = {"torch.mm": lambda a=a, b=b: torch.mm(a, b)}
                if mkldnn is not None and torch.backends.mkldnn.is_available():
                    try:  # a CPU without the ISA for this dtype refuses here
                        lin = mkldnn.to_mkldnn(nn.Linear(n, n), dt)
                        x = a.to_mkldnn()
                        lin(x)
                        calls["packed_linear"] = lambda lin=lin, x=x: lin(x)
                    except RuntimeError:
                        pass
                for name, call in calls.items():
                    for _ in range(warmup):
                        call()
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        call()
                        g = 2 * n**3 / (time.perf_counter() - t0) / 1e9
                        by_kernel[name] = max(by_kernel.get(name, 0.0), g)
                        if g > best:
                            best, best_n, best_kernel = g, n, name
    finally:
        torch.set_num_threads(before)
    return {"dtype": dtype, "gflops": best, "size": best_n, "kernel": best_kernel, "threads": threads,
            "repeats": repeats, "warmup": warmup, "sizes": list(sizes), "by_kernel": by_kernel}  # fmt: skip


def gemm_peaks(threads: int, sizes: tuple[int, ...] = (1024, 2048), repeats: int = 20) -> dict[str, dict[str, Any]]:
    """gemm_peak_gflops for each of PEAK_DTYPES: {"fp32": {...}, "bf16": {...}}."""
    return {d: gemm_peak_gflops(threads, d, sizes, repeats) for d in PEAK_DTYPES}


# ---------------------------------------------------------------- the runs


def config_sets(o: BenchTrainOptions, seed: int) -> list[str]:
    """The --set list both sides get for one run."""
    from fmlab.config import schema as config

    user = config.parse_sets(list(o.sets))
    sets = list(o.sets) + [f"train.max_epochs={o.epochs}", f"train.batch_size={o.batch_size}", f"seed={seed}"]
    if o.train_subset:
        sets.append(f"data.train_subset={o.train_subset}")
    if "train.patience" not in user:  # hold off early stopping: both sides train every epoch
        sets.append(f"train.patience={o.epochs}")
    config.with_overrides(config.Config(), config.parse_sets(sets))  # a bad key fails before any run
    return sets


def commands(o: BenchTrainOptions, seed: int, out_dir: str) -> dict[str, list[str]]:
    # the package's own copy by module name, as `-m fmlab train` finds fmlab: the same install on both sides,
    # and no package folder put first on sys.path (running the file would do that)
    conv = [sys.executable, "-m", CONVENTIONAL_MODULE]
    if o.script:
        if not Path(o.script).is_file():
            raise FmlabError(f"--script {o.script}: no such file; give the path of a conventional training script "
                             f"or leave --script out (default: python -m {CONVENTIONAL_MODULE})")  # fmt: skip
        conv = [sys.executable, str(o.script)]
    sets = [a for s in config_sets(o, seed) for a in ("--set", s)]
    data = ["--data-dir", o.data_dir] if o.data_dir else []
    conv += [*sets, "--workers", str(o.conv_workers), *data]
    fm = [sys.executable, "-m", "fmlab", "train", *sets, "--out", out_dir, *data]
    if o.threads:
        conv += ["--threads", str(o.threads)]
        fm += ["--threads", str(o.threads)]
    return {"conventional": conv, "fmlab": fm}


def run_process(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    """Start cmd, wait, and return its last stdout line (JSON) with pid and wall_s added."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        out, errs = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise FmlabError(f"{' '.join(cmd[:4])} ... ran past {timeout_s:.0f} s") from None
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = "\n".join(errs.strip().splitlines()[-5:])
        raise FmlabError(f"{' '.join(cmd[:4])} ... exited {p.returncode}:\n{tail}")
    lines = out.strip().splitlines()
    try:
        res = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise FmlabError(f"{' '.join(cmd[:4])} ... printed no JSON last line") from None
    return {**res, "pid": p.pid, "reported_pid": res.get("pid"), "wall_s": wall}


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def bench_train(o: BenchTrainOptions, on_run: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Alternate conventional and fmlab runs; the report: per run, per side, speedup, FLOPs, peak."""
    from fmlab.config import schema as config
    from fmlab.training.env import cores

    if not o.seeds:
        raise FmlabError("--seeds: give at least one seed")
    pairs = o.repeats or len(o.seeds)
    if pairs < len(o.seeds):
        raise FmlabError(f"--repeats {o.repeats} is fewer than the {len(o.seeds)} seeds; every seed needs a run")
    if o.epochs < 1 or o.batch_size < 1:
        raise FmlabError("--epochs and --batch-size must be positive")
    commands(o, o.seeds[0], "")  # a bad key or a missing script fails here, before the probe and the runs
    cfg = config.with_overrides(config.Config(), config.parse_sets(config_sets(o, o.seeds[0]))).resolved()
    threads = o.threads or cores()
    flops = model_flops(tuple(config_sets(o, o.seeds[0])))
    if not o.peak_sizes or min(o.peak_sizes) < 1 or o.peak_repeats < 1:
        raise FmlabError("--peak-sizes and --peak-repeats must be positive")
    peaks = gemm_peaks(threads, o.peak_sizes, o.peak_repeats)

    runs: list[dict[str, Any]] = []
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmlab-bench-train-") as tmp:
        for i in range(pairs):
            seed = o.seeds[i % len(o.seeds)]
            cmds = commands(o, seed, str(Path(tmp) / f"run{i}"))
            for side in SIDES:
                r = run_process(cmds[side], o.timeout_s)
                row = {"side": side, "pair": i, "seed": seed, "pid": r["pid"], "reported_pid": r["reported_pid"],
                       "train_images_per_s": r["train_images_per_s"], "train_s": r["train_s"],
                       "eval_s": r["eval_s"] + r.get("test_eval_s", 0.0), "wall_s": r["wall_s"],
                       "epochs": r["epochs"], "test_acc": r["test_acc"], "val_acc": r["val_acc"],
                       "train_images": r.get("train_images"), "threads": r.get("threads")}  # fmt: skip
                runs.append(row)
                if on_run:
                    on_run(row)
    # a second probe after the runs: on a shared machine the better of the two is nearer the peak
    for d, again in gemm_peaks(threads, o.peak_sizes, o.peak_repeats).items():
        p = peaks[d]
        kernels = {k: max(v, p["by_kernel"].get(k, 0.0)) for k, v in again["by_kernel"].items()}
        peaks[d] = {**(again if again["gflops"] > p["gflops"] else p), "by_kernel": kernels}
    rep = summarise(o, cfg, runs, flops, peaks, threads, time.perf_counter() - t0)
    # other jobs on the machine skew every figure: the 1-minute load average says whether there were any
    return {**rep, "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "cores": cores()}


def summarise(o: BenchTrainOptions, cfg: Any, runs: list[dict[str, Any]], flops: dict[str, int],
              peaks: dict[str, dict[str, Any]], threads: int, wall_s: float) -> dict[str, Any]:  # fmt: skip
    """peaks: {"fp32": probe, "bf16": probe} (gemm_peaks); fmlab is held to the one of its precision."""
    train_flops = 3 * flops["total"]
    ref = peaks["bf16" if cfg.train.precision == "bf16" else "fp32"]
    rep: dict[str, Any] = {"runs": runs, "order": [r["side"] for r in runs]}
    for side in SIDES:
        mine = [r for r in runs if r["side"] == side]
        ips = statistics.median(r["train_images_per_s"] for r in mine)
        per_seed = {s: statistics.fmean(r["test_acc"] for r in mine if r["seed"] == s) for s in o.seeds}
        acc = _stats(list(per_seed.values()))
        gflops = ips * train_flops / 1e9
        own = ref if side == "fmlab" else peaks["fp32"]  # the conventional loop always runs fp32
        rep[side] = {"train_images_per_s": ips, "train_images_per_s_all": [r["train_images_per_s"] for r in mine],
                     "wall_s": statistics.median(r["wall_s"] for r in mine), "test_acc": acc, "test_acc_by_seed":
                     per_seed, "gflops": gflops, "peak_dtype": own["dtype"],
                     "peak_fraction": gflops / own["gflops"]}  # fmt: skip
    gaps = [rep["fmlab"]["test_acc_by_seed"][s] - rep["conventional"]["test_acc_by_seed"][s] for s in o.seeds]
    c, f = rep["conventional"], rep["fmlab"]
    rep.update({
        "speedup": f["train_images_per_s"] / c["train_images_per_s"],
        "conventional_images_per_s": c["train_images_per_s"], "fmlab_images_per_s": f["train_images_per_s"],
        "conventional_test_acc": c["test_acc"]["mean"], "fmlab_test_acc": f["test_acc"]["mean"],
        "acc_gap": _stats(gaps),  # fmlab minus conventional, paired by seed, accuracy as a fraction
        "conventional_gflops": c["gflops"], "fmlab_gflops": f["gflops"],
        "peak_gflops": ref["gflops"], "peak_dtype": ref["dtype"], "peaks": peaks,
        **{f"peak_gflops_{d}": p["gflops"] for d, p in peaks.items()},
        "fmlab_peak_fraction": f["peak_fraction"], "conventional_peak_fraction": c["peak_fraction"],
        # the bound on the speedup: fmlab's loop at 100% of its precision's peak, nothing else in a step
        "fmlab_images_per_s_at_peak": ref["gflops"] * 1e9 / train_flops,
        "speedup_bound": ref["gflops"] * 1e9 / train_flops / c["train_images_per_s"],
        "forward_flops_per_image": flops["total"], "train_flops_per_image": train_flops, "flops_by_layer": flops,
        "threads": threads, "precision": cfg.train.precision, "conventional_precision": "fp32",
        "epochs": o.epochs, "batch_size": o.batch_size, "train_images": runs[0]["train_images"],
        "seeds": list(o.seeds), "pairs": len(runs) // 2,
        "options": o.to_dict(), "wall_s": wall_s,
        "covers": "img/s = training images / training-loop time summed over every epoch of a run (first steps "
                  "included, evaluation excluded), median over runs; wall_s = whole process; GFLOP/s = img/s x "
                  "3 x forward FLOPs (multiply-add = 2); peaks (fp32 and bf16) = best of an oneDNN-packed nn.Linear "
                  "and torch.mm on n x n products at the same threads, fastest of peak_repeats calls after warm-up, "
                  "this run (probed before and after the runs, the better kept); fmlab's share is of the peak of "
                  "its precision, the conventional loop's of fp32; speedup_bound = fmlab at 100% of that peak "
                  "/ conventional img/s",
    })  # fmt: skip
    return rep
