"""run.json's provenance for a results folder (fmlab.archive.publish writes it, fmlab.archive.load reads it
back): the study file relative to its repository and its sha256, the commit and whether the tree was dirty,
the command, what the trials ran on, dates; never a path of the publishing machine."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmlab.store.db import State

if TYPE_CHECKING:
    from fmlab.store.states import TrialRecord
    from fmlab.study.spec import Study

RUN_SCHEMA = "fmlab.results/1"


def git(args: list[str], cwd: Path) -> str | None:
    """git's output in cwd, or None (no git, not a repository, a failing command)."""
    try:
        p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def repo_root(start: Path) -> Path | None:
    """The repository holding start (a folder or a file), or None."""
    top = git(["rev-parse", "--show-toplevel"], start if start.is_dir() else start.parent)
    return Path(top) if top else None


def rel_study_path(path: Path) -> str:
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


def iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def hardware(envs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the trials ran on (from their recorded provenance) plus this machine's CPU model."""

    def vals(k: str) -> list[Any]:
        return sorted({str(e[k]) for e in envs if e.get(k) is not None})

    from fmlab.training.env import cpu_model

    return {
        "cpu_model": cpu_model(),
        "cpu_model_note": "of the machine that published",
        "threads": vals("threads"),
        "torch": vals("torch"),
        "device": vals("device"),
        "device_name": vals("device_name"),
        "cpu_bf16": vals("cpu_bf16"),
        "hosts": vals("host"),
    }


def scrub_env(env: dict[str, Any]) -> dict[str, Any]:
    """Provenance without paths of the machine that ran (a --data-dir is machine-specific)."""
    e = json.loads(json.dumps(env))
    ro = e.get("run_options")
    if isinstance(ro, dict) and ro.get("data_dir"):
        ro["data_dir"] = None
    return e


def no_validation(st: Study) -> str | None:
    """run.json's plain words for a study whose planned trials all had no validation split (data.val_size = 0):
    what they trained on, for how long, where they were tested, and that nothing was chosen; None otherwise."""
    cfgs = [t.config for t in st.trials()]
    if not cfgs or any(c.data.val_size for c in cfgs):
        return None
    n = sorted({c.data.train_subset or 60_000 for c in cfgs})
    images = (
        "all 60,000 training images"
        if n == [60_000]
        else f"{'/'.join(f'{x:,}' for x in n)} training images (data.train_subset, drawn from all 60,000)"
    )
    epochs = "/".join(str(e) for e in sorted({c.train.max_epochs for c in cfgs}))
    return (
        f"The trials trained on {images} with no validation split (data.val_size = 0), a fixed schedule of "
        f"{epochs} epochs, and were tested at their last epoch. Nothing was chosen on validation, so there is no "
        "best trial and no best/ folder (the test set never chooses); their test accuracy stands beside the "
        "validation-selected figure and never counts toward the goal."
    )


def run_json(
    st: Study,
    sf: Path,
    planned: list[str],
    recs: dict[str, TrialRecord],
    envs: dict[str, dict[str, Any]],
    best_id: str | None,
    command: str,
    root: Path | None,
) -> dict[str, Any]:
    """run.json: the study file and its hash, seeds, commit, command, hardware, summed wall time, dates,
    counts and per-trial timings of the planned trials (in plan order)."""
    complete = [recs[i] for i in planned if i in recs and recs[i]["state"] == State.COMPLETE]
    failed = [i for i in planned if i in recs and recs[i]["state"] == State.FAILED]
    envs = {r["id"]: envs.get(r["id"], {}) for r in complete}
    starts = [r["started"] for r in complete if r["started"]]
    ends = [r["finished"] for r in complete if r["finished"]]
    dirty = bool(git(["status", "--porcelain", "--untracked-files=no"], root)) if root else None
    words = no_validation(st)
    return {
        "schema": RUN_SCHEMA,
        "study": st.name,
        "budget": st.budget,
        "label": st.label,
        "study_file": rel_study_path(sf),
        "study_sha256": sha256_file(sf),
        "seeds": list(st.seeds),
        "select": st.select,
        **({"no_validation": words} if words else {}),  # only then: other folders' run.json stay as they were
        "commit": git(["rev-parse", "HEAD"], root) if root else None,
        "dirty": dirty,
        "command": command,
        "published": iso(time.time()),
        "hardware": hardware(list(envs.values())),
        "wall_s": sum(float(r["timings"].get("total_s") or 0.0) for r in complete),
        "first_trial_started": iso(min(starts)) if starts else None,
        "last_trial_finished": iso(max(ends)) if ends else None,
        "counts": {
            "planned": len(planned),
            "complete": len(complete),
            "failed": len(failed),
            "missing": len(planned) - len(complete) - len(failed),
        },
        "best": best_id,
        "trials": {
            r["id"]: {
                "timings": r["timings"],
                "started": r["started"],
                "finished": r["finished"],
                "env": scrub_env(envs[r["id"]]),
            }
            for r in complete
        },
    }
