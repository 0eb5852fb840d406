"""What a trained network becomes: `fmlab params`, `bench`, `export` (ONNX) and `predict`.

Each takes CKPT: a trial id (or a unique prefix), STUDY:best (STUDY@BUDGET:best), or a checkpoint directory.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fmlab.cli.common import Command, err, out_json, positive_ints, print_table, store_path


class CkptCommand(Command):
    """A command on one checkpoint: CKPT first, then the command's own options."""

    parents: tuple[str, ...] = ("store",)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("ckpt", metavar="CKPT", help="trial id, STUDY:best, or a checkpoint directory")
        self.add_options(p)

    def add_options(self, p: argparse.ArgumentParser) -> None:
        """The options after CKPT (none by default)."""

    def load(self, args: argparse.Namespace):  # -> infer.Loaded; infer (torch) is imported only when run
        from fmlab.deploy import infer

        return infer.load(args.ckpt, store_path(args))


class Params(CkptCommand):
    name = "params"
    help = "parameters per layer (frozen ones included), total, size, forward FLOPs"
    parents = ("store", "format")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.deploy import infer

        rep = infer.param_table(self.load(args))
        if args.format == "json":
            out_json(rep)
            return 0
        rows = [
            [
                r["layer"],
                r["type"],
                ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in r["shapes"].items()),
                f"{r['params']:,}",
            ]
            for r in rep["layers"]
        ]
        print_table(["layer", "type", "shapes", "params"], [*rows, ["total", "", "", f"{rep['total']:,}"]], right=(3,))
        print(
            f"size: {rep['fp32_mb']:.3f} MB as fp32, {rep['disk_mb']:.3f} MB on disk ({rep['disk_bytes']:,} bytes, "
            f"{Path(rep['checkpoint']) / 'best.safetensors'}); MB = 10^6 bytes"
        )
        fl = rep["forward_flops_per_image"]
        print(
            f"compute: {fl / 1e6:.1f} MFLOP per image forward (conv and linear layers, a multiply-add = 2); "
            f"a training step is about 3x: {3 * fl / 1e6:.1f} MFLOP per image"
        )
        return 0


class Bench(CkptCommand):
    name = "bench"
    help = "latency and throughput: torch vs ONNX Runtime fp32/int8; last line JSON"
    parents = ("store", "data")  # its --threads is the batched runs' (batch 1 has --latency-threads): its own

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=0, help="threads for batched runs (0 = all cores)")
        p.add_argument("--latency-threads", type=int, default=1, help="threads for batch-1 latency (default 1)")
        p.add_argument("--runs", type=int, default=1000, help="timed batch-1 calls after warm-up (default 1000)")
        p.add_argument("--repeats", type=int, default=10, help="timed calls per batch size (default 10)")
        p.add_argument("--batches", default="256,1024", help="batch sizes for throughput (default 256,1024)")
        p.add_argument(
            "--runtimes",
            help="comma list of torch_eager, torch_script, torch_compile, ort_fp32, "
            "ort_int8 (default all but torch_compile: minutes to compile cold, no faster here)",
        )
        p.add_argument(
            "--save",
            type=Path,
            metavar="FILE.json",
            help="also write the JSON record (with this command) to FILE, atomically; results/bench/<folder>.json "
            "is what the README's table of best networks reads",
        )

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.deploy import bench

        ld = self.load(args)
        runtimes = tuple(args.runtimes.split(",")) if args.runtimes else bench.DEFAULT_RUNTIMES
        bench.check_runtimes(runtimes)
        batches = positive_ints(args.batches, "--batches")
        err(f"benchmarking {ld.ckpt_dir} on {', '.join(runtimes)}: {args.runs} batch-1 runs, batches {batches} ...")
        rep = bench.bench(
            ld,
            threads=args.threads,
            latency_threads=args.latency_threads,
            runs=args.runs,
            batches=batches,
            repeats=args.repeats,
            runtimes=runtimes,
            data_dir=args.data_dir,
        )
        bs = [str(b) for b in batches]
        rows = [
            [
                r["runtime"],
                f"{r['latency']['p50_ms']:.3f}",
                f"{r['latency']['p99_ms']:.3f}",
                *(f"{r['images_per_s'][b]:,.0f}" for b in bs),
                f"{100 * r['test_acc']:.2f}%",
                f"{r['prep_s']:.1f}",
            ]
            for r in rep["results"]
        ]
        print_table(
            ["runtime", "p50 ms", "p99 ms", *(f"img/s @{b}" for b in bs), "test acc", "prep s"],
            rows,
            right=tuple(range(1, len(bs) + 5)),
        )
        print(
            f"batch 1 on {rep['latency_threads']} thread(s), batches on {rep['threads']}; latency = one call "
            f"(ORT: session.run incl. input binding), p50/p99 of {rep['runs']} after warm-up; img/s = batch / "
            f"median of {rep['repeats']} calls; prep = trace/compile/session time, not in latency"
        )
        out_json(rep)
        if args.save:
            from fmlab.training.checkpoint import write_json

            write_json(args.save, {**rep, "command": shlex.join(["fmlab", *sys.argv[1:]])})
        return 0


class Export(CkptCommand):
    name = "export"
    help = "ONNX file, checked against torch on the test set"
    parents = ("store", "data")

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="file to write (atomically)")
        p.add_argument("--int8", action="store_true", help="static int8 quantization (QDQ) calibrated on train images")
        p.add_argument("--calib", type=int, default=500, help="calibration images for --int8 (default 500)")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.deploy import onnx_export

        ld = self.load(args)
        err(f"exporting {ld.ckpt_dir} to {args.onnx}{' (int8)' if args.int8 else ''} ...")
        rep = onnx_export.export(ld, args.onnx, int8=args.int8, calib_n=args.calib, data_dir=args.data_dir)
        for kind in ("fp32", "int8"):
            if kind in rep:
                p = rep[kind]
                err(
                    f"{kind}: test acc {100 * p['test_acc']:.2f}% (torch {100 * rep['torch_test_acc']:.2f}%), "
                    f"argmax agreement with torch {100 * p['argmax_agreement']:.2f}%, "
                    f"max |log-prob diff| {p['max_abs_diff']:.2e}, {p['size_mb']:.3f} MB"
                )
        if args.int8:
            err(
                f"int8 accuracy drop vs fp32: {rep['int8_acc_drop_pts']:+.2f} pts "
                f"(calibrated on {rep['int8']['calibration_images']} training images)"
            )
        err(f"wrote {rep['out']} (checked with onnx.checker; classes and normalisation in metadata_props)")
        out_json(rep)
        return 0


class Predict(CkptCommand):
    name = "predict"
    help = "top classes and probabilities for your own images"
    parents = ("store", "format")

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...) or folders")
        p.add_argument("--top", type=int, default=3, help="classes to show per image (default 3)")

    def run(self, args: argparse.Namespace) -> int:
        from fmlab.deploy import infer

        ld = self.load(args)
        preds = infer.predict(ld, args.images, top=args.top)
        if args.format == "json":
            out_json(preds)
            return 0
        for p in preds:
            tops = "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in p["top"])
            print(f"{p['file']}: {tops}")
        return 0
