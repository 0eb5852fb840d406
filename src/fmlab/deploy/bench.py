"""Latency and throughput of one checkpoint under several runtimes, plus test accuracy under each.

What a number covers: the whole call a user makes with an input already in the runtime's own
array type (torch: ``net(x)`` under inference_mode; ORT: ``session.run`` with its input binding
and output copy). Batch-1 latency is timed call by call after warm-up (p50, p99); throughput is
the median over repeats of one batch call. Compile/trace time is reported apart, never inside a
latency. Batch 1 runs on ``latency_threads`` (1 by default: a single image is too little work to
share), batches on ``threads``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmlab.deploy.infer import InferError, Loaded, test_set
from fmlab.deploy.onnx_export import INPUT, build_models, session
from fmlab.training import env

RUNTIMES = ("torch_eager", "torch_script", "torch_compile", "ort_fp32", "ort_int8")
DEFAULT_RUNTIMES = ("torch_eager", "torch_script", "ort_fp32", "ort_int8")

Fn = Callable[[Any], Any]


def percentile_ms(ts_ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(ts_ns, dtype=np.float64), q) / 1e6)


def latency(fn: Fn, x: Any, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn(x)
    ts = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t = clock()
        fn(x)
        ts.append(clock() - t)
    return {
        "p50_ms": percentile_ms(ts, 50),
        "p99_ms": percentile_ms(ts, 99),
        "mean_ms": float(np.mean(ts) / 1e6),
        "runs": runs,
    }


def throughput(fn: Fn, x: Any, repeats: int) -> float:
    """Images per second: batch size over the median time of one call."""
    fn(x)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return len(x) / float(np.median(ts))


class Runtime:
    """How to build one runtime's call at a thread count; `prep_s` is its compile/trace/load time."""

    def __init__(self, name: str, ld: Loaded, onnx_paths: dict[str, Path]) -> None:
        self.name, self.ld, self.onnx_paths = name, ld, onnx_paths
        self.prep_s = 0.0
        self.is_torch = name.startswith("torch")

    def make(self, threads: int, examples: list[np.ndarray]) -> Fn:
        """A callable on this runtime's array type; its one-off costs, including the first call at each
        input shape (TorchScript profiles, inductor compiles per shape), go to prep_s."""
        t0 = time.perf_counter()
        if self.is_torch:
            torch.set_num_threads(threads)
            net = self.ld.net
            exs = [torch.from_numpy(e) for e in examples]
            with torch.inference_mode():
                if self.name == "torch_script":
                    net = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, exs[0])))
                elif self.name == "torch_compile":
                    torch._dynamo.reset()  # inductor bakes the thread count into its kernels
                    net = torch.compile(net, dynamic=False)
                for ex in exs:
                    for _ in range(2):
                        net(ex)

            def fn(x: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return net(x)
        else:
            sess = session(self.onnx_paths[self.name.removeprefix("ort_")], threads)
            for ex in examples:
                sess.run(None, {INPUT: ex})

            def fn(x: np.ndarray) -> np.ndarray:
                return sess.run(None, {INPUT: x})[0]

        self.prep_s += time.perf_counter() - t0
        return fn

    def convert(self, x: np.ndarray) -> Any:
        return torch.from_numpy(x) if self.is_torch else x

    def logp(self, out: Any) -> np.ndarray:
        return out.numpy() if torch.is_tensor(out) else out


def check_runtimes(runtimes: tuple[str, ...]) -> None:
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise InferError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")


def bench(
    ld: Loaded,
    *,
    threads: int = 0,
    latency_threads: int = 1,
    runs: int = 1000,
    batches: tuple[int, ...] = (256, 1024),
    repeats: int = 10,
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES,
    calib_n: int = 500,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Per runtime: batch-1 latency, throughput per batch size, test accuracy; plus the setting."""
    check_runtimes(runtimes)
    if runs < 1 or repeats < 1:
        raise InferError("--runs and --repeats must be at least 1")
    threads = threads or env.cores()
    old_threads = torch.get_num_threads()
    x, y = test_set(ld, data_dir)
    xn, yn = x.numpy(), y.numpy()
    report: dict[str, Any] = {
        "checkpoint": str(ld.ckpt_dir),
        "trial_id": ld.trial_id,
        "threads": threads,
        "latency_threads": latency_threads,
        "runs": runs,
        "repeats": repeats,
        "batches": list(batches),
        "env": env.provenance(torch.device("cpu")),
        "results": [],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="fmlab-bench-") as tmp:
            onnx_paths: dict[str, Path] = {}
            if any(r.startswith("ort") for r in runtimes):
                t0 = time.perf_counter()
                onnx_paths = build_models(ld, Path(tmp), "ort_int8" in runtimes, calib_n, data_dir)
                report["onnx_build_s"] = time.perf_counter() - t0
            for name in runtimes:
                report["results"].append(
                    _one(Runtime(name, ld, onnx_paths), xn, yn, threads, latency_threads, runs, batches, repeats)
                )
    finally:
        torch.set_num_threads(old_threads)
    rs = report["results"]
    report["fastest_latency"] = min(rs, key=lambda r: r["latency"]["p50_ms"])["runtime"]
    report["fastest_throughput"] = max(rs, key=lambda r: r["images_per_s"][str(max(batches))])["runtime"]
    return report


def _one(
    rt: Runtime,
    xn: np.ndarray,
    yn: np.ndarray,
    threads: int,
    latency_threads: int,
    runs: int,
    batches: tuple[int, ...],
    repeats: int,
) -> dict[str, Any]:
    one = rt.make(latency_threads, [xn[:1]])
    lat = latency(one, rt.convert(xn[:1]), runs, warmup=max(50, runs // 10))
    del one
    eval_batch = max(batches)
    chunks = [xn[i : i + eval_batch] for i in range(0, len(xn), eval_batch)]
    big = rt.make(threads, [xn[:b] for b in batches] + [chunks[-1]])
    ips = {str(b): throughput(big, rt.convert(xn[:b]), repeats) for b in batches}
    logp = np.concatenate([rt.logp(big(rt.convert(c))) for c in chunks])
    return {
        "runtime": rt.name,
        "latency": lat,
        "images_per_s": ips,
        "test_acc": float((logp.argmax(1) == yn).mean()),
        "prep_s": rt.prep_s,
    }
