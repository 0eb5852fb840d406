"""Packed vs worker processes, side by side in one command (issue 16; BENCHMARKS.md "Packs").

The seed grid at one batch size (BN x dropout x pool = 8 cells x 2 seeds = 16 trials) at the seed study's
quick budget (4,000 training images, 1,000 validation, 3 epochs, Adam 1e-3), run by `fmlab sweep` twice
per round, alternating: `--pack off` (the trials in worker processes) then `--pack on` (4 packs of 4: the
dropout rates x seeds of each BN x pool cell, each pack trained as one model), each into a fresh store,
with the same workers and threads. Prints one line per run and a JSON summary (wall time, trials COMPLETE,
images trained, images/s, mean val acc) as the last line.

    .venv/bin/python scripts/bench_packs.py [--rounds 2] [--workers 2] [--threads 1] [--device cpu]
        [--batch-size 64] [--first off|on] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """name = "packbench"
description = "The seed grid at one batch size, at the seed study's quick budget (scripts/bench_packs.py)"
seeds = [0, 1]
[base]
"train.optimizer" = "adam"
"train.lr" = 1e-3
"train.monitor" = "val_loss"
"train.patience" = 4
"train.max_epochs" = 3
"train.batch_size" = {bs}
"data.train_subset" = 4000
"data.val_size" = 1000
[factors]
"model.batch_norm" = [false, true]
"model.dropout" = [0.0, 0.2]
"model.pool" = ["avg", "max"]
"""


def one(study: Path, store: Path, pack: str, a: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "fmlab",
        "sweep",
        str(study),
        "--store",
        str(store),
        "--pack",
        pack,
        "--plain",
        "--workers",
        str(a.workers),
        "--threads",
        str(a.threads),
        "--device",
        a.device,
    ]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench_packs: {' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    ls = subprocess.run(
        [sys.executable, "-m", "fmlab", "ls", "--store", str(store), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    recs = json.loads(ls.stdout)
    done = [r for r in recs if r["state"] == "COMPLETE"]
    images = sum(
        len(
            json.loads(
                subprocess.run(
                    [sys.executable, "-m", "fmlab", "show", r["id"], "--store", str(store), "--format", "json"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )["epochs"]
        )
        * 4000
        for r in done
    )
    return {
        "pack": pack,
        "wall_s": round(wall, 1),
        "complete": len(done),
        "images": images,
        "images_per_s": round(images / wall, 1),
        "mean_val_acc": round(sum(r["metrics"]["val_acc"] for r in done) / max(len(done), 1), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--first", choices=["off", "on"], default="off", help="which arm each round starts with")
    ap.add_argument("--out", help="keep the stores here (default: a temporary folder, removed)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fmlab-bench-packs-") as tmp:
        root = Path(a.out or tmp)
        study = root / "packbench.toml"
        root.mkdir(parents=True, exist_ok=True)
        study.write_text(STUDY.format(bs=a.batch_size))
        runs = []
        for r in range(a.rounds):
            for pack in (a.first, "on" if a.first == "off" else "off"):
                res = one(study, root / f"r{r}-{pack}" / "fm.db", pack, a)
                runs.append(res)
                print(
                    f"round {r + 1} pack {pack:3}: {res['wall_s']:7.1f} s  {res['complete']} COMPLETE  "
                    f"{res['images_per_s']:7.1f} img/s  mean val acc {res['mean_val_acc']:.4f}",
                    flush=True,
                )
        off = [x["wall_s"] for x in runs if x["pack"] == "off"]
        on = [x["wall_s"] for x in runs if x["pack"] == "on"]
        ratios = [o / p for o, p in zip(off, on, strict=True)]  # > 1: packing is faster
        print(
            json.dumps(
                {
                    "workers": a.workers,
                    "threads": a.threads,
                    "device": a.device,
                    "runs": runs,
                    "speedup_packed_vs_processes": [round(x, 3) for x in ratios],
                }
            )
        )


if __name__ == "__main__":
    main()
