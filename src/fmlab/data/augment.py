"""Batched augmentation of normalised training images [N, C, H, W]: tensor ops on the whole batch,
no per-image Python, every random draw from one torch.Generator (so runs repeat and resume exactly).

Each op takes the batch and its strength and returns a new batch; labels are never touched.
``fill`` is the value a blank pixel has in the batch's units (the normalised background).
"""

from __future__ import annotations

import math

import torch

from fmlab.config.schema import DataConfig

ERASE_LOG_RATIO = (math.log(0.3), math.log(1 / 0.3))  # aspect ratio h/w range, as torchvision


def _rand(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def hflip(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    pick = _rand(len(x), gen, x.device) < p
    return torch.where(pick[:, None, None, None], x.flip(3), x)


def translate(x: torch.Tensor, max_px: int, gen: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Shift each image by (dy, dx), each uniform in -max_px..max_px; uncovered pixels get fill.

    Pad by max_px on every side, then crop each image's window by one gather over the batch.
    """
    n, c, h, w = x.shape
    m = max_px
    padded = torch.nn.functional.pad(x, (m, m, m, m), value=fill)
    d = torch.randint(-m, m + 1, (2, n), generator=gen, device=x.device)
    rows = torch.arange(h, device=x.device)[None, :] + m - d[0][:, None]  # [n, h]; content moves by +dy
    cols = torch.arange(w, device=x.device)[None, :] + m - d[1][:, None]
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2)


def shift(x: torch.Tensor, dy: int, dx: int, fill: float = 0.0) -> torch.Tensor:
    """Every image's content moved dy pixels down and dx right (negative: up, left); uncovered pixels get fill."""
    h, w = x.shape[-2:]
    m = max(abs(dy), abs(dx))
    padded = torch.nn.functional.pad(x, (m, m, m, m), value=fill)
    return padded[..., m - dy : m - dy + h, m - dx : m - dx + w]


ALTERNATE_SEED = 104_729  # added to the trial's seed: the stream of alternate flip's first-epoch draw


def alternate_bits(n: int, seed: int, device: torch.device) -> torch.Tensor:
    """flip_mode = alternate: whether each of the n training images is mirrored in epoch 1 (a fair coin per
    image, from the trial's seed alone, so a resumed run draws the same)."""
    gen = torch.Generator().manual_seed(seed + ALTERNATE_SEED)
    return (torch.rand(n, generator=gen) < 0.5).to(device)


def alternate_flips(bits: torch.Tensor, rows: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images (rows of the training set) are mirrored in epoch (1-based): the first-epoch draw in odd
    epochs, its complement in even ones, so each image is mirrored in exactly every other epoch."""
    picked = bits[rows]
    return picked if epoch % 2 else ~picked


def gaussian_noise(x: torch.Tensor, std: float, gen: torch.Generator) -> torch.Tensor:
    """Add N(0, std^2) noise, std in the batch's units."""
    return x + std * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def erase_boxes(
    n: int, h: int, w: int, area: tuple[float, float], gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """[n, 4] integer boxes (top, left, height, width) whose area is in area (fractions of h*w),
    up to whole-pixel rounding where the range is narrower than one row of pixels."""
    lo, hi = area[0] * h * w, area[1] * h * w
    u = torch.rand(4, n, generator=gen, device=device)
    target = lo + (hi - lo) * u[0]
    ratio = torch.exp(ERASE_LOG_RATIO[0] + (ERASE_LOG_RATIO[1] - ERASE_LOG_RATIO[0]) * u[1])
    bh = torch.sqrt(target * ratio).round().clamp(min=max(1, math.ceil(lo / w)), max=h)
    bw = (target / bh).round()
    bw = torch.minimum(torch.maximum(bw, torch.ceil(lo / bh)), torch.floor(hi / bh).clamp(max=w)).clamp(min=1)
    top = (u[2] * (h - bh + 1)).floor()
    left = (u[3] * (w - bw + 1)).floor()
    return torch.stack([top, left, bh, bw], 1).long()


def random_erase(
    x: torch.Tensor, p: float, area: tuple[float, float], gen: torch.Generator, fill: float = 0.0
) -> torch.Tensor:
    """With probability p per image, set one random rectangle (area in `area`, a fraction of the
    image) to fill."""
    n, _, h, w = x.shape
    pick = _rand(n, gen, x.device) < p
    b = erase_boxes(n, h, w, area, gen, x.device)
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_r = (r >= b[:, :1]) & (r < b[:, :1] + b[:, 2:3])  # [n, h]
    in_c = (c >= b[:, 1:2]) & (c < b[:, 1:2] + b[:, 3:4])  # [n, w]
    mask = in_r[:, :, None] & in_c[:, None, :] & pick[:, None, None]
    return x.masked_fill(mask[:, None], fill)


def enabled(cfg: DataConfig) -> bool:
    return bool(cfg.flip or cfg.translate_px or cfg.erase_p or cfg.noise_std)


def augment(x: torch.Tensor, cfg: DataConfig, gen: torch.Generator, flips: torch.Tensor | None = None) -> torch.Tensor:
    """cfg's augmentations on a normalised batch ((pixels - mean) / std), in the order flip,
    translate, erase, noise; ops at strength 0 are skipped and draw nothing. With flip_mode = alternate,
    flips says which images are mirrored (alternate_flips) and the flip draws nothing."""
    fill = (0.0 - cfg.mean) / cfg.std  # a black pixel
    if cfg.flip and cfg.flip_mode == "alternate":
        assert flips is not None, "flip_mode = alternate: the caller says which images are mirrored"
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    elif cfg.flip:
        x = hflip(x, cfg.flip, gen)
    if cfg.translate_px:
        x = translate(x, cfg.translate_px, gen, fill)
    if cfg.erase_p:
        x = random_erase(x, cfg.erase_p, (cfg.erase_area_min, cfg.erase_area_max), gen, fill)
    if cfg.noise_std:
        x = gaussian_noise(x, cfg.noise_std / cfg.std, gen)
    return x
