"""What batched augmentation costs per training epoch, next to the epoch itself.

    PYTHONPATH=src python scripts/bench_augment.py [--subset 5000] [--threads 1] [--repeats 3]

Three measurements on the baseline network (widths 64,128,256, batch 64), all after a warm-up:
1. augment() alone over one epoch's batches (each op, then all four together); median of --repeats.
2. paired steps: over one epoch, each batch is trained on twice in alternating order, once as is and
   once through augment() first; the summed wall and CPU (thread) time of each kind. Other load on the
   machine hits both kinds alike, so this is the figure to quote on a shared machine.
3. train() for one epoch without and with all four augmentations, alternating which goes first;
   median train_s (training steps only, no evaluation). Sensitive to other load.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from fmlab.config.schema import Config, with_overrides
from fmlab.data import augment
from fmlab.data import idx as data
from fmlab.model.nets import build
from fmlab.training import env
from fmlab.training.loop import make_optimizer, train

ALL = {"data.flip": 0.5, "data.translate_px": 2, "data.erase_p": 0.5, "data.noise_std": 0.05}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    opts = env.RunOptions(device=a.device, threads=a.threads)
    device = env.setup(opts)
    base = with_overrides(Config(), {"data.train_subset": a.subset, "train.max_epochs": 1})
    ds = data.load(base.data)
    x = data.normalize(ds.train.x, ds.mean, ds.std).to(device)
    bs = base.train.batch_size
    batches = [x[i : i + bs] for i in range(0, len(x), bs)]

    def aug_epoch_s(sets: dict) -> float:
        cfg = with_overrides(base, sets).data
        gen = torch.Generator(device).manual_seed(0)
        times = []
        for _ in range(a.repeats + 1):  # first pass warms up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for xb in batches:
                augment.augment(xb, cfg, gen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    ops = {k: aug_epoch_s({k: v}) for k, v in ALL.items()}
    ops["all four"] = aug_epoch_s(ALL)

    paired = paired_steps(base, with_overrides(base, ALL).data, batches, device)

    train_s: dict[str, list[float]] = {"off": [], "on": []}
    train(base, ds, opts)  # warm-up
    for r in range(a.repeats):
        for k in ("off", "on") if r % 2 == 0 else ("on", "off"):
            cfg = base if k == "off" else with_overrides(base, ALL)
            train_s[k].append(train(cfg, ds, opts).timings["train_s"])
    off, on = statistics.median(train_s["off"]), statistics.median(train_s["on"])
    print(
        json.dumps(
            {
                "device": env.provenance(device).get("device_name", str(device)),
                "threads": a.threads,
                "images": len(x),
                "batch_size": bs,
                "augment_epoch_s": {k: round(v, 4) for k, v in ops.items()},
                "train_epoch_s_off": round(off, 3),
                "train_epoch_s_on": round(on, 3),
                "augment_share_isolated": round(ops["all four"] / off, 4),
                "paired_steps": paired,
                "augment_share_end_to_end": round((on - off) / off, 4),
                "runs": {k: [round(t, 3) for t in v] for k, v in train_s.items()},
            },
            indent=1,
        )
    )


def paired_steps(base: Config, aug_cfg, batches: list[torch.Tensor], device: torch.device) -> dict:
    env.seed_everything(0)
    net = build(base.model).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(net.parameters(), base.train)
    gen = torch.Generator(device).manual_seed(0)
    y = torch.zeros(len(batches[0]), dtype=torch.long, device=device)

    def step(xb: torch.Tensor, aug: bool) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        w, c = time.perf_counter(), time.thread_time()
        if aug:
            xb = augment.augment(xb, aug_cfg, gen).contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.nll_loss(net(xb), y[: len(xb)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - w, time.thread_time() - c

    for xb in batches[:5]:  # warm-up
        step(xb, False), step(xb, True)
    tot = {"plain_wall_s": 0.0, "plain_cpu_s": 0.0, "aug_wall_s": 0.0, "aug_cpu_s": 0.0}
    for i, xb in enumerate(batches):
        for aug in (False, True) if i % 2 == 0 else (True, False):
            w, c = step(xb, aug)
            k = "aug" if aug else "plain"
            tot[f"{k}_wall_s"] += w
            tot[f"{k}_cpu_s"] += c
    out = {k: round(v, 3) for k, v in tot.items()}
    out["overhead_wall"] = round(tot["aug_wall_s"] / tot["plain_wall_s"] - 1, 4)
    out["overhead_cpu"] = round(tot["aug_cpu_s"] / tot["plain_cpu_s"] - 1, 4)
    return out


if __name__ == "__main__":
    main()
