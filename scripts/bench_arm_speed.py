#!/usr/bin/env python3
"""What each arm's network costs per training step on this CPU: for a study file's budget, the training img/s of
each distinct network (fmlab.training.probe.train_ips: a few timed steps of the net alone at the arm's batch size
and precision; no EMA, TTA views or data pipeline), the networks alternating for --rounds rounds; the median
img/s per arm, its ratio to the baseline's, parameters and forward MFLOP per image.

    PYTHONPATH=src python scripts/bench_arm_speed.py studies/search.toml --budget r1 [--threads 2] [--rounds 3]
    ... --widths 8,32,64 18,32,64 24,48,96   # and the baseline at other model.widths (rows "widths=...")
    ... --precisions bf16 fp32                # each network in each precision (rows per precision), against
                                              # the baseline in the first one

Pause a long run beside it (scripts/cpu_longrun.sh pause): the figures are ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from fmlab.config.schema import with_overrides
from fmlab.model.nets import build, count_params, forward_flops
from fmlab.study import spec as fstudy
from fmlab.training.probe import train_ips


def resolve_auto(threads: int) -> str:
    """What train.precision = "auto" trains in on this CPU (fmlab.training.env.pick_precision), said once."""
    import torch

    from fmlab.training.env import pick_precision

    auto, why = pick_precision("auto", torch.device("cpu"), threads=threads)
    print(f"precision: auto -> {auto} here ({why})")
    return auto


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_file")
    ap.add_argument("--budget", default="full")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--widths", nargs="*", default=[], metavar="W0,W1,...", help="the baseline at these widths too")
    ap.add_argument(
        "--precisions",
        nargs="*",
        choices=("fp32", "bf16"),
        default=[],
        help="each network in these (default: its arm's)",
    )
    a = ap.parse_args(argv)
    st = fstudy.load(a.study_file, a.budget)
    arms = {t.cell["arm"]: t.config for t in st.trials() if t.seed == st.seeds[0]}
    for w in a.widths:
        widths = tuple(int(x) for x in w.split(","))
        arms[f"widths={w}"] = with_overrides(arms[fstudy.BASELINE], {"model.widths": list(widths)}).resolved()
    auto = resolve_auto(a.threads) if any(c.train.precision == "auto" for c in arms.values()) else ""
    nets = {}  # (model config, batch, precision) -> the arms that train that network
    for arm, cfg in arms.items():
        for precision in a.precisions or [auto if cfg.train.precision == "auto" else cfg.train.precision]:
            nets.setdefault((cfg.model, cfg.train.batch_size, precision), []).append(arm)
    ips: dict[tuple, list[float]] = {k: [] for k in nets}
    for _ in range(a.rounds):
        for key in nets:
            m, batch, precision = key
            ips[key].append(train_ips(m, a.threads, precision, batch))
    rows = sorted(((arm, key) for key, names in nets.items() for arm in names), key=lambda r: list(arms).index(r[0]))
    base_key = next(key for arm, key in rows if arm == fstudy.BASELINE)
    base = statistics.median(ips[base_key])
    print(
        f"| arm | params | MFLOP fwd | precision | train img/s (median of {a.rounds}) | vs baseline in {base_key[2]} |"
    )
    print("|---|---|---|---|---|---|")
    for arm, key in rows:
        net, med = build(key[0]), statistics.median(ips[key])
        mflop = forward_flops(net)["total"] / 1e6
        print(f"| {arm} | {count_params(net):,} | {mflop:.1f} | {key[2]} | {med:,.0f} | {med / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
