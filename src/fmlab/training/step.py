"""The training step and epoch both loops call: `train()` (fmlab.training.loop) with one network, the
packed loop (fmlab.training.packed) with K networks stacked as one model. A training lever goes here, once.

What differs between the loops is a Layout: how the networks' batches become the model's input, how its
output becomes each network's loss and hits, how each network's weights are read back. Everything else
(initialisation, the learning rate per step, augmentation, autocast, loss, backward, the optimizer step,
validation and TTA, the epoch's rows, early stopping, the resume state, the callbacks) is written once,
here, over a list of Lanes (fmlab.training.progress.Lane): one per network.

The step is the hot path: sums stay on the device and are read once per epoch (no host sync per step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmlab.config.schema import Config
from fmlab.data import augment as faug
from fmlab.data import idx as fdata
from fmlab.model import inits
from fmlab.model.nets import build
from fmlab.training import clock, env
from fmlab.training import mix as fmix
from fmlab.training.ema import Average
from fmlab.training.evaluation import Views
from fmlab.training.layout import Layout
from fmlab.training.optim import lr_at, set_trainable
from fmlab.training.progress import Diverged, Lane

Report = Callable[[Lane, dict[str, float]], None]  # a lane's epoch row to its caller; raising fails that lane


def start_lane(
    cfg: Config,
    device: torch.device,
    state_dir: str | Path | None,
    own_dropout: bool = False,
    ds: fdata.Dataset | None = None,
) -> tuple[Lane, nn.Module]:
    """A network initialised from its seed (on the CPU; the init levers, fmlab.model.inits, from ds's
    training images) and its Lane, resumed when state_dir holds a state."""
    env.seed_everything(cfg.seed)
    net = build(cfg.model)
    inits.apply(net, cfg.model, cfg.seed, ds)
    return Lane.new(cfg, net.state_dict(), device, Path(state_dir) if state_dir else None, own_dropout), net


# ---------------------------------------------------------------- what an epoch runs on


def prepare(split: fdata.Split, ds: fdata.Dataset, device: torch.device, fmt: torch.memory_format):
    x = fdata.normalize(split.x, ds.mean, ds.std).to(device).contiguous(memory_format=fmt)
    return x, split.y.to(device)


@dataclass(frozen=True)
class Data:
    """The training and validation images, normalised, on the device."""

    xtr: torch.Tensor
    ytr: torch.Tensor
    xva: torch.Tensor
    yva: torch.Tensor

    @classmethod
    def of(cls, ds: fdata.Dataset, device: torch.device, fmt: torch.memory_format) -> Data:
        return cls(*prepare(ds.train, ds, device, fmt), *prepare(ds.val, ds, device, fmt))


def memory_format(opts: env.RunOptions) -> torch.memory_format:
    return torch.channels_last if opts.channels_last else torch.contiguous_format


def autocast_for(precision: str, device: torch.device) -> Callable[[], Any]:
    """The context a step runs in for a trained precision (fp32 or bf16; auto is chosen first: pin_precision)."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext


def pin_precision(lane: Lane, device: torch.device, decided: str = "") -> str:
    """The precision lane trains in: the one its resume state started in, else the one its config picks on this
    device (env.pick_precision; decided: a sweep's pick for auto), recorded in its loop state (saved with it, and
    in the result's timings)."""
    if not lane.st.precision:
        lane.st.precision = env.pick_precision(lane.cfg.train.precision, device, decided)[0]
    return lane.st.precision


@dataclass
class Run:
    """What each epoch of one model uses: the model, its optimizer, its layout, its data."""

    net: nn.Module
    opt: torch.optim.Optimizer
    layout: Layout
    cfg: Config  # the lanes' shared training settings (a pack's members differ only in seed and dropout)
    data: Data
    autocast: Callable[[], Any]
    eval_batch_size: int
    ema: Average | None = None  # train.ema: the average of the weights, which validates (fmlab.training.ema)
    aug: bool = field(init=False)  # whether the batches are augmented
    mix: bool = field(init=False)  # whether they are blended (mixup, cutmix)
    views: Views = field(init=False)  # the validation's test-time views

    def __post_init__(self) -> None:
        self.aug, self.mix = faug.enabled(self.cfg.data), fmix.mixing(self.cfg.data)
        self.views = Views.of(self.cfg)


# ---------------------------------------------------------------- the step, the epoch


def train_step(
    run: Run, lanes: Sequence[Lane], idx: list[torch.Tensor], lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of every lane's network on its batch (rows idx of the training set): each
    network's mean loss (detached) and correct count, on the device."""
    tc, d, opt = run.cfg.train, run.data, run.opt
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)  # a group's multiplier (fmlab.training.optim.make_optimizer)
    xs, ys = [d.xtr[j] for j in idx], [d.ytr[j] for j in idx]
    if run.aug:  # each network's images from its own stream
        n = len(d.ytr)
        xs = [faug.augment(x, ln.cfg.data, ln.aug_gen, ln.flips(j, n)) for x, j, ln in zip(xs, idx, lanes, strict=True)]
    mixed = None
    if run.mix:  # each network's batch blended from its own streams
        mixed = [
            fmix.mix_batch(x, y, ln.cfg.data, ln.mix_gen, ln.aug_gen) for x, y, ln in zip(xs, ys, lanes, strict=True)
        ]
        xs = [m.x for m in mixed]
    xb, yb = run.layout.inputs(xs), run.layout.targets(ys)
    with run.autocast():
        out = run.net(xb)
    if mixed is None:
        losses = run.layout.losses(out.float(), yb, tc.label_smoothing)
    else:
        losses = fmix.mixed_losses(run.layout, out.float(), yb, mixed, tc.label_smoothing)
    opt.zero_grad(set_to_none=True)
    (losses.sum() if losses.ndim else losses).backward()
    opt.step()
    return losses.detach(), run.layout.hits(out.detach(), yb)


def train_epoch(run: Run, lanes: Sequence[Lane], epoch: int) -> tuple[list[float], list[int]]:
    """One epoch of steps, each lane's batches in its own order: each network's summed loss and hits."""
    d, bs = run.data, run.cfg.train.batch_size
    n = len(d.ytr)
    steps = math.ceil(n / bs)
    perms = [torch.randperm(n, generator=lane.gen).to(d.ytr.device) for lane in lanes]
    loss_sum = torch.zeros(len(lanes), device=d.ytr.device)
    correct = torch.zeros(len(lanes), dtype=torch.long, device=d.ytr.device)
    for i in range(steps):
        idx = [p[i * bs : (i + 1) * bs] for p in perms]
        g = (epoch - 1) * steps + i
        losses, hits = train_step(run, lanes, idx, lr_at(g, run.cfg.train, steps))
        if run.ema is not None:
            run.ema.after_step(g)
        loss_sum += losses * len(idx[0])
        correct += hits
    return loss_sum.tolist(), correct.tolist()  # the epoch's one read of the sums


NO_VAL: dict[str, float | None] = {"loss": None, "acc": None}  # data.val_size = 0: no split, nothing measured


def epoch_rows(run: Run, lanes: Sequence[Lane]) -> tuple[list[dict[str, float]], float, float]:
    """Every lane's network trained for one epoch and validated; each lane's weights and optimizer state
    read back into it. Returns each lane's epoch row, the training seconds and the validation seconds.
    With no validation split (data.val_size = 0) nothing validates: the row's val_loss and val_acc are None."""
    epoch = lanes[0].st.epoch + 1
    t0 = clock.now()
    run.net.train()
    set_trainable(run.net, run.cfg.model, epoch)
    sums, hits = train_epoch(run, lanes, epoch)
    t1 = clock.now()
    d = run.data
    judged = run.ema.net if run.ema is not None else run.net  # what validates (and is kept as the best)
    if len(d.yva):
        vals = run.layout.validate(judged, d.xva, d.yva, run.eval_batch_size, run.autocast, run.views)
    else:
        vals = [NO_VAL] * len(lanes)
    t2 = clock.now()
    for lane, (sd, osd) in zip(lanes, run.layout.states(run.net, run.opt), strict=True):
        lane.net_sd, lane.opt_sd = sd, osd
    if run.ema is not None:
        for lane, sd in zip(lanes, run.layout.weights(run.ema.net), strict=True):
            lane.ema_sd = sd
    n, lr = len(d.ytr), run.opt.param_groups[0]["lr"]
    rows = [
        {
            "epoch": epoch,
            "lr": lr,
            "train_loss": s / n,
            "train_acc": c / n,
            "val_loss": v["loss"],
            "val_acc": v["acc"],
            "epoch_s": t2 - t0,
        }
        for s, c, v in zip(sums, hits, vals, strict=True)
    ]
    return rows, t1 - t0, t2 - t1


def close_epoch(
    lanes: Sequence[Lane],
    rows: list[dict[str, float]],
    train_s: float,
    eval_s: float,
    fresh: bool,
    t_start: float,
    report: Report | None,
) -> list[Exception | None]:
    """Each lane's epoch recorded (early stopping, best weights) and its resume state saved, every lane's
    before any is reported; then each row reported. Returns each lane's failure: Diverged, or what its
    report raised (None: it goes on)."""
    failed: list[Exception | None] = []
    for lane, row in zip(lanes, rows, strict=True):
        if not math.isfinite(row["train_loss"]):
            failed.append(Diverged(f"training loss is {row['train_loss']} at epoch {row['epoch']}"))
            continue
        lane.record(row, train_s, eval_s, fresh)
        lane.save(t_start)
        failed.append(None)
    for i, (lane, row) in enumerate(zip(lanes, rows, strict=True)):
        if failed[i] is None and report:
            try:
                report(lane, row)
            except Exception as e:  # noqa: BLE001 - a failing callback fails its own lane
                failed[i] = e
    return failed


def run_epoch(run: Run, lanes: Sequence[Lane], t_start: float, report: Report | None) -> list[Exception | None]:
    """One whole epoch of every lane (epoch_rows, then close_epoch); each lane's failure or None."""
    rows, train_s, eval_s = epoch_rows(run, lanes)
    return close_epoch(lanes, rows, train_s, eval_s, run.layout.fresh, t_start, report)
