"""`train(cfg) -> TrialResult`: one readable loop over in-memory tensors, early stopping on the
validation split, the best epoch's weights restored and evaluated once on the test set."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data as fdata
from . import env
from .config import Config, TrainConfig
from .model import build, count_params

RESULT_SCHEMA = "fmlab.trial/1"


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrialResult:
    """Plain and picklable: what a worker hands back to the process that owns the store."""

    trial_id: str
    config: dict[str, Any]
    epochs: list[dict[str, float]]  # epoch, lr, train_loss, train_acc, val_loss, val_acc, epoch_s
    best_epoch: int
    stop_reason: str  # "early_stopping" | "max_epochs"
    metrics: dict[str, float]  # best epoch's val_* plus test_loss, test_acc
    timings: dict[str, float]  # total_s, train_s, eval_s, train_images_per_s
    env: dict[str, Any]
    n_params: int
    weights: dict[str, np.ndarray] = field(repr=False)  # the best epoch's state_dict
    schema: str = RESULT_SCHEMA


def lr_at(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning rate for a global step (pure). The seed study uses a constant rate."""
    return cfg.lr


def improved(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if monitor == "val_loss" else value > best + min_delta


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
             autocast: Any = nullcontext) -> dict[str, float]:  # fmt: skip
    """Mean NLL and accuracy of log-probability outputs over (x, y), in eval mode."""
    was_training = net.training
    net.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        with autocast():
            out = net(x[i : i + batch_size])
        loss_sum += F.nll_loss(out.float(), y[i : i + batch_size], reduction="sum").item()
        correct += (out.argmax(1) == y[i : i + batch_size]).sum().item()
    net.train(was_training)
    return {"loss": loss_sum / len(y), "acc": correct / len(y)}


def _prep(split: fdata.Split, ds: fdata.Dataset, device: torch.device, fmt: torch.memory_format):
    x = fdata.normalize(split.x, ds.mean, ds.std).to(device).contiguous(memory_format=fmt)
    return x, split.y.to(device)


def train(
    cfg: Config,
    ds: fdata.Dataset | None = None,
    opts: env.RunOptions = env.RunOptions(),
    *,
    state_dir: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrialResult:
    """Train cfg's network; with state_dir, save state each epoch and resume from it if present."""
    t_start = time.perf_counter()
    cfg = cfg.resolved()
    device = env.setup(opts)
    ds = ds or fdata.load(cfg.data, opts.data_dir)
    tc = cfg.train
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    env.seed_everything(cfg.seed)
    net = build(cfg.model).to(device, memory_format=fmt)
    opt = torch.optim.Adam(net.parameters(), lr=tc.lr)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if tc.precision == "bf16" else nullcontext
    xtr, ytr = _prep(ds.train, ds, device, fmt)
    xva, yva = _prep(ds.val, ds, device, fmt)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(ytr), tc.batch_size
    steps_per_epoch = math.ceil(n / bs)

    st = {"epoch": 0, "history": [], "best": None, "best_epoch": 0, "bad_epochs": 0, "train_s": 0.0, "eval_s": 0.0}
    best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if state_dir and (Path(state_dir) / "state.json").exists():
        from .checkpoint import load_state

        st, best_weights = load_state(Path(state_dir), net, opt, gen, device)

    while st["epoch"] < tc.max_epochs and st["bad_epochs"] < tc.patience:
        epoch = st["epoch"] + 1
        t0 = time.perf_counter()
        net.train()
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for i in range(steps_per_epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at((epoch - 1) * steps_per_epoch + i, tc, steps_per_epoch)
            idx = perm[i * bs : (i + 1) * bs]
            xb, yb = xtr[idx], ytr[idx]
            with autocast():
                out = net(xb)
            loss = F.nll_loss(out.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (out.detach().argmax(1) == yb).sum()
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {epoch}")
        t1 = time.perf_counter()
        val = evaluate(net, xva, yva, opts.eval_batch_size, autocast)
        t2 = time.perf_counter()
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": train_loss,
               "train_acc": correct.item() / n, "val_loss": val["loss"], "val_acc": val["acc"],
               "epoch_s": t2 - t0}  # fmt: skip
        st["history"].append(row)
        st["train_s"] += t1 - t0
        st["eval_s"] += t2 - t1
        st["epoch"] = epoch
        score = row[tc.monitor]
        if improved(score, st["best"], tc.monitor, tc.min_delta):
            st.update(best=score, best_epoch=epoch, bad_epochs=0)
            best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            st["bad_epochs"] += 1
        if state_dir:
            from .checkpoint import save_state

            save_state(Path(state_dir), st, net, opt, gen, best_weights)
        if on_epoch:
            on_epoch(row)

    net.load_state_dict(best_weights)
    t3 = time.perf_counter()
    xte, yte = _prep(ds.test, ds, device, fmt)
    test = evaluate(net, xte, yte, opts.eval_batch_size, autocast)
    best_row = st["history"][st["best_epoch"] - 1]
    images = len(st["history"]) * n
    return TrialResult(
        trial_id=cfg.trial_id(),
        config=cfg.to_dict(),
        epochs=st["history"],
        best_epoch=st["best_epoch"],
        stop_reason="early_stopping" if st["bad_epochs"] >= tc.patience else "max_epochs",
        metrics={"val_loss": best_row["val_loss"], "val_acc": best_row["val_acc"],
                 "test_loss": test["loss"], "test_acc": test["acc"]},  # fmt: skip
        timings={"total_s": time.perf_counter() - t_start, "train_s": st["train_s"], "eval_s": st["eval_s"],
                 "test_eval_s": time.perf_counter() - t3,
                 "train_images_per_s": images / st["train_s"] if st["train_s"] else 0.0},  # fmt: skip
        env={**env.provenance(device), "run_options": opts.to_dict()},
        n_params=count_params(net),
        weights={k: v.detach().cpu().contiguous().numpy() for k, v in best_weights.items()},
    )
