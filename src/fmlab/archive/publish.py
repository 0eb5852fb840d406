"""`fmlab publish`: a study's results as a folder that lives in the repository (fmlab.archive.load imports it).

    results/<study>-<budget>/
      trials.csv, epochs.csv     what `fmlab results` exports (every planned trial the store knows)
      summary.md, summary.json   the report's summary (summary.json when the report writes one)
      *.png, *.svg, cells.csv …  the report's figures and tables
      run.json                   study file (path relative to the repository) and its sha256, seeds,
                                 commit, command, hardware, summed wall time, dates, counts, per-trial timings
      study.toml                 the study file as published (that sha256): its plan and any rule it states,
                                 e.g. a search's rule for the next round, travel with the results
      best/                      the best COMPLETE trial on the validation metric: best.safetensors + trial.json
      resume/<trial id>/         while the study is in progress: an unfinished trial's resume state,
                                 state.safetensors + state.json (fmlab.archive.resume; run.json's "resume")

No other checkpoints, no SQLite files, no absolute paths. A folder may hold a study in progress: import
loads its COMPLETE trials into a store (same ids: ids are config hashes, checked with this code), and the
resume states of trials cut off part-way, so that `fmlab report` regenerates without training and
`fmlab sweep` of the same file and budget runs only what the folder lacks, each cut-off trial from its
last published epoch.

Publishing writes one thing to the store, as its own step: the study's row from the file
(record_study_row), so that the report follows the file's analysis keys; the folder itself comes from
reads only (write_results). On the archive floor, above fmlab.api.handles: it builds on api.StudyHandle
(export, report, best) and the api does not import it; ``fmlab.publish_results`` is this module's function,
``fmlab.import_results`` fmlab.archive.load's.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.archive import provenance, resume
from fmlab.errors import FmlabError
from fmlab.store.db import DEFAULT_PATH, State, StoreError

if TYPE_CHECKING:
    from fmlab.api.handles import StudyHandle
    from fmlab.archive.resume import Saved
    from fmlab.store.db import Store
    from fmlab.study.spec import Study

REPORT_FILES = ("summary.md", "summary.json")  # copied when present
REPORT_EXTS = (".png", ".svg", ".csv")  # figures and the report's tables (cells.csv, effects.csv, ...)
TABLES = ("trials.csv", "epochs.csv")
BEST_FILES = ("best.safetensors", "trial.json")
STUDY_COPY = "study.toml"  # the study file as published
MAX_REPORT_FILE = 5_000_000  # bytes: a larger figure is left out (the site itself is never copied)


class PublishError(FmlabError):
    """A folder that cannot be published or imported; the message names the file and the fix."""


def default_out(study: str, budget: str) -> Path:
    return Path("results") / f"{study}-{budget}"


def publish_results(
    study_file: str | Path,
    budget: str = "full",
    *,
    store: str | Path = DEFAULT_PATH,
    out: str | Path | None = None,
    seeds: tuple[int, ...] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Write results/<study>-<budget>/ (or out) atomically from a store, as `fmlab publish` does:
    trials.csv, epochs.csv, the report's summary and figures, run.json, best/ (a temporary folder next to
    it, renamed over it). Returns run.json (+ out).

    The two steps `fmlab publish` takes, in its order: record_study_row, the one write to the store (the
    study's row rewritten from the file, so that the report follows the file's current analysis keys:
    claims, min_effect, transform), then write_results, which only reads the store."""
    from fmlab.study import spec as fstudy

    st = fstudy.load(study_file, budget, seeds)
    record_study_row(st, store)
    return write_results(st, store=store, out=out, command=command)


def check_store(s: Store, st: Study) -> None:
    """The store knows the study and holds trials under its budget; else one clear error."""
    if st.budget not in s.study(st.name)["budgets"]:
        raise StoreError(
            f"{s.path}: study '{st.name}' has no trials under budget '{st.budget}'; "
            f"run 'fmlab sweep {st.path} --budget {st.budget}' first"
        )


def record_study_row(st: Study, store: str | Path = DEFAULT_PATH) -> None:
    """Publishing's one write to the store: the study's row rewritten from its file (Store.record_study; its
    trials are untouched), so that the report follows the file's current analysis keys. The store must
    already hold the study's trials under st.budget (check_store)."""
    from fmlab.store.db import Store

    with Store(store, create=False) as s:
        check_store(s, st)
        s.record_study(st)


def write_results(
    st: Study, *, store: str | Path = DEFAULT_PATH, out: str | Path | None = None, command: str = ""
) -> dict[str, Any]:
    """The results folder of a loaded study, as publish_results describes it, from a store it only reads
    (record_study_row first, for a report that follows the study file's analysis keys)."""
    from fmlab.api.handles import StoreHandle
    from fmlab.store.db import Store
    from fmlab.training.checkpoint import write_json

    sf, store = Path(st.path), Path(store)
    out = Path(out) if out else default_out(st.name, st.budget)
    with Store(store, create=False) as s:
        check_store(s, st)
        recs = {r["id"]: r for r in s.records(st.name, st.budget)}
        envs = s.envs([State.COMPLETE])
        states = resume.unfinished_states(s, {tid: State(r["state"]) for tid, r in recs.items()})
    h = StoreHandle(store).study(st.name, st.budget)
    best, best_dir = h.best(), h.checkpoint()
    root = provenance.repo_root(sf.resolve().parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        states = _copy_tables(h, tmp, states)
        _copy_report(h, tmp)
        best_id = _copy_best(best, best_dir, tmp / "best")
        resume.write_states(tmp, states)
        run = provenance.run_json(st, sf, [t.id for t in st.trials()], recs, envs, best_id, command, root)
        if states:  # only a study in progress has the key: a complete folder's run.json is as it was
            run["resume"] = {tid: saved.epochs for tid, saved in states.items()}
        write_json(tmp / "run.json", run)
        shutil.copyfile(sf, tmp / STUDY_COPY)
        _scrub_paths(tmp, [store.resolve().parent, Path.cwd().resolve(), tmp.resolve(), *([root] if root else [])])
        _readable(tmp)
        _replace(out, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**run, "out": str(out)}


def _copy_tables(h: StudyHandle, folder: Path, states: dict[str, Saved]) -> dict[str, Saved]:
    """trials.csv and epochs.csv as `fmlab results` exports them, less what an import would not bring;
    the resume states (of states) whose epoch rows the tables hold, which the folder carries."""
    h.export(folder)
    return _finished_only(folder, states)


def _copy_report(h: StudyHandle, folder: Path) -> None:
    """The report's summary, figures and tables (not its site, nor a figure over MAX_REPORT_FILE)."""
    rep_dir = Path(tempfile.mkdtemp(prefix="fmlab-report-"))
    try:
        h.report(rep_dir)
        for f in sorted(rep_dir.iterdir()):
            keep = f.name in REPORT_FILES or (f.suffix in REPORT_EXTS and f.stat().st_size <= MAX_REPORT_FILE)
            if f.is_file() and keep and f.name not in TABLES:
                shutil.copy2(f, folder / f.name)
    finally:
        shutil.rmtree(rep_dir, ignore_errors=True)


def _copy_best(best: dict[str, Any] | None, best_dir: Path | None, to: Path) -> str | None:
    """The best COMPLETE trial's weights and trial.json (its provenance scrubbed) into `to`; its id, or None
    when there is none yet."""
    from fmlab.training.checkpoint import write_json

    if best is None or best_dir is None:
        return None
    to.mkdir()
    shutil.copy2(best_dir / "best.safetensors", to / "best.safetensors")
    tj = json.loads((best_dir / "trial.json").read_text())
    tj["env"] = provenance.scrub_env(tj.get("env", {}))
    write_json(to / "trial.json", tj)
    return str(best["id"])


def _readable(folder: Path) -> None:
    """Plain modes (0755 folders, 0644 files), whatever the temporary folder was made with."""
    os.chmod(folder, 0o755)
    for f in folder.rglob("*"):
        os.chmod(f, 0o755 if f.is_dir() else 0o644)


def _replace(out: Path, tmp: Path) -> None:
    """tmp renamed to out; an existing out is moved aside first and removed after."""
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _finished_only(folder: Path, states: dict[str, Saved]) -> dict[str, Saved]:
    """The tables as a fresh store holds them after import: a trial not yet finished (RUNNING, or WAITING
    with an 'interrupted' note) is WAITING with no epochs, or with its resume state's n epochs (rows 1..n)
    when the store holds them all; a FAILED trial keeps its error, not its epochs. Returns the states kept."""
    rows, epochs = read_csv(folder / "trials.csv"), read_csv(folder / "epochs.csv")
    done = {r["id"] for r in rows if r["state"] == State.COMPLETE}
    n = {tid: saved.epochs for tid, saved in states.items()}

    def wanted(e: dict[str, str]) -> bool:
        return e["trial_id"] in done or int(e["epoch"]) <= n.get(e["trial_id"], 0)

    epochs = [e for e in epochs if wanted(e)]
    had = {tid: sorted(int(e["epoch"]) for e in epochs if e["trial_id"] == tid) for tid in n}
    kept = {tid: saved for tid, saved in states.items() if had[tid] == list(range(1, n[tid] + 1))}
    for r in rows:
        if r["state"] != State.COMPLETE:
            r["epochs"] = str(n[r["id"]]) if r["id"] in kept else "0"
            if r["state"] != State.FAILED:
                r.update(state=State.WAITING.value, error="")
    _write_csv(folder / "trials.csv", rows)
    _write_csv(folder / "epochs.csv", [e for e in epochs if e["trial_id"] in done or e["trial_id"] in kept])
    return kept


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
