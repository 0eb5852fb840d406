"""The order a sweep runs its trials in, so that a study cut off part-way says as much as it can.

A long study (hours of CPU, over several sessions) is often read before it ends: results/ holds what has
finished. Run in the file's order (cell by cell, each cell's seeds together) the first half of the seed
grid is every cell without batch norm, and nothing about batch norm is estimable until the second half.
Here instead:

- Seeds go one at a time (seed-major): the first seed's cells, then the next seed's, so a finished seed
  is a whole replicate.
- Within a grid seed, each next trial is the one that adds the most information to the study's fitted
  model (main effects + two-way interactions, as fmlab.analysis.stats fits it): the greedy sequential D-optimal
  rule, the largest log(1 + x' M^-1 x) with M the information of the trials already run or chosen.
  So the model's rank grows by one with every trial until every effect is estimable, and after that
  each trial goes where the estimates are least certain. Ties keep the file's order.
- Trials already COMPLETE count as run: a resumed study picks what its finished trials lack. Trials cut
  off part-way (a resume state on disk) go next, before any fresh one: their epochs are already paid for.

Pure: the order never changes a trial, its id or its result; the sweep claims WAITING trials in it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RIDGE = 1e-6  # M starts as RIDGE * I: a trial adding a new dimension gains ~log(1/RIDGE), more than any other


def model_row(cell: Mapping[str, Any], factors: Mapping[str, Sequence[Any]]) -> np.ndarray:
    """The cell's row of the model matrix: intercept, one dummy per non-first level of each factor, and
    the products of those dummies for each pair of factors (fmlab.analysis.stats' main effects + two-way terms)."""
    dummies = [[float(cell[f] == lv) for lv in levels[1:]] for f, levels in factors.items()]
    row = [1.0, *itertools.chain.from_iterable(dummies)]
    for a, b in itertools.combinations(dummies, 2):
        row += [x * y for x in a for y in b]
    return np.asarray(row)


def run_order(
    trials: Sequence[Any],
    factors: Mapping[str, Sequence[Any]],
    seeds: Sequence[int] = (),
    done: set[str] | frozenset[str] = frozenset(),
    started: set[str] | frozenset[str] = frozenset(),
) -> list[Any]:
    """trials (each with .id, .cell and .seed) in the order to run them: seed by seed (in `seeds` order,
    then any other), and within a seed by greedy information gain for a grid (factors given; arms and
    factor-less studies keep the file's order). done: ids that count as already run; they come first.
    started: ids cut off part-way; they come next, in seed then file order, and count as run too."""
    rank = {s: i for i, s in enumerate(seeds)}
    by_seed = sorted(range(len(trials)), key=lambda i: (rank.get(trials[i].seed, len(rank)), i))
    out = [trials[i] for i in by_seed if trials[i].id in done]
    out += [trials[i] for i in by_seed if trials[i].id in started and trials[i].id not in done]
    by_seed = [i for i in by_seed if trials[i].id not in done and trials[i].id not in started]
    if not factors or any(not set(factors) <= set(t.cell) for t in trials):
        return out + [trials[i] for i in by_seed]
    rows = {t.id: model_row(t.cell, factors) for t in trials}
    info = RIDGE * np.eye(len(next(iter(rows.values()))))
    for t in out:
        info += np.outer(rows[t.id], rows[t.id])
    for _, group in itertools.groupby(by_seed, key=lambda i: rank.get(trials[i].seed, len(rank))):
        left = list(group)
        while left:
            inv = np.linalg.inv(info)
            gains = [float(rows[trials[i].id] @ inv @ rows[trials[i].id]) for i in left]
            best = max(range(len(left)), key=lambda k: (round(np.log1p(gains[k]), 9), -k))  # ties: file order
            i = left.pop(best)
            out.append(trials[i])
            info += np.outer(rows[trials[i].id], rows[trials[i].id])
    return out
