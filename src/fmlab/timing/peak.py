"""The GEMM peak probe bench-train holds the loops to: the best GFLOP/s of an n x n product at a thread
count, over a packed oneDNN nn.Linear and torch.mm, for fp32 and bf16."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

PEAK_DTYPES = ("fp32", "bf16")


def _kernels(n: int, a: Any, b: Any, dt: Any, mkldnn: Any) -> dict[str, Callable[[], Any]]:
    """The calls timed on an n x n pair: torch.mm, and the packed Linear where this torch and CPU have it."""
    import torch
    from torch import nn

    calls = {"torch.mm": lambda a=a, b=b: torch.mm(a, b)}
    if mkldnn is not None and torch.backends.mkldnn.is_available():
        try:  # a CPU without the ISA for this dtype refuses here
            lin = mkldnn.to_mkldnn(nn.Linear(n, n), dt)
            x = a.to_mkldnn()
            lin(x)
            calls["packed_linear"] = lambda lin=lin, x=x: lin(x)
        except RuntimeError:
            pass
    return calls


def _timed(call: Callable[[], Any], n: int, warmup: int, repeats: int, budget_s: float = math.inf) -> list[float]:
    """GFLOP/s of each of up to `repeats` timed calls (2 n^3 FLOPs each), after `warmup` untimed ones; once
    warm-up and calls have taken budget_s, no further call starts (at least one is timed), so a slow kernel
    (bf16 emulated: minutes at n = 2048) costs seconds."""
    start = time.perf_counter()
    for _ in range(warmup):
        call()
        if time.perf_counter() - start > budget_s:
            break
    out: list[float] = []
    while len(out) < repeats and (not out or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        call()
        out.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return out


SIZES = (1024,)  # n of the probe's products: read within 2% of n = 2048's fp32 peak on this repo's boxes
REPEATS = 40
BUDGET_S = 2.0  # seconds per kernel and size, warm-up included, past which no further call starts


def gemm_peak_gflops(
    threads: int,
    dtype: str = "fp32",
    sizes: tuple[int, ...] = SIZES,
    repeats: int = REPEATS,
    warmup: int = 3,
    budget_s: float = BUDGET_S,
) -> dict[str, Any]:
    """Best GFLOP/s of an n x n by n x n product at `threads` threads, over two kernels:

    - packed_linear: an nn.Linear(n, n) whose weight is converted once to an oneDNN tensor
      (torch.utils.mkldnn.to_mkldnn, fp32 or bf16), called on an oneDNN (mkldnn) input, under no_grad:
      the library torch's CPU convolutions use, with no per-call conversion of either operand by torch;
    - torch.mm on plain tensors (MKL's sgemm for fp32, which on AMD CPUs may not take its AVX-512 path).

    Per kernel and size: `warmup` untimed calls, then the fastest of `repeats` timed calls (2 n^3 FLOPs
    each; the bias add, n^2, is not counted), all within budget_s (_timed). A timing is the best case the
    hardware gave, not a mean."""
    import torch

    try:  # a submodule torch does not import by itself; built on torch.jit, which torch deprecates
        from torch.utils import mkldnn
    except ImportError:  # a torch without it: torch.mm alone
        mkldnn = None

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    by_kernel: dict[str, float] = {}
    best, best_n, best_kernel = 0.0, 0, ""
    try:
        with torch.no_grad():
            for n in sizes:
                a, b = torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)
                for name, call in _kernels(n, a, b, dt, mkldnn).items():
                    for g in _timed(call, n, warmup, repeats, budget_s):
                        by_kernel[name] = max(by_kernel.get(name, 0.0), g)
                        if g > best:
                            best, best_n, best_kernel = g, n, name
    finally:
        torch.set_num_threads(before)
    return {
        "dtype": dtype,
        "gflops": best,
        "size": best_n,
        "kernel": best_kernel,
        "threads": threads,
        "repeats": repeats,
        "warmup": warmup,
        "sizes": list(sizes),
        "budget_s": budget_s,
        "by_kernel": by_kernel,
    }


def gemm_peaks(
    threads: int,
    sizes: tuple[int, ...] = SIZES,
    repeats: int = REPEATS,
    dtypes: tuple[str, ...] = PEAK_DTYPES,
    budget_s: float = BUDGET_S,
) -> dict[str, dict[str, Any]]:
    """gemm_peak_gflops for each of dtypes (those a bench compares): {"fp32": {...}, "bf16": {...}}."""
    return {d: gemm_peak_gflops(threads, d, sizes, repeats, budget_s=budget_s) for d in dtypes}


def better_of(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Two gemm_peaks probes merged: per dtype the one with the higher peak, each kernel's best of the two.
    On a shared machine the better of a probe before the runs and one after is nearer the peak."""
    peaks = dict(first)
    for d, again in second.items():
        p = peaks[d]
        kernels = {k: max(v, p["by_kernel"].get(k, 0.0)) for k, v in again["by_kernel"].items()}
        peaks[d] = {**(again if again["gflops"] > p["gflops"] else p), "by_kernel": kernels}
    return peaks
