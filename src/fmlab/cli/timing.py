"""`fmlab bench-train` and `fmlab speedrun`: training speed against a conventional loop, time to accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.cli.common import Command, err, out_json, positive_ints, print_table
from fmlab.durations import duration
from fmlab.errors import FmlabError
from fmlab.timing.peak import BUDGET_S, REPEATS, SIZES

if TYPE_CHECKING:
    from fmlab.timing.benchtrain import BenchTrainOptions


class BenchTrain(Command):
    name = "bench-train"
    help = "fmlab's trainer vs a conventional DataLoader loop, alternating processes; last line JSON with speedup"
    parents = ("data",)  # its --threads also sets the GEMM probe's and means each side's default at 0: its own

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="config override for both sides, repeatable (e.g. train.precision=bf16: fmlab only)",
        )
        p.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3; early stopping held off)")
        p.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
        p.add_argument("--train-subset", type=int, default=0, help="stratified training subset, 0 = all (default)")
        p.add_argument("--seeds", default="0,1,2", help="N (0..N-1) or a list like 0,1,2 (default 0,1,2)")
        p.add_argument(
            "--repeats",
            type=int,
            default=0,
            help="run pairs (conventional, fmlab), seeds in turn; 0 = one pair per seed (default)",
        )
        p.add_argument(
            "--threads",
            type=int,
            default=0,
            help="intra-op threads for both sides and the GEMM probe (0 = each side's default)",
        )
        p.add_argument(
            "--conv-workers",
            type=int,
            default=1,
            help="num_workers of the conventional DataLoader (default 1: faster than 0 here, BENCHMARKS.md)",
        )
        p.add_argument(
            "--script", help="a conventional loop script file (default: python -m fmlab.timing.baseline_loop)"
        )
        p.add_argument(
            "--peak-sizes",
            default=",".join(map(str, SIZES)),
            help=f"n of the GEMM peak probe's n x n products (default {','.join(map(str, SIZES))})",
        )
        p.add_argument(
            "--peak-repeats",
            type=int,
            default=REPEATS,
            help=f"timed calls per kernel and size in the peak probe, after warm-up, within {BUDGET_S:g} s "
            f"(default {REPEATS})",
        )

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.timing import benchtrain

        o = _bench_options(args)
        pairs = o.repeats or len(o.seeds)
        err(
            f"bench-train: {pairs} pair(s) of runs (conventional, then fmlab), {o.epochs} epoch(s), batch "
            f"{o.batch_size}, seeds {list(o.seeds)}" + (f", sets {list(o.sets)}" if o.sets else "")
        )
        rep = benchtrain.bench_train(o, on_run=_bench_progress)
        _print_sides(rep)
        _print_bench_notes(rep)
        out_json(rep)
        return 0


def _bench_options(args: argparse.Namespace) -> BenchTrainOptions:
    """bench-train's arguments as a BenchTrainOptions (checked where the library does not check them)."""
    from fmlab.study.spec import parse_seeds
    from fmlab.timing import benchtrain

    if args.peak_repeats < 1:
        raise FmlabError(f"bad --peak-repeats {args.peak_repeats}; expected a positive count, e.g. 20")
    return benchtrain.BenchTrainOptions(
        sets=tuple(args.set),
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_subset=args.train_subset,
        seeds=tuple(parse_seeds(args.seeds)),
        repeats=args.repeats,
        threads=args.threads,
        conv_workers=args.conv_workers,
        data_dir=args.data_dir,
        script=args.script,
        peak_sizes=positive_ints(args.peak_sizes, "--peak-sizes"),
        peak_repeats=args.peak_repeats,
    )


def _bench_progress(r: dict[str, Any]) -> None:
    """One bench-train run, on stderr as it ends."""
    err(
        f"  pair {r['pair']} seed {r['seed']} {r['side']:12} pid {r['pid']}: "
        f"{r['train_images_per_s']:8.0f} img/s train {r['train_s']:.1f}s eval {r['eval_s']:.1f}s "
        f"wall {r['wall_s']:.1f}s test acc {100 * r['test_acc']:.2f}%"
    )


def _print_sides(rep: dict[str, Any]) -> None:
    """bench-train's table: a row per side (img/s, runs, wall, GFLOP/s, share of peak, test accuracy)."""
    print(
        f"{'side':13} {'img/s (median)':>15} {'runs':>24} {'wall s':>7} {'GFLOP/s':>8} {'of peak':>8} "
        f"{'test acc (mean ± std, n)':>26}"
    )
    for side in ("conventional", "fmlab"):
        d = rep[side]
        a = d["test_acc"]
        runs = ",".join(f"{x:.0f}" for x in d["train_images_per_s_all"])
        print(
            f"{side:13} {d['train_images_per_s']:15,.0f} {runs:>24} {d['wall_s']:7.1f} {d['gflops']:8.2f} "
            f"{100 * d['peak_fraction']:7.1f}% {100 * a['mean']:12.2f}% ± {100 * a['std']:.2f} (n={a['n']})"
        )


def _print_bench_notes(rep: dict[str, Any]) -> None:
    """bench-train's lines under the table: speedup and accuracy gap, what was measured, the peaks, the bound."""
    n_img = rep["train_images"]
    g = rep["acc_gap"]
    peaks = "; ".join(
        f"{p['dtype']} {p['gflops']:.1f} GFLOP/s (" + ", ".join(f"{k} {v:.0f}" for k, v in p["by_kernel"].items()) + ")"
        for p in rep["peaks"].values()
    )
    print(
        f"speedup (fmlab / conventional median img/s): {rep['speedup']:.2f}x;  "
        f"test acc gap fmlab - conventional: {100 * g['mean']:+.2f} ± {100 * g['std']:.2f} pts "
        f"(paired by seed, n={g['n']})"
    )
    print(
        f"{n_img:,} training images x {rep['epochs']} epoch(s), batch {rep['batch_size']}, {rep['threads']} "
        f"thread(s), fmlab precision {rep['precision']} (conventional fp32); forward "
        f"{rep['forward_flops_per_image'] / 1e6:.2f} MFLOP/image, training counted as 3x; GEMM peaks "
        f"(best n x n product, packed oneDNN Linear or torch.mm, this run): {peaks}"
        + (
            f"; not probed: {', '.join(rep['peaks_skipped'])} (neither side trains in it)"
            if rep.get("peaks_skipped")
            else ""
        )
    )
    print(
        f"at 100% of the {rep['peak_dtype']} peak fmlab would train "
        f"{rep['fmlab_images_per_s_at_peak']:,.0f} img/s: {rep['speedup_bound']:.2f}x the conventional loop, "
        "the bound on the speedup"
    )
    print(
        f"img/s covers the training loop of every epoch (evaluation excluded); wall = whole process. "
        f"Order: {' '.join('c' if s == 'conventional' else 'f' for s in rep['order'])}"
    )
    if rep["loadavg_start"][0] > 0.5:  # at the end the 1-min average holds this benchmark's own threads
        print(
            f"note: load average {rep['loadavg_start'][0]:.1f} at the start on {rep['cores']} cores: other "
            "jobs may have been running (a job that just ended still counts in the 1-min average); rerun on a "
            "quiet machine"
        )


class Speedrun(Command):
    name = "speedrun"
    help = (
        "time-to-accuracy records: each recipe x seed as its own `fmlab train` process, whole wall time; last line JSON"
    )
    parents = ("data", "threads")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="speedrun file, e.g. studies/speedrun.toml")
        p.add_argument("--recipe", action="append", help="run only this recipe (repeatable; default all)")
        p.add_argument("--seeds", help="N (0..N-1) or a list like 0,1,2 (default: the file's seeds)")
        p.add_argument("--log", default="runs/speedrun/runs.jsonl", help="JSONL file each run is appended to")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.study.spec import parse_seeds
        from fmlab.timing import speedrun

        spec = speedrun.load(args.file)
        names = args.recipe or list(spec.recipes)
        for n in names:
            if n not in spec.recipes:
                raise FmlabError(f"{spec.path}: no recipe '{n}'; recipes: {', '.join(spec.recipes)}")
        seeds = parse_seeds(args.seeds) if args.seeds else spec.seeds
        log = Path(args.log)
        err(f"speedrun {spec.name}: recipes {', '.join(names)}, seeds {list(seeds)}, one process per run; log {log}")

        def progress(r: dict[str, Any]) -> None:
            err(
                f"  {r['recipe']} seed {r['seed']}: test acc {100 * r['test_acc']:.2f}%  wall {r['wall_s']:.1f}s "
                f"(train {r['train_s']:.1f}s, val {r['eval_s']:.1f}s, {r['epochs']} epochs)"
            )

        sums = speedrun.run(spec, names, seeds, log, args.threads, args.data_dir, on_run=progress)
        rows = []
        for s in sums:
            ci = f"[{100 * s['test_acc_lo']:5.2f}, {100 * s['test_acc_hi']:5.2f}]" if s["n"] > 1 else "[n=1: no CI]"
            rows.append(
                [
                    s["recipe"],
                    str(s["n"]),
                    f"{100 * s['test_acc_mean']:.2f}% {ci}",
                    f"{100 * s['target_acc']:.1f}%",
                    f"{s['wall_s_median']:.1f}",
                    f"{s['wall_s_max']:.1f}",
                    duration(s["target_s"]),
                    "yes" if s["met"] else "no",
                ]
            )
        print_table(
            ["recipe", "n", "test acc mean [95% CI]", "target", "wall s median", "max", "target", "met"],
            rows,
            right=(1, 2, 3, 4, 5, 6),
        )
        out_json({"speedrun": spec.name, "seeds": list(seeds), "recipes": sums})
        return 0
