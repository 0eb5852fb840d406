"""The live report: `fmlab sweep ... --report-every S` rewrites the study's report while the sweep runs.

A thread of the sweep's parent process reads the store over its own read-only connection every S
seconds and, when a trial changed state or an epoch row arrived, builds the report into a temporary
folder next to the report's, then moves each file over the old one with os.replace (atomic), the
figures and tables first and index.html last: a browser reads either the old page or the new one,
never half of one, and every figure a page names is there. The live pages skip the test-set pass on
the best checkpoint (the confusion matrix): `write()` with a checkpoint runs it once, at the end.

Live pages reload themselves (a meta refresh); the final page has none, so an open tab stops
reloading once the study is done. What the rewrites cost is kept (`stats()`): the workers lose only
the parent's CPU time spent here, which the sweep prints at the end (BENCHMARKS.md has a figure).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from fmlab.store.db import State, Store

REPORT_EXTS = (".html", ".md", ".png", ".csv", ".json")  # what build_report writes; other files are left alone


def write(
    store: Store,
    study: str,
    budget: str,
    out_dir: str | Path,
    *,
    live: str | None = None,
    reload_s: int = 10,
    test_pass: bool = False,
) -> dict[str, Any]:
    """Build the report in a temporary folder beside out_dir and move its files into out_dir, index.html
    last; report files out_dir held that this build did not write are removed. test_pass: evaluate the
    best trial (on validation) on the test set, as `fmlab report` does. Returns build_report's dict (its
    paths name out_dir)."""
    from fmlab.analysis.ranking import best_trial
    from fmlab.report.build import build_report
    from fmlab.report.export import report_frames

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.live-"))
    try:
        trials, epochs, meta = report_frames(store, study, budget)
        best = best_trial(trials, meta["select"]) if test_pass else None
        ckpt = store.trial_dir(best) if best else None
        ckpt = ckpt if ckpt is not None and (ckpt / "trial.json").is_file() else None
        # a study in progress fits rank-deficient models: no warning per page over the sweep's display
        # (record=True: also those passing the filters statsmodels adds when first imported in here)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("ignore")
            rep = build_report(trials, epochs, meta, tmp, ckpt, live=live, reload_s=reload_s)
        new = sorted((f for f in tmp.iterdir() if f.is_file()), key=lambda f: f.name == "index.html")
        for f in new:
            f.chmod(0o644)  # mkdtemp's folder is private; the files should read like `fmlab report`'s
            f.replace(out / f.name)
        names = {f.name for f in new}
        for f in out.iterdir():
            if f.is_file() and f.suffix in REPORT_EXTS and f.name not in names:
                f.unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _repath(rep, str(tmp), str(out))


def _repath(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {k: _repath(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_repath(v, old, new) for v in obj]
    return obj


class LiveReport:
    """`with LiveReport(store_path, study, budget, out_dir, every_s): sweep.run(...)`, then finish()."""

    def __init__(self, store_path: str | Path, study: str, budget: str, out_dir: str | Path, every_s: float):
        self.store_path, self.study, self.budget = Path(store_path), study, budget
        self.out, self.every_s = Path(out_dir), max(float(every_s), 0.5)
        self.reload_s = max(2, math.ceil(self.every_s))
        self.rewrites, self.wall_s, self.cpu_s = 0, 0.0, 0.0  # cpu_s: this thread's, checks included
        self.errors: list[str] = []
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="fmlab-live-report")

    def __enter__(self) -> LiveReport:
        self.started = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop rewriting (waits for a rewrite under way to finish)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _signature(self, store: Store) -> tuple[Any, ...]:
        recs = store.records(self.study, self.budget)
        return tuple((r["id"], r["state"]) for r in recs), len(store.epochs(r["id"] for r in recs))

    def _loop(self) -> None:
        # Not niced: at nice 10 a rewrite on a busy 2-core box took 81 s of wall for 3.3 s of CPU, and the
        # CPU cost is the same either way; --report-every and skipping unchanged stores bound it instead.
        store, last = None, None
        while not self._stop.is_set():
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                store = store or Store(self.store_path, read_only=True)
                sig = self._signature(store)
                if sig != last:
                    left = sum(s in (State.WAITING, State.RUNNING) for _, s in sig[0])
                    note = (
                        f"Live: rewritten every {self.every_s:g} s while the sweep runs (last at "
                        f"{time.strftime('%H:%M:%S %Z')}, {left} trial(s) to go); this page reloads every "
                        f"{self.reload_s} s. The best trial's test-set pass runs once, at the end."
                    )
                    write(store, self.study, self.budget, self.out, live=note, reload_s=self.reload_s)
                    last = sig
                    self.rewrites += 1
                    self.wall_s += time.perf_counter() - t0
            except Exception as e:  # a live page is a convenience: never stop the sweep for it
                self.errors.append(f"{type(e).__name__}: {e}")
            self.cpu_s += time.thread_time() - c0
            self._stop.wait(max(0.0, self.every_s - (time.perf_counter() - t0)))
        if store is not None:
            store.close()

    def finish(self, test_pass: bool = True) -> dict[str, Any]:
        """Stop, then write the final page (no reload), by default with the best trial's test-set pass."""
        self.stop()
        store = Store(self.store_path, read_only=True)
        try:
            t0 = time.perf_counter()
            rep = write(store, self.study, self.budget, self.out, test_pass=test_pass)
            rep["final_s"] = time.perf_counter() - t0
        finally:
            store.close()
        return rep

    def stats(self) -> dict[str, Any]:
        """Rewrites so far: count and wall seconds, this thread's CPU seconds, the time since the start."""
        return {
            "rewrites": self.rewrites,
            "rewrite_s": self.wall_s,
            "thread_cpu_s": self.cpu_s,
            "since_start_s": time.time() - self.started,
            "errors": list(self.errors),
            "out_dir": str(self.out),
        }
