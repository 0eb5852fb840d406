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
loop's precision (fp32 and bf16 are both probed: fmlab.timing.peak) measured by this run at the same
thread count.
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
from fmlab.timing.peak import PEAK_DTYPES, REPEATS, SIZES, better_of, gemm_peaks

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
    peak_sizes: tuple[int, ...] = SIZES  # n of the GEMM peak probe's n x n products
    peak_repeats: int = REPEATS  # timed calls per kernel and size in the probe (the fastest counts; seconds at most)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- FLOPs


def model_flops(sets: tuple[str, ...] = ()) -> dict[str, int]:
    """forward_flops of the network the config (with these --set overrides) builds."""
    from fmlab.config import schema as config
    from fmlab.model.nets import build, forward_flops

    cfg = config.with_overrides(config.Config(), config.parse_sets(list(sets))).resolved()
    return forward_flops(build(cfg.model))


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
            raise FmlabError(
                f"--script {o.script}: no such file; give the path of a conventional training script "
                f"or leave --script out (default: python -m {CONVENTIONAL_MODULE})"
            )
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


def _side(mine: list[dict[str, Any]], seeds: tuple[int, ...], train_flops: int, peak: dict[str, Any]) -> dict[str, Any]:
    """One side's figures from its runs: median img/s and wall, test accuracy per seed, GFLOP/s and its
    share of `peak` (the probe of the side's precision)."""
    ips = statistics.median(r["train_images_per_s"] for r in mine)
    per_seed = {s: statistics.fmean(r["test_acc"] for r in mine if r["seed"] == s) for s in seeds}
    acc = _stats(list(per_seed.values()))
    gflops = ips * train_flops / 1e9
    return {
        "train_images_per_s": ips,
        "train_images_per_s_all": [r["train_images_per_s"] for r in mine],
        "wall_s": statistics.median(r["wall_s"] for r in mine),
        "test_acc": acc,
        "test_acc_by_seed": per_seed,
        "gflops": gflops,
        "peak_dtype": peak["dtype"],
        "peak_fraction": gflops / peak["gflops"],
    }


def fmlab_precision(cfg: Any) -> str:
    """What the fmlab side trains in on this CPU (train.precision auto: the machine's pick)."""
    import torch

    from fmlab.training.env import pick_precision

    return pick_precision(cfg.train.precision, torch.device("cpu"))[0]


def compared(cfg: Any) -> tuple[str, ...]:
    """The precisions a bench compares, so the only ones probed: fp32 (the conventional loop's) and fmlab's."""
    return tuple(d for d in PEAK_DTYPES if d in ("fp32", fmlab_precision(cfg)))


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
    dtypes = compared(cfg)
    peaks = gemm_peaks(threads, o.peak_sizes, o.peak_repeats, dtypes)

    runs: list[dict[str, Any]] = []
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmlab-bench-train-") as tmp:
        for i in range(pairs):
            seed = o.seeds[i % len(o.seeds)]
            cmds = commands(o, seed, str(Path(tmp) / f"run{i}"))
            for side in SIDES:
                r = run_process(cmds[side], o.timeout_s)
                row = {
                    "side": side,
                    "pair": i,
                    "seed": seed,
                    "pid": r["pid"],
                    "reported_pid": r["reported_pid"],
                    "train_images_per_s": r["train_images_per_s"],
                    "train_s": r["train_s"],
                    "eval_s": r["eval_s"] + r.get("test_eval_s", 0.0),
                    "wall_s": r["wall_s"],
                    "epochs": r["epochs"],
                    "test_acc": r["test_acc"],
                    "val_acc": r["val_acc"],
                    "train_images": r.get("train_images"),
                    "threads": r.get("threads"),
                }
                runs.append(row)
                if on_run:
                    on_run(row)
    # a second probe after the runs: on a shared machine the better of the two is nearer the peak
    peaks = better_of(peaks, gemm_peaks(threads, o.peak_sizes, o.peak_repeats, dtypes))
    rep = summarise(o, cfg, runs, flops, peaks, threads, time.perf_counter() - t0)
    rep["peaks_skipped"] = [d for d in PEAK_DTYPES if d not in dtypes]  # precisions neither side trains in
    # other jobs on the machine skew every figure: the 1-minute load average says whether there were any
    return {**rep, "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "cores": cores()}


COVERS = (  # the report's "covers": what its figures measure
    "img/s = training images / training-loop time summed over every epoch of a run (first steps "
    "included, evaluation excluded), median over runs; wall_s = whole process; GFLOP/s = img/s x "
    "3 x forward FLOPs (multiply-add = 2); peaks (fp32 and bf16) = best of an oneDNN-packed nn.Linear "
    "and torch.mm on n x n products at the same threads, fastest of peak_repeats calls after warm-up, "
    "this run (probed before and after the runs, the better kept); fmlab's share is of the peak of "
    "its precision, the conventional loop's of fp32; speedup_bound = fmlab at 100% of that peak "
    "/ conventional img/s"
)


def summarise(
    o: BenchTrainOptions,
    cfg: Any,
    runs: list[dict[str, Any]],
    flops: dict[str, int],
    peaks: dict[str, dict[str, Any]],
    threads: int,
    wall_s: float,
) -> dict[str, Any]:
    """peaks: {"fp32": probe, "bf16": probe} (gemm_peaks); fmlab is held to the one of its precision."""
    train_flops = 3 * flops["total"]
    ref = peaks[fmlab_precision(cfg)]
    rep: dict[str, Any] = {"runs": runs, "order": [r["side"] for r in runs]}
    for side in SIDES:
        own = ref if side == "fmlab" else peaks["fp32"]  # the conventional loop always runs fp32
        rep[side] = _side([r for r in runs if r["side"] == side], o.seeds, train_flops, own)
    gaps = [rep["fmlab"]["test_acc_by_seed"][s] - rep["conventional"]["test_acc_by_seed"][s] for s in o.seeds]
    c, f = rep["conventional"], rep["fmlab"]
    rep.update(
        {
            "speedup": f["train_images_per_s"] / c["train_images_per_s"],
            "conventional_images_per_s": c["train_images_per_s"],
            "fmlab_images_per_s": f["train_images_per_s"],
            "conventional_test_acc": c["test_acc"]["mean"],
            "fmlab_test_acc": f["test_acc"]["mean"],
            "acc_gap": _stats(gaps),  # fmlab minus conventional, paired by seed, accuracy as a fraction
            "conventional_gflops": c["gflops"],
            "fmlab_gflops": f["gflops"],
            "peak_gflops": ref["gflops"],
            "peak_dtype": ref["dtype"],
            "peaks": peaks,
            **{f"peak_gflops_{d}": p["gflops"] for d, p in peaks.items()},
            "fmlab_peak_fraction": f["peak_fraction"],
            "conventional_peak_fraction": c["peak_fraction"],
            # the bound on the speedup: fmlab's loop at 100% of its precision's peak, nothing else in a step
            "fmlab_images_per_s_at_peak": ref["gflops"] * 1e9 / train_flops,
            "speedup_bound": ref["gflops"] * 1e9 / train_flops / c["train_images_per_s"],
            "forward_flops_per_image": flops["total"],
            "train_flops_per_image": train_flops,
            "flops_by_layer": flops,
            "threads": threads,
            "precision": cfg.train.precision,
            "conventional_precision": "fp32",
            "epochs": o.epochs,
            "batch_size": o.batch_size,
            "train_images": runs[0]["train_images"],
            "seeds": list(o.seeds),
            "pairs": len(runs) // 2,
            "options": o.to_dict(),
            "wall_s": wall_s,
            "covers": COVERS,
        }
    )
    return rep
