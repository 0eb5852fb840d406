"""Packs: trials that could train as one model (issue 16), grouped from a study's plan.

A pack is a set of trials whose resolved configs are equal except for the seed and the dropout rate:
same architecture and switches, widths, kernel, batch size, optimizer and schedule, precision,
augmentation, epochs. The seed grid's quick budget gives 12 packs (BN x pool x batch size) of
2 dropout rates x 2 seeds. Grouping never changes a trial or its id; it only says which run together.

Only the grouping lands here so far: the packed training loop is not built (BENCHMARKS.md "Packs" has
the CPU measurement that decided its layout), so sweeps still run every trial on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import Config, canonical_json

PACKED_OUT = ("seed", "model.dropout")  # the keys a pack's members may differ in


def pack_key(cfg: Config) -> str:
    """The config without its seed and dropout rate, as canonical JSON: equal keys may share a pack."""
    flat = {k: v for k, v in cfg.resolved().flat().items() if k not in PACKED_OUT}
    return canonical_json(flat)


def group(trials: Sequence[Any], cap: int = 0) -> list[list[Any]]:
    """Trials (anything with a .config) in packs, in plan order: first appearance of a key opens its pack;
    cap > 0 splits a pack into chunks of at most cap trials (cap 1 = every trial alone)."""
    if cap < 0:
        raise ValueError(f"bad pack size {cap}; use 0 (no cap) or a positive count")
    by_key: dict[str, list[Any]] = {}
    for t in trials:
        by_key.setdefault(pack_key(t.config), []).append(t)
    out: list[list[Any]] = []
    for members in by_key.values():
        step = cap or len(members)
        out += [members[i : i + step] for i in range(0, len(members), step)]
    return out
