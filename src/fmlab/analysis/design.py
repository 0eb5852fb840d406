"""What a study's design supplies to the analysis driver (fmlab.analysis.driver): its factors and cells, its
model's contrasts, and how its findings read. A design calls no pipeline step (ANOVA, best set, claims,
diagnostics, seed plan): the driver runs those once for every design. Grid studies: fmlab.analysis.grid;
arms studies: fmlab.analysis.arms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fmlab.analysis.stats import Fit


@dataclass
class Contrasts:
    """A design's effects on the selection metric, all contrasts of one fit, and on test accuracy."""

    effects: pd.DataFrame  # main effects (grid) or each arm vs the baseline (arms), Holm and verdicts
    interactions: pd.DataFrame  # two-way contrasts (grid); empty for arms
    test: pd.DataFrame  # the same effects on test accuracy, their own Holm family
    fit: Fit | None  # the study's fitted model on the selection metric; None when nothing fits
    notes: list[str] = field(default_factory=list)  # what the reader must know about them (arms sharing trials)


class Design:
    """One kind of study. A subclass sets name, factors ({factor: level labels}), baseline ({factor: level}),
    cells_planned and arms, and fills in the methods below; the defaults are what most designs want."""

    name: str = ""
    factors: dict[str, list[str]]
    baseline: dict[str, str]
    cells_planned: int = 0
    arms: dict[str, dict[str, Any]]
    shares_trials = False  # True: one trial may appear once per cell (an arm resolving to another's configs)

    def check_columns(self, t: pd.DataFrame, select: str) -> None:
        """Raise ValueError (one line, naming the contract) when the trials table lacks a column it needs."""
        raise NotImplementedError

    def label(self, t: pd.DataFrame) -> pd.DataFrame:
        """The trials with factor columns as level labels (ordered categoricals) and a 'cell' column."""
        raise NotImplementedError

    def cell_columns(self, cells: pd.DataFrame) -> pd.DataFrame:
        """The cell table with the design's own columns added."""
        return cells

    def missing_cells(self, observed: set[str]) -> list[str]:
        """The planned cells' names that have no complete trial."""
        raise NotImplementedError

    def contrasts(self, done: pd.DataFrame, select: str, min_effect: dict[str, float], x: float) -> Contrasts:
        """The design's model fitted to the COMPLETE trials and its effects."""
        raise NotImplementedError

    def anova_note(self, note: str) -> str:
        return note

    def best_set_trials(self, done: pd.DataFrame) -> pd.DataFrame:
        """The COMPLETE trials the best set ranks (each trial once)."""
        return done

    def findings(
        self, c: Contrasts, done: pd.DataFrame, select: str, x: float, anova_tab: pd.DataFrame | None
    ) -> list[str]:
        """One line per finding, in the order the report shows them (the best set's line comes first, added
        by the driver)."""
        raise NotImplementedError

    def plan_tables(self, c: Contrasts) -> tuple[list[pd.DataFrame], dict[str, list[str]]] | None:
        """The effect tables the seed plan covers and the planned grid's levels; None: no plan."""
        return [c.effects, c.interactions], self.factors
