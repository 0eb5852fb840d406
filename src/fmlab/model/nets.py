"""Networks. The seed net, with its defaults (widths 64, 128, 256; kernel 3; no batch norm):

    input 1x28x28
    conv3x3 1->64   + bias, ReLU, 2x2 avg pool  -> 64x14x14      640 params
    conv3x3 64->128 + bias, ReLU, 2x2 avg pool  -> 128x7x7    73,856
    conv3x3 128->256+ bias, ReLU, 2x2 avg pool  -> 256x3x3   295,168
    dropout 0.2, flatten 2304, linear 2304->10, log-softmax   23,050
                                                      total  392,714 (1.57 MB fp32)

With batch_norm the conv bias is dropped by default (BN's shift makes it redundant) and a
BatchNorm2d follows each conv, before the activation.

``arch = "resnet"`` is a compact residual net for 28x28 inputs (ResNet-20 at its defaults of CIFAR's
recipe: widths 16, 32, 64 and depth 3 give 0.27M parameters):

    stem   conv3x3 1->w0, BN, act                                  at 28x28
    stage0 depth x basic block (conv-BN-act-conv-BN + identity, act), width w0, at 28x28
    stage i >= 1: 2x2 pool (model.pool), then depth x basic block of width wi (the first block's
           shortcut is a 1x1 conv + BN where the width changes), at 14x14, 7x7, ...
    global average pool, dropout, linear -> 10, log-softmax

``arch = "airbench"`` is KellerJordan/airbench94's shape for 28x28 grey images (widths 64, 128, 256
and depth 1 give 1,151,784 parameters; the 1M cap needs narrower widths):

    whiten conv2x2 1->8 + bias, no padding (model.whiten fills it)    -> 8x27x27
    act; per width w: conv3x3 -> w, 2x2 pool, BN, act, then depth x (conv3x3 w->w, BN, act)
                                                                      -> 13x13, 6x6, 3x3
    global pool (model.pool), dropout, linear -> 10 without bias, logits x 1/9, log-softmax

airbench's own settings are model.pool=max, model.activation=gelu; the logit scale sits before the
bias-free linear (the same product), so the net is features + fc and packs as the others do.

Pooling before a stage, rather than a strided conv, keeps every output pixel's information (the
block's convs see the whole pooled map) and costs the same FLOPs. Batch norm is part of the block,
so resnet needs model.batch_norm=true (config.check says so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fmlab.config.schema import ModelConfig


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


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN plus the shortcut, then act; the last BN's scale starts at zero,
    so each block starts as the identity (Goyal et al. 2017), which trains faster at high rates."""

    def __init__(self, c_in: int, c_out: int, k: int, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = activation(act, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, k, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)
        self.short = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        )
        self.act2 = activation(act, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(y + self.short(x))


class ResNet(nn.Module):
    """Stem, then one stage per width (depth basic blocks each, a 2x2 pool before every stage but
    the first), global average pool, dropout, linear; returns log-probabilities."""

    def __init__(self, cfg: ModelConfig, classes: int = 10) -> None:
        super().__init__()
        pool = nn.AvgPool2d if cfg.pool == "avg" else nn.MaxPool2d
        k, w0 = cfg.kernel_size, cfg.widths[0]
        layers: list[nn.Module] = [
            nn.Conv2d(1, w0, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(w0),
            activation(cfg.activation, w0),
        ]
        c_in = w0
        for i, c_out in enumerate(cfg.widths):
            if i:
                layers.append(pool(2))
            for _ in range(cfg.depth):
                layers.append(BasicBlock(c_in, c_out, k, cfg.activation))
                c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(self.features(x)).float(), dim=1)


WHITEN_KERNEL = 2  # airbench's whitening conv: 2x2 patches, 2 x 4 channels on a grey image


class Scale(nn.Module):
    """x * factor (no parameters)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class AirbenchNet(nn.Module):
    """airbench94's net on 1x28x28: a 2x2 whitening conv, one conv group per width (conv, pool, BN, act,
    then depth x conv-BN-act), global pool, dropout, logits / 9; returns log-probabilities."""

    def __init__(self, cfg: ModelConfig, classes: int = 10) -> None:
        super().__init__()
        k, c_in = cfg.kernel_size, 2 * WHITEN_KERNEL**2
        pool = nn.AvgPool2d if cfg.pool == "avg" else nn.MaxPool2d
        layers: list[nn.Module] = [nn.Conv2d(1, c_in, WHITEN_KERNEL, bias=True), activation(cfg.activation, c_in)]
        for c_out in cfg.widths:
            layers += [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), pool(2)]
            layers += [nn.BatchNorm2d(c_out), activation(cfg.activation, c_out)]
            for _ in range(cfg.depth):
                layers += [nn.Conv2d(c_out, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)]
                layers.append(activation(cfg.activation, c_out))
            c_in = c_out
        global_pool = nn.AdaptiveAvgPool2d if cfg.pool == "avg" else nn.AdaptiveMaxPool2d
        layers += [global_pool(1), nn.Flatten(), Scale(1 / 9)]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(self.features(x)).float(), dim=1)


NETS: dict[str, Callable[[ModelConfig], nn.Module]] = {"seed": SeedNet, "resnet": ResNet, "airbench": AirbenchNet}


def build(cfg: ModelConfig) -> nn.Module:
    return NETS[cfg.arch](cfg)


def count_params(net: nn.Module) -> int:
    """Every parameter the network uses at inference, frozen ones (requires_grad off) included."""
    return sum(p.numel() for p in net.parameters())


def forward_flops(net: Any, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> dict[str, int]:
    """FLOPs of one forward pass per image, from the shapes of its Conv2d and Linear layers: a
    multiply-add counts 2 (bias, activation and pooling not counted). {layer name: FLOPs, 'total': sum}."""
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str) -> Callable[..., None]:
        def count(mod: nn.Module, inp: Any, out: torch.Tensor) -> None:
            n = out.shape[0]
            if isinstance(mod, nn.Conv2d):
                k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                counts[name] = 2 * k * out[0].numel()
            else:
                counts[name] = 2 * mod.in_features * out.numel() // n

        return count

    for name, mod in net.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            hooks.append(mod.register_forward_hook(hook(name)))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return {**counts, "total": sum(counts.values())}
