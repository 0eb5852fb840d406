"""Evaluation passes (validation each epoch, the test pass at the end) and their test-time views.

train.tta adds each image's mirror; train.tta_shifts = n adds, for each of those views, its copies shifted
by (-n, -n) and (n, n) pixels (the two diagonal translations of airbench's multi-crop TTA; uncovered
pixels black). The output is the mean of the views' log-probabilities, renormalised (a geometric mean of
their probabilities). With neither, the output is the network's own.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fmlab.config.schema import Config
from fmlab.data import augment as faug


@dataclass(frozen=True)
class Views:
    """The test-time views: the mirror (flip), shifts of n pixels (shift), the blank pixel's value (fill)."""

    flip: bool = False
    shift: int = 0
    fill: float = 0.0

    @classmethod
    def of(cls, cfg: Config) -> Views:
        return cls(cfg.train.tta, cfg.train.tta_shifts, (0.0 - cfg.data.mean) / cfg.data.std)

    def images(self, xb: torch.Tensor) -> list[torch.Tensor]:
        """The views of a batch, the batch itself first."""
        base = [xb, xb.flip(3)] if self.flip else [xb]
        n = self.shift
        if not n:
            return base
        return [v for b in base for v in (b, faug.shift(b, -n, -n, self.fill), faug.shift(b, n, n, self.fill))]


def view_logp(net: nn.Module, xb: torch.Tensor, views: Views) -> torch.Tensor:
    """net's log-probabilities of xb (float32) over views: the mean of each view's, renormalised."""
    out = net(xb).float()
    if views.flip and not views.shift:  # the mirror TTA as it always was, to the bit
        return torch.log_softmax((out + net(xb.flip(3)).float()) / 2, dim=-1)
    if not views.flip and not views.shift:
        return out
    imgs = views.images(xb)
    total = out
    for v in imgs[1:]:
        total = total + net(v).float()
    return torch.log_softmax(total / len(imgs), dim=-1)


@torch.no_grad()
def evaluate_nets(
    net: nn.Module,
    layout: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
    autocast: Any = nullcontext,
    tta: bool | Views = False,
) -> list[dict[str, float]]:
    """Each network's mean NLL and accuracy over (x, y), in eval mode (layout: fmlab.training.layout.Layout,
    how the model holds its networks). tta: the test-time views (True: the mirror alone)."""
    views = tta if isinstance(tta, Views) else Views(flip=tta)
    was_training = net.training
    net.eval()
    # Sums stay on the device (float64, as Python floats were) and are read once: no host sync per batch.
    loss_sum = torch.zeros(layout.k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(layout.k, dtype=torch.long, device=x.device)
    for i in range(0, len(y), batch_size):
        xb = layout.eval_input(x[i : i + batch_size])
        with autocast():
            out = view_logp(net, xb, views)
        losses, hits = layout.eval_sums(out, y[i : i + batch_size])
        loss_sum += losses
        correct += hits
    net.train(was_training)
    n = len(y)
    return [{"loss": s / n, "acc": c / n} for s, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)]
