"""What the step optimizes with: the optimizer and its parameter groups, which parameters train in an epoch
(frozen ones do not), its learning rate at each step (the schedule), the loss."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from fmlab.config.schema import ModelConfig, TrainConfig
from fmlab.model.inits import first_conv


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


def bn_names(net: nn.Module) -> tuple[set[str], set[str]]:
    """The names of net's BatchNorm scales (weights) and shifts (biases); a PackedNet's are its members'."""
    weights, biases = set(), set()
    for name, m in net.named_modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            weights.add(f"{name}.weight")
            biases.add(f"{name}.bias")
    return weights, biases


def group_names(net: nn.Module, cfg: TrainConfig) -> list[tuple[list[str], float]]:
    """The optimizer's parameter groups as (parameter names, lr multiplier), in the optimizer's order (its
    state's parameter ids count through them): one group; with train.bn_bias_lr_mult != 1 the rest, then
    the BatchNorm biases."""
    names = [n for n, _ in net.named_parameters()]
    if cfg.bn_bias_lr_mult == 1:
        return [(names, 1.0)]
    biases = bn_names(net)[1]
    return [([n for n in names if n not in biases], 1.0), ([n for n in names if n in biases], cfg.bn_bias_lr_mult)]


def make_optimizer(params: nn.Module | Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """cfg's optimizer at cfg.lr (the step sets each step's rate from lr_at, times each group's lr_mult).
    Weight decay covers every parameter, biases and norm scales included, as torch's own weight_decay does.
    Given a network, its groups are group_names': a group with lr x m decays at weight_decay / m, so
    its decay per step (lr x weight_decay) is the others' (airbench's rule)."""
    if isinstance(params, nn.Module):
        groups = group_names(params, cfg)
        if len(groups) == 1:
            params = params.parameters()
        else:
            named = dict(params.named_parameters())
            params = [
                {"params": [named[n] for n in names], "lr_mult": m, "weight_decay": cfg.weight_decay / m}
                for names, m in groups
            ]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def frozen_names(net: nn.Module, m: ModelConfig, epoch: int) -> set[str]:
    """The parameters that do not train in epoch (1-based): BatchNorm scales under model.bn_weight_frozen;
    the first conv's weight under model.whiten=frozen, for the whole run or its first whiten_epochs."""
    out = bn_names(net)[0] if m.bn_weight_frozen else set()
    if m.whiten == "frozen" and (m.whiten_epochs == 0 or epoch <= m.whiten_epochs):
        out.add(f"{first_conv(net)[0]}.weight")
    return out


def set_trainable(net: nn.Module, m: ModelConfig, epoch: int) -> None:
    """Frozen parameters (frozen_names) without gradients for epoch, the rest with; the optimizer skips a
    parameter without a gradient (no step, no decay). Nothing frozen: net untouched (the step unchanged)."""
    if not (m.bn_weight_frozen or m.whiten == "frozen"):
        return
    frozen = frozen_names(net, m, epoch)
    for name, p in net.named_parameters():
        p.requires_grad_(name not in frozen)


def smoothed_nll(logp: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Label-smoothed loss on log-probabilities: (1 - eps) * NLL + eps * mean over classes of -log p."""
    nll = F.nll_loss(logp, y)
    return nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(1).mean()
