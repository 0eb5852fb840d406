#!/usr/bin/env python3
"""Which worker layout trains an arm's network fastest on this CPU's cores: one process with every core's
thread (`fmlab sweep --workers 1 --threads N`), one single-thread process per core (`--workers N --threads 1`,
trials side by side), or any other (--layouts; more processes than cores are time-sliced). Each layout trains
the network (forward, loss, backward, SGD step; channels_last, the precision's autocast) for --seconds in each
of its processes at once; the figure is the images per second of all its processes together. Layouts
alternate for --rounds rounds, in each precision asked.

    PYTHONPATH=src python scripts/bench_worker_layout.py studies/search.toml --budget r1 [--arm baseline]
        [--cores 2] [--seconds 12] [--rounds 2] [--precisions bf16 fp32] [--layouts 2x1 3x1]

Pause a long run beside it (scripts/cpu_longrun.sh pause): the figures are ratios within one run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time


def train_for(model, batch: int, threads: int, precision: str, seconds: float, out) -> None:
    """One process: train the network for `seconds` after 2 warm-up steps; put its images per second."""
    import torch

    from fmlab.training.probe import training_step

    torch.set_num_threads(threads)
    step = training_step(model, precision, batch)
    step()
    step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    out.put(n / (time.perf_counter() - t0))


def layout_ips(model, batch: int, workers: int, threads: int, precision: str, seconds: float) -> float:
    """Images per second of `workers` processes of `threads` threads each, training at once."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=train_for, args=(model, batch, threads, precision, seconds, q)) for _ in range(workers)]
    for p in procs:
        p.start()
    got = [q.get(timeout=seconds * 10 + 120) for _ in procs]
    for p in procs:
        p.join()
    return sum(got)


def layout(text: str) -> tuple[int, int]:
    """ "3x1" -> (3 workers, 1 thread each)."""
    try:
        w, t = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a layout is WORKERSxTHREADS, e.g. 2x1") from None
    if w < 1 or t < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: workers and threads are at least 1")
    return w, t


def arm_precision(precision: str) -> str:
    """The arm's precision as it trains here: "auto" resolved by fmlab.training.env.pick_precision (said once)."""
    import torch

    from fmlab.training.env import pick_precision

    got, why = pick_precision(precision, torch.device("cpu"))
    if precision == "auto":
        print(f"precision: auto -> {got} here ({why})")
    return got


def main(argv: list[str] | None = None) -> int:
    from fmlab.study import spec as fstudy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_file")
    ap.add_argument("--budget", default="full")
    ap.add_argument("--arm", default=fstudy.BASELINE)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precisions", nargs="*", choices=("fp32", "bf16"), default=[], help="default: the arm's")
    ap.add_argument(
        "--layouts",
        nargs="*",
        type=layout,
        default=[],
        metavar="WxT",
        help="workers x threads each, the first the reference (default: 1xCORES CORESx1); e.g. 2x1 3x1: a third "
        "process time-sliced on 2 cores, as `fmlab sweep --workers 3 --threads 1` runs 3 trials at once",
    )
    a = ap.parse_args(argv)
    st = fstudy.load(a.study_file, a.budget)
    cfg = next((t.config for t in st.trials() if t.cell.get("arm") == a.arm), None)
    if cfg is None:
        print(f"bench_worker_layout: {a.study_file}: no arm {a.arm!r} in budget {a.budget}", file=sys.stderr)
        return 2
    pairs = a.layouts or [(1, a.cores), (a.cores, 1)]
    layouts = {f"{w} x {t} thread{'s' if t > 1 else ''}": (w, t) for w, t in pairs}
    precisions = a.precisions or [arm_precision(cfg.train.precision)]
    print(f"| precision | layout | img/s, all processes (median of {a.rounds}) | vs {next(iter(layouts))} |")
    print("|---|---|---|---|")
    for precision in precisions:
        ips: dict[str, list[float]] = {k: [] for k in layouts}
        for _ in range(a.rounds):
            for name, (workers, threads) in layouts.items():
                ips[name].append(layout_ips(cfg.model, cfg.train.batch_size, workers, threads, precision, a.seconds))
        ref = statistics.median(next(iter(ips.values())))
        for name, got in ips.items():
            med = statistics.median(got)
            print(f"| {precision} | {name} | {med:,.0f} ({', '.join(f'{g:,.0f}' for g in got)}) | {med / ref:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
