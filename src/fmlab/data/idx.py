"""Fashion-MNIST: IDX reader, dataset location and checksums, stratified train/val split.

The whole dataset lives in memory as tensors; training slices batches from it (no DataLoader).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fmlab.config.schema import DataConfig
from fmlab.errors import FmlabError

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Upstream's decompressed content: SHA-256 and item count.
FILES = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 60_000),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60_000),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 10_000),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10_000),
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
UPSTREAM_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FIX = (
    "install it with `apt-get install -y dataset-fashion-mnist` (Debian), run `fmlab data fetch`, "
    "or point --data-dir / $FMLAB_DATA at a folder holding the four IDX files"
)


class DataError(FmlabError):
    """A missing or bad data file; the message names the file and the fix."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fmlab" / "fashion-mnist"


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where the IDX files are looked for, in order."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("FMLAB_DATA"):
        dirs.append(Path(os.environ["FMLAB_DATA"]))
    return dirs + [SYSTEM_DIR, cache_dir()]


def find_file(name: str, data_dir: str | Path | None = None) -> Path:
    """The first of name / name.gz found; an explicit --data-dir must hold it."""
    for i, d in enumerate(search_dirs(data_dir)):
        for cand in (d / name, d / f"{name}.gz"):
            if cand.is_file():
                return cand
        if i == 0 and data_dir:
            raise DataError(f"{d / name}[.gz]: not found in --data-dir; {FIX}")
    where = ", ".join(str(d) for d in search_dirs(data_dir))
    raise DataError(f"{name}[.gz]: not found in {where}; {FIX}")


def read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e}); replace the file: {FIX}") from None


def parse_idx(buf: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Parse IDX bytes (unsigned-byte data only) into a uint8 array of the declared shape."""
    if len(buf) < 4:
        raise DataError(f"{path}: truncated header ({len(buf)} bytes); replace the file: {FIX}")
    zero, dtype, ndim = struct.unpack(">HBB", buf[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise DataError(
            f"{path}: bad magic number 0x{buf[:4].hex()} (want 0x00000801 or 0x00000803, "
            f"unsigned bytes); not an IDX file: {FIX}"
        )
    head = 4 + 4 * ndim
    if len(buf) < head:
        raise DataError(f"{path}: truncated header; replace the file: {FIX}")
    dims = struct.unpack(f">{ndim}I", buf[4:head])
    size = int(np.prod(dims))
    if len(buf) != head + size:
        raise DataError(
            f"{path}: {len(buf) - head} data bytes, header says {size} "
            f"({'truncated' if len(buf) < head + size else 'trailing bytes'}); replace the file: {FIX}"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=head).reshape(dims)


def load_file(name: str, data_dir: str | Path | None = None, verify: bool = True) -> np.ndarray:
    path = find_file(name, data_dir)
    buf = read_bytes(path)
    arr = parse_idx(buf, path)
    want_hash, want_n = FILES[name]
    is_img = "images" in name
    if arr.shape[0] != want_n or (is_img and arr.shape[1:] != (28, 28)) or (not is_img and arr.ndim != 1):
        raise DataError(f"{path}: shape {arr.shape}, expected ({want_n}{', 28, 28' if is_img else ''}); {FIX}")
    if not is_img and arr.max() > 9:
        raise DataError(f"{path}: label {int(arr.max())} out of range 0..9; {FIX}")
    if verify and hashlib.sha256(buf).hexdigest() != want_hash:
        raise DataError(f"{path}: SHA-256 does not match upstream (corrupt or a different dataset); {FIX}")
    return arr


def check(data_dir: str | Path | None = None) -> dict:
    """What `fmlab data check` reports: path, hash, count and per-class counts for each file."""
    files = []
    for name, (want_hash, want_n) in FILES.items():
        path = find_file(name, data_dir)
        buf = read_bytes(path)
        arr = parse_idx(buf, path)
        got = hashlib.sha256(buf).hexdigest()
        entry = {
            "name": name,
            "path": str(path),
            "sha256": got,
            "sha256_ok": got == want_hash,
            "count": int(arr.shape[0]),
            "count_ok": arr.shape[0] == want_n,
        }
        if "labels" in name:
            entry["per_class"] = {c: int(n) for c, n in zip(CLASSES, np.bincount(arr, minlength=10))}
        files.append(entry)
    return {"ok": all(f["sha256_ok"] and f["count_ok"] for f in files), "files": files}


def fetch(url: str = UPSTREAM_URL, dest: str | Path | None = None, timeout_s: float = 60) -> list[Path]:
    """Download the four .gz files, verify them, and move each into place only when valid."""
    dest = Path(dest) if dest else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, (want_hash, _) in FILES.items():
        src = url.rstrip("/") + f"/{name}.gz"
        try:
            with urllib.request.urlopen(src, timeout=timeout_s) as r:
                raw = r.read()
        except OSError as e:
            raise DataError(f"{src}: download failed ({e}); check the address or network") from None
        buf = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        parse_idx(buf, src)
        if hashlib.sha256(buf).hexdigest() != want_hash:
            raise DataError(f"{src}: SHA-256 does not match upstream; nothing written to {dest}")
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        target = dest / (f"{name}.gz" if raw[:2] == b"\x1f\x8b" else name)
        os.replace(tmp, target)
        out.append(target)
    return out


@dataclass
class Split:
    """Images as uint8 [N, 28, 28] and labels as int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    mean: float
    std: float


def stratified_pick(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n items with class proportions kept (largest remainder), in a seeded order."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * n / len(y)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    picks = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picks))


_RAW: dict[str, tuple[np.ndarray, ...]] = {}


def load_raw(data_dir: str | Path | None = None) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, test_x, test_y) as numpy, verified; cached per process."""
    key = str(data_dir)
    if key not in _RAW:
        _RAW[key] = tuple(load_file(n, data_dir) for n in FILES)
    return _RAW[key]


def load(cfg: DataConfig, data_dir: str | Path | None = None) -> Dataset:
    """Train/val split (stratified, seeded by cfg.split_seed) and the optional train and test subsets."""
    tx, ty, sx, sy = load_raw(data_dir)
    val_idx = stratified_pick(ty, cfg.val_size, cfg.split_seed)
    mask = np.ones(len(ty), bool)
    mask[val_idx] = False
    tr_idx = np.flatnonzero(mask)
    if cfg.train_subset and cfg.train_subset < len(tr_idx):
        tr_idx = tr_idx[stratified_pick(ty[tr_idx], cfg.train_subset, cfg.split_seed + 1)]
    te_idx = np.arange(len(sy))
    if cfg.test_subset and cfg.test_subset < len(sy):
        te_idx = stratified_pick(sy, cfg.test_subset, cfg.split_seed + 2)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.array(x)), torch.from_numpy(y.astype(np.int64)))

    return Dataset(
        split(tx[tr_idx], ty[tr_idx]), split(tx[val_idx], ty[val_idx]), split(sx[te_idx], sy[te_idx]), cfg.mean, cfg.std
    )


def normalize(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28], (x/255 - mean) / std."""
    return ((x.float() / 255.0 - mean) / std).unsqueeze(1)
