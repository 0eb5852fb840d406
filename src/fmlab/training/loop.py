"""`train(cfg) -> TrialResult`: one readable loop over in-memory tensors, early stopping on the
validation split, the best epoch's weights restored and evaluated once on the test set."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmlab.config.schema import Config, TrainConfig
from fmlab.data import augment as faug
from fmlab.data import idx as fdata
from fmlab.model.nets import build, count_params
from fmlab.training import env

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
    """Learning rate for a 0-based global step (pure); the horizon is max_epochs.

    Warm-up (all but onecycle): lr * (step + 1) / W for the first W steps. Then
    constant: lr; step: lr * step_gamma ** (epoch // step_every), epoch counted from 0;
    cosine / linear: from lr down to lr_min over the steps after warm-up (t = 0 .. 1);
    onecycle: cosine rise from lr / 25 to lr over W steps (default 30% of the run), cosine fall to lr_min.
    """
    total = cfg.max_epochs * steps_per_epoch
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        warm = warm or round(0.3 * total)
        if step < warm:
            lo = cfg.lr / 25
            return lo + (cfg.lr - lo) * 0.5 * (1 - math.cos(math.pi * step / warm))
    elif step < warm:
        return cfg.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    if cfg.schedule == "step":
        return cfg.lr * cfg.step_gamma ** (step // steps_per_epoch // cfg.step_every)
    if cfg.schedule in ("cosine", "onecycle"):
        return cfg.lr_min + (cfg.lr - cfg.lr_min) * 0.5 * (1 + math.cos(math.pi * t))
    if cfg.schedule == "linear":
        return cfg.lr_min + (cfg.lr - cfg.lr_min) * (1 - t)
    return cfg.lr


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """cfg's optimizer at cfg.lr (train() sets each step's rate from lr_at). Weight decay covers
    every parameter, biases and norm scales included, as torch's own weight_decay does."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)  # fmt: skip
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def smoothed_nll(logp: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Label-smoothed loss on log-probabilities: (1 - eps) * NLL + eps * mean over classes of -log p."""
    nll = F.nll_loss(logp, y)
    return nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(1).mean()


def improved(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if monitor == "val_loss" else value > best + min_delta


@dataclass
class LoopState:
    """The loop's progress after its last finished epoch: what early stopping tracks and what resume
    restores (saved as the "train" object of the resume JSON, fmlab.training.checkpoint.save_state)."""

    epoch: int = 0  # epochs finished
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch (fmlab.config.metrics.EPOCH_COLS)
    best: float | None = None  # the best monitored value so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best; training stops at patience
    train_s: float = 0.0  # seconds in training steps, summed over epochs
    eval_s: float = 0.0  # seconds in validation passes
    prior_s: float = 0.0  # wall seconds of earlier attempts, through their last saved epoch (total_s spans them)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def saved(self, t_start: float) -> dict[str, Any]:
        """What the resume state records: this attempt's wall time since t_start added to prior_s."""
        return {**self.to_dict(), "prior_s": self.prior_s + time.perf_counter() - t_start}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def track(st: LoopState, epoch: int, score: float, cfg: TrainConfig) -> bool:
    """Early-stopping bookkeeping after an epoch (updates st's best, best_epoch, bad_epochs);
    True when score improved on the best. Training stops once bad_epochs reaches cfg.patience."""
    if improved(score, st.best, cfg.monitor, cfg.min_delta):
        st.best, st.best_epoch, st.bad_epochs = score, epoch, 0
        return True
    st.bad_epochs += 1
    return False


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
             autocast: Any = nullcontext, tta: bool = False) -> dict[str, float]:  # fmt: skip
    """Mean NLL and accuracy of log-probability outputs over (x, y), in eval mode. With tta, the
    output is the mean of the log-probs of the image and its mirror, renormalised (a geometric mean)."""
    was_training = net.training
    net.eval()
    # Sums stay on the device (float64, as Python floats were) and are read once: no host sync per batch.
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, len(y), batch_size):
        xb = x[i : i + batch_size]
        with autocast():
            out = net(xb).float()
            if tta:
                out = torch.log_softmax((out + net(xb.flip(3)).float()) / 2, dim=1)
        loss_sum += F.nll_loss(out, y[i : i + batch_size], reduction="sum")
        correct += (out.argmax(1) == y[i : i + batch_size]).sum()
    net.train(was_training)
    return {"loss": loss_sum.item() / len(y), "acc": correct.item() / len(y)}


def prepare(split: fdata.Split, ds: fdata.Dataset, device: torch.device, fmt: torch.memory_format):
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
    opt = make_optimizer(net.parameters(), tc)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if tc.precision == "bf16" else nullcontext
    xtr, ytr = prepare(ds.train, ds, device, fmt)
    xva, yva = prepare(ds.val, ds, device, fmt)
    gen = torch.Generator().manual_seed(cfg.seed)
    # Augmentation draws from its own stream, so switching it on leaves the batch order unchanged.
    aug_gen = torch.Generator(device).manual_seed(cfg.seed + 7919)
    aug = faug.enabled(cfg.data)
    n, bs = len(ytr), tc.batch_size
    steps_per_epoch = math.ceil(n / bs)

    st = LoopState()
    best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if state_dir and (Path(state_dir) / "state.json").exists():
        from fmlab.training.checkpoint import load_state

        saved, best_weights = load_state(Path(state_dir), net, opt, gen, device, aug_gen=aug_gen)
        st = LoopState.from_dict(saved)

    while st.epoch < tc.max_epochs and st.bad_epochs < tc.patience:
        epoch = st.epoch + 1
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
            if aug:
                xb = faug.augment(xb, cfg.data, aug_gen).contiguous(memory_format=fmt)
            with autocast():
                out = net(xb)
            loss = smoothed_nll(out.float(), yb, tc.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (out.detach().argmax(1) == yb).sum()
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {epoch}")
        t1 = time.perf_counter()
        val = evaluate(net, xva, yva, opts.eval_batch_size, autocast, tc.tta)
        t2 = time.perf_counter()
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": train_loss,
               "train_acc": correct.item() / n, "val_loss": val["loss"], "val_acc": val["acc"],
               "epoch_s": t2 - t0}  # fmt: skip
        st.history.append(row)
        st.train_s += t1 - t0
        st.eval_s += t2 - t1
        st.epoch = epoch
        if track(st, epoch, row[tc.monitor], tc):
            best_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if state_dir:
            from fmlab.training.checkpoint import save_state

            save_state(Path(state_dir), st.saved(t_start), net, opt, gen, best_weights, aug_gen=aug_gen)
        if on_epoch:
            on_epoch(row)

    return finish(cfg, net, best_weights, st, ds, opts, device=device, fmt=fmt, autocast=autocast,
                  t_start=t_start)


def finish(cfg: Config, net: nn.Module, best_weights: dict[str, torch.Tensor], st: LoopState,
           ds: fdata.Dataset, opts: env.RunOptions, *, device: torch.device, fmt: torch.memory_format,
           autocast: Any, t_start: float, env_extra: dict[str, Any] | None = None) -> TrialResult:  # fmt: skip
    """The best epoch's weights restored into net (a single network), evaluated once on the test
    set, and the TrialResult of the loop state st (train() and the packed loop both end here)."""
    tc = cfg.train
    net.load_state_dict(best_weights)
    t3 = time.perf_counter()
    xte, yte = prepare(ds.test, ds, device, fmt)
    test = evaluate(net, xte, yte, opts.eval_batch_size, autocast, tc.tta)
    best_row = st.history[st.best_epoch - 1]
    images = len(st.history) * len(ds.train.y)
    return TrialResult(
        trial_id=cfg.trial_id(),
        config=cfg.to_dict(),
        epochs=st.history,
        best_epoch=st.best_epoch,
        stop_reason="early_stopping" if st.bad_epochs >= tc.patience else "max_epochs",
        metrics={"val_loss": best_row["val_loss"], "val_acc": best_row["val_acc"],
                 "test_loss": test["loss"], "test_acc": test["acc"]},  # fmt: skip
        timings={"total_s": st.prior_s + time.perf_counter() - t_start, "train_s": st.train_s, "eval_s": st.eval_s,
                 "test_eval_s": time.perf_counter() - t3,
                 "train_images_per_s": images / st.train_s if st.train_s else 0.0},  # fmt: skip
        env={**env.provenance(device), "run_options": opts.to_dict(), **(env_extra or {})},
        n_params=count_params(net),
        weights={k: v.detach().cpu().contiguous().numpy() for k, v in best_weights.items()},
    )
