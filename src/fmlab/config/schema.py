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
from dataclasses import dataclass
from typing import Any

from fmlab.config.fields import DataConfig, ModelConfig, TrainConfig
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
]  # ConfigError from errors.py, parse_sets from values.py, the sections from fields.py: re-exported

SCHEMA = "fmlab.config/1"


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
            "ema_every": t.ema == 0,
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

    def to_record(self) -> dict[str, Any]:
        """to_dict less the late fields (_late) at their neutral value: the config as the store, trial.json
        and trials.csv keep it (from_dict reads it back)."""
        out = self.to_dict()
        for name, cls in SECTIONS.items():
            for f in dataclasses.fields(cls):
                if f.metadata.get("late") and out[name][f.name] == _asdict(f.metadata["neutral"]):
                    del out[name][f.name]
        return out

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
    if m.arch != "seed" and not m.batch_norm:
        raise ConfigError(f"model.arch={m.arch} needs model.batch_norm=true (its blocks are conv-BN pairs)")
    if m.arch != "seed" and m.conv_bias is True:
        raise ConfigError(f"model.conv_bias=true: {m.arch}'s convs all feed a BN and have no bias; leave it at auto")
    if m.arch == "seed" and m.depth != 1:
        raise ConfigError(
            f"model.depth={m.depth} applies to model.arch=resnet or airbench only; leave it at 1 for the seed net"
        )
    _check_levers(m, t)
    if d.erase_area_min > d.erase_area_max:
        raise ConfigError(f"data.erase_area_min ({d.erase_area_min}) exceeds data.erase_area_max ({d.erase_area_max})")
    if t.lr_min > t.lr and t.schedule not in ("constant", "step"):
        raise ConfigError(f"train.lr_min ({t.lr_min}) exceeds train.lr ({t.lr}); the floor must be below the peak")
    if t.nesterov and t.optimizer == "sgd" and t.momentum == 0:
        raise ConfigError("train.nesterov=true needs train.momentum > 0")
    if d.flip_mode == "alternate" and d.flip != 0.5:
        raise ConfigError(
            f"data.flip_mode=alternate mirrors each image in half the epochs; set data.flip=0.5, not {d.flip}"
        )
    if d.mixup and d.cutmix:
        raise ConfigError("data.mixup and data.cutmix are both on; choose one (set the other to 0)")
    if d.val_size == 0 and t.patience < t.max_epochs:
        raise ConfigError(
            f"data.val_size=0 trains on all the training images with no validation to stop on: set train.patience >= "
            f"train.max_epochs (a fixed schedule, tested at its last epoch), not {t.patience} < {t.max_epochs}"
        )
    return cfg


def _check_levers(m: ModelConfig, t: TrainConfig) -> None:
    """The initialisation and BatchNorm levers' rules (fmlab.model.inits)."""
    k = m.kernel_size
    if m.whiten != "off" and m.arch != "airbench" and m.widths[0] != 2 * k * k:
        raise ConfigError(
            f"model.whiten={m.whiten} needs a first conv of 2 x kernel_size^2 = {2 * k * k} channels "
            f"(+ and - of each whitened patch direction); set model.widths' first entry to {2 * k * k} "
            "or use model.arch=airbench (its own whitening conv)"
        )
    if m.whiten_epochs and m.whiten != "frozen":
        raise ConfigError("model.whiten_epochs applies to model.whiten=frozen only; leave it at 0")
    if (m.bn_weight_frozen or t.bn_bias_lr_mult != 1) and not m.batch_norm:
        key = "model.bn_weight_frozen" if m.bn_weight_frozen else "train.bn_bias_lr_mult"
        raise ConfigError(f"{key} needs model.batch_norm=true (it acts on BatchNorm layers)")


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from to_dict() output (trial.json); unknown keys are errors."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return with_overrides(Config(), flat)
