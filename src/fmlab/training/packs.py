"""Packs: trials that could train as one model (issue 16), grouped from a study's plan.

A pack is a set of trials whose resolved configs are equal except for the seed and the dropout rate:
same architecture and switches, widths, kernel, batch size, optimizer and schedule, precision,
augmentation, epochs. The seed grid's quick budget gives 12 packs (BN x pool x batch size) of
2 dropout rates x 2 seeds. Grouping never changes a trial or its id; it only says which run together.

fmlab.training.packed trains a pack as one model; `fmlab sweep --pack auto|off|on|K` (and api.run_study's pack)
chooses, through `resolve`: auto packs on a GPU, where one seed net uses under 1% of the chip, and not on
a CPU, where BENCHMARKS.md "Packs" measured a pack slower than the same trials in worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fmlab.config.schema import Config, canonical_json
from fmlab.errors import FmlabError

PACKED_OUT = ("seed", "model.dropout")  # the keys a pack's members may differ in
PAYS_ON = ("cuda",)  # device types where `auto` packs (BENCHMARKS.md "Packs": not on this CPU)
CHOICES = "auto, off, on or a pack size K >= 1"


def resolve(pack: str | int, device_type: str) -> int | None:
    """--pack -> what the sweep does: None = every trial alone, 0 = whole packs, K = packs of at most K.
    auto: whole packs on the device types in PAYS_ON, else alone."""
    text = str(pack).strip().lower()
    if text == "auto":
        return 0 if device_type in PAYS_ON else None
    if text == "off":
        return None
    if text == "on":
        return 0
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise FmlabError(f"bad --pack {pack!r}; use {CHOICES}")
    return None if k == 1 else k


def pack_key(cfg: Config) -> str:
    """The config without its seed and dropout rate, as canonical JSON: equal keys may share a pack."""
    flat = {k: v for k, v in cfg.resolved().flat().items() if k not in PACKED_OUT}
    return canonical_json(flat)


def group(trials: Sequence[Any], cap: int = 0) -> list[list[Any]]:
    """Trials (anything with a .config) in packs, in plan order: first appearance of a key opens its pack;
    cap > 0 splits a pack into the fewest chunks of at most cap trials, their sizes as even as they can be
    (4 trials at cap 3 are 2 + 2, not 3 + 1: the pack's wall time is its largest chunk's); cap 1 = alone."""
    if cap < 0:
        raise ValueError(f"bad pack size {cap}; use 0 (no cap) or a positive count")
    by_key: dict[str, list[Any]] = {}
    for t in trials:
        by_key.setdefault(pack_key(t.config), []).append(t)
    out: list[list[Any]] = []
    for members in by_key.values():
        n = len(members)
        chunks = -(-n // cap) if cap else 1
        small, extra = divmod(n, chunks)  # the first `extra` chunks take one more
        starts = [i * small + min(i, extra) for i in range(chunks + 1)]
        out += [members[a:b] for a, b in zip(starts, starts[1:])]
    return out
