"""What the step optimizes with: the optimizer, its learning rate at each step (the schedule), the loss."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fmlab.config.schema import TrainConfig


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
    """cfg's optimizer at cfg.lr (the step sets each step's rate from lr_at). Weight decay covers
    every parameter, biases and norm scales included, as torch's own weight_decay does."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def smoothed_nll(logp: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Label-smoothed loss on log-probabilities: (1 - eps) * NLL + eps * mean over classes of -log p."""
    nll = F.nll_loss(logp, y)
    return nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(1).mean()
