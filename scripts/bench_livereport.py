"""What one live-report page costs against the final page (BENCHMARKS.md "Live report").

    python scripts/bench_livereport.py STORE STUDY BUDGET [--repeats 3]

Writes into a temporary folder: a warm-up page (imports, font cache), then `repeats` live pages
(no test-set pass) and one final page (the best trial's confusion matrix on the test set), each timed
in wall and CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from fmlab.report import live as livereport
from fmlab.store.db import Store

ap = argparse.ArgumentParser()
ap.add_argument("store")
ap.add_argument("study")
ap.add_argument("budget")
ap.add_argument("--repeats", type=int, default=3)
a = ap.parse_args()
s = Store(a.store, read_only=True)
out = tempfile.mkdtemp(prefix="fmlab-live-bench-")
livereport.write(s, a.study, a.budget, out, live="warm-up")


def timed(**kw: object) -> dict[str, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    livereport.write(s, a.study, a.budget, out, **kw)
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)}


live = [timed(live="live page") for _ in range(a.repeats)]
final = timed(test_pass=True)
print(json.dumps({"live": live, "final": final, "out": out}))
