"""One network's progress through its training, in a single run or in a pack: its loop state (what early
stopping tracks), its random streams, its weights between epochs, its best weights, and its resume state
(fmlab.training.checkpoint.ResumeState), saved and restored."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from fmlab.config.schema import Config, TrainConfig
from fmlab.data import augment as faug
from fmlab.training import clock
from fmlab.training.checkpoint import ResumeState
from fmlab.training.mix import MIX_SEED, mixing


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def improved(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if monitor == "val_loss" else value > best + min_delta


@dataclass
class LoopState:
    """The loop's progress after its last finished epoch: what early stopping tracks and what resume
    restores (saved as the "train" object of the resume JSON, fmlab.training.checkpoint.ResumeState)."""

    epoch: int = 0  # epochs finished
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch (fmlab.config.metrics.EPOCH_COLS)
    best: float | None = None  # the best monitored value so far (None: none yet, or no validation split)
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best; training stops at patience
    train_s: float = 0.0  # seconds in training steps, summed over epochs
    eval_s: float = 0.0  # seconds in validation passes
    prior_s: float = 0.0  # running seconds of earlier attempts, through their last saved epoch (total_s spans them)
    precision: str = ""  # what it trains in (fp32, bf16), chosen at its start; a resumed trial keeps it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def saved(self, t_start: float) -> dict[str, Any]:
        """What the resume state records: this attempt's running time since t_start added to prior_s."""
        return {**self.to_dict(), "prior_s": self.prior_s + clock.now() - t_start}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def track(st: LoopState, epoch: int, score: float | None, cfg: TrainConfig) -> bool:
    """Early-stopping bookkeeping after an epoch (updates st's best, best_epoch, bad_epochs);
    True when score improved on the best. Training stops once bad_epochs reaches cfg.patience.
    score None (no validation split, data.val_size = 0): a fixed schedule, so each epoch is the chosen one
    (the last is tested) and st.best stays None."""
    if score is None:
        st.best_epoch, st.bad_epochs = epoch, 0
        return True
    if improved(score, st.best, cfg.monitor, cfg.min_delta):
        st.best, st.best_epoch, st.bad_epochs = score, epoch, 0
        return True
    st.bad_epochs += 1
    return False


def _set(g: torch.Generator, state: torch.Tensor | None) -> None:
    """A saved stream back into g; one saved on another kind of device (a CPU state on a GPU) is left as seeded."""
    if state is not None and state.numel() == g.get_state().numel():
        g.set_state(state)


@dataclass
class Lane:
    """One network being trained: its trial, its streams, its loop state, its weights and optimizer state
    as of its last epoch, its best weights, and the folder its resume state goes to."""

    cfg: Config
    state_dir: Path | None
    gen: torch.Generator  # data order
    aug_gen: torch.Generator  # augmentation
    drop_gen: torch.Generator | None  # dropout masks; None: the global streams (a single network's nn.Dropout)
    net_sd: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    opt_sd: dict[str, Any] | None = None
    st: LoopState = field(default_factory=LoopState)
    mix_gen: torch.Generator | None = None  # mixup, cutmix: lambda and the box (CPU); None: not mixing
    ema_sd: dict[str, torch.Tensor] | None = None  # train.ema: the averaged weights; None: off
    flip_bits: torch.Tensor | None = None  # flip_mode = alternate: the epoch-1 flips (derived from the seed)

    @property
    def tid(self) -> str:
        return self.cfg.trial_id()

    def done(self) -> bool:
        tc = self.cfg.train
        return self.st.epoch >= tc.max_epochs or self.st.bad_epochs >= tc.patience

    @classmethod
    def new(
        cls,
        cfg: Config,
        net_sd: dict[str, torch.Tensor],
        device: torch.device,
        state_dir: Path | None,
        own_dropout: bool,
    ) -> Lane:
        """A network just initialised (net_sd, drawn from the seeded global stream), its streams seeded as
        the single run seeds them; resumed from state_dir's resume state when there is one. With
        own_dropout its dropout stream is a generator of its own that starts where the single run's does."""
        drop = None
        if own_dropout:
            drop = torch.Generator(device)
            if device.type == "cpu":
                drop.set_state(torch.get_rng_state())
            else:
                drop.manual_seed(cfg.seed)
        sd = {k: v.detach().clone() for k, v in net_sd.items()}
        lane = cls(
            cfg,
            state_dir,
            torch.Generator().manual_seed(cfg.seed),
            torch.Generator(device).manual_seed(cfg.seed + 7919),
            drop,
            sd,
            {k: v.clone() for k, v in sd.items()},
            mix_gen=torch.Generator().manual_seed(cfg.seed + MIX_SEED) if mixing(cfg.data) else None,
            ema_sd={k: v.clone() for k, v in sd.items()} if cfg.train.ema else None,
        )
        if ResumeState.exists(state_dir):
            saved = ResumeState.read(state_dir)  # type: ignore[arg-type]
            lane.st, lane.net_sd, lane.opt_sd, lane.best = (
                LoopState.from_dict(saved.train),
                saved.net,
                saved.opt,
                saved.best,
            )
            if cfg.train.ema:
                lane.ema_sd = saved.ema
            lane.restore(saved.rng)
        return lane

    def flips(self, rows: torch.Tensor, n: int) -> torch.Tensor | None:
        """flip_mode = alternate: which training images (rows of the n) are mirrored in the epoch in progress."""
        if self.cfg.data.flip_mode != "alternate":
            return None
        if self.flip_bits is None:
            self.flip_bits = faug.alternate_bits(n, self.cfg.seed, rows.device)
        return faug.alternate_flips(self.flip_bits, rows, self.st.epoch + 1)

    def streams(self) -> dict[str, torch.Tensor]:
        """The random streams by the names the resume state gives them (as a single run saves its own:
        the dropout stream is the global CPU stream, or the CUDA one on a GPU)."""
        g = self.drop_gen
        on_cpu = g is not None and g.device.type == "cpu"
        rng = {
            "torch": g.get_state() if on_cpu else torch.get_rng_state(),  # type: ignore[union-attr]
            "gen": self.gen.get_state(),
            "aug": self.aug_gen.get_state(),
        }
        if g is None and torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        elif g is not None and not on_cpu:
            rng["cuda"] = g.get_state()
        if self.mix_gen is not None:
            rng["mix"] = self.mix_gen.get_state()
        return rng

    def restore(self, rng: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(rng["gen"])
        _set(self.aug_gen, rng.get("aug"))
        if self.mix_gen is not None:
            _set(self.mix_gen, rng.get("mix"))
        g = self.drop_gen
        if g is None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        else:
            _set(g, rng.get("torch") if g.device.type == "cpu" else rng.get("cuda"))

    def record(self, row: dict[str, float], train_s: float, eval_s: float, fresh: bool) -> None:
        """The epoch's row into the loop state; the weights that validated (ema_sd with train.ema, else net_sd)
        become the best weights when the monitored value improved, or every epoch when nothing validates
        (data.val_size = 0: the last epoch's are kept); copied unless fresh (a copy already)."""
        st, tc = self.st, self.cfg.train
        st.history.append(row)
        st.train_s += train_s
        st.eval_s += eval_s
        st.epoch = int(row["epoch"])
        if track(st, st.epoch, row[tc.monitor], tc):
            sd = self.net_sd if self.ema_sd is None else self.ema_sd
            self.best = dict(sd) if fresh else {k: v.detach().clone() for k, v in sd.items()}

    def save(self, t_start: float) -> None:
        """The resume state after the last recorded epoch, when the lane has a folder for it."""
        if self.state_dir:
            assert self.opt_sd is not None
            saved = ResumeState(
                self.st.saved(t_start), self.net_sd, self.opt_sd, self.best, self.streams(), self.ema_sd or {}
            )
            saved.write(self.state_dir)
