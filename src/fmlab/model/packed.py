"""A pack's K networks as one model, and moving tensors between the pack and its networks.

Layout (HFTA's, Wang et al. 2021): the K networks side by side along the channel dimension. Each Conv2d
becomes one convolution with K times the channels and K times the groups, so network k's filters see
only its own channels; BatchNorm over K x C channels is per-network batch norm; the classifier is one
batched matmul over K weight matrices (PackedLinear); dropout draws each network's mask from its own
stream at its own rate (PackedDropout). The loss is the sum of the K networks' mean losses, so each
network's gradient is its own, and Adam, AdamW and SGD are elementwise, so one optimizer over the
stacked tensors is K optimizers. (BENCHMARKS.md "Packs" measured this layout against torch.func's vmap:
1.2-1.3x faster on the CPU.)

Numerics: not bitwise equal to single runs: a grouped convolution and a batched matmul sum in another
order than the plain kernels (fp32 differences ~1e-7 per op, which training then amplifies), and on CUDA
dropout draws differ from the fused kernel's. tests/test_packed.py states the agreement.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


class PackedLinear(nn.Module):
    """K independent Linear(in, out) layers: (B, K*in) -> (B, K*out); weight (K, out, in), bias (K, out)."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = torch.bmm(x.reshape(b, self.k, self.in_features).transpose(0, 1), self.weight.transpose(1, 2))
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.transpose(0, 1).reshape(b, self.k * self.out_features)


class PackedDropout(nn.Module):
    """Dropout of network k's channels at rates[k], its mask drawn from gens[k] as nn.Dropout draws it
    (bernoulli(1 - p) / (1 - p) over the network's own slice); rate 0 draws nothing."""

    def __init__(self, rates: Sequence[float], gens: Sequence[torch.Generator]) -> None:
        super().__init__()
        self.rates, self.gens = list(rates), list(gens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.rates):
            return x
        k = len(self.rates)
        shape = (x.shape[0], x.shape[1] // k, *x.shape[2:])
        # the single run's mask is filled in its input's memory order (channels_last after a conv)
        nhwc = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if nhwc else torch.contiguous_format
        masks = []
        for p, g in zip(self.rates, self.gens, strict=True):
            m = torch.empty(shape, device=x.device, dtype=x.dtype, memory_format=fmt)
            masks.append(m.fill_(1.0) if p == 0 else m.bernoulli_(1 - p, generator=g).div_(1 - p))
        return x * torch.cat(masks, 1)


def _packed_leaf(m: nn.Module, k: int, rates: Sequence[float], gens: Sequence[torch.Generator]) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(
            k * m.in_channels,
            k * m.out_channels,
            m.kernel_size,
            m.stride,
            m.padding,  # type: ignore[arg-type]
            m.dilation,
            k * m.groups,
            m.bias is not None,
            m.padding_mode,
        )
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.PReLU) and m.num_parameters > 1:
        return nn.PReLU(k * m.num_parameters)
    if isinstance(m, nn.Linear):
        return PackedLinear(k, m.in_features, m.out_features, m.bias is not None)
    if isinstance(m, nn.Dropout):
        return PackedDropout(rates, gens)
    if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
        raise ValueError(
            f"cannot pack a {type(m).__name__} layer (fmlab.training.packed knows Conv2d, BatchNorm2d, "
            "PReLU, Linear, Dropout and parameter-free layers); use --pack off"
        )
    return copy.deepcopy(m)  # activations, pooling, flatten, identity: channel-wise already


def pack_module(m: nn.Module, k: int, rates: Sequence[float], gens: Sequence[torch.Generator]) -> nn.Module:
    """A copy of m with every layer widened to K networks, under the same names (so state_dict keys match)."""
    if not m._modules:
        return _packed_leaf(m, k, rates, gens)
    if m._parameters or any(b is not None for b in m._buffers.values()):
        raise ValueError(f"cannot pack {type(m).__name__}: it holds tensors of its own; use --pack off")
    new = copy.copy(m)  # the same class and forward(), with fresh module/parameter/buffer tables
    new._parameters, new._buffers = {}, {}
    new._modules = {n: pack_module(c, k, rates, gens) for n, c in m._modules.items() if c is not None}
    return new


class PackedNet(nn.Module):
    """K copies of an fmlab net (features, then fc, then log-softmax, as SeedNet and ResNet are) as one
    model: input (B, K*channels, H, W), network k's image in channels k*channels...; output (B, K, classes)."""

    def __init__(self, template: nn.Module, k: int, rates: Sequence[float], gens: Sequence[torch.Generator]) -> None:
        super().__init__()
        if not (
            isinstance(getattr(template, "features", None), nn.Module)
            and isinstance(getattr(template, "fc", None), nn.Linear)
        ):
            raise ValueError(f"cannot pack {type(template).__name__}: it is not features + fc; use --pack off")
        self.k = k
        self.features = pack_module(template.features, k, rates, gens)
        self.fc = pack_module(template.fc, k, rates, gens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(self.features(x).flatten(1))
        return torch.log_softmax(z.view(z.shape[0], self.k, -1).float(), dim=-1)


def stack(parts: Sequence[dict[str, torch.Tensor]], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """K single-network tensors per name -> the packed tensor of like's shape (a 0-d tensor, such as
    BatchNorm's batch count, is the same in every network and is taken from the first)."""
    return {
        n: (
            parts[0][n].clone()
            if ref.ndim == 0
            else torch.stack([p[n].to(ref.device) for p in parts]).reshape(ref.shape)
        )
        for n, ref in like.items()
    }


def member_slice(v: torch.Tensor, k: int, i: int, shape: torch.Size) -> torch.Tensor:
    """Network i's slice of one packed tensor, in the single network's shape (a copy; 0-d tensors whole)."""
    return v.detach().clone() if v.ndim == 0 else v.detach().reshape(k, *shape)[i].clone()


def unstack(packed: dict[str, torch.Tensor], k: int, i: int, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Network i's slice of packed tensors, in the single network's shapes (a copy)."""
    return {n: member_slice(v, k, i, shapes[n]) for n, v in packed.items()}


def member_losses(logp: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Each network's train.smoothed_nll: log-probs (B, K, C), labels (B, K) -> (K,)."""
    nll = -logp.gather(2, y.unsqueeze(2)).squeeze(2).mean(0)
    return nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(2).mean(0)
