"""Initialisations a lever asks for, applied once to a network just built (fmlab.training.step.start_lane),
before its first step: BatchNorm scales at one (model.bn_weight_frozen), identity convs (model.dirac_init),
the first conv as the whitening of training patches (model.whiten). Which of them stay frozen, and when,
is fmlab.training.optim.set_trainable's job.

Whitening (airbench's, KellerJordan/airbench): the first conv's d = C x k x k dimensional input patches,
sampled from the trial's own training images, have covariance V diag(lambda) V^T; its filters are the rows
of V^T / sqrt(lambda + eps) and their negatives (2d output channels, so a ReLU or GELU after it keeps both
signs), and its bias (when it has one) -W mean, so its outputs over training patches have zero mean and
~identity covariance. Unlike airbench the covariance is centred and the bias starts at -W mean (airbench
uses the uncentred second moment and a zero bias): the same filters on normalised images, whose patch mean
is ~0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fmlab.config.schema import ModelConfig
from fmlab.data import idx as fdata

WHITEN_EPS = 5e-4  # airbench's: keeps the near-zero-variance directions from blowing up
WHITEN_IMAGES = 2000  # training images sampled (per seed) for the patch covariance
_CHUNK = 250  # images unfolded at a time


def first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    """The network's first Conv2d (in module order, which is the forward order of fmlab's nets) and its name."""
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(net).__name__} has no Conv2d")


def patch_stats(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and covariance (d, d), float64, of every k x k patch (no padding) of images x (N, C, H, W);
    d = C k k in the order of a conv's weight.flatten(1)."""
    d = x.shape[1] * k * k
    s, ss, n = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 0
    for i in range(0, len(x), _CHUNK):
        p = F.unfold(x[i : i + _CHUNK].double(), k).transpose(1, 2).reshape(-1, d)
        s += p.sum(0)
        ss += p.T @ p
        n += len(p)
    mean = s / n
    return mean, ss / n - torch.outer(mean, mean)


def whitening(cov: torch.Tensor, eps: float = WHITEN_EPS) -> torch.Tensor:
    """W (d, d): rows the covariance's eigenvectors (largest eigenvalue first) over sqrt(eigenvalue + eps),
    so W cov W^T ~ identity."""
    lam, vec = torch.linalg.eigh(cov)
    lam, vec = lam.flip(0), vec.flip(1)
    return vec.T / torch.sqrt(lam.clamp_min(0) + eps).unsqueeze(1)


def train_sample(ds: fdata.Dataset, seed: int, n: int = WHITEN_IMAGES) -> torch.Tensor:
    """n of ds's training images (never validation or test), drawn by seed from a stream of their own (the
    global one is left as it was), normalised as the network sees them: float (n, 1, 28, 28)."""
    pick = torch.randperm(len(ds.train.y), generator=torch.Generator().manual_seed(seed))[:n]
    return fdata.normalize(ds.train.x[pick], ds.mean, ds.std)


@torch.no_grad()
def whiten_(conv: nn.Conv2d, x: torch.Tensor, eps: float = WHITEN_EPS) -> None:
    """conv's filters set to the whitening of x's patches and their negatives; its bias (if any) to -W mean."""
    c, kh, kw = conv.weight.shape[1:]
    d = c * kh * kw
    if kh != kw or conv.groups != 1 or conv.out_channels != 2 * d or conv.dilation != (1, 1):
        raise ValueError(
            f"cannot whiten a {conv.in_channels}->{conv.out_channels} {kh}x{kw} conv: "
            f"whitening needs 2 x channels x k^2 = {2 * d} output channels, square kernel, no groups or dilation"
        )
    mean, cov = patch_stats(x, kh)
    w = whitening(cov, eps)
    w2 = torch.cat([w, -w])
    conv.weight.copy_(w2.reshape(conv.weight.shape))
    if conv.bias is not None:
        conv.bias.copy_(-(w2 @ mean))


@torch.no_grad()
def dirac_(net: nn.Module) -> int:
    """Every Conv2d with out >= in channels (no groups): its first `in` filters the identity (the filter
    for channel i passes input channel i through its centre tap), the rest as they were, its bias zero
    (airbench's init; a C->C conv is then the identity). Returns the number of convs changed."""
    n = 0
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.out_channels >= m.in_channels:
            nn.init.dirac_(m.weight[: m.in_channels])
            if m.bias is not None:
                m.bias.zero_()
            n += 1
    return n


@torch.no_grad()
def apply(net: nn.Module, m: ModelConfig, seed: int, ds: fdata.Dataset | None) -> None:
    """The initialisation levers m asks for, in place (none: net untouched); whitening needs ds."""
    if m.bn_weight_frozen:
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d) and mod.weight is not None:
                mod.weight.fill_(1.0)
    if m.dirac_init:
        dirac_(net)
    if m.whiten != "off":
        if ds is None:
            raise ValueError("model.whiten needs the training images (start_lane's ds)")
        whiten_(first_conv(net)[1], train_sample(ds, seed))
