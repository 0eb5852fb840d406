"""A study file (TOML) -> the list of trial configs it asks for: grid cells x seeds, under one budget.

    name, description, seeds, select       top-level keys
    [base]                                 config keys applied to every cell (as with --set)
    [factors]                              config key -> list of values; the grid is their product
    [arms.<name>]                          or: one-factor-at-a-time variants of [base], each a table of
                                           config keys; trials = (baseline + each arm) x seeds
    [budgets.<name>]                       overrides applied by --budget <name> (may set seeds, and arms:
                                           the [arms.*] tables that budget runs beside the baseline, so
                                           each round of a search is a budget of one file)

A study is a grid ([factors]) or a set of arms ([arms]), never both: an arm compared with a grid cell
has no single baseline to be paired with. Two arms (or an arm and the baseline) whose configs resolve
to the same trial (e.g. momentum under adam, which resolved() resets) share that one trial: it runs
once and its store link names every arm ({"arm": first, "also": [others]}).

Every value is checked with config.with_overrides before anything runs; errors name the file, the
key and what is allowed. A budget's overrides are part of each config, so they change trial ids.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmlab.config.schema import Config, ConfigError, with_overrides
from fmlab.study.checks import StudyError as StudyError
from fmlab.study.checks import check_keys, check_values
from fmlab.study.checks import check_seeds as check_seeds
from fmlab.study.checks import parse_seeds as parse_seeds
from fmlab.study.checks import read_toml as read_toml
from fmlab.study.sections import BASELINE as BASELINE  # re-exported: the study's callers import them from here
from fmlab.study.sections import BUDGET_META as BUDGET_META
from fmlab.study.sections import FULL as FULL
from fmlab.study.sections import MIN_EFFECT_KEYS as MIN_EFFECT_KEYS
from fmlab.study.sections import SELECT as SELECT
from fmlab.study.sections import TRANSFORMS as TRANSFORMS
from fmlab.study.sections import (
    analysis_section,
    arms_section,
    budgets_section,
    claims_section,
    factors_section,
    name_section,
    select_section,
    transform_section,
)
from fmlab.study.sections import baseline_values as baseline_values

TOP_KEYS = ("name", "description", "seeds", "select", "base", "factors", "arms", "budgets", "analysis", "claims")


@dataclass(frozen=True)
class Trial:
    """One planned trial: a grid cell (factor values) or an arm ({"arm": name, "also": [names sharing
    this trial]}) with a seed, and its resolved config."""

    config: Config
    cell: dict[str, Any]
    seed: int

    @property
    def id(self) -> str:
        return self.config.trial_id()


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    path: str
    budget: str
    seeds: tuple[int, ...]
    select: str  # val_loss (lower is better) or val_acc (higher is better)
    base: dict[str, Any]
    factors: dict[str, list[Any]]
    overrides: dict[str, Any]  # the chosen budget's config overrides
    budgets: tuple[str, ...] = field(default=())
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)  # the budget's arms -> config keys each changes
    arm_tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # every [arms.*] of the file, any budget's
    finding: bool = True  # the budget changes how trials compute, not what they learn from (full is one)
    budget_note: str = ""  # what the budget is, e.g. "full data, bf16 on CPU"

    min_effect: dict[str, float] = field(default_factory=dict)  # [analysis] min_effect (over the defaults)
    claims: tuple[dict[str, Any], ...] = ()  # [[claims]], checked (fmlab.analysis.claims)
    transform: str = "none"  # [analysis] transform: "log" analyses log(loss) (fmlab.analysis.diagnostics)

    @property
    def label(self) -> str:
        return budget_label(self.budget, self.finding, self.budget_note)

    @property
    def design(self) -> str:
        return "arms" if self.arms else "grid"

    def cells(self) -> list[dict[str, Any]]:
        """Grid: every combination of factor values. Arms: the baseline, then each arm in file order."""
        if self.arms:
            return [{"arm": BASELINE}, *({"arm": a} for a in self.arms)]
        keys = list(self.factors)
        return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*self.factors.values())]

    def overrides_of(self, cell: dict[str, Any]) -> dict[str, Any]:
        """The config keys a cell sets on top of [base]."""
        return dict(self.arms.get(cell["arm"], {})) if self.arms else dict(cell)

    def trials(self) -> list[Trial]:
        """Cells x seeds, each id once: two cells that resolve to the same config run once; for arms the
        trial's cell then names every arm that shares it."""
        out: dict[str, Trial] = {}
        also: dict[str, list[str]] = {}
        for cell in self.cells():
            for s in self.seeds:
                over = {**self.base, **self.overrides_of(cell), **self.overrides, "seed": s}
                cfg = with_overrides(Config(), over).resolved()
                t = out.setdefault(cfg.trial_id(), Trial(cfg, cell, s))
                if self.arms and t.cell is not cell:
                    also.setdefault(t.id, []).append(cell["arm"])
        for tid, names in also.items():
            t = out[tid]
            out[tid] = Trial(t.config, {"arm": t.cell["arm"], "also": names}, t.seed)
        return list(out.values())

    def spec(self) -> dict[str, Any]:
        """What the store keeps about the study (JSON-able)."""
        return {
            "name": self.name,
            "description": self.description,
            "path": self.path,
            "select": self.select,
            "seeds": list(self.seeds),
            "base": self.base,
            "factors": self.factors,
            "design": self.design,
            "arms": self.arms,
            "arm_tables": self.arm_tables,
            "budget": self.budget,
            "overrides": self.overrides,
            "finding": self.finding,
            "budget_note": self.budget_note,
            "min_effect": self.min_effect,
            "claims": list(self.claims),
            "transform": self.transform,
        }


def budget_label(budget: str, finding: bool = False, note: str = "") -> str:
    """How a budget is shown wherever results appear: full, a budget with finding = true by its label
    (e.g. 'cpu: full data, bf16 on CPU'), any other 'quick: indicative only'."""
    if budget == FULL:
        return FULL
    return f"{budget}: {note or 'a finding'}" if finding else f"{budget}: indicative only"


def spec_label(spec: dict, budget: str) -> str:
    """A budget's label from a study's stored spec (a finding = true budget by its label). The store keeps
    one spec per study, the last swept budget's, so its finding and label apply only to that budget."""
    mine = spec.get("budget") == budget
    return budget_label(budget, bool(spec.get("finding")) and mine, spec.get("budget_note", "") if mine else "")


def load(path: str | Path, budget: str = FULL, seeds: tuple[int, ...] | None = None) -> Study:
    """Parse and fully validate a study file under one budget; nothing runs before this succeeds. Each
    section is checked on its own (fmlab.study.sections), then the combinations (_check_combinations)."""
    p = Path(path)
    doc = read_toml(p, "study file", TOP_KEYS)
    name, desc = name_section(p, doc)
    base = check_keys(p, "base", doc.get("base", {}))
    check_values(p, "base", base)
    factors = factors_section(p, doc)
    tables = arms_section(p, doc, base, factors)
    b = budgets_section(p, doc, budget, factors, tables)
    arms = tables if b.arms is None else {a: tables[a] for a in b.arms}
    if seeds is None:
        seeds = b.seeds or check_seeds(p, "key 'seeds'", doc.get("seeds", [0]))
    study = Study(
        name=name,
        description=desc,
        path=str(p),
        budget=budget,
        seeds=tuple(seeds),
        select=select_section(p, doc, base, b),
        base=base,
        factors=factors,
        overrides=b.overrides,
        budgets=b.known,
        arms=arms,
        arm_tables=tables,
        finding=b.finding,
        budget_note=b.note,
        min_effect=analysis_section(p, doc),
        claims=claims_section(p, doc, base, factors, arms),
        transform=transform_section(p, doc),
    )
    _check_combinations(p, study)
    return study


def _check_combinations(p: Path, study: Study) -> None:
    """Sections that pass one by one can still clash together: an arm with [base] or the budget (e.g. lr_min >
    lr), or a combination with a range (e.g. a derived value)."""
    for arm, changes in study.arms.items():
        try:
            with_overrides(Config(), {**study.base, **changes, **study.overrides})
        except ConfigError as e:
            raise StudyError(f"{p}: [arms.{arm}] with [base] and budget '{study.budget}': {e}") from None
    try:
        study.trials()
    except ConfigError as e:
        raise StudyError(f"{p}: {e}") from None
