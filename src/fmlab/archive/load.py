"""`fmlab import`: a results folder (fmlab.archive.publish writes them) back into a store.

load_folder reads and checks the folder against this code and the study file (ids are config hashes, so
a folder from another commit whose configs hash differently is refused, naming that commit);
import_results plans the trials it lists and loads its COMPLETE and FAILED trials under the same ids,
with the best checkpoint where the store keeps it, and the resume states of its trials cut off part-way
(fmlab.archive.resume), so that `fmlab report` regenerates without training and `fmlab sweep` of the same
file and budget runs only what the folder lacks, each cut-off trial from its last published epoch.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.archive import resume
from fmlab.archive.provenance import repo_root
from fmlab.archive.publish import BEST_FILES, PublishError, read_csv
from fmlab.config.metrics import EPOCH_COLS
from fmlab.config.states import State
from fmlab.errors import FmlabError
from fmlab.store.db import DEFAULT_PATH

if TYPE_CHECKING:
    from fmlab.store.db import Store


def _read_json(p: Path) -> dict[str, Any]:
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise PublishError(
            f"{p}: not found; a results folder holds run.json, trials.csv and epochs.csv "
            "(write one with 'fmlab publish STUDY_FILE --budget B')"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PublishError(f"{p}: not valid JSON ({e}); republish the folder with 'fmlab publish'") from None
    if not isinstance(d, dict):
        raise PublishError(f"{p}: expected a JSON object; republish the folder with 'fmlab publish'")
    return d


def _num(v: str | None, kind: type = float) -> Any:
    if v is None or v == "":
        return None
    x = kind(float(v)) if kind is int else kind(v)
    return None if isinstance(x, float) and math.isnan(x) else x


def _precision(row: dict[str, str]) -> str | None:
    """What a trials.csv row trained in: its precision column, else (a folder from before the column) its
    config's train.precision, which was then always fp32 or bf16."""
    if row.get("precision"):
        return row["precision"]
    asked = json.loads(row["config"]).get("train", {}).get("precision", "fp32")
    return None if asked == "auto" else asked


def _find_study_file(folder: Path, rel: str) -> Path:
    """run.json's study file: relative to the folder's repository, else the working directory."""
    cands = [r / rel for r in (repo_root(folder.resolve()), Path.cwd()) if r is not None]
    cands += [p / rel for p in folder.resolve().parents]
    for c in cands:
        if c.is_file():
            return c
    raise PublishError(
        f"{folder / 'run.json'}: study file '{rel}' not found (looked in the repository and the "
        "working directory); run the import from the repository root"
    )


def _epochs_by_trial(
    path: Path, epochs: list[dict[str, str]], keep: Mapping[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """epochs.csv's rows of the trials in keep, by trial; a bad row or an epoch listed twice is an error."""
    by_trial: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, int]] = set()
    for i, e in enumerate(epochs, start=2):
        tid = e.get("trial_id", "")
        if tid not in keep:
            continue
        try:
            row = {"epoch": int(e["epoch"]), **{c: _num(e.get(c)) for c in EPOCH_COLS}}
        except (KeyError, ValueError) as ex:
            raise PublishError(f"{path}: line {i}: bad row ({ex}); republish the folder") from None
        if (tid, row["epoch"]) in seen:
            raise PublishError(f"{path}: line {i}: trial {tid} epoch {row['epoch']} listed twice; republish the folder")
        seen.add((tid, row["epoch"]))
        by_trial.setdefault(tid, []).append(row)
    return by_trial


def load_folder(folder: str | Path) -> dict[str, Any]:
    """Read and check a results folder against the current code and study file (nothing is written)."""
    d = Path(folder)
    if not d.is_dir():
        raise PublishError(f"{d}: not a folder; give a results folder like results/seed-cpu")
    run = _read_run(d)
    st = _load_study(d, run)
    planned = {t.id: t for t in st.trials()}
    rows = read_csv(d / "trials.csv")
    epochs = read_csv(d / "epochs.csv")
    listed, complete = _check_trials(d, run, rows, planned)
    waiting = {r["id"] for r in rows if r.get("state") == State.WAITING}
    by_trial = _epochs_by_trial(d / "epochs.csv", epochs, {**complete, **dict.fromkeys(waiting)})
    _check_best(d, run, complete)
    try:
        states = resume.check_folder(d, rows, by_trial, {tid: t.config for tid, t in planned.items()})
    except resume.ResumeError as e:
        raise PublishError(str(e)) from None
    return {
        "dir": d,
        "run": run,
        "study": st,
        "planned": planned,
        "listed": list(dict.fromkeys(listed)),
        "complete": complete,
        "epochs": by_trial,
        "resume": states,
    }


def _read_run(d: Path) -> dict[str, Any]:
    """run.json, with the keys an import needs."""
    run = _read_json(d / "run.json")
    for k in ("study", "budget", "study_file", "seeds"):
        if k not in run:
            raise PublishError(f"{d / 'run.json'}: no '{k}' key; republish the folder with 'fmlab publish'")
    return run


def _load_study(d: Path, run: dict[str, Any]) -> Any:
    """run.json's study file loaded under its budget and seeds; it must be the study the folder names."""
    from fmlab.study import spec as fstudy

    sf = _find_study_file(d, run["study_file"])
    try:
        st = fstudy.load(sf, run["budget"], tuple(run["seeds"]))
    except FmlabError as e:
        raise PublishError(f"{d / 'run.json'}: its study file does not load: {e}") from None
    if st.name != run["study"]:
        raise PublishError(
            f"{d / 'run.json'}: study '{run['study']}' but {run['study_file']} is study '{st.name}'; "
            "republish the folder from that study file"
        )
    return st


def _check_trials(
    d: Path, run: dict[str, Any], rows: list[dict[str, str]], planned: Mapping[str, Any]
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(the ids trials.csv lists, its COMPLETE and FAILED rows by id): each row's config must hash to its id
    with this code and be a planned trial of the study file now."""
    from fmlab.config.schema import ConfigError, from_dict

    fix = (
        f"the study file or the code changed since the folder was published (commit {run.get('commit')}); "
        f"check out that commit, or republish with 'fmlab publish {run['study_file']} --budget {run['budget']}'"
    )
    complete: dict[str, dict[str, str]] = {}
    listed: list[str] = []
    for i, r in enumerate(rows, start=2):
        tid = r.get("id", "")
        try:
            cid = from_dict(json.loads(r.get("config") or "")).trial_id()
        except (json.JSONDecodeError, ConfigError, AttributeError) as e:
            raise PublishError(f"{d / 'trials.csv'}: line {i}: unreadable config ({e}); {fix}") from None
        if cid != tid:
            raise PublishError(
                f"{d / 'trials.csv'}: line {i}: trial {tid}'s config hashes to {cid} with this code; {fix}"
            )
        if tid not in planned:
            raise PublishError(
                f"{d / 'trials.csv'}: line {i}: trial {tid} is not a trial of {run['study_file']} "
                f"(budget {run['budget']}, seeds {run['seeds']}) now; {fix}"
            )
        listed.append(tid)
        if r.get("state") in (State.COMPLETE, State.FAILED):
            complete[tid] = r
    return listed, complete


def _check_best(d: Path, run: dict[str, Any], complete: Mapping[str, dict[str, str]]) -> None:
    """The best trial run.json names: its checkpoint files in best/, a COMPLETE row of trials.csv."""
    best = run.get("best")
    if best:
        for f in BEST_FILES:
            if not (d / "best" / f).is_file():
                raise PublishError(f"{d / 'best' / f}: not found; run.json names best trial {best}; republish")
        if complete.get(best, {}).get("state") != State.COMPLETE:
            raise PublishError(f"{d / 'run.json'}: best trial {best} is not a COMPLETE row of trials.csv; republish")


def import_results(folder: str | Path, *, store: str | Path = DEFAULT_PATH) -> dict[str, Any]:
    """Load a results folder into a store (created if missing), as `fmlab import` does: the trials it
    lists (unfinished ones WAITING), its COMPLETE trials with metrics, timings and epochs under the same
    ids, FAILED ones with their error (`fmlab sweep --retry-failed` reruns them), the best checkpoint where
    the store keeps it, the resume state of each trial cut off part-way (with its epoch rows so far) where
    the store's trial is WAITING and not as far along.
    Idempotent: a trial already COMPLETE or FAILED in the store is left as it is.
    Returns {study, budget, imported, failed, already, planned, best, resumable (the states placed)}."""
    from fmlab.store.db import Store

    f = load_folder(folder)
    run, st = f["run"], f["study"]
    n_complete = sum(r["state"] == State.COMPLETE for r in f["complete"].values())
    per = run.get("trials", {})
    s = Store(Path(store))
    try:
        s.plan(st, [f["planned"][tid] for tid in f["listed"]])  # the trials the folder lists, as its store had
        states = s.states(list(f["planned"]))
        todo = [tid for tid in f["complete"] if states.get(tid) not in (State.COMPLETE, State.FAILED)]
        for tid in todo:
            r = f["complete"][tid]
            extra = per.get(tid, {})
            metrics = {m: _num(r.get(m)) for m in ("val_loss", "val_acc", "test_loss", "test_acc")}
            timings = extra.get("timings") or {
                k: _num(r.get(k)) for k in ("train_s", "total_s", "train_images_per_s") if _num(r.get(k)) is not None
            }
            timings = {**timings, "precision": _precision(r)}
            s.import_complete(
                tid,
                metrics={k: v for k, v in metrics.items() if v is not None},
                timings=timings,
                env=extra.get("env") or {},
                best_epoch=_num(r.get("best_epoch"), int),
                stop_reason=r.get("stop_reason") or None,
                n_params=_num(r.get("n_params"), int),
                epochs=f["epochs"].get(tid, []),
                started=extra.get("started"),
                finished=extra.get("finished"),
                state=State(r["state"]),
                error=r.get("error") or None,
            )
        if run.get("best"):
            _import_best(s, f["dir"] / "best", run["best"])
        placed = [
            tid for tid, saved in f["resume"].items() if resume.place(s, tid, saved.files, f["epochs"].get(tid, []))
        ]
    finally:
        s.close()
    new = sum(f["complete"][t]["state"] == State.COMPLETE for t in todo)
    return {
        "study": st.name,
        "budget": st.budget,
        "imported": new,
        "failed": len(todo) - new,
        "already": n_complete - new,
        "planned": len(f["planned"]),
        "best": run.get("best"),
        "resumable": len(placed),
    }


def _import_best(s: Store, src: Path, best: str) -> None:
    """The best trial's checkpoint (best/) into the store's folder, unless the store has it already."""
    dest = s.trial_dir(best)
    if not all((dest / n).is_file() for n in BEST_FILES):
        dest.mkdir(parents=True, exist_ok=True)
        for n in BEST_FILES:
            shutil.copy2(src / n, dest / n)
        s.add_artifacts(best, {"weights": dest / "best.safetensors", "trial_json": dest / "trial.json"})
