"""Networks. The seed net, with its defaults (widths 64, 128, 256; kernel 3; no batch norm):

    input 1x28x28
    conv3x3 1->64   + bias, ReLU, 2x2 avg pool  -> 64x14x14      640 params
    conv3x3 64->128 + bias, ReLU, 2x2 avg pool  -> 128x7x7    73,856
    conv3x3 128->256+ bias, ReLU, 2x2 avg pool  -> 256x3x3   295,168
    dropout 0.2, flatten 2304, linear 2304->10, log-softmax   23,050
                                                      total  392,714 (1.57 MB fp32)

With batch_norm the conv bias is dropped by default (BN's shift makes it redundant) and a
BatchNorm2d follows each conv, before the activation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import ModelConfig


def activation(name: str, channels: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {name!r}")


class SeedNet(nn.Module):
    """3 conv blocks (conv, [BN], activation, pool) + dropout + 1 FC; returns log-probabilities."""

    def __init__(self, cfg: ModelConfig, in_size: int = 28, classes: int = 10) -> None:
        super().__init__()
        bias = cfg.conv_bias if cfg.conv_bias != "auto" else not cfg.batch_norm
        pool = nn.AvgPool2d if cfg.pool == "avg" else nn.MaxPool2d
        layers: list[nn.Module] = []
        c_in, side = 1, in_size
        for c_out in cfg.widths:
            layers.append(nn.Conv2d(c_in, c_out, cfg.kernel_size, padding=cfg.kernel_size // 2, bias=bias))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [activation(cfg.activation, c_out), pool(2)]
            c_in, side = c_out, side // 2
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * side * side, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return torch.log_softmax(self.fc(x).float(), dim=1)


NETS: dict[str, Callable[[ModelConfig], nn.Module]] = {"seed": SeedNet}


def build(cfg: ModelConfig) -> nn.Module:
    return NETS[cfg.arch](cfg)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
