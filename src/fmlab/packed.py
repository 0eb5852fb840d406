"""The packed loop: the K trials of a pack (fmlab.packs) trained as one model, beside `train()` and
built from its pieces.

Layout (HFTA's, Wang et al. 2021): the K networks side by side along the channel dimension. Each Conv2d
becomes one convolution with K times the channels and K times the groups, so network k's filters see
only its own channels; BatchNorm over K x C channels is per-network batch norm; the classifier is one
batched matmul over K weight matrices (PackedLinear); dropout draws each network's mask from its own
stream at its own rate (PackedDropout). The loss is the sum of the K networks' mean losses, so each
network's gradient is its own, and Adam, AdamW and SGD are elementwise, so one optimizer over the
stacked tensors is K optimizers. (BENCHMARKS.md "Packs" measured this layout against torch.func's vmap:
1.2-1.3x faster on the CPU.)

Each network keeps what its single run has: its initial weights (built from its own seed, exactly as
`train()` builds them), its data order (its own generator, seeded as `train()` seeds it), its
augmentation stream, its dropout stream (on the CPU the single run's stream: the global generator's
state after the init), its early stopping and its resume state, which is the very file `train()` writes
(single-model names, fmlab.checkpoint.write_state), so a trial cut off in a pack resumes alone or in
another pack. A network that stops or diverges leaves at the epoch boundary; the rest are re-stacked.
Members must be at the same epoch (the learning rate follows the epoch): `train_pack` trains members
resumed at different epochs as successive sub-packs.

Numerics: not bitwise equal to single runs: a grouped convolution and a batched matmul sum in another
order than the plain kernels (fp32 differences ~1e-7 per op, which training then amplifies), and on CUDA
dropout draws differ from the fused kernel's. tests/test_packed.py states the agreement.
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
from torch import nn

from . import augment as faug
from . import data as fdata
from . import env
from .checkpoint import read_state, write_state
from .config import Config
from .model import build
from .packs import pack_key
from .train import Diverged, LoopState, TrialResult, finish, lr_at, make_optimizer, prepare, track

OnEpoch = Callable[[str, dict[str, float]], None]  # (trial id, epoch row); raising fails that trial alone
OnEnd = Callable[[str, "TrialResult | BaseException"], None]


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
        return nn.Conv2d(k * m.in_channels, k * m.out_channels, m.kernel_size, m.stride, m.padding,  # type: ignore[arg-type]
                         m.dilation, k * m.groups, m.bias is not None, m.padding_mode)  # fmt: skip
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.PReLU) and m.num_parameters > 1:
        return nn.PReLU(k * m.num_parameters)
    if isinstance(m, nn.Linear):
        return PackedLinear(k, m.in_features, m.out_features, m.bias is not None)
    if isinstance(m, nn.Dropout):
        return PackedDropout(rates, gens)
    if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
        raise ValueError(f"cannot pack a {type(m).__name__} layer (fmlab.packed knows Conv2d, BatchNorm2d, "
                         "PReLU, Linear, Dropout and parameter-free layers); use --pack off")  # fmt: skip
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
        if not (isinstance(getattr(template, "features", None), nn.Module)
                and isinstance(getattr(template, "fc", None), nn.Linear)):  # fmt: skip
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
    return {n: (parts[0][n].clone() if ref.ndim == 0 else
                torch.stack([p[n].to(ref.device) for p in parts]).reshape(ref.shape))  # fmt: skip
            for n, ref in like.items()}


def _slice(v: torch.Tensor, k: int, i: int, shape: torch.Size) -> torch.Tensor:
    """Network i's slice of one packed tensor, in the single network's shape (a copy; 0-d tensors whole)."""
    return v.detach().clone() if v.ndim == 0 else v.detach().reshape(k, *shape)[i].clone()


def unstack(packed: dict[str, torch.Tensor], k: int, i: int, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Network i's slice of packed tensors, in the single network's shapes (a copy)."""
    return {n: _slice(v, k, i, shapes[n]) for n, v in packed.items()}


def member_losses(logp: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Each network's train.smoothed_nll: log-probs (B, K, C), labels (B, K) -> (K,)."""
    nll = -logp.gather(2, y.unsqueeze(2)).squeeze(2).mean(0)
    return nll if eps == 0 else (1 - eps) * nll - eps * logp.mean(2).mean(0)


@torch.no_grad()
def evaluate_packed(net: PackedNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
                    autocast: Any = nullcontext, tta: bool = False,
                    fmt: torch.memory_format = torch.channels_last) -> list[dict[str, float]]:  # fmt: skip
    """train.evaluate for every network of the pack at once (each sees the same images)."""
    was_training = net.training
    net.eval()
    k = net.k
    loss_sum = torch.zeros(k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(k, dtype=torch.long, device=x.device)
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xk = xb.expand(-1, k, -1, -1).contiguous(memory_format=fmt)
        with autocast():
            out = net(xk).float()
            if tta:
                out = torch.log_softmax((out + net(xk.flip(3)).float()) / 2, dim=-1)
        yk = yb.unsqueeze(1).expand(-1, k)
        loss_sum += -out.gather(2, yk.unsqueeze(2)).squeeze(2).sum(0).double()
        correct += (out.argmax(2) == yk).sum(0)
    net.train(was_training)
    n = len(y)
    return [{"loss": s / n, "acc": c / n} for s, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)]


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


def _save(m: Member) -> None:
    """The trial's resume state as train() writes it; its dropout stream is where train() keeps its own
    (the global CPU stream, or the CUDA one on a GPU)."""
    on_cpu = m.drop_gen.device.type == "cpu"
    rng = {"torch": m.drop_gen.get_state() if on_cpu else torch.get_rng_state(),
           "gen": m.gen.get_state(), "aug": m.aug_gen.get_state()}  # fmt: skip
    if not on_cpu:
        rng["cuda"] = m.drop_gen.get_state()
    assert m.state_dir is not None and m.opt_sd is not None
    write_state(m.state_dir, m.st.to_dict(), m.net_sd, m.opt_sd, m.best, rng)


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
            state[pid] = {n: _slice(v, k, i, pshapes[pid]) if torch.is_tensor(v) else v for n, v in ps.items()}
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
                _save(m)
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
