"""One config for everything: frozen dataclasses whose defaults are the seed study's baseline.

A config is three sections (model, data, train) plus the seed. Every field is settable as
``section.field=value`` (``--set`` on the command line, keys in a study file). Unknown keys and bad
values are rejected with the allowed ones named. ``trial_id`` hashes the resolved config: what
defines the experiment, never where or how it runs (device, threads, workers live in RunOptions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from fmlab.config.values import check_range, convert, parse_sets
from fmlab.errors import ConfigError

__all__ = [
    "SCHEMA",
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "allowed_keys",
    "canonical_json",
    "check",
    "coerce",
    "from_dict",
    "hash_dict",
    "parse_sets",
    "trial_id",
    "with_overrides",
]  # ConfigError from errors.py, parse_sets from values.py: re-exported

SCHEMA = "fmlab.config/1"


def _neutral(default: Any, **kw: Any) -> Any:
    """A field added after v1: left out of the trial hash while it holds this neutral value,
    so trial ids made before the field existed stay valid."""
    return field(default=default, metadata={"neutral": default, **kw})


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["seed", "resnet"] = "seed"  # network family; seed = conv blocks + 1 FC; resnet: model.py
    widths: tuple[int, ...] = (64, 128, 256)  # output channels of each conv block
    kernel_size: Literal[3, 5] = 3  # conv kernel side, pixels ("same" padding)
    batch_norm: bool = False  # BatchNorm after each conv
    conv_bias: Literal["auto", True, False] = "auto"  # auto = bias only without batch norm
    dropout: float = 0.2  # drop probability after the last conv block, 0 = off
    pool: Literal["avg", "max"] = "avg"  # 2x2 pooling after each conv block
    activation: Literal["relu", "leaky_relu", "prelu", "gelu"] = "relu"
    depth: int = _neutral(1)  # resnet: basic blocks per stage (one stage per width); seed: must be 1


@dataclass(frozen=True)
class DataConfig:
    val_size: int = 5000  # images held out of train for validation (stratified)
    split_seed: int = 0  # seed of the train/val split (fixed across trials)
    train_subset: int = 0  # 0 = all remaining training images, else a stratified subset
    mean: float = 0.2860  # input normalisation, pixel units in [0, 1]
    std: float = 0.3530
    # Training-batch augmentation (augment.py), applied in this order; 0 = off. Pixel units are the
    # [0, 1] scale before normalisation; blanked pixels take the background value 0.
    flip: float = _neutral(0.0)  # probability of mirroring an image left-right
    translate_px: int = _neutral(0)  # max shift, pixels, each axis (uniform in -n..n), blank fill
    erase_p: float = _neutral(0.0)  # probability of blanking one random rectangle (random erasing)
    erase_area_min: float = _neutral(0.02)  # erased rectangle's area, fraction of the image, lower
    erase_area_max: float = _neutral(0.33)  # ... and upper bound (aspect ratio log-uniform 0.3..3.3)
    noise_std: float = _neutral(0.0)  # std of added Gaussian noise, pixel units (not clipped)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3  # learning rate (the peak rate when a schedule warms up or decays)
    batch_size: int = 64  # images per step
    max_epochs: int = 30  # cap on epochs; early stopping usually ends sooner
    monitor: Literal["val_loss", "val_acc"] = "val_loss"  # early stopping and model choice
    patience: int = 4  # epochs without improvement before stopping
    min_delta: float = 0.0  # improvement smaller than this does not count
    # bf16 = autocast on CPU/GPU matmuls and convs; auto = bf16 where the machine computes it natively, else fp32
    # (training.env.pick_precision; the precision a trial trained in is recorded: timings["precision"])
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    weight_decay: float = _neutral(0.0)  # adamw: decoupled decay per step x lr; adam, sgd: L2 in grad
    momentum: float = _neutral(0.9)  # sgd only: heavy-ball momentum coefficient
    nesterov: bool = _neutral(False)  # sgd only: Nesterov momentum (needs momentum > 0)
    # Learning rate schedule, a function of the step over max_epochs (train.lr_at).
    schedule: Literal["constant", "step", "cosine", "linear", "onecycle"] = _neutral("constant")
    warmup_epochs: float = _neutral(0.0)  # epochs of linear warm-up to lr; onecycle: its rise, 0 = 30%
    lr_min: float = _neutral(0.0)  # cosine, linear, onecycle: rate reached at max_epochs, lr units
    step_every: int = _neutral(10)  # step: epochs between decays
    step_gamma: float = _neutral(0.1)  # step: factor applied at each decay
    label_smoothing: float = _neutral(0.0)  # training loss = (1-eps) NLL + eps mean(-log p); 0 = off
    tta: bool = _neutral(False)  # val and test: average the log-probs of each image and its mirror


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0  # seeds init, shuffling, dropout

    def resolved(self) -> Config:
        """Replace derived values ("auto") with what they mean and reset fields that the rest of the
        config makes unused (sgd's momentum under adam, ...) to their defaults, so equal
        experiments hash equal."""
        m, d, t = self.model, self.data, self.train
        if m.conv_bias == "auto":
            m = dataclasses.replace(m, conv_bias=not m.batch_norm)
        unused = {
            "momentum": t.optimizer != "sgd",
            "nesterov": t.optimizer != "sgd",
            "lr_min": t.schedule in ("constant", "step"),
            "step_every": t.schedule != "step",
            "step_gamma": t.schedule != "step",
        }
        t = dataclasses.replace(t, **{k: _default(TrainConfig, k) for k, off in unused.items() if off})
        if d.erase_p == 0:
            d = dataclasses.replace(
                d,
                erase_area_min=_default(DataConfig, "erase_area_min"),
                erase_area_max=_default(DataConfig, "erase_area_max"),
            )
        return dataclasses.replace(self, model=m, data=d, train=t)

    def to_dict(self) -> dict[str, Any]:
        return _asdict(self)

    def flat(self) -> dict[str, Any]:
        """{'model.batch_norm': False, ..., 'seed': 0}."""
        out: dict[str, Any] = {}
        for k, v in self.to_dict().items():
            if isinstance(v, dict):
                out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                out[k] = v
        return out

    def trial_id(self) -> str:
        return trial_id(self)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _asdict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _asdict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_asdict(x) for x in obj]
    return obj


def hash_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as hashed: fields at their neutral value are left out."""
    cfg = cfg.resolved()
    out: dict[str, Any] = {"seed": cfg.seed}
    for name in SECTIONS:
        sec = getattr(cfg, name)
        d = {}
        for f in dataclasses.fields(sec):
            v = _asdict(getattr(sec, f.name))
            if "neutral" in f.metadata and v == _asdict(f.metadata["neutral"]):
                continue
            d[f.name] = v
        out[name] = d
    out["train"]["precision"] = HASHED_AS.get(out["train"]["precision"], out["train"]["precision"])
    return out


# auto hashes as bf16: the studies asked for bf16 as their fast precision before auto existed, and their
# published trials ran where bf16 is native (what auto picks there), so they keep counting as done.
HASHED_AS = {"auto": "bf16"}


def canonical_json(obj: Any) -> str:
    # repr-exact floats (json uses float.__repr__), sorted keys, no whitespace.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def trial_id(cfg: Config) -> str:
    return hashlib.sha256(canonical_json(hash_dict(cfg)).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- parsing and overrides


def allowed_keys() -> list[str]:
    keys = [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    return keys + ["seed"]


def _field_type(key: str) -> tuple[type, dataclasses.Field]:
    if key == "seed":
        return int, next(f for f in dataclasses.fields(Config) if f.name == "seed")
    sec, _, name = key.partition(".")
    cls = SECTIONS.get(sec)
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
    if name not in fields:
        raise ConfigError(f"unknown config key '{key}'; allowed keys: {', '.join(allowed_keys())}")
    hints = typing.get_type_hints(cls)
    return hints[name], fields[name]


def coerce(key: str, value: Any) -> Any:
    """Check and convert a value for key; strings (from --set) are parsed first."""
    return convert(key, _field_type(key)[0], value)


def with_overrides(cfg: Config, overrides: dict[str, Any], rules: bool = True) -> Config:
    """Apply {'model.batch_norm': True, ...}; values may be strings (from --set). rules=False skips the
    rules that tie fields together (check), for checking one key's value on its own."""
    sections = {name: {} for name in SECTIONS}
    seed = cfg.seed
    for key, raw in overrides.items():
        value = coerce(key, raw)
        check_range(key, value)
        if key == "seed":
            seed = value
        else:
            sec, _, name = key.partition(".")
            sections[sec][name] = value
    new = {n: dataclasses.replace(getattr(cfg, n), **kw) for n, kw in sections.items()}
    out = Config(**new, seed=seed)
    return check(out) if rules else out


def check(cfg: Config) -> Config:
    """Rules that tie two fields together; returns cfg unchanged or raises ConfigError."""
    m, d, t = cfg.model, cfg.data, cfg.train
    if m.arch == "resnet" and not m.batch_norm:
        raise ConfigError("model.arch=resnet needs model.batch_norm=true (its blocks are conv-BN pairs)")
    if m.arch == "resnet" and m.conv_bias is True:
        raise ConfigError("model.conv_bias=true: resnet's convs all feed a BN and have no bias; leave it at auto")
    if m.arch == "seed" and m.depth != 1:
        raise ConfigError(f"model.depth={m.depth} applies to model.arch=resnet only; leave it at 1 for the seed net")
    if d.erase_area_min > d.erase_area_max:
        raise ConfigError(f"data.erase_area_min ({d.erase_area_min}) exceeds data.erase_area_max ({d.erase_area_max})")
    if t.lr_min > t.lr and t.schedule not in ("constant", "step"):
        raise ConfigError(f"train.lr_min ({t.lr_min}) exceeds train.lr ({t.lr}); the floor must be below the peak")
    if t.nesterov and t.optimizer == "sgd" and t.momentum == 0:
        raise ConfigError("train.nesterov=true needs train.momentum > 0")
    return cfg


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from to_dict() output (trial.json); unknown keys are errors."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return with_overrides(Config(), flat)
