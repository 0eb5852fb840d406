#!/usr/bin/env python3
"""bench-train's GEMM peak probe (n = 1024, fmlab.timing.peak.SIZES) against the 2048 x 2048 probe it replaced,
fp32, in one process, alternating, 2 threads: the fastest reading of each over 4 rounds (issue 34: the small
probe must read within 10% of the big one). `PYTHONPATH=src python scripts/peak_sizes.py`; one JSON line."""

import json

from fmlab.timing import peak

out = {"1024": [], "2048": []}
for _ in range(4):
    for n in (1024, 2048):
        out[str(n)].append(round(peak.gemm_peaks(2, sizes=(n,), dtypes=("fp32",))["fp32"]["gflops"], 1))
best = {k: max(v) for k, v in out.items()}
print(json.dumps({"rounds": out, "best": best, "ratio_1024_over_2048": round(best["1024"] / best["2048"], 3)}))
