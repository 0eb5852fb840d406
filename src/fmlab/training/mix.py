"""data.mixup and data.cutmix: each network's training batch blended with a shuffled copy of itself, in the
step (fmlab.training.step.train_step), after the image augmentation.

One lambda per batch and network, drawn from Beta(alpha, alpha) (the inverse CDF of a uniform from the
lane's CPU mix stream, so no global stream moves and no device sync happens): mixup's images are
lam * x + (1 - lam) * x[perm]; cutmix pastes one box of x[perm] (side sqrt(1 - lam) of the image's, its
centre uniform, clipped at the edges) into every image and sets lam to the share of the image left
uncovered. perm is a permutation drawn from the lane's augmentation stream. The loss is
lam * loss(y) + (1 - lam) * loss(y[perm]), label smoothing applied to each: the cross-entropy against
the blended, smoothed targets. The epoch's train_acc counts each image against its own label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from fmlab.config.schema import DataConfig

MIX_SEED = 15_485_863  # added to the trial's seed: the lane's mix stream


def mixing(cfg: DataConfig) -> bool:
    return bool(cfg.mixup or cfg.cutmix)


def beta(alpha: float, gen: torch.Generator) -> float:
    """A draw from Beta(alpha, alpha): its quantile at a uniform from gen (a CPU generator)."""
    from scipy.special import betaincinv  # scipy: a dependency; imported only when mixing

    u = torch.rand(1, generator=gen, dtype=torch.float64).item()
    return float(betaincinv(alpha, alpha, u))


def cut_box(h: int, w: int, lam: float, gen: torch.Generator) -> tuple[int, int, int, int]:
    """cutmix's box (top, bottom, left, right) for lam: sides sqrt(1 - lam) of the image's, centre uniform, clipped."""
    r = math.sqrt(1.0 - lam)
    ch, cw = int(h * r), int(w * r)
    cy, cx = divmod(int(torch.randint(0, h * w, (1,), generator=gen).item()), w)  # the centre pixel
    return max(cy - ch // 2, 0), min(cy + ch - ch // 2, h), max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)


@dataclass(frozen=True)
class Mixed:
    """A blended batch: the images, the labels of the images blended in, and each image's own label's weight."""

    x: torch.Tensor
    other: torch.Tensor
    lam: float


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, cfg: DataConfig, gen: torch.Generator, perm_gen: torch.Generator
) -> Mixed:
    """x (normalised images, labels y) blended as cfg says: lambda and the box from gen (CPU), the pairing
    from perm_gen."""
    perm = torch.randperm(len(x), generator=perm_gen, device=x.device)
    if cfg.mixup:
        lam = beta(cfg.mixup, gen)
        return Mixed(torch.lerp(x[perm], x, lam), y[perm], lam)
    h, w = x.shape[-2:]
    top, bottom, left, right = cut_box(h, w, beta(cfg.cutmix, gen), gen)
    out = x.clone()
    out[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    return Mixed(out, y[perm], 1.0 - (bottom - top) * (right - left) / (h * w))


def mixed_losses(layout: Any, out: torch.Tensor, y: torch.Tensor, mixed: list[Mixed], eps: float) -> torch.Tensor:
    """Each network's loss on its blended targets (layout: the step's Layout; y: the batch's own labels)."""
    own = layout.losses(out, y, eps)
    other = layout.losses(out, layout.targets([m.other for m in mixed]), eps)
    lams = [m.lam for m in mixed]
    lam = lams[0] if own.ndim == 0 else torch.tensor(lams, dtype=own.dtype, device=own.device)
    return lam * own + (1 - lam) * other
