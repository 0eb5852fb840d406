"""Which trial is best: a metric's direction and the one ranking rule (best value of the validation selection
metric, ties to the smaller id). The store's STUDY:best (fmlab.store.db.Store.best) and the analysis's best
trial (best_trial) both come here, so they always name the same trial. Light: no numpy, pandas or scipy."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fmlab.config.states import State


def higher_is_better(metric: str) -> bool:
    return not metric.endswith("loss")


def check_select(select: str) -> None:
    """Models are chosen on validation, never on test: select must be a val_ metric."""
    if not select.startswith("val_"):
        raise ValueError(f"select metric {select!r}: models are chosen on validation, never on test")


def best_id(scores: Iterable[tuple[Any, Any]], select: str) -> str | None:
    """The id of the best of (trial id, value of the selection metric) pairs: the highest value (the lowest
    for a loss), ties to the smaller id; a missing (None or NaN) value never ranks. None when nothing ranks."""
    check_select(select)
    sign = -1.0 if higher_is_better(select) else 1.0
    ranked = [(sign * float(v), str(i)) for i, v in scores if v is not None and not math.isnan(float(v))]
    return min(ranked)[1] if ranked else None


def best_trial(trials: Any, select: str = "val_acc") -> str | None:
    """Id of the COMPLETE trial that is best on the validation selection metric (never a test metric), from a
    trials DataFrame (id, state and the metric's column)."""
    check_select(select)
    done = trials[trials["state"].astype(str).str.upper() == State.COMPLETE]
    return best_id(zip(done["id"], done[select], strict=True), select)
