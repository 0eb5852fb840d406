"""The generic checks a study file's sections share: the TOML itself and its top-level keys, a seeds list
(and --seeds), a table's config keys and values. Each error is a StudyError naming the file and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fmlab.config.schema import Config, ConfigError, allowed_keys, with_overrides
from fmlab.errors import FmlabError


class StudyError(FmlabError):
    """A bad study file; the message names the file, the key and what is allowed."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """--seeds N (the first N seeds: 0..N-1) or --seeds LIST ('0,3,7'; '5,' is the single seed 5)."""
    t = text.strip()
    try:
        if "," not in t:
            n = int(t)
            if n < 1:
                raise ValueError
            return tuple(range(n))
        seeds = tuple(int(x) for x in t.split(",") if x.strip())
    except ValueError:
        raise StudyError(f"bad --seeds '{text}'; expected a count N (seeds 0..N-1) or a list like 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise StudyError(f"bad --seeds '{text}'; expected a count N (seeds 0..N-1) or a list like 0,1,2")
    return tuple(dict.fromkeys(seeds))


def check_seeds(path: Path, where: str, value: Any) -> tuple[int, ...]:
    ok = (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    )
    if not ok:
        raise StudyError(
            f"{path}: {where}: bad value {value!r}; expected a non-empty list of integers >= 0, e.g. seeds = [0, 1, 2]"
        )
    return tuple(dict.fromkeys(value))


def check_keys(path: Path, section: str, table: Any, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise StudyError(f"{path}: [{section}] must be a table of config keys")
    for key in table:
        if key == "seed":
            raise StudyError(f"{path}: [{section}] key 'seed': set seeds with the top-level 'seeds' list")
        if key not in extra and key not in allowed_keys():
            allowed = ", ".join([*extra, *(k for k in allowed_keys() if k != "seed")])
            raise StudyError(f"{path}: [{section}] unknown key '{key}'; allowed keys: {allowed}")
    return dict(table)


def check_values(path: Path, section: str, overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        try:
            with_overrides(Config(), {key: value}, rules=False)  # the combination is checked in load()
        except ConfigError as e:
            raise StudyError(f"{path}: [{section}] {e}") from None


def read_toml(p: Path, what: str, top_keys: tuple[str, ...]) -> dict[str, Any]:
    """A TOML file's top-level table; a missing or unreadable file, bad TOML or an unknown top-level key
    is a StudyError naming the file (and the key)."""
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise StudyError(f"{p}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StudyError(f"{p}: cannot read the {what} ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{p}: not valid TOML ({e})") from None
    for key in doc:
        if key not in top_keys:
            raise StudyError(f"{p}: unknown key '{key}'; allowed top-level keys: {', '.join(top_keys)}")
    return doc
