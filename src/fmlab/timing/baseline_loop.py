"""The conventional baseline for `fmlab bench-train`: a typical hand-written PyTorch training loop.

What a user writes from the PyTorch tutorials: a `Dataset` that turns each uint8 image into a PIL
image and then into a normalised tensor (torchvision's ToTensor + Normalize, written out here since
torchvision is not a dependency), `DataLoader(shuffle=True)`, `model.train()`, Adam, log-softmax +
NLL, validation each epoch and the test set at the end. It runs in torch's default environment: no
thread setting (unless --threads is given), no allocator tuning, contiguous (NCHW) tensors, fp32.

Shared with fmlab only what makes the comparison like for like: the config parser (so `--set` means
the same thing), the network definition (fmlab.model.nets.build, same widths and same initial weights
for a seed) and the data arrays with the same train/val split (fmlab.data.idx.load). Not fmlab's trainer
or fmlab.training.env. As fmlab does, the weights of the best epoch by the monitored validation metric are
the ones evaluated on the test set.

    python -m fmlab.timing.baseline_loop --set train.max_epochs=2 [--workers 1]   (in the package: a normal
    install of fmlab can run bench-train)

The last stdout line is one JSON object: train_images_per_s (images / training-loop time, every
epoch; evaluation excluded), train_s, eval_s, total_s, test_acc, val_acc, pid, ...
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fmlab.config import schema as fconfig
from fmlab.data import idx as fdata
from fmlab.model.nets import build

# Config keys this loop follows; anything else set away from its default is refused, since the
# two sides would then not train the same thing. train.precision is accepted but not followed:
# the baseline is the fp32 loop a user writes first.
FOLLOWED = {
    "model.",
    "data.val_size",
    "data.split_seed",
    "data.train_subset",
    "data.mean",
    "data.std",
    "train.lr",
    "train.batch_size",
    "train.max_epochs",
    "train.monitor",
    "train.patience",
    "train.min_delta",
    "train.precision",
    "train.optimizer",
    "seed",
}


class FashionImages(Dataset):
    """Item i: uint8 array -> PIL image -> float tensor in [0, 1] [1, 28, 28] -> normalised."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: float, std: float) -> None:
        self.x, self.y, self.mean, self.std = x, y, mean, std

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.x[i])  # uint8 [28, 28] -> mode "L"
        t = torch.from_numpy(np.array(img, dtype=np.uint8)).unsqueeze(0).float().div(255)  # ToTensor
        return (t - self.mean) / self.std, int(self.y[i])  # Normalize


@torch.no_grad()
def evaluate(net: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    net.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        out = net(xb)
        loss_sum += F.nll_loss(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
        n += len(yb)
    return {"loss": loss_sum / n, "acc": correct / n}


def check_followed(cfg: fconfig.Config) -> None:
    default = fconfig.Config().resolved().flat()
    for k, v in cfg.resolved().flat().items():
        if v != default[k] and not any(k == f or (f.endswith(".") and k.startswith(f)) for f in FOLLOWED):
            raise SystemExit(
                f"baseline_loop.py: {k}={v} is not supported by the conventional loop "
                "(it follows model.*, the split, lr, batch size, epochs, early stopping, seed)"
            )
    if cfg.train.optimizer != "adam":
        raise SystemExit("baseline_loop.py: only train.optimizer=adam is supported")


def images(split: fdata.Split, data: fconfig.DataConfig) -> FashionImages:
    return FashionImages(split.x.numpy(), split.y.numpy(), data.mean, data.std)


def train_one_epoch(
    net: torch.nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, device: torch.device
) -> dict[str, float]:
    """One pass over the training set, as the tutorials write it: forward, NLL, backward, step."""
    net.train()
    loss_sum, correct, n = 0.0, 0, 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        out = net(xb)
        loss = F.nll_loss(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(yb)
        correct += (out.argmax(1) == yb).sum().item()
        n += len(yb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"train_loss": loss_sum / n, "train_acc": correct / n}


def improved(score: float, best: float | None, tc: fconfig.TrainConfig) -> bool:
    """Whether score beats the best so far by more than min_delta (lower is better for val_loss)."""
    if best is None:
        return True
    return score < best - tc.min_delta if tc.monitor == "val_loss" else score > best + tc.min_delta


def fit(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    train_loader: DataLoader,
    val_loader: DataLoader,
    device: torch.device,
    tc: fconfig.TrainConfig,
) -> tuple[list[dict[str, float]], int, float, float]:
    """Train epoch by epoch, validating after each, until max_epochs or `patience` epochs without improvement;
    the best epoch's weights are loaded back at the end. Returns (per-epoch rows, best epoch, train_s, eval_s)."""
    train_s = eval_s = 0.0
    epochs, best, best_state, bad, best_epoch = [], None, None, 0, 0
    for epoch in range(1, tc.max_epochs + 1):
        t0 = time.perf_counter()
        row = train_one_epoch(net, train_loader, opt, device)
        t1 = time.perf_counter()
        val = evaluate(net, val_loader, device)
        t2 = time.perf_counter()
        train_s += t1 - t0
        eval_s += t2 - t1
        epochs.append({"epoch": epoch, **row, "val_loss": val["loss"], "val_acc": val["acc"], "train_s": t1 - t0})
        score = val["loss"] if tc.monitor == "val_loss" else val["acc"]
        if improved(score, best, tc):
            best, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
            if bad >= tc.patience:
                break
    net.load_state_dict(best_state)
    return epochs, best_epoch, train_s, eval_s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fmlab config key")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader num_workers (default 0)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    ap.add_argument("--eval-batch-size", type=int, default=1000)
    ap.add_argument("--data-dir")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    cfg = fconfig.with_overrides(fconfig.Config(), fconfig.parse_sets(args.set)).resolved()
    check_followed(cfg)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = fdata.load(cfg.data, args.data_dir)

    torch.manual_seed(cfg.seed)
    net = build(cfg.model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    kw = {"num_workers": args.workers, "persistent_workers": args.workers > 0}
    train_loader = DataLoader(images(ds.train, cfg.data), batch_size=cfg.train.batch_size, shuffle=True, **kw)
    val_loader = DataLoader(images(ds.val, cfg.data), batch_size=args.eval_batch_size, **kw)
    epochs, best_epoch, train_s, eval_s = fit(net, opt, train_loader, val_loader, device, cfg.train)

    t3 = time.perf_counter()
    test = evaluate(net, DataLoader(images(ds.test, cfg.data), batch_size=args.eval_batch_size, **kw), device)
    test_eval_s = time.perf_counter() - t3
    images_seen = sum(len(ds.train) for _ in epochs)
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "side": "conventional",
                "epochs": len(epochs),
                "best_epoch": best_epoch,
                "val_loss": epochs[best_epoch - 1]["val_loss"],
                "val_acc": epochs[best_epoch - 1]["val_acc"],
                "test_loss": test["loss"],
                "test_acc": test["acc"],
                "train_s": train_s,
                "eval_s": eval_s,
                "test_eval_s": test_eval_s,
                "total_s": time.perf_counter() - t_start,
                "train_images_per_s": images_seen / train_s,
                "num_workers": args.workers,
                "threads": torch.get_num_threads(),
                "train_images": len(ds.train),
                "per_epoch": epochs,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
