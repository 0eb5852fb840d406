"""The `fmlab` command: argparse subcommands over the library. The only module that prints.

Human output goes to stderr (progress) and stdout (tables); with --format json, stdout holds JSON
only. Errors a user can fix are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .errors import FmlabError


def err(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)


def out_json(obj: Any) -> None:
    print(json.dumps(obj, allow_nan=False), flush=True)


def _fmt_secs(s: float) -> str:
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}min"


def run_options(args: argparse.Namespace):
    from .env import RunOptions

    return RunOptions(device=args.device, threads=args.threads, data_dir=getattr(args, "data_dir", None))


# ---------------------------------------------------------------- data


def cmd_data_check(args: argparse.Namespace) -> int:
    from . import data

    rep = data.check(args.data_dir)
    if args.format == "json":
        out_json(rep)
    else:
        for f in rep["files"]:
            ok = "OK" if f["sha256_ok"] and f["count_ok"] else "MISMATCH"
            print(f"{ok:8} {f['name']:26} {f['count']:6} items  sha256 {f['sha256'][:16]}…  {f['path']}")
            if "per_class" in f:
                print("         per class: " + ", ".join(f"{c} {n}" for c, n in f["per_class"].items()))
    if not rep["ok"]:
        err(f"fmlab: error: some files do not match upstream (see above); {data.FIX}")
        return 1
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from . import data

    paths = data.fetch(args.url, args.dest)
    for p in paths:
        err(f"wrote {p}")
    return 0


# ---------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from . import checkpoint, config
    from .train import train

    cfg = config.with_overrides(config.Config(), config.parse_sets(args.set)).resolved()
    opts = run_options(args)
    tid = cfg.trial_id()
    out = Path(args.out) if args.out else Path("runs/train") / tid
    t0 = time.perf_counter()
    max_epochs = cfg.train.max_epochs
    err(f"trial {tid}: {cfg.model.arch} net, {cfg.train.optimizer} lr {cfg.train.lr}, batch {cfg.train.batch_size}, "
        f"up to {max_epochs} epochs, early stopping on {cfg.train.monitor} (patience {cfg.train.patience})")  # fmt: skip

    def progress(row: dict[str, float]) -> None:
        elapsed = time.perf_counter() - t0
        eta = row["epoch_s"] * (max_epochs - row["epoch"])
        err(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  "
            f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%  {row['epoch_s']:.1f}s  "
            f"elapsed {_fmt_secs(elapsed)}  ETA <= {_fmt_secs(eta)}")  # fmt: skip

    res = train(cfg, opts=opts, on_epoch=progress)
    checkpoint.save_trial(res, out)
    m = res.metrics
    err(f"best epoch {res.best_epoch} ({res.stop_reason}): val acc {100 * m['val_acc']:.2f}%, "
        f"test acc {100 * m['test_acc']:.2f}%  ->  {out}")  # fmt: skip
    out_json({"trial_id": tid, "out": str(out), "best_epoch": res.best_epoch, "epochs": len(res.epochs),
              **m, **res.timings, "n_params": res.n_params})  # fmt: skip
    return 0


# ---------------------------------------------------------------- inference


def cmd_params(args: argparse.Namespace) -> int:
    from . import infer

    rep = infer.param_table(infer.load(args.ckpt, args.store))
    if args.format == "json":
        out_json(rep)
        return 0
    print(f"{'layer':14} {'type':10} {'shapes':34} {'params':>10}")
    for r in rep["layers"]:
        shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["shapes"].items())
        print(f"{r['layer']:14} {r['type']:10} {shapes:34} {r['params']:>10,}")
    print(f"{'total':60} {rep['total']:>10,}")
    print(f"size: {rep['fp32_mb']:.3f} MB as fp32, {rep['disk_mb']:.3f} MB on disk ({rep['disk_bytes']:,} bytes, "
          f"{Path(rep['checkpoint']) / 'best.safetensors'}); MB = 10^6 bytes")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench, infer

    ld = infer.load(args.ckpt, args.store)
    runtimes = tuple(args.runtimes.split(",")) if args.runtimes else bench.DEFAULT_RUNTIMES
    bench.check_runtimes(runtimes)
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        raise FmlabError(f"bad --batches {args.batches!r}; expected positive integers, e.g. 256,1024") from None
    if not batches or min(batches) < 1:
        raise FmlabError(f"bad --batches {args.batches!r}; expected positive integers, e.g. 256,1024")
    err(f"benchmarking {ld.ckpt_dir} on {', '.join(runtimes)}: {args.runs} batch-1 runs, batches {batches} ...")
    rep = bench.bench(ld, threads=args.threads, latency_threads=args.latency_threads, runs=args.runs,
                      batches=batches, repeats=args.repeats, runtimes=runtimes, data_dir=args.data_dir)  # fmt: skip
    bs = [str(b) for b in batches]
    print(f"{'runtime':14} {'p50 ms':>8} {'p99 ms':>8} " + " ".join(f"{'img/s @' + b:>12}" for b in bs)
          + f" {'test acc':>9} {'prep s':>7}")  # fmt: skip
    for r in rep["results"]:
        lat = r["latency"]
        print(f"{r['runtime']:14} {lat['p50_ms']:8.3f} {lat['p99_ms']:8.3f} "
              + " ".join(f"{r['images_per_s'][b]:12,.0f}" for b in bs)
              + f" {100 * r['test_acc']:8.2f}% {r['prep_s']:7.1f}")  # fmt: skip
    print(f"batch 1 on {rep['latency_threads']} thread(s), batches on {rep['threads']}; latency = one call "
          f"(ORT: session.run incl. input binding), p50/p99 of {rep['runs']} after warm-up; img/s = batch / "
          f"median of {rep['repeats']} calls; prep = trace/compile/session time, not in latency")  # fmt: skip
    out_json(rep)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import infer, onnx_export

    ld = infer.load(args.ckpt, args.store)
    err(f"exporting {ld.ckpt_dir} to {args.onnx}{' (int8)' if args.int8 else ''} ...")
    rep = onnx_export.export(ld, args.onnx, int8=args.int8, calib_n=args.calib, data_dir=args.data_dir)
    for kind in ("fp32", "int8"):
        if kind in rep:
            p = rep[kind]
            err(f"{kind}: test acc {100 * p['test_acc']:.2f}% (torch {100 * rep['torch_test_acc']:.2f}%), "
                f"argmax agreement with torch {100 * p['argmax_agreement']:.2f}%, "
                f"max |log-prob diff| {p['max_abs_diff']:.2e}, {p['size_mb']:.3f} MB")  # fmt: skip
    if args.int8:
        err(f"int8 accuracy drop vs fp32: {rep['int8_acc_drop_pts']:+.2f} pts "
            f"(calibrated on {rep['int8']['calibration_images']} training images)")  # fmt: skip
    err(f"wrote {rep['out']} (checked with onnx.checker; classes and normalisation in metadata_props)")
    out_json(rep)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from . import infer

    ld = infer.load(args.ckpt, args.store)
    preds = infer.predict(ld, args.images, top=args.top)
    if args.format == "json":
        out_json(preds)
        return 0
    for p in preds:
        tops = "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in p["top"])
        print(f"{p['file']}: {tops}")
    return 0


# ---------------------------------------------------------------- parser


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = all cores)")
    p.add_argument("--data-dir", help="folder with the IDX files (default: $FMLAB_DATA, then system paths)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    ap = argparse.ArgumentParser(prog="fmlab", description="Training experiments on Fashion-MNIST.")
    ap.add_argument("--version", action="version", version=f"fmlab {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("data", help="check or fetch the dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    c = dsub.add_parser("check", help="where the dataset is, checksums, counts per class")
    c.add_argument("--data-dir")
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.set_defaults(func=cmd_data_check)
    f = dsub.add_parser("fetch", help="download the upstream files, verify, write atomically")
    f.add_argument("--url", default=None, help="base URL (default: upstream)")
    f.add_argument("--dest", help="target folder (default: the user cache dir)")
    f.set_defaults(func=cmd_data_fetch)

    t = sub.add_parser("train", help="train one network; last stdout line is JSON")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    t.add_argument("--out", help="checkpoint directory (default runs/train/<trial id>)")
    add_run_args(t)
    t.set_defaults(func=cmd_train)

    def ckpt_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("ckpt", metavar="CKPT", help="trial id, STUDY:best, or a checkpoint directory")
        p.add_argument("--store", default="runs/fmlab.db", help="trial store for ids (default runs/fmlab.db)")

    p = sub.add_parser("params", help="trainable parameters per layer, total, size")
    ckpt_arg(p)
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("bench", help="latency and throughput: torch vs ONNX Runtime fp32/int8; last line JSON")
    ckpt_arg(p)
    p.add_argument("--threads", type=int, default=0, help="threads for batched runs (0 = all cores)")
    p.add_argument("--latency-threads", type=int, default=1, help="threads for batch-1 latency (default 1)")
    p.add_argument("--runs", type=int, default=1000, help="timed batch-1 calls after warm-up (default 1000)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per batch size (default 10)")
    p.add_argument("--batches", default="256,1024", help="batch sizes for throughput (default 256,1024)")
    p.add_argument("--runtimes", help="comma list of torch_eager, torch_script, torch_compile, ort_fp32, ort_int8 "
                   "(default all but torch_compile: minutes to compile cold, no faster here)")
    p.add_argument("--data-dir", help="folder with the IDX files")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("export", help="ONNX file, checked against torch on the test set")
    ckpt_arg(p)
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="file to write (atomically)")
    p.add_argument("--int8", action="store_true", help="static int8 quantization (QDQ) calibrated on train images")
    p.add_argument("--calib", type=int, default=500, help="calibration images for --int8 (default 500)")
    p.add_argument("--data-dir", help="folder with the IDX files")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="top classes and probabilities for your own images")
    ckpt_arg(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...) or folders")
    p.add_argument("--top", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_predict)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "url", "x") is None:
        from .data import UPSTREAM_URL

        args.url = UPSTREAM_URL
    try:
        return args.func(args)
    except FmlabError as e:
        err(f"fmlab: error: {e}")
        return 2
    except KeyboardInterrupt:
        err("fmlab: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
