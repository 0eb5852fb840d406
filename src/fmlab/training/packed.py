"""The packed loop: the K trials of a pack (fmlab.training.packs) trained as one model, beside `train()` and
built from its pieces.

Layout (HFTA's, Wang et al. 2021): the K networks side by side along the channel dimension, as one
model (fmlab.model.packed, which says how each layer packs). The loss is the sum of the K networks' mean losses,
so each network's gradient is its own, and Adam, AdamW and SGD are elementwise, so one optimizer over the
stacked tensors is K optimizers.

Each network keeps what its single run has: its initial weights (built from its own seed, exactly as
`train()` builds them), its data order (its own generator, seeded as `train()` seeds it), its
augmentation stream, its dropout stream (on the CPU the single run's stream: the global generator's
state after the init), its early stopping and its resume state, which is the very file `train()` writes
(single-model names, fmlab.training.checkpoint.write_state), so a trial cut off in a pack resumes alone or in
another pack. A network that stops or diverges leaves at the epoch boundary; the rest are re-stacked.
Members must be at the same epoch (the learning rate follows the epoch): `train_pack` trains members
resumed at different epochs as successive sub-packs.

Numerics: not bitwise equal to single runs (fmlab.model.packed says why); tests/test_packed.py states the
agreement.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fmlab.config.schema import Config
from fmlab.data import augment as faug
from fmlab.data import idx as fdata
from fmlab.model.nets import build
from fmlab.model.packed import PackedNet, evaluate_packed, member_losses, member_slice, stack, unstack
from fmlab.training import env
from fmlab.training.checkpoint import read_state, write_state
from fmlab.training.loop import Diverged, LoopState, TrialResult, finish, lr_at, make_optimizer, prepare, track
from fmlab.training.packs import pack_key

OnEpoch = Callable[[str, dict[str, float]], None]  # (trial id, epoch row); raising fails that trial alone
OnEnd = Callable[[str, "TrialResult | BaseException"], None]


@dataclass
class Member:
    """One network of a pack: its trial, its streams, its loop state, its tensors between stackings."""

    cfg: Config
    state_dir: Path | None
    gen: torch.Generator  # data order (as train())
    aug_gen: torch.Generator  # augmentation
    drop_gen: torch.Generator  # dropout masks
    st: LoopState
    net_sd: dict[str, torch.Tensor]
    opt_sd: dict[str, Any] | None
    best: dict[str, torch.Tensor]

    @property
    def tid(self) -> str:
        return self.cfg.trial_id()

    def done(self) -> bool:
        tc = self.cfg.train
        return self.st.epoch >= tc.max_epochs or self.st.bad_epochs >= tc.patience


def _member(cfg: Config, state_dir: Path | None, device: torch.device) -> Member:
    env.seed_everything(cfg.seed)
    net = build(cfg.model)  # the single run's init, on the CPU, from the seeded global stream
    drop_gen = torch.Generator(device)
    if device.type == "cpu":
        drop_gen.set_state(torch.get_rng_state())  # where the single run's dropout stream starts
    else:
        drop_gen.manual_seed(cfg.seed)
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    m = Member(cfg, state_dir, torch.Generator().manual_seed(cfg.seed),
               torch.Generator(device).manual_seed(cfg.seed + 7919), drop_gen, LoopState(), sd, None,
               {k: v.clone() for k, v in sd.items()})  # fmt: skip
    if state_dir and (state_dir / "state.json").exists():
        st, m.net_sd, m.opt_sd, m.best, rng = read_state(state_dir)
        m.st = LoopState.from_dict(st)
        m.gen.set_state(rng["gen"])
        if "aug" in rng and device.type == "cpu":
            m.aug_gen.set_state(rng["aug"])
        stream = rng.get("torch") if device.type == "cpu" else rng.get("cuda")
        if stream is not None:
            m.drop_gen.set_state(stream)
    return m


def _save(m: Member, t_start: float) -> None:
    """The trial's resume state as train() writes it; its dropout stream is where train() keeps its own
    (the global CPU stream, or the CUDA one on a GPU)."""
    on_cpu = m.drop_gen.device.type == "cpu"
    rng = {"torch": m.drop_gen.get_state() if on_cpu else torch.get_rng_state(),
           "gen": m.gen.get_state(), "aug": m.aug_gen.get_state()}  # fmt: skip
    if not on_cpu:
        rng["cuda"] = m.drop_gen.get_state()
    assert m.state_dir is not None and m.opt_sd is not None
    write_state(m.state_dir, m.st.saved(t_start), m.net_sd, m.opt_sd, m.best, rng)


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
    t_start = time.perf_counter()
    cfgs = [c.resolved() for c in cfgs]
    if len({pack_key(c) for c in cfgs}) != 1:
        raise ValueError("train_pack: the configs differ in more than seed and dropout; they are not one pack")
    if len({c.trial_id() for c in cfgs}) != len(cfgs):
        raise ValueError("train_pack: a trial appears twice in the pack")
    device = env.setup(opts)
    ds = ds or fdata.load(cfgs[0].data, opts.data_dir)
    dirs = [Path(d) if d else None for d in (state_dirs or [None] * len(cfgs))]
    members = [_member(c, d, device) for c, d in zip(cfgs, dirs, strict=True)]
    out: dict[str, TrialResult | BaseException] = {}
    info = {"id": pack_id, "k": len(members), "trials": [m.tid for m in members]}
    for epoch in sorted({m.st.epoch for m in members}):  # members resumed at one epoch train together
        sub = [m for m in members if m.st.epoch == epoch]
        _run(sub, ds, opts, device, info, t_start, on_epoch, on_end, out)
    return out


def _stacked(ms: list[Member], device: torch.device, fmt: torch.memory_format
             ) -> tuple[PackedNet, torch.optim.Optimizer, dict[str, torch.Size], list[torch.Size]]:  # fmt: skip
    cfg = ms[0].cfg
    rates = [m.cfg.model.dropout for m in ms]
    template = build(replace(cfg.model, dropout=max(rates)))  # the layout with its dropout layer
    shapes = {n: v.shape for n, v in template.state_dict().items()}
    pshapes = [p.shape for p in template.parameters()]
    net = PackedNet(template, len(ms), rates, [m.drop_gen for m in ms]).to(device, memory_format=fmt)
    net.load_state_dict(stack([m.net_sd for m in ms], net.state_dict()))
    opt = make_optimizer(net.parameters(), cfg.train)
    if ms[0].opt_sd is not None and ms[0].opt_sd["state"]:
        params = list(net.parameters())
        state = {}
        for i, p in enumerate(params):
            like = {n: v for n, v in ms[0].opt_sd["state"][i].items() if torch.is_tensor(v)}
            like = {n: (p if v.ndim else v) for n, v in like.items()}
            state[i] = {**{n: v for n, v in ms[0].opt_sd["state"][i].items() if not torch.is_tensor(v)},
                        **stack([m.opt_sd["state"][i] for m in ms], like)}  # type: ignore[index]  # fmt: skip
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return net, opt, shapes, pshapes


def _unstack_into(ms: list[Member], net: PackedNet, opt: torch.optim.Optimizer, shapes: dict[str, torch.Size],
                  pshapes: list[torch.Size]) -> None:  # fmt: skip
    """Copy every member's slice of the packed weights and optimizer state back into its Member."""
    k = len(ms)
    sd = net.state_dict()
    osd = opt.state_dict()
    for i, m in enumerate(ms):
        m.net_sd = unstack(sd, k, i, shapes)
        state = {}
        for pid, ps in osd["state"].items():
            state[pid] = {n: member_slice(v, k, i, pshapes[pid]) if torch.is_tensor(v) else v for n, v in ps.items()}
        m.opt_sd = {"state": state, "param_groups": copy.deepcopy(osd["param_groups"])}


def _run(ms: list[Member], ds: fdata.Dataset, opts: env.RunOptions, device: torch.device, info: dict[str, Any],
         t_start: float, on_epoch: OnEpoch | None, on_end: OnEnd | None,
         out: dict[str, TrialResult | BaseException]) -> None:  # fmt: skip
    tc = ms[0].cfg.train
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if tc.precision == "bf16" else nullcontext
    xtr, ytr = prepare(ds.train, ds, device, fmt)
    xva, yva = prepare(ds.val, ds, device, fmt)
    aug = faug.enabled(ms[0].cfg.data)
    n, bs = len(ytr), tc.batch_size
    steps = math.ceil(n / bs)

    def end(m: Member, what: TrialResult | BaseException) -> None:
        out[m.tid] = what
        if on_end:
            on_end(m.tid, what)

    def finish_member(m: Member) -> None:
        try:
            single = build(m.cfg.model).to(device, memory_format=fmt)
            best = {k: v.to(device) for k, v in m.best.items()}
            end(m, finish(m.cfg, single, best, m.st, ds, opts, device=device, fmt=fmt, autocast=autocast,
                          t_start=t_start, env_extra={"pack": {**info, "k_trained": k_trained}}))  # fmt: skip
        except Exception as e:  # noqa: BLE001 - one trial's failure is its own
            end(m, e)

    k_trained = len(ms)
    active = [m for m in ms if not m.done()]
    for m in ms:
        if m.done():  # resumed after its last epoch: only the test pass is left
            finish_member(m)
    net = opt = None
    while active:
        try:
            if net is None:
                net, opt, shapes, pshapes = _stacked(active, device, fmt)
                k_trained = len(active)
            assert opt is not None
            k = len(active)
            epoch = active[0].st.epoch + 1
            t0 = time.perf_counter()
            net.train()
            perms = [torch.randperm(n, generator=m.gen).to(device) for m in active]
            loss_sum = torch.zeros(k, device=device)
            correct = torch.zeros(k, dtype=torch.long, device=device)
            for i in range(steps):
                for g in opt.param_groups:
                    g["lr"] = lr_at((epoch - 1) * steps + i, tc, steps)
                idx = [p[i * bs : (i + 1) * bs] for p in perms]
                xs = [xtr[j] for j in idx]
                if aug:
                    xs = [faug.augment(x, m.cfg.data, m.aug_gen) for x, m in zip(xs, active, strict=True)]
                xb = torch.cat(xs, 1).contiguous(memory_format=fmt)
                yb = torch.stack([ytr[j] for j in idx], 1)
                with autocast():
                    logp = net(xb)
                losses = member_losses(logp.float(), yb, tc.label_smoothing)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
                loss_sum += losses.detach() * len(yb)
                correct += (logp.detach().argmax(2) == yb).sum(0)
            t1 = time.perf_counter()
            vals = evaluate_packed(net, xva, yva, opts.eval_batch_size, autocast, tc.tta, fmt)
            t2 = time.perf_counter()
            train_loss, train_acc = (loss_sum / n).tolist(), (correct.double() / n).tolist()
            lr = opt.param_groups[0]["lr"]
            _unstack_into(active, net, opt, shapes, pshapes)
        except Exception as e:  # noqa: BLE001 - the pack itself failed (e.g. out of memory): all of its trials
            for m in active:
                end(m, e)
            return
        leaving: list[tuple[Member, BaseException | None]] = []
        rows = []
        for i, m in enumerate(active):
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss[i], "train_acc": train_acc[i],
                   "val_loss": vals[i]["loss"], "val_acc": vals[i]["acc"], "epoch_s": t2 - t0}  # fmt: skip
            rows.append(row)
            if not math.isfinite(train_loss[i]):
                leaving.append((m, Diverged(f"training loss is {train_loss[i]} at epoch {epoch}")))
                continue
            m.st.history.append(row)
            m.st.train_s += t1 - t0
            m.st.eval_s += t2 - t1
            m.st.epoch = epoch
            if track(m.st, epoch, row[tc.monitor], tc):
                m.best = dict(m.net_sd)  # net_sd is a fresh copy each epoch
            if m.state_dir:
                _save(m, t_start)
        failed = {id(m) for m, _ in leaving}
        for m, row in zip(active, rows, strict=True):  # every trial's epoch is saved before any is reported
            if id(m) in failed or not on_epoch:
                continue
            try:
                on_epoch(m.tid, row)
            except Exception as e:  # noqa: BLE001 - a failing callback fails its trial, as in train()
                leaving.append((m, e))
                failed.add(id(m))
        for m, e in leaving:
            end(m, e)  # type: ignore[arg-type]
        stopped = [m for m in active if id(m) not in failed and m.done()]
        for m in stopped:
            finish_member(m)
        rest = [m for m in active if id(m) not in failed and not m.done()]
        if len(rest) != len(active):
            net = opt = None  # re-stacked without the networks that left, next epoch
        active = rest
