"""The packed loop: the K trials of a pack (fmlab.training.packs) trained as one model, with the step and
epoch `train()` runs (fmlab.training.step); what is its own is how the networks stack into one model
(the Packed layout), come out of it, and leave it.

Layout (HFTA's, Wang et al. 2021): the K networks side by side along the channel dimension, as one
model (fmlab.model.packed, which says how each layer packs). The loss is the sum of the K networks' mean losses,
so each network's gradient is its own, and Adam, AdamW and SGD are elementwise, so one optimizer over the
stacked tensors is K optimizers.

Each network keeps what its single run has: its initial weights (built from its own seed, exactly as
`train()` builds them), its data order (its own generator, seeded as `train()` seeds it), its
augmentation stream, its dropout stream (on the CPU the single run's stream: the global generator's
state after the init), its early stopping and its resume state, which is the very file `train()` writes
(single-model names, fmlab.training.checkpoint.ResumeState), so a trial cut off in a pack resumes alone or in
another pack. A network that stops or diverges leaves at the epoch boundary; the rest are re-stacked.
Members must be at the same epoch (the learning rate follows the epoch): `train_pack` trains members
resumed at different epochs as successive sub-packs.

Numerics: not bitwise equal to single runs (fmlab.model.packed says why); tests/test_packed.py states the
agreement.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmlab.config.schema import Config
from fmlab.data import idx as fdata
from fmlab.model.nets import build
from fmlab.model.packed import PackedNet, member_losses, member_slice, stack, unstack
from fmlab.training import clock, env, step
from fmlab.training.ema import Average
from fmlab.training.evaluation import evaluate_nets
from fmlab.training.loop import TrialResult, finish
from fmlab.training.optim import group_names, make_optimizer
from fmlab.training.packs import pack_key
from fmlab.training.progress import Lane

OnEpoch = Callable[[str, dict[str, float]], None]  # (trial id, epoch row); raising fails that trial alone
OnEnd = Callable[[str, "TrialResult | BaseException"], None]


@dataclass(frozen=True)
class Packed:
    """K networks side by side in one PackedNet: network k's images in channels k*C.., its outputs (B, K, classes)."""

    k: int
    fmt: torch.memory_format
    shapes: dict[str, torch.Size]  # a single network's state_dict shapes
    pshapes: list[torch.Size]  # its parameters' shapes, in order
    fresh: bool = True

    def inputs(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, 1).contiguous(memory_format=self.fmt)

    def targets(self, ys: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(ys, 1)

    def losses(self, out: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return member_losses(out, y, eps)

    def hits(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.argmax(2) == y).sum(0)

    def eval_input(self, xb: torch.Tensor) -> torch.Tensor:
        return xb.expand(-1, self.k, -1, -1).contiguous(memory_format=self.fmt)

    def eval_sums(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        yk = y.unsqueeze(1).expand(-1, self.k)
        return -out.gather(2, yk.unsqueeze(2)).squeeze(2).sum(0).double(), (out.argmax(2) == yk).sum(0)

    def validate(
        self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, autocast: Any, tta: bool
    ) -> list[dict[str, float]]:
        return evaluate_nets(net, self, x, y, batch_size, autocast, tta)

    def states(self, net: nn.Module, opt: torch.optim.Optimizer) -> list[tuple[dict, dict]]:
        """Each network's slice of the packed weights and optimizer state (copies)."""
        osd = opt.state_dict()
        out = []
        for i, sd in enumerate(self.weights(net)):
            state = {
                pid: {
                    n: member_slice(v, self.k, i, self.pshapes[pid]) if torch.is_tensor(v) else v for n, v in ps.items()
                }
                for pid, ps in osd["state"].items()
            }
            out.append((sd, {"state": state, "param_groups": copy.deepcopy(osd["param_groups"])}))
        return out

    def weights(self, net: nn.Module) -> list[dict]:
        """Each network's slice of the packed weights (copies)."""
        sd = net.state_dict()
        return [unstack(sd, self.k, i, self.shapes) for i in range(self.k)]


def train_pack(
    cfgs: Sequence[Config],
    ds: fdata.Dataset | None = None,
    opts: env.RunOptions = env.RunOptions(),
    *,
    state_dirs: Sequence[str | Path | None] | None = None,
    on_epoch: OnEpoch | None = None,
    on_end: OnEnd | None = None,
    pack_id: str = "",
) -> dict[str, TrialResult | BaseException]:
    """Train the trials cfgs (one pack: equal but for seed and dropout) as one model; with state_dirs
    (one per trial), save each trial's resume state every epoch and resume from it. on_end is called
    as each trial finishes (its TrialResult) or fails (the exception); returns the same, by trial id."""
    t_start = clock.now()
    cfgs = [c.resolved() for c in cfgs]
    if len({pack_key(c) for c in cfgs}) != 1:
        raise ValueError("train_pack: the configs differ in more than seed and dropout; they are not one pack")
    if len({c.trial_id() for c in cfgs}) != len(cfgs):
        raise ValueError("train_pack: a trial appears twice in the pack")
    device = env.setup(opts)
    ds = ds or fdata.load(cfgs[0].data, opts.data_dir)
    dirs = state_dirs or [None] * len(cfgs)
    lanes = [step.start_lane(c, device, d, own_dropout=True, ds=ds)[0] for c, d in zip(cfgs, dirs, strict=True)]
    info = {"id": pack_id, "k": len(lanes), "trials": [m.tid for m in lanes]}
    pack = _Pack(ds, opts, device, info, t_start, on_end, {})
    for epoch in sorted({m.st.epoch for m in lanes}):  # members resumed at one epoch train together
        pack.train([m for m in lanes if m.st.epoch == epoch], on_epoch)
    return pack.out


def _stacked(
    ms: list[Lane], device: torch.device, fmt: torch.memory_format
) -> tuple[PackedNet, torch.optim.Optimizer, Packed]:
    """The members' networks and optimizer states stacked into one model and one optimizer."""
    cfg = ms[0].cfg
    rates = [m.cfg.model.dropout for m in ms]
    template = build(replace(cfg.model, dropout=max(rates)))  # the layout with its dropout layer
    shapes = {n: v.shape for n, v in template.state_dict().items()}
    order = [n for names, _ in group_names(template, cfg.train) for n in names]  # the optimizer's ids
    layout = Packed(len(ms), fmt, shapes, [shapes[n] for n in order])
    net = PackedNet(template, len(ms), rates, [m.drop_gen for m in ms]).to(device, memory_format=fmt)  # type: ignore[misc]
    net.load_state_dict(stack([m.net_sd for m in ms], net.state_dict()))
    opt = make_optimizer(net, cfg.train)
    if ms[0].opt_sd is not None and ms[0].opt_sd["state"]:
        state = {}
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            first = ms[0].opt_sd["state"].get(i)
            if first is None:  # never stepped: frozen so far
                continue
            like = {n: (p if v.ndim else v) for n, v in first.items() if torch.is_tensor(v)}
            state[i] = {
                **{n: v for n, v in first.items() if not torch.is_tensor(v)},
                **stack([m.opt_sd["state"][i] for m in ms], like),
            }  # type: ignore[index]
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return net, opt, layout


def _average(net: PackedNet, ms: list[Lane]) -> Average | None:
    """train.ema: the members' averaged weights stacked beside the packed model (None: off)."""
    tc = ms[0].cfg.train
    if not tc.ema:
        return None
    return Average(net, stack([m.ema_sd for m in ms], net.state_dict()), tc.ema, tc.ema_every)  # type: ignore[misc]


@dataclass
class _Pack:
    """A pack's training: its members' ends reported as they come (out, on_end)."""

    ds: fdata.Dataset
    opts: env.RunOptions
    device: torch.device
    info: dict[str, Any]
    t_start: float
    on_end: OnEnd | None
    out: dict[str, TrialResult | BaseException]
    k_trained: int = 0

    def end(self, m: Lane, what: TrialResult | BaseException) -> None:
        self.out[m.tid] = what
        if self.on_end:
            self.on_end(m.tid, what)

    def finish(self, m: Lane) -> None:
        """A member done: its best weights in a single network, its test pass and its TrialResult."""
        try:
            fmt = step.memory_format(self.opts)
            single = build(m.cfg.model).to(self.device, memory_format=fmt)
            best = {k: v.to(self.device) for k, v in m.best.items()}
            self.end(
                m,
                finish(
                    m.cfg,
                    single,
                    best,
                    m.st,
                    self.ds,
                    self.opts,
                    device=self.device,
                    fmt=fmt,
                    autocast=step.autocast_for(
                        step.pin_precision(m, self.device, self.opts.auto_precision), self.device
                    ),
                    t_start=self.t_start,
                    env_extra={"pack": {**self.info, "k_trained": self.k_trained}},
                ),
            )
        except Exception as e:  # noqa: BLE001 - one trial's failure is its own
            self.end(m, e)

    def train(self, ms: list[Lane], on_epoch: OnEpoch | None) -> None:
        """Members at one epoch trained together until each stops or fails; the rest re-stacked whenever
        one leaves."""
        self.k_trained = len(ms)
        for m in ms:
            if m.done():  # resumed after its last epoch: only the test pass is left
                self.finish(m)
        active = [m for m in ms if not m.done()]
        fmt, cfg = step.memory_format(self.opts), ms[0].cfg
        data = step.Data.of(self.ds, self.device, fmt)
        report = (lambda m, row: on_epoch(m.tid, row)) if on_epoch else None
        run = None
        while active:
            try:
                if run is None:
                    net, opt, layout = _stacked(active, self.device, fmt)
                    run = step.Run(
                        net,
                        opt,
                        layout,
                        cfg,
                        data,
                        step.autocast_for(_pack_precision(active, self.device, self.opts.auto_precision), self.device),
                        self.opts.eval_batch_size,
                        _average(net, active),
                    )
                    self.k_trained = len(active)
                rows, train_s, eval_s = step.epoch_rows(run, active)
            except Exception as e:  # noqa: BLE001 - the pack itself failed (e.g. out of memory): all of its trials
                for m in active:
                    self.end(m, e)
                return
            failed = step.close_epoch(active, rows, train_s, eval_s, run.layout.fresh, self.t_start, report)
            for m, e in zip(active, failed, strict=True):
                if e is not None:
                    self.end(m, e)
                elif m.done():
                    self.finish(m)
            rest = [m for m, e in zip(active, failed, strict=True) if e is None and not m.done()]
            if len(rest) != len(active):
                run = None  # re-stacked without the networks that left, next epoch
            active = rest


def _pack_precision(ms: list[Lane], device: torch.device, decided: str = "") -> str:
    """The one precision a pack trains in: its members' (pinned on one machine, they agree; a member resumed
    from a state started elsewhere in another precision is retrained with the pack's, and records it)."""
    first = step.pin_precision(ms[0], device, decided)
    for m in ms[1:]:
        m.st.precision = first
    return first
