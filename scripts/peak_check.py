"""Check bench-train's GEMM peak probe against an independent packed-Linear probe, in one process.

    PYTHONPATH=src python scripts/peak_check.py --threads 1 --rounds 3

Per round and dtype (fp32, bf16), in turn, at the same thread count:
- fmlab: peak.gemm_peak_gflops (oneDNN-packed nn.Linear and torch.mm on 1024 and 2048 squares,
  3 warm-up calls, fastest of 20);
- v1: the probe bench-train used before (plain tensors for torch.mm, oneDNN matmul on to_mkldnn()
  operands; 1 warm-up call, fastest of 5), for comparison with the figures it produced;
- independent: torch.utils.benchmark.Timer on torch.utils.mkldnn.to_mkldnn(nn.Linear(n, n), dtype)
  with an mkldnn input, n = 1024 and 2048: its own warm-up and blocks of calls (blocked_autorange),
  the fastest block's mean per call. Another harness and other code than fmlab's; the same kind of kernel.
A table on stderr, then one JSON line on stdout. The rounds alternate so a busy spell hits every probe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
from torch import nn
from torch.utils import benchmark, mkldnn

from fmlab.timing import peak

DT = {"fp32": torch.float32, "bf16": torch.bfloat16}


def v1_probe(threads: int, dtype: str, sizes=(1024, 2048), repeats: int = 5) -> float:
    """The probe as it was: per size and kernel one warm-up call, then the best of 5 single calls."""
    torch.set_num_threads(threads)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(DT[dtype]), torch.randn(n, n).to(DT[dtype])
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        for call in (lambda a=a, b=b: torch.mm(a, b), lambda am=am, bm=bm: torch._C._nn.mkldnn_linear(am, bm, None)):
            call()
            for _ in range(repeats):
                t0 = time.perf_counter()
                call()
                best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def independent_probe(threads: int, dtype: str, n: int, min_run_time: float = 1.0) -> float:
    torch.set_num_threads(threads)
    with torch.no_grad():
        lin = mkldnn.to_mkldnn(nn.Linear(n, n), DT[dtype])
        x = torch.randn(n, n).to(DT[dtype]).to_mkldnn()
        m = benchmark.Timer("lin(x)", globals={"lin": lin, "x": x}, num_threads=threads).blocked_autorange(
            min_run_time=min_run_time
        )
    return 2 * n**3 / min(m.times) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows = []
    load = os.getloadavg()
    for r in range(a.rounds):
        for dtype in DT:
            fm = peak.gemm_peak_gflops(a.threads, dtype)
            ind = {n: independent_probe(a.threads, dtype, n) for n in (1024, 2048)}
            row = {
                "round": r,
                "dtype": dtype,
                "fmlab": fm["gflops"],
                "fmlab_size": fm["size"],
                "fmlab_kernel": fm["kernel"],
                "v1": v1_probe(a.threads, dtype),
                "independent": max(ind.values()),
                "independent_by_size": ind,
            }
            rows.append(row)
            print(
                f"round {r} {dtype}: fmlab {row['fmlab']:6.1f} ({fm['kernel']}, n={fm['size']})  v1 {row['v1']:6.1f}"
                f"  independent {ind[1024]:6.1f} (n=1024) {ind[2048]:6.1f} (n=2048) GFLOP/s",
                file=sys.stderr,
                flush=True,
            )
    best = {d: {k: max(x[k] for x in rows if x["dtype"] == d) for k in ("fmlab", "v1", "independent")} for d in DT}
    for d, b in best.items():
        print(
            f"best {d}: fmlab {b['fmlab']:.1f}, v1 {b['v1']:.1f}, independent {b['independent']:.1f} GFLOP/s; "
            f"fmlab / independent {b['fmlab'] / b['independent']:.2f}, fmlab / v1 {b['fmlab'] / b['v1']:.2f}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "threads": a.threads,
                "rounds": rows,
                "best": best,
                "loadavg_start": load,
                "loadavg_end": os.getloadavg(),
                "torch": torch.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
