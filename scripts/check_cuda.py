"""CUDA smoke check (run on a GPU machine): device choice, bf16 autocast, host syncs in train().

    FMLAB_DATA=... python scripts/check_cuda.py [--out result.json]

1. train() with --device auto picks cuda; one epoch on the full training split in fp32 and bf16
   (epoch_s after a warm-up epoch; a shared or busy GPU skews it).
2. Host syncs: torch.cuda.set_sync_debug_mode("warn") during a 2-epoch run; every synchronising call
   is counted by the fmlab source line that made it. The inner loop must make none: the count per
   line has to stay O(epochs), not O(steps).
3. The Ray worker's view (fmlab.sweep.ray.worker_task + ray_trial, called directly: no Ray needed):
   a trial given a GPU trains on cuda, one given none on cpu.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import traceback
import warnings

import torch

from fmlab.config.schema import Config, with_overrides
from fmlab.data import idx as fdata
from fmlab.sweep.ray import ray_trial, worker_task
from fmlab.sweep.work import Task
from fmlab.training.env import RunOptions
from fmlab.training.loop import train


def sync_sites(cfg: Config, ds: fdata.Dataset, opts: RunOptions) -> dict[str, int]:
    sites: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if "synchronizing" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-1] if "/fmlab/" in f.filename]
        where = (
            f"{frames[-1].filename.rsplit('/fmlab/', 1)[1]}:{frames[-1].lineno} {frames[-1].line}"
            if frames
            else f"{filename}:{lineno}"
        )
        sites[where] += 1

    old = warnings.showwarning
    warnings.showwarning = record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train(cfg, ds, opts)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    finally:
        warnings.showwarning = old
    return dict(sites.most_common())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="2,000 training images in part 1 (a CPU dry run)")
    args = ap.parse_args()
    out: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    opts = RunOptions(device="auto", threads=4)
    full = with_overrides(
        Config(),
        {"train.max_epochs": 2, "train.batch_size": 128, **({"data.train_subset": 2000} if args.quick else {})},
    )
    ds = fdata.load(full.data)
    for prec in ("fp32", "bf16"):
        r = train(with_overrides(full, {"train.precision": prec}), ds, opts)
        out[prec] = {
            "device": r.env["device"],
            "epoch_s": [round(e["epoch_s"], 3) for e in r.epochs],
            "val_acc": r.metrics["val_acc"],
            "train_images_per_s": round(r.timings["train_images_per_s"]),
        }
        print(prec, json.dumps(out[prec]), flush=True)
    small = with_overrides(
        Config(), {"data.train_subset": 6400, "train.max_epochs": 2, "train.batch_size": 64, "train.precision": "bf16"}
    )
    steps = 2 * math.ceil(6400 / 64)
    if torch.cuda.is_available():
        out["syncs"] = {"train_steps": steps, "sites": sync_sites(small, fdata.load(small.data), opts)}
        print("syncs over", steps, "steps:", json.dumps(out["syncs"]["sites"], indent=1), flush=True)
    tiny = with_overrides(Config(), {"data.train_subset": 600, "model.widths": "8,16,16", "train.max_epochs": 1})
    for gpus in (1.0, 0.0):
        t = worker_task(Task(tiny.trial_id(), tiny.to_dict(), "/driver/only/path", opts), gpus)
        evs = list(ray_trial(t, {}))
        done = [e for e in evs if e.kind == "done"]
        out[f"ray_worker_gpus_{gpus:g}"] = done[0].result.env["device"] if done else [e.error for e in evs]
    print(json.dumps({k: v for k, v in out.items() if k.startswith(("ray_", "gpu", "cuda"))}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
