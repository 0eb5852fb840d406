"""A study file's sections checked one at a time: name and description, [factors], [arms], [budgets], select,
[analysis] (min_effect, transform), [[claims]], seeds, the keys and values of a config table, the TOML itself.
fmlab.study.spec.load puts them together; every error is a StudyError naming the file, the key and what is
allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlab.config.schema import Config, ConfigError, with_overrides
from fmlab.study.checks import StudyError, check_keys, check_seeds, check_values

BASELINE = "baseline"  # the arm name of the unchanged [base] config in an arms study


MIN_EFFECT_KEYS = ("val_loss", "val_acc", "test_acc", "test_loss")
TRANSFORMS = ("none", "log")  # as fmlab.analysis.diagnostics.TRANSFORMS (kept here so study files load light)
SELECT = ("val_loss", "val_acc")  # selection is on validation only; the test set is never used to choose
FULL = "full"
BUDGET_META = ("seeds", "finding", "label", "arms")  # budget keys that are not config overrides (no effect on ids)


@dataclass(frozen=True)
class Budget:
    """The chosen budget of a study file: its name, every budget the file names (full first), the chosen one's
    config overrides, its seeds (None: the file's), whether it is a finding, its label, and the arms it runs
    beside the baseline (None: every [arms.*] table; a round of a search runs its own few)."""

    name: str
    known: tuple[str, ...]
    overrides: dict[str, Any]
    seeds: tuple[int, ...] | None
    finding: bool
    note: str
    arms: tuple[str, ...] | None = None


def name_section(p: Path, doc: dict[str, Any]) -> tuple[str, str]:
    """The top-level name (usable in STUDY:best and folder names) and description."""
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or any(c in name for c in ":@/ "):
        raise StudyError(
            f"{p}: key 'name': bad value {name!r}; expected a non-empty name without ':', '@', '/' "
            'or spaces, e.g. name = "seed"'
        )
    desc = doc.get("description", "")
    if not isinstance(desc, str):
        raise StudyError(f"{p}: key 'description': bad value {desc!r}; expected a string")
    return name, desc


def factors_section(p: Path, doc: dict[str, Any]) -> dict[str, list[Any]]:
    """[factors]: config key -> a non-empty list of values, each checked."""
    factors = check_keys(p, "factors", doc.get("factors", {}))
    for key, values in factors.items():
        if not isinstance(values, list):
            raise StudyError(
                f"{p}: [factors] '{key}': bad value {values!r}; expected a list of values, e.g. [{key!r} = [a, b]]"
            )
        if not values:
            raise StudyError(f"{p}: [factors] '{key}' is an empty list, so the grid is empty; give at least one value")
        for v in values:
            check_values(p, "factors", {key: v})
    return factors


def arms_section(
    p: Path, doc: dict[str, Any], base: dict[str, Any], factors: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """[arms.<name>] tables: each a non-empty set of config keys that differ from [base]."""
    if "arms" not in doc:
        return {}
    arms = doc["arms"]
    if "factors" in doc:
        raise StudyError(
            f"{p}: a study has [factors] (a grid) or [arms] (variants of [base]), not both; "
            "split it into two study files"
        )
    if not isinstance(arms, dict) or not all(isinstance(t, dict) for t in arms.values()):
        raise StudyError(
            f'{p}: [arms] must hold tables like [arms.cosine] with config keys, e.g. "train.schedule" = "cosine"'
        )
    if not arms:
        raise StudyError(
            f'{p}: [arms] is empty; add at least one arm, e.g. [arms.cosine] with "train.schedule" = "cosine"'
        )
    out = {}
    for name, table in arms.items():
        if name == BASELINE:
            raise StudyError(
                f"{p}: [arms.{BASELINE}]: the name '{BASELINE}' is reserved for [base] itself; rename the arm"
            )
        if not name.strip() or any(c in name for c in ",\n"):
            raise StudyError(f"{p}: arm name {name!r}: use a non-empty name without commas")
        for key, v in table.items():
            if isinstance(v, dict):  # [arms.adamw_wd0.05] is arm 'adamw_wd0' with a sub-table '05'
                raise StudyError(
                    f"{p}: [arms.{name}.{key}] is a nested table: an arm name with a dot must be "
                    f'quoted, e.g. [arms."{name}.{key}"], or use another name'
                )
        changes = check_keys(p, f"arms.{name}", table)
        if not changes:
            raise StudyError(
                f"{p}: [arms.{name}] changes no key, so it is the baseline; give it at least one config key"
            )
        check_values(p, f"arms.{name}", changes)
        out[name] = changes
    return out


def budgets_section(
    p: Path, doc: dict[str, Any], budget: str, factors: dict[str, Any], arms: dict[str, dict[str, Any]]
) -> Budget:
    """[budgets.<name>] tables, each checked (_budget_table), and the one chosen (full when the file has none
    by that name: full needs no table)."""
    budgets = doc.get("budgets", {})
    if not isinstance(budgets, dict) or not all(isinstance(b, dict) for b in budgets.values()):
        raise StudyError(f"{p}: [budgets] must hold tables like [budgets.quick]")
    known = tuple(dict.fromkeys([FULL, *budgets]))
    if budget not in known:
        raise StudyError(f"{p}: unknown budget '{budget}'; allowed: {', '.join(known)}")
    for bname, table in budgets.items():
        _budget_table(p, bname, table, factors, arms)
    chosen = dict(budgets.get(budget, {}))
    seeds = check_seeds(p, f"[budgets.{budget}] key 'seeds'", chosen.pop("seeds")) if "seeds" in chosen else None
    finding = bool(chosen.pop("finding", budget == FULL))
    note = str(chosen.pop("label", ""))
    runs = tuple(chosen.pop("arms")) if "arms" in chosen else None
    return Budget(budget, known, chosen, seeds, finding, note, runs)


def _budget_table(p: Path, bname: str, table: Any, factors: dict[str, Any], arms: dict[str, dict[str, Any]]) -> None:
    """One [budgets.<name>]: config keys (neither a factor nor what an arm tests) and seeds, finding, label."""
    b = check_keys(p, f"budgets.{bname}", table, extra=BUDGET_META)
    for key in b:
        if key in BUDGET_META:
            continue
        if key in factors:
            raise StudyError(f"{p}: [budgets.{bname}] key '{key}' is also a factor; a budget may not override a factor")
        for arm, changes in arms.items():
            if key in changes:
                raise StudyError(
                    f"{p}: [budgets.{bname}] key '{key}' is also changed by [arms.{arm}]; a "
                    "budget may not override what an arm tests"
                )
    if "seeds" in b:
        check_seeds(p, f"[budgets.{bname}] key 'seeds'", b["seeds"])
    if not isinstance(b.get("finding", False), bool):
        raise StudyError(f"{p}: [budgets.{bname}] key 'finding': bad value {b['finding']!r}; expected true or false")
    if not isinstance(b.get("label", ""), str):
        raise StudyError(f"{p}: [budgets.{bname}] key 'label': bad value {b['label']!r}; expected a string")
    if "arms" in b:
        _budget_arms(p, bname, b["arms"], arms)
    check_values(p, f"budgets.{bname}", {k: v for k, v in b.items() if k not in BUDGET_META})


def _budget_arms(p: Path, bname: str, names: Any, arms: dict[str, dict[str, Any]]) -> None:
    """A budget's arms = [...]: the [arms.*] tables it runs beside the baseline, each named once."""
    where = f"{p}: [budgets.{bname}] key 'arms'"
    if not arms:
        raise StudyError(f"{where}: the file has no [arms.*] tables to choose from; remove the key")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise StudyError(
            f'{where}: bad value {names!r}; expected a non-empty list of arm names, e.g. ["{next(iter(arms))}"]'
        )
    unknown = [n for n in names if n not in arms]
    if unknown:
        why = " (the baseline always runs; list only arms)" if BASELINE in unknown else ""
        raise StudyError(f"{where}: no [arms.{unknown[0]}] table{why}; allowed: {', '.join(arms)}")
    if len(set(names)) < len(names):
        raise StudyError(f"{where}: an arm is named twice in {names!r}; name each once")


def select_section(p: Path, doc: dict[str, Any], base: dict[str, Any], b: Budget) -> str:
    """The top-level select: a validation metric, by default the monitored one under [base] and the budget."""
    try:
        monitor = with_overrides(Config(), {**base, **b.overrides}).train.monitor
    except ConfigError as e:
        raise StudyError(f"{p}: [base] with budget '{b.name}': {e}") from None
    select = doc.get("select", monitor)
    if select not in SELECT:
        why = " (the test set is evaluated, never used to choose)" if str(select).startswith("test") else ""
        raise StudyError(f"{p}: key 'select': bad value {select!r}{why}; allowed: {', '.join(SELECT)}")
    return str(select)


def analysis_section(p: Path, doc: dict[str, Any]) -> dict[str, float]:
    """[analysis] min_effect = { val_loss = 0.01, ... }: positive numbers in the metric's own units."""
    an = doc.get("analysis", {})
    if not isinstance(an, dict):
        raise StudyError(f"{p}: [analysis] must be a table, e.g. [analysis] min_effect = {{ val_loss = 0.01 }}")
    for k in an:
        if k not in ("min_effect", "transform"):
            raise StudyError(f"{p}: [analysis] unknown key '{k}'; allowed: min_effect, transform")
    me = an.get("min_effect", {})
    if not isinstance(me, dict):
        raise StudyError(
            f"{p}: [analysis] key 'min_effect': bad value {me!r}; expected a table like "
            "{ val_loss = 0.01, val_acc = 0.005 }"
        )
    out = {}
    for k, v in me.items():
        if k not in MIN_EFFECT_KEYS:
            raise StudyError(
                f"{p}: [analysis] min_effect key '{k}': unknown metric; allowed: {', '.join(MIN_EFFECT_KEYS)}"
            )
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise StudyError(
                f"{p}: [analysis] min_effect key '{k}': bad value {v!r}; expected a positive number "
                "in the metric's units (accuracy as a fraction, e.g. 0.005)"
            )
        out[k] = float(v)
    return out


def baseline_values(base: dict[str, Any], factors: dict[str, list[Any]]) -> dict[str, Any]:
    """Each factor's baseline level: the [base] config's value where it is one of the levels, else the first
    level. The analysis compares every level with it (fmlab.report.export.report_inputs) and claims name it."""
    flat = with_overrides(Config(), base).resolved().flat()
    return {k: flat[k] if flat.get(k) in lv else lv[0] for k, lv in factors.items()}


def claims_section(
    p: Path, doc: dict[str, Any], base: dict[str, Any], factors: dict[str, list[Any]], arms: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], ...]:
    """[[claims]]: each names an effect the study estimates (or a partial cell for kind = "best")."""
    from fmlab.analysis.claimparse import ClaimError, parse_claims
    from fmlab.analysis.formatting import level_label

    if "claims" not in doc:
        return ()
    if arms:
        levels, baseline, design = {"arm": [BASELINE, *arms]}, {"arm": BASELINE}, "arms"
    else:
        levels = {k: [level_label(v) for v in lv] for k, lv in factors.items()}
        baseline = {k: level_label(v) for k, v in baseline_values(base, factors).items()}
        design = "grid"
    try:
        return tuple(parse_claims(doc["claims"], levels, baseline, design, level_label))
    except ClaimError as e:
        raise StudyError(f"{p}: {e}") from None


def transform_section(p: Path, doc: dict[str, Any]) -> str:
    """[analysis] transform = "log" (loss metrics analysed as log(loss)) or "none" (the default)."""
    an = doc.get("analysis", {})
    t = an.get("transform", "none") if isinstance(an, dict) else "none"
    if t not in TRANSFORMS:
        raise StudyError(f"{p}: [analysis] key 'transform': bad value {t!r}; allowed: {', '.join(TRANSFORMS)}")
    return str(t)
