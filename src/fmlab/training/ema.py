"""train.ema: an exponential moving average of a model's weights, kept beside the trained model.

After every train.ema_every optimizer steps, each floating-point entry of the state_dict is pulled toward
the live one: avg <- d * avg + (1 - d) * live, with d = min(train.ema, (1 + n) / (10 + n)) at the n-th
update (0-based; the warm-up of tf.train.ExponentialMovingAverage, so the first epochs are not held near
the initial weights). The average starts at the initial weights.

BatchNorm: its running mean and variance are floating-point state_dict entries, so they are averaged
with the weights at the same rate (as timm's ModelEmaV2 and airbench's lookahead do); the batch count
(an integer) is copied. The averaged statistics belong to the recent live weights, which the averaged
weights stay close to; no extra pass over the data re-estimates them.

The average validates, is tested and is what the checkpoint saves; the live weights keep training.
Elementwise, so the average of a pack's stacked weights is the stack of its networks' averages.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_at(n: int, decay: float) -> float:
    """The decay of the n-th update (0-based): decay, or less while n is small."""
    return min(decay, (1 + n) / (10 + n))


class Average:
    """A copy of net (same layout, memory format and device) holding the average; sd its starting weights."""

    def __init__(self, net: nn.Module, sd: dict[str, torch.Tensor], decay: float, every: int = 1) -> None:
        self.net = copy.deepcopy(net).requires_grad_(False)
        self.net.load_state_dict(sd)
        self.decay, self.every = decay, every
        live, avg = net.state_dict(), self.net.state_dict()  # views of the modules' own tensors
        self.avg = [avg[k] for k, v in live.items() if v.is_floating_point()]
        self.live = [v for v in live.values() if v.is_floating_point()]
        self.avg_int = [avg[k] for k, v in live.items() if not v.is_floating_point()]
        self.live_int = [v for v in live.values() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self, n: int) -> None:
        """The n-th update (0-based): the average pulled toward the live weights, integer buffers copied."""
        torch._foreach_lerp_(self.avg, self.live, 1.0 - decay_at(n, self.decay))
        for a, v in zip(self.avg_int, self.live_int, strict=True):
            a.copy_(v)

    def after_step(self, g: int) -> None:
        """Called after global step g (0-based): an update every `every` steps."""
        if (g + 1) % self.every == 0:
            self.update((g + 1) // self.every - 1)
