"""How a model holds the networks the training step trains: the Layout interface, and Single (one network as
it is). The packed loop's layout (K networks side by side) is fmlab.training.packed.Packed."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from fmlab.training.evaluation import Views, evaluate_nets
from fmlab.training.optim import smoothed_nll


class Layout(Protocol):
    """How a model holds its networks: one as it is (Single), or K side by side (fmlab.training.packed.Packed)."""

    k: int
    fresh: bool  # states() returns copies

    def inputs(self, xs: list[torch.Tensor]) -> torch.Tensor: ...  # each network's batch -> the model's input
    def targets(self, ys: list[torch.Tensor]) -> torch.Tensor: ...
    def losses(self, out: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor: ...  # each network's mean loss
    def hits(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...  # each network's correct count
    def eval_input(self, xb: torch.Tensor) -> torch.Tensor: ...  # one batch every network sees
    def eval_sums(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def validate(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast: Any, tta: bool | Views
    ) -> list[dict[str, float]]: ...
    def states(self, net: nn.Module, opt: torch.optim.Optimizer) -> list[tuple[dict, dict]]: ...  # per network
    def weights(self, net: nn.Module) -> list[dict]: ...  # each network's weights (copies when fresh)


@dataclass(frozen=True)
class Single:
    """One network, as it is: its loss is a 0-d tensor (each loop's numbers stay the single run's)."""

    fmt: torch.memory_format = torch.contiguous_format
    k: int = 1
    fresh: bool = False

    def inputs(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return xs[0].contiguous(memory_format=self.fmt)  # no copy when already so

    def targets(self, ys: list[torch.Tensor]) -> torch.Tensor:
        return ys[0]

    def losses(self, out: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return smoothed_nll(out, y, eps)

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(1) == y).sum()

    def eval_input(self, xb: torch.Tensor) -> torch.Tensor:
        return xb

    def eval_sums(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.nll_loss(out, y, reduction="sum"), (out.argmax(1) == y).sum()

    def validate(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast: Any, tta: bool | Views
    ) -> list[dict[str, float]]:
        return [evaluate(net, x, y, batch_size, autocast, tta)]

    def states(self, net: nn.Module, opt: torch.optim.Optimizer) -> list[tuple[dict, dict]]:
        return [(net.state_dict(), opt.state_dict())]

    def weights(self, net: nn.Module) -> list[dict]:
        return [net.state_dict()]


def evaluate(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 1024,
    autocast: Any = nullcontext,
    tta: bool | Views = False,
) -> dict[str, float]:
    """Mean NLL and accuracy of one network's log-probability outputs over (x, y) (evaluate_nets)."""
    return evaluate_nets(net, Single(), x, y, batch_size, autocast, tta)[0]
