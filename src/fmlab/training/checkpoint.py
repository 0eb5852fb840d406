"""Files on disk: a trial's checkpoint (best.safetensors + trial.json) and its per-epoch resume state (ResumeState).

Tensors go to safetensors, everything else to JSON; nothing is ever unpickled. Every file is
written to a temporary name and renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as np_load
from safetensors.numpy import save_file as np_save
from safetensors.torch import load_file as torch_load
from safetensors.torch import save_file as torch_save

from fmlab.config.schema import Config, ConfigError, from_dict
from fmlab.data.idx import CLASSES
from fmlab.errors import FmlabError


class CheckpointError(FmlabError):
    """A missing or unreadable checkpoint; the message names the file."""


def atomic_write(path: Path, write: Any) -> None:
    """write(tmp_path) then rename onto path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda t: Path(t).write_text(text))


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda t: Path(t).write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n"))


def trial_json(result: Any) -> dict[str, Any]:
    """trial.json: everything of a TrialResult but the weights, plus how to feed the network."""
    d = {k: v for k, v in asdict(result).items() if k != "weights"}
    cfg = result.config["data"]
    d["classes"] = list(CLASSES)
    d["input"] = {
        "shape": [1, 28, 28],
        "scale": 1 / 255,
        "mean": cfg["mean"],
        "std": cfg["std"],
        "note": "x = (pixels / 255 - mean) / std; light object on a dark background",
    }
    d["output"] = "log-probabilities over classes"
    return d


def save_trial(result: Any, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    atomic_write(out / "best.safetensors", lambda t: np_save(dict(result.weights), t))
    write_json(out / "trial.json", trial_json(result))
    return out


def load_trial(ckpt_dir: str | Path) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
    """(config, weights, trial.json) from a checkpoint directory."""
    d = Path(ckpt_dir)
    meta_path, w_path = d / "trial.json", d / "best.safetensors"
    for p in (meta_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"{p}: not found; a checkpoint directory holds trial.json and best.safetensors")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e}); re-export or retrain the trial") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{meta_path}: no 'config' object; this is not an fmlab trial.json")
    try:
        cfg = from_dict(meta["config"])
    except ConfigError as e:
        raise CheckpointError(f"{meta_path}: {e}") from None
    try:
        weights = torch_load(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path}: not a readable safetensors file ({e})") from None
    return cfg, weights, meta


# ---------------------------------------------------------------- per-epoch resume state


@dataclass
class ResumeState:
    """A trial's per-epoch resume state, and the one owner of its folder's files: state.safetensors (every
    tensor: net.*, best.*, opt.<param>.<name>, rng.<stream>, and ema.* with train.ema) and state.json (the loop
    state, the optimizer's scalars and param groups), json written last. A packed network writes what a single
    run writes."""

    train: dict[str, Any]  # the loop state (fmlab.training.progress.LoopState.to_dict)
    net: dict[str, torch.Tensor]  # the network's state_dict
    opt: dict[str, Any]  # the optimizer's state_dict
    best: dict[str, torch.Tensor]  # the best epoch's weights
    rng: dict[str, torch.Tensor]  # the random streams by name: torch, gen, aug, cuda, mix
    ema: dict[str, torch.Tensor] = field(default_factory=dict)  # train.ema: the averaged weights ({}: off)

    FILES: ClassVar[tuple[str, str]] = ("state.safetensors", "state.json")  # in the order they are written
    TENSORS, META = FILES

    @classmethod
    def exists(cls, d: str | Path | None) -> bool:
        """Whether folder d holds a resume state (its json, written last, is there)."""
        return bool(d) and (Path(d) / cls.META).is_file()  # type: ignore[arg-type]

    @classmethod
    def epoch(cls, d: str | Path) -> int:
        """The epochs a resume state has finished (OSError, ValueError, KeyError when it is unreadable)."""
        return int(json.loads((Path(d) / cls.META).read_text())["train"]["epoch"])

    def write(self, d: str | Path) -> None:
        d = Path(d)
        tensors: dict[str, torch.Tensor] = {}
        tensors.update({f"net.{k}": v for k, v in self.net.items()})
        tensors.update({f"best.{k}": v for k, v in self.best.items()})
        tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        scalars: dict[str, dict[str, Any]] = {}
        for pid, pstate in self.opt["state"].items():
            for k, v in pstate.items():
                if torch.is_tensor(v):
                    tensors[f"opt.{pid}.{k}"] = v
                else:
                    scalars.setdefault(str(pid), {})[k] = v
        tensors.update({f"rng.{k}": v for k, v in self.rng.items()})
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        seen: set[int] = set()
        for k, v in tensors.items():  # the best weights may be the current ones: safetensors wants copies
            if v.numel() and v.data_ptr() in seen:
                tensors[k] = v.clone()
            seen.add(v.data_ptr())
        atomic_write(d / self.TENSORS, lambda t: torch_save(tensors, t))
        meta = {"train": self.train, "opt_scalars": scalars, "param_groups": self.opt["param_groups"]}
        write_json(d / self.META, meta)

    @classmethod
    def read(cls, d: str | Path) -> ResumeState:
        """The resume state in folder d, on the CPU."""
        d = Path(d)
        meta = json.loads((d / cls.META).read_text())
        t = torch_load(str(d / cls.TENSORS))
        state: dict[int, dict[str, Any]] = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        for pid, extra in meta["opt_scalars"].items():
            state.setdefault(int(pid), {}).update(extra)
        parts = ("net", "best", "rng", "ema")
        part = {p: {k[len(p) + 1 :]: v for k, v in t.items() if k.startswith(p + ".")} for p in parts}
        return cls(
            meta["train"],
            part["net"],
            {"state": state, "param_groups": meta["param_groups"]},
            part["best"],
            part["rng"],
            part["ema"],
        )

    # The Ray executor carries a state between machines as its files' bytes.

    @classmethod
    def files_as_bytes(cls, d: str | Path | None) -> dict[str, bytes]:
        """Folder d's resume-state files as bytes by name ({} when there is none, or only part of one)."""
        files = {n: (Path(d) / n).read_bytes() for n in cls.FILES if d and (Path(d) / n).is_file()}
        return files if len(files) == len(cls.FILES) else {}

    @classmethod
    def replace_files(cls, d: str | Path, files: dict[str, bytes]) -> None:
        """Replace folder d as a whole by the files of files_as_bytes (a new folder renamed into place): never
        half old, half new."""
        d = Path(d)
        new = d.with_name(d.name + ".new")
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        for name in cls.FILES:
            (new / name).write_bytes(files[name])
        shutil.rmtree(d, ignore_errors=True)
        new.rename(d)


def numpy_weights(path: str | Path) -> dict[str, np.ndarray]:
    return np_load(str(path))
