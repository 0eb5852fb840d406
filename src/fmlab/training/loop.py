"""`train(cfg) -> TrialResult`: one network trained (the step and epoch of fmlab.training.step, which the
packed loop shares), early stopping on the validation split, the best epoch's weights restored and
evaluated once on the test set. With no validation split (data.val_size = 0: all 60,000 training images
train) the schedule is fixed and the last epoch is the one tested; its val_* metrics are None."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmlab.config.schema import Config
from fmlab.data import idx as fdata
from fmlab.model.nets import count_params
from fmlab.training import clock, env, step
from fmlab.training.ema import Average
from fmlab.training.evaluation import Views
from fmlab.training.layout import Single, evaluate
from fmlab.training.optim import lr_at, make_optimizer, smoothed_nll
from fmlab.training.progress import Diverged, LoopState, improved, track
from fmlab.training.step import prepare

# Defined in progress, optim and step, and imported from here by callers since before those modules existed.
__all__ = [
    "RESULT_SCHEMA",
    "Diverged",
    "LoopState",
    "TrialResult",
    "evaluate",
    "finish",
    "improved",
    "lr_at",
    "make_optimizer",
    "prepare",
    "smoothed_nll",
    "track",
    "train",
]

RESULT_SCHEMA = "fmlab.trial/1"


@dataclass
class TrialResult:
    """Plain and picklable: what a worker hands back to the process that owns the store."""

    trial_id: str
    config: dict[str, Any]
    epochs: list[dict[str, float]]  # epoch, lr, train_loss, train_acc, val_loss, val_acc, epoch_s
    best_epoch: int
    stop_reason: str  # "early_stopping" | "max_epochs"
    metrics: dict[str, float | None]  # best epoch's val_* (None: no validation split) plus test_loss, test_acc
    timings: dict[str, Any]  # total_s, train_s, eval_s, train_images_per_s; precision (what it trained in)
    env: dict[str, Any]
    n_params: int
    weights: dict[str, np.ndarray] = field(repr=False)  # the best epoch's state_dict
    schema: str = RESULT_SCHEMA


def train(
    cfg: Config,
    ds: fdata.Dataset | None = None,
    opts: env.RunOptions = env.RunOptions(),
    *,
    state_dir: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrialResult:
    """Train cfg's network; with state_dir, save state each epoch and resume from it if present."""
    t_start = clock.now()
    cfg = cfg.resolved()
    device = env.setup(opts)
    ds = ds or fdata.load(cfg.data, opts.data_dir)
    fmt = step.memory_format(opts)
    lane, net = step.start_lane(cfg, device, state_dir, ds=ds)
    net = net.to(device, memory_format=fmt)
    net.load_state_dict(lane.net_sd)  # the resumed weights (or the initial ones again)
    lane.best = {k: v.to(device) for k, v in lane.best.items()}
    opt = make_optimizer(net, cfg.train)
    if lane.opt_sd is not None:
        opt.load_state_dict(lane.opt_sd)
    autocast = step.autocast_for(step.pin_precision(lane, device, opts.auto_precision), device)
    ema = Average(net, lane.ema_sd, cfg.train.ema, cfg.train.ema_every) if lane.ema_sd is not None else None
    data = step.Data.of(ds, device, fmt)
    run = step.Run(net, opt, Single(fmt), cfg, data, autocast, opts.eval_batch_size, ema)
    report = (lambda _, row: on_epoch(row)) if on_epoch else None
    while not lane.done():
        failed = step.run_epoch(run, [lane], t_start, report)[0]
        if failed is not None:
            raise failed
    return finish(cfg, net, lane.best, lane.st, ds, opts, device=device, fmt=fmt, autocast=autocast, t_start=t_start)


def finish(
    cfg: Config,
    net: nn.Module,
    best_weights: dict[str, torch.Tensor],
    st: LoopState,
    ds: fdata.Dataset,
    opts: env.RunOptions,
    *,
    device: torch.device,
    fmt: torch.memory_format,
    autocast: Any,
    t_start: float,
    env_extra: dict[str, Any] | None = None,
) -> TrialResult:
    """The best epoch's weights restored into net (a single network), evaluated once on the test
    set, and the TrialResult of the loop state st (train() and the packed loop both end here)."""
    tc = cfg.train
    net.load_state_dict(best_weights)
    t3 = clock.now()
    xte, yte = prepare(ds.test, ds, device, fmt)
    test = evaluate(net, xte, yte, opts.eval_batch_size, autocast, Views.of(cfg))
    best_row = st.history[st.best_epoch - 1]
    images = len(st.history) * len(ds.train.y)
    return TrialResult(
        trial_id=cfg.trial_id(),
        config=cfg.to_record(),
        epochs=st.history,
        best_epoch=st.best_epoch,
        stop_reason="early_stopping" if st.bad_epochs >= tc.patience else "max_epochs",
        metrics={
            "val_loss": best_row["val_loss"],
            "val_acc": best_row["val_acc"],
            "test_loss": test["loss"],
            "test_acc": test["acc"],
        },
        timings={
            "total_s": st.prior_s + clock.now() - t_start,
            "train_s": st.train_s,
            "eval_s": st.eval_s,
            "test_eval_s": clock.now() - t3,
            "train_images_per_s": images / st.train_s if st.train_s else 0.0,
            "precision": st.precision or tc.precision,
        },
        env={**env.provenance(device), "run_options": opts.to_dict(), **(env_extra or {})},
        n_params=count_params(net),
        weights={k: v.detach().cpu().contiguous().numpy() for k, v in best_weights.items()},
    )
