"""Values for config keys: a --set string parsed, a value checked against its field's type, ranges.

fmlab.config.schema holds the fields (their types are what `convert` checks against); this module is the
type-directed parsing, so a study file's TOML values and a --set string are judged the same way.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from fmlab.errors import ConfigError


def parse_scalar(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def convert(key: str, typ: Any, value: Any) -> Any:
    """Check and convert a value for key, whose field has type typ; strings (from --set) are parsed first."""
    if isinstance(value, str) and get_origin(typ) is not Literal:
        value = parse_scalar(value)
    origin = get_origin(typ)
    if origin is Literal:
        allowed = get_args(typ)
        if isinstance(value, str):
            parsed = parse_scalar(value)
            cands = [a for a in allowed if a == parsed and type(a) is type(parsed)] or [
                a for a in allowed if a == value
            ]
            if cands:
                return cands[0]
        elif any(a == value and type(a) is type(value) for a in allowed):
            return value
        raise ConfigError(f"bad value {value!r} for '{key}'; allowed: {', '.join(repr(a) for a in allowed)}")
    if origin is tuple:
        items = value
        if isinstance(value, str):
            items = [x for x in value.replace("[", "").replace("]", "").split(",") if x.strip()]
        try:
            out = tuple(int(x) for x in items)
        except (TypeError, ValueError):
            out = ()
        if not out or any(x <= 0 for x in out) or any(float(x) != int(float(x)) for x in items):
            raise ConfigError(f"bad value {value!r} for '{key}'; expected positive integers, e.g. 64,128,256")
        return out
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"bad value {value!r} for '{key}'; allowed: true, false")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"bad value {value!r} for '{key}'; expected an integer")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"bad value {value!r} for '{key}'; expected a number")
        return float(value)
    return value


RANGES: dict[str, tuple[float, float]] = {
    "model.dropout": (0.0, 0.99),
    "model.depth": (1, 64),
    "model.whiten_epochs": (0, 10_000),
    "data.val_size": (0, 59_000),  # 0: no validation split, every training image trains
    "data.train_subset": (0, 60_000),
    "data.test_subset": (0, 10_000),
    "data.std": (1e-6, 10),
    "train.lr": (1e-9, 10),
    "train.batch_size": (1, 60_000),
    "train.max_epochs": (1, 10_000),
    "train.patience": (1, 10_000),
    "train.min_delta": (0, 10),
    "train.weight_decay": (0, 10),
    "train.momentum": (0, 0.999),
    "train.warmup_epochs": (0, 10_000),
    "train.lr_min": (0, 10),
    "train.step_every": (1, 10_000),
    "train.step_gamma": (1e-6, 1),
    "train.label_smoothing": (0, 0.99),
    "train.bn_bias_lr_mult": (1e-3, 1e4),
    "data.flip": (0, 1),
    "data.translate_px": (0, 14),
    "data.erase_p": (0, 1),
    "data.erase_area_min": (1e-4, 1),
    "data.erase_area_max": (1e-4, 1),
    "data.noise_std": (0, 10),
    "data.mixup": (0, 100),
    "data.cutmix": (0, 100),
    "train.tta_shifts": (0, 7),
    "train.ema": (0, 0.999999),
    "train.ema_every": (1, 10_000),
    "seed": (0, 2**31 - 1),
}


def check_range(key: str, value: Any) -> None:
    """A ConfigError naming the key and its range when value lies outside RANGES[key]."""
    lo, hi = RANGES.get(key, (None, None))
    if lo is not None and not (lo <= value <= hi):
        raise ConfigError(f"bad value {value!r} for '{key}'; allowed range {lo}..{hi}")


def parse_sets(items: list[str]) -> dict[str, str]:
    """['a.b=1', ...] -> {'a.b': '1'}; a missing '=' is an error naming the item."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"bad --set '{item}'; expected key=value, e.g. model.batch_norm=true")
        out[key.strip()] = value.strip()
    return out
