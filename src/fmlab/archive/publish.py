"""`fmlab publish`: a study's results as a folder that lives in the repository (fmlab.archive.load imports it).

    results/<study>-<budget>/
      trials.csv, epochs.csv     what `fmlab results` exports (every planned trial the store knows)
      summary.md, summary.json   the report's summary (summary.json when the report writes one)
      *.png, *.svg, cells.csv …  the report's figures and tables
      run.json                   study file (path relative to the repository) and its sha256, seeds,
                                 commit, command, hardware, summed wall time, dates, counts, per-trial timings
      best/                      the best COMPLETE trial on the validation metric: best.safetensors + trial.json

No other checkpoints, no SQLite files, no absolute paths. A folder may hold a study in progress: import
loads its COMPLETE trials into a store (same ids: ids are config hashes, checked with this code) so that
`fmlab report` regenerates without training and `fmlab sweep` of the same file and budget runs only
the trials the folder lacks.

On the api floor, above fmlab.api.handles: it builds on api.StudyHandle (export, report, best) and the api does
not import it; ``fmlab.publish_results`` is this module's function, ``fmlab.import_results`` fmlab.archive.load's.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from fmlab.errors import FmlabError
from fmlab.store.db import DEFAULT_PATH

RUN_SCHEMA = "fmlab.results/1"
REPORT_FILES = ("summary.md", "summary.json")  # copied when present
REPORT_EXTS = (".png", ".svg", ".csv")  # figures and the report's tables (cells.csv, effects.csv, ...)
TABLES = ("trials.csv", "epochs.csv")
BEST_FILES = ("best.safetensors", "trial.json")
MAX_REPORT_FILE = 5_000_000  # bytes: a larger figure is left out (the site itself is never copied)


class PublishError(FmlabError):
    """A folder that cannot be published or imported; the message names the file and the fix."""


def default_out(study: str, budget: str) -> Path:
    return Path("results") / f"{study}-{budget}"


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def repo_root(start: Path) -> Path | None:
    top = _git(["rev-parse", "--show-toplevel"], start if start.is_dir() else start.parent)
    return Path(top) if top else None


def _rel_study_path(path: Path) -> str:
    """The study file relative to its repository (else to the working directory, else its name)."""
    p = path.resolve()
    for base in (repo_root(p.parent), Path.cwd()):
        if base is not None:
            try:
                return p.relative_to(base.resolve()).as_posix()
            except ValueError:
                pass
    return p.name


def shown_path(p: str | Path) -> str:
    """A path for run.json's command: as given when relative, relative to the working directory when
    inside it, else only its name (an absolute path of this machine means nothing elsewhere)."""
    p = Path(p)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.name


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _hardware(envs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the trials ran on (from their recorded provenance) plus this machine's CPU model."""
    def vals(k: str) -> list[Any]:
        return sorted({str(e[k]) for e in envs if e.get(k) is not None})

    from fmlab.training.env import cpu_model

    return {"cpu_model": cpu_model(), "cpu_model_note": "of the machine that published",
            "threads": vals("threads"), "torch": vals("torch"), "device": vals("device"),
            "device_name": vals("device_name"), "cpu_bf16": vals("cpu_bf16"), "hosts": vals("host")}  # fmt: skip


def _scrub_env(env: dict[str, Any]) -> dict[str, Any]:
    """Provenance without paths of the machine that ran (a --data-dir is machine-specific)."""
    e = json.loads(json.dumps(env))
    ro = e.get("run_options")
    if isinstance(ro, dict) and ro.get("data_dir"):
        ro["data_dir"] = None
    return e


def publish_results(study_file: str | Path, budget: str = "full", *, store: str | Path = DEFAULT_PATH,
                    out: str | Path | None = None, seeds: tuple[int, ...] | None = None,
                    command: str = "") -> dict[str, Any]:  # fmt: skip
    """Write results/<study>-<budget>/ (or out) atomically from a store, as `fmlab publish` does:
    trials.csv, epochs.csv, the report's summary and figures, run.json, best/ (a temporary folder next to
    it, renamed over it). Returns run.json (+ out)."""
    from fmlab.api.handles import StoreHandle
    from fmlab.store.db import Store, StoreError
    from fmlab.study import spec as fstudy
    from fmlab.training.checkpoint import write_json

    sf = Path(study_file)
    st = fstudy.load(sf, budget, seeds)
    store = Path(store)
    out = Path(out) if out else default_out(st.name, st.budget)
    planned = {t.id: t for t in st.trials()}
    with Store(store, create=False) as s:
        s.study(st.name)
        if st.budget not in s.study(st.name)["budgets"]:
            raise StoreError(f"{store}: study '{st.name}' has no trials under budget '{st.budget}'; "
                             f"run 'fmlab sweep {study_file} --budget {st.budget}' first")  # fmt: skip
        recs = {r["id"]: r for r in s.records(st.name, st.budget)}
        s.record_study(st)  # the report follows the study file's analysis keys (claims, min_effect, transform)
    complete = [recs[i] for i in planned if i in recs and recs[i]["state"] == "COMPLETE"]
    failed = [i for i in planned if i in recs and recs[i]["state"] == "FAILED"]
    h = StoreHandle(store).study(st.name, st.budget)
    best = h.best()
    best_dir = h.checkpoint()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        h.export(tmp)
        _finished_only(tmp)
        rep_dir = Path(tempfile.mkdtemp(prefix="fmlab-report-"))
        try:
            h.report(rep_dir)
            for f in sorted(rep_dir.iterdir()):
                keep = f.name in REPORT_FILES or (f.suffix in REPORT_EXTS and f.stat().st_size <= MAX_REPORT_FILE)
                if f.is_file() and keep and f.name not in TABLES:
                    shutil.copy2(f, tmp / f.name)
        finally:
            shutil.rmtree(rep_dir, ignore_errors=True)
        best_id = None
        if best is not None and best_dir is not None:
            best_id = str(best["id"])
            (tmp / "best").mkdir()
            shutil.copy2(best_dir / "best.safetensors", tmp / "best" / "best.safetensors")
            tj = json.loads((best_dir / "trial.json").read_text())
            tj["env"] = _scrub_env(tj.get("env", {}))
            write_json(tmp / "best" / "trial.json", tj)
        starts = [r["started"] for r in complete if r["started"]]
        ends = [r["finished"] for r in complete if r["finished"]]
        with Store(store, create=False) as s:
            envs = {i: s.trial(i)["env"] for i in (r["id"] for r in complete)}
        root = repo_root(sf.resolve().parent)
        dirty = bool(_git(["status", "--porcelain", "--untracked-files=no"], root)) if root else None
        run = {"schema": RUN_SCHEMA, "study": st.name, "budget": st.budget, "label": st.label,
               "study_file": _rel_study_path(sf), "study_sha256": sha256_file(sf), "seeds": list(st.seeds),
               "select": st.select, "commit": _git(["rev-parse", "HEAD"], root) if root else None,
               "dirty": dirty, "command": command, "published": _iso(time.time()),
               "hardware": _hardware(list(envs.values())),
               "wall_s": sum(float(r["timings"].get("total_s") or 0.0) for r in complete),
               "first_trial_started": _iso(min(starts)) if starts else None,
               "last_trial_finished": _iso(max(ends)) if ends else None,
               "counts": {"planned": len(planned), "complete": len(complete), "failed": len(failed),
                          "missing": len(planned) - len(complete) - len(failed)},
               "best": best_id,
               "trials": {r["id"]: {"timings": r["timings"], "started": r["started"], "finished": r["finished"],
                                    "env": _scrub_env(envs[r["id"]])} for r in complete}}  # fmt: skip
        write_json(tmp / "run.json", run)
        _scrub_paths(tmp, [store.resolve().parent, Path.cwd().resolve(), tmp.resolve(), *([root] if root else [])])
        os.chmod(tmp, 0o755)
        for f in tmp.rglob("*"):
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**run, "out": str(out)}


def _finished_only(folder: Path) -> None:
    """The tables as a fresh store holds them after import: a trial not yet finished (RUNNING, or WAITING
    with an 'interrupted' note) is WAITING with no epochs; a FAILED trial keeps its error, not its epochs."""
    rows = read_csv(folder / "trials.csv")
    done = {r["id"] for r in rows if r["state"] == "COMPLETE"}
    for r in rows:
        if r["state"] != "COMPLETE":
            r["epochs"] = "0"
            if r["state"] != "FAILED":
                r.update(state="WAITING", error="")
    _write_csv(folder / "trials.csv", rows)
    _write_csv(folder / "epochs.csv", [e for e in read_csv(folder / "epochs.csv") if e["trial_id"] in done])


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    from fmlab.report.export import write

    write(rows, path, "csv")  # as results.export writes it, so a fresh store's export equals it


def read_csv(p: Path) -> list[dict[str, str]]:
    """A results folder's CSV table as rows; a clear error naming the file when it is missing or unreadable."""
    try:
        with open(p, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise PublishError(f"{p}: not found; republish the folder with 'fmlab publish'") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PublishError(f"{p}: unreadable CSV ({e}); republish the folder with 'fmlab publish'") from None


def _scrub_paths(folder: Path, prefixes: list[Path]) -> None:
    """Rewrite absolute paths of this machine (store, repository, working and temporary folders) in the
    folder's text files as relative ones; then refuse to publish if any absolute path of them is left."""
    roots = sorted({str(p.resolve()) for p in prefixes}, key=len, reverse=True)
    for f in folder.rglob("*"):
        if not f.is_file() or f.suffix not in (".md", ".json", ".csv", ".svg", ".txt", ".html"):
            continue
        text = f.read_text()
        new = text
        for r in roots:
            new = new.replace(r + "/", "").replace(r, ".")
        if new != text:
            f.write_text(new)
        left = [r for r in roots if r in new]
        if left:
            raise PublishError(f"{f.name}: still holds the absolute path {left[0]}; nothing was published")
