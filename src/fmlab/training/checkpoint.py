"""Files on disk: a trial's checkpoint (best.safetensors + trial.json) and the per-epoch resume state.

Tensors go to safetensors, everything else to JSON; nothing is ever unpickled. Every file is
written to a temporary name and renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

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


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda t: Path(t).write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n"))


def trial_json(result: Any) -> dict[str, Any]:
    """trial.json: everything of a TrialResult but the weights, plus how to feed the network."""
    d = {k: v for k, v in asdict(result).items() if k != "weights"}
    cfg = result.config["data"]
    d["classes"] = list(CLASSES)
    d["input"] = {"shape": [1, 28, 28], "scale": 1 / 255, "mean": cfg["mean"], "std": cfg["std"],
                  "note": "x = (pixels / 255 - mean) / std; light object on a dark background"}  # fmt: skip
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


def save_state(d: Path, st: dict, net: torch.nn.Module, opt: torch.optim.Optimizer,
               gen: torch.Generator, best: dict[str, torch.Tensor],
               aug_gen: torch.Generator | None = None) -> None:  # fmt: skip
    """Everything needed to continue after the last finished epoch exactly as if never stopped."""
    rng = {"torch": torch.get_rng_state(), "gen": gen.get_state()}
    if aug_gen is not None:
        rng["aug"] = aug_gen.get_state()
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    write_state(d, st, net.state_dict(), opt.state_dict(), best, rng)


def write_state(d: Path, st: dict, net_sd: dict[str, torch.Tensor], osd: dict[str, Any],
                best: dict[str, torch.Tensor], rng: dict[str, torch.Tensor]) -> None:  # fmt: skip
    """The resume state from its parts (a state_dict, an optimizer state_dict, the best weights and the
    random streams by name: torch, gen, aug, cuda), so a packed network writes what a single run writes."""
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"net.{k}": v for k, v in net_sd.items()})
    tensors.update({f"best.{k}": v for k, v in best.items()})
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in osd["state"].items():
        for k, v in pstate.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    seen: set[int] = set()
    for k, v in tensors.items():  # the best weights may be the current ones: safetensors wants copies
        if v.numel() and v.data_ptr() in seen:
            tensors[k] = v.clone()
        seen.add(v.data_ptr())
    atomic_write(d / "state.safetensors", lambda t: torch_save(tensors, t))
    write_json(d / "state.json", {"train": st, "opt_scalars": scalars, "param_groups": osd["param_groups"]})


def read_state(d: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor],
                                 dict[str, torch.Tensor]]:  # fmt: skip
    """(loop state, net state_dict, optimizer state_dict, best weights, random streams by name) of a
    resume-state folder, on the CPU."""
    meta = json.loads((d / "state.json").read_text())
    t = torch_load(str(d / "state.safetensors"))
    net = {k[4:]: v for k, v in t.items() if k.startswith("net.")}
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
    rng = {k[4:]: v for k, v in t.items() if k.startswith("rng.")}
    state: dict[int, dict[str, Any]] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, extra in meta["opt_scalars"].items():
        state.setdefault(int(pid), {}).update(extra)
    return meta["train"], net, {"state": state, "param_groups": meta["param_groups"]}, best, rng


def load_state(d: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
               device: torch.device, aug_gen: torch.Generator | None = None,
               ) -> tuple[dict, dict[str, torch.Tensor]]:  # fmt: skip
    st, net_sd, osd, best, rng = read_state(d)
    net.load_state_dict(net_sd)
    opt.load_state_dict(osd)
    torch.set_rng_state(rng["torch"])
    gen.set_state(rng["gen"])
    if aug_gen is not None and "aug" in rng:
        aug_gen.set_state(rng["aug"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return st, {k: v.to(device) for k, v in best.items()}


def numpy_weights(path: str | Path) -> dict[str, np.ndarray]:
    return np_load(str(path))
