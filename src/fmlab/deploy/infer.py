"""Inference on a trained checkpoint: resolve and load it, count its parameters, predict on images.

ONNX export and parity live in onnx_export.py, the latency/throughput benchmark in bench.py.
A checkpoint reference is a trial id, ``STUDY:best`` (both looked up in the store) or a directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmlab.config.schema import Config
from fmlab.errors import FmlabError
from fmlab.model.nets import build, count_params, forward_flops
from fmlab.training.checkpoint import CheckpointError, load_trial

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SIDE = 28  # Fashion-MNIST frame, pixels


class InferError(FmlabError):
    """A bad inference input (reference, image, output path); the message names it."""


class ImageError(InferError):
    """A file that is not a readable image."""


def need(module: str, package: str) -> Any:
    """Import an inference dependency, or fail with the package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InferError(f"{module} is not installed; `pip install {package}` (or reinstall fmlab)") from None


# ---------------------------------------------------------------- checkpoints


def resolve(ref: str | Path, store: str | Path | None = None) -> Path:
    """A checkpoint directory for a directory path, a trial id or ``STUDY:best`` (fmlab.store.db.resolve_checkpoint)."""
    from fmlab.store.db import DEFAULT_PATH, resolve_checkpoint

    return Path(resolve_checkpoint(str(ref), Path(store) if store else DEFAULT_PATH))


@dataclass
class Loaded:
    """A checkpoint ready for inference: the network in eval mode plus how to feed it."""

    ckpt_dir: Path
    cfg: Config
    net: torch.nn.Module
    meta: dict[str, Any]
    classes: list[str]
    mean: float
    std: float

    @property
    def weights_path(self) -> Path:
        return self.ckpt_dir / "best.safetensors"

    @property
    def trial_id(self) -> str:
        return str(self.meta.get("trial_id") or self.cfg.trial_id())

    def normalize(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] as trial.json says."""
        x = torch.from_numpy(np.array(pixels, np.float32)) if isinstance(pixels, np.ndarray) else pixels
        return ((x.float() / 255.0 - self.mean) / self.std).unsqueeze(1).contiguous()


def load(ref: str | Path, store: str | Path | None = None) -> Loaded:
    d = resolve(ref, store)
    cfg, weights, meta = load_trial(d)
    net = build(cfg.model)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        why = " ".join(s.strip() for s in first[1:3]) if len(first) > 1 else first[0]
        raise CheckpointError(
            f"{d / 'best.safetensors'}: weights do not fit the network in trial.json ({why})"
        ) from None
    net.eval()
    inp = meta.get("input") or {}
    try:
        mean = float(inp.get("mean", cfg.data.mean))
        std = float(inp.get("std", cfg.data.std))
    except (TypeError, ValueError):
        raise CheckpointError(f"{d / 'trial.json'}: 'input' mean/std are not numbers") from None
    classes = meta.get("classes")
    if not (isinstance(classes, list) and len(classes) == net.fc.out_features):
        from fmlab.data.idx import CLASSES

        classes = list(CLASSES)
    return Loaded(d, cfg, net, meta, [str(c) for c in classes], mean, std)


def param_table(ld: Loaded) -> dict[str, Any]:
    """Parameters per layer (every one the network uses, frozen ones included), the total, the size in
    MB (10^6 bytes) fp32 and on disk, and the forward FLOPs per image (fmlab.model.nets.forward_flops)."""
    rows = []
    for name, mod in ld.net.named_modules():
        ps = list(mod.named_parameters(recurse=False))
        if not ps:
            continue
        rows.append(
            {
                "layer": name,
                "type": type(mod).__name__,
                "shapes": {n: list(p.shape) for n, p in ps},
                "params": sum(p.numel() for _, p in ps),
            }
        )
    total = count_params(ld.net)
    disk = ld.weights_path.stat().st_size
    return {
        "checkpoint": str(ld.ckpt_dir),
        "trial_id": ld.trial_id,
        "layers": rows,
        "total": total,
        "fp32_mb": total * 4 / 1e6,
        "disk_mb": disk / 1e6,
        "disk_bytes": disk,
        "forward_flops_per_image": forward_flops(ld.net)["total"],
    }


def test_set(ld: Loaded, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 test images normalised for this checkpoint, and their labels."""
    from fmlab.data.idx import load_raw

    _, _, sx, sy = load_raw(data_dir)
    return ld.normalize(sx), torch.from_numpy(sy.astype(np.int64))


def calibration_set(ld: Loaded, n: int = 500, data_dir: str | Path | None = None) -> torch.Tensor:
    """n training images (stratified, fixed seed) normalised: what int8 calibration sees."""
    from fmlab.data.idx import load_raw, stratified_pick

    tx, ty, _, _ = load_raw(data_dir)
    return ld.normalize(tx[stratified_pick(ty, n, seed=1234)])


# ---------------------------------------------------------------- images


def image_files(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders expand to the images directly inside them, sorted."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ImageError(f"{p}: no such file or folder")
    return out


def read_image(path: str | Path) -> np.ndarray:
    """Any PNG/JPEG/... as a float greyscale array in [0, 255]; transparency composited onto white."""
    image_mod = need("PIL.Image", "pillow")
    ops = need("PIL.ImageOps", "pillow")
    try:
        with image_mod.open(path) as im:
            im = ops.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = image_mod.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = image_mod.alpha_composite(bg, rgba)
            grey = np.asarray(im.convert("L"), dtype=np.float32)
    except (OSError, ValueError, SyntaxError, image_mod.DecompressionBombError) as e:
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if grey.ndim != 2 or min(grey.shape) < 1:
        raise ImageError(f"{path}: empty image")
    return grey


def to_fashion_mnist(grey: np.ndarray) -> np.ndarray:
    """A greyscale photo -> uint8 28x28 in Fashion-MNIST form: light object on black, filling the frame.

    Fashion-MNIST was made by trimming each product photo, scaling its longer side to 28 px and
    centring it, with the background at 0; we do the same to the user's image.
    """
    image_mod = need("PIL.Image", "pillow")
    h, w = grey.shape
    k = max(1, round(0.04 * min(h, w)))  # border ring a few percent wide tells the background
    border = np.concatenate([grey[:k].ravel(), grey[-k:].ravel(), grey[:, :k].ravel(), grey[:, -k:].ravel()])
    if np.median(border) > 127:
        grey, border = 255.0 - grey, 255.0 - border
    bg = float(np.median(border))
    obj = np.clip(grey - bg, 0, None)
    peak = float(obj.max())
    if peak < 1:  # blank image: nothing to crop
        return np.zeros((SIDE, SIDE), np.uint8)
    obj *= 255.0 / peak
    # Trim as Fashion-MNIST did: rows and columns within 5% of full intensity of the background go.
    ys, xs = np.nonzero(obj > 0.05 * 255)
    crop = obj[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    ch, cw = crop.shape
    scale = SIDE / max(ch, cw)
    nh, nw = max(1, round(ch * scale)), max(1, round(cw * scale))
    small = image_mod.fromarray(crop.astype(np.float32)).resize((nw, nh), image_mod.Resampling.LANCZOS)
    canvas = np.zeros((SIDE, SIDE), np.float32)
    # An odd margin puts the extra pixel above/left: that is where Fashion-MNIST has it (checked on
    # the test set: this makes the function near-identity on its own images).
    top, left = (SIDE - nh + 1) // 2, (SIDE - nw + 1) // 2
    canvas[top : top + nh, left : left + nw] = np.asarray(small)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def predict(ld: Loaded, paths: list[str | Path], top: int = 3) -> list[dict[str, Any]]:
    """Top classes with probabilities for each image file (folders expanded)."""
    files = image_files(paths)
    pixels = np.stack([to_fashion_mnist(read_image(f)) for f in files])
    return predict_pixels(ld, pixels, [str(f) for f in files], top)


def predict_pixels(ld: Loaded, pixels: np.ndarray, names: list[str], top: int = 3) -> list[dict[str, Any]]:
    """Top classes with probabilities for uint8 images [N, 28, 28] already in Fashion-MNIST form."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[1:] != (SIDE, SIDE) or len(names) != len(pixels):
        raise InferError(f"want uint8 pixels [N, {SIDE}, {SIDE}] and N names; got {pixels.shape}, {len(names)} names")
    with torch.inference_mode():
        probs = ld.net(ld.normalize(pixels)).exp()
    out = []
    for f, pr in zip(names, probs, strict=True):
        p, i = pr.topk(min(top, len(ld.classes)))
        out.append(
            {
                "file": f,
                "top": [
                    {"class": ld.classes[j], "index": int(j), "prob": float(q)}
                    for q, j in zip(p.tolist(), i.tolist(), strict=True)
                ],
            }
        )
    return out
