"""A study file's ``[[claims]]`` read and checked against the study's factors, levels and effect names, before
any trial runs (fmlab.study.sections calls it when a study file loads); fmlab.analysis.claims says what the
kinds mean and gives each claim its verdict. Pure functions; a bad entry raises ClaimError.
"""

from __future__ import annotations

from typing import Any

from fmlab.analysis.stats import effect_terms

KINDS = ("effect", "negligible", "best")
DIRECTIONS = ("better", "worse")


class ClaimError(ValueError):
    """A bad [[claims]] entry; the message names the claim and the key (the caller adds the file)."""


def term_names(factors: dict[str, list[str]], baseline: dict[str, str], design: str = "grid") -> list[str]:
    """Every term a claim may name: grid effects and two-way interactions, or 'ARM vs baseline' and
    'ARM vs ARM' (two arms compared with each other, e.g. batch norm with and without the conv bias)."""
    if design == "arms":
        arms = [a for a in factors["arm"] if a != baseline["arm"]]
        return [f"{a} vs {baseline['arm']}" for a in arms] + [f"{a} vs {b}" for a in arms for b in arms if a != b]
    return [name for name, _, _ in effect_terms(factors, baseline, interactions=True)]


def main_effects(factors: dict[str, list[str]], baseline: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """Each main effect's name -> (factor, level, reference level)."""
    return {n: (i["factor"], i["level"], i["baseline"]) for n, i, _ in effect_terms(factors, baseline, False)}


def parse_claims(
    raw: Any, factors: dict[str, list[str]], baseline: dict[str, str], design: str = "grid", label: Any = str
) -> list[dict[str, Any]]:
    """Check [[claims]] against the study's factors (level labels) and baseline; returns plain dicts
    (text, kind, term | cell, direction). label maps a TOML value to its level label."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise ClaimError('[[claims]] must be an array of tables, e.g. [[claims]] text = "..." kind = "effect"')
    names = term_names(factors, baseline, design)
    return [_parse_claim(c, f"[[claims]] #{i}", names, factors, baseline, design, label) for i, c in enumerate(raw, 1)]


def _parse_claim(
    c: dict[str, Any],
    where: str,
    names: list[str],
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    design: str,
    label: Any,
) -> dict[str, Any]:
    """One [[claims]] entry checked: its keys, text and kind, then what its kind takes."""
    allowed = {"text", "kind", "term", "direction", "cell", "at"}
    for k in c:
        if k not in allowed:
            raise ClaimError(f"{where}: unknown key '{k}'; allowed: {', '.join(sorted(allowed))}")
    text, kind = c.get("text"), c.get("kind")
    if not isinstance(text, str) or not text.strip():
        raise ClaimError(f"{where}: key 'text': a non-empty string is required (what the claim says)")
    if kind not in KINDS:
        raise ClaimError(f"{where} ({text!r}): key 'kind': bad value {kind!r}; allowed: {', '.join(KINDS)}")
    where = f"{where} ({text!r})"
    claim: dict[str, Any] = {"text": text, "kind": kind}
    if kind == "best":
        cell = c.get("cell")
        if not isinstance(cell, dict) or not cell or {"term", "direction", "at"} & set(c):
            raise ClaimError(
                f"{where}: kind 'best' takes key 'cell' (a table of factor = level, "
                "e.g. cell = { \"model.pool\" = \"avg\" }) and no 'term', 'direction' or "
                "'at'"
            )
        claim["cell"] = _levels(cell, "cell", factors, label, where)
        return claim
    return claim | _term_claim(c, kind, where, names, factors, baseline, design, label)


def _term_claim(
    c: dict[str, Any],
    kind: str,
    where: str,
    names: list[str],
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    design: str,
    label: Any,
) -> dict[str, Any]:
    """An effect or negligible claim's term, its 'at' levels and its direction, checked."""
    term = c.get("term")
    if term not in names:
        near = [n for n in names if isinstance(term, str) and term.split(":")[0] in n][:4]
        raise ClaimError(
            f"{where}: key 'term': {term!r} is not an effect this study estimates; e.g. {'; '.join(near or names[:4])}"
        )
    claim: dict[str, Any] = {"term": term}
    if "at" in c:
        claim["at"] = _at_levels(c["at"], term, where, factors, baseline, design, label)
    if kind == "effect":
        if c.get("direction") not in DIRECTIONS:
            raise ClaimError(
                f"{where}: key 'direction': bad value {c.get('direction')!r}; "
                f"allowed: {', '.join(DIRECTIONS)} (in the selection metric's sense)"
            )
        claim["direction"] = c["direction"]
    elif "direction" in c or "cell" in c:
        raise ClaimError(f"{where}: kind 'negligible' takes only 'term' (and 'at')")
    return claim


def _at_levels(
    at: Any,
    term: str,
    where: str,
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    design: str,
    label: Any,
) -> dict[str, str]:
    """A simple effect's 'at': other factors' levels, for a main effect's term."""
    mains = main_effects(factors, baseline) if design != "arms" else {}
    if term not in mains or not isinstance(at, dict) or not at:
        raise ClaimError(
            f"{where}: key 'at' takes a table of factor = level and a main "
            f"effect as 'term' (e.g. term = \"{next(iter(mains), 'f: b vs a')}\", "
            'at = { "<another factor>" = <level> })'
        )
    levels = _levels(at, "at", factors, label, where)
    if mains[term][0] in levels:
        raise ClaimError(
            f"{where}: key 'at': names {mains[term][0]}, the factor of 'term' "
            "itself; 'at' holds the other factors' levels"
        )
    return levels


def _levels(table: Any, key: str, factors: dict[str, list[str]], label: Any, where: str) -> dict[str, str]:
    """A claim's table of factor = level, checked against the study's factors, as level labels."""
    want = {}
    for f, v in table.items():
        if f not in factors:
            raise ClaimError(f"{where}: key '{key}': unknown factor '{f}'; the study's factors: {', '.join(factors)}")
        lv = label(v)
        if lv not in factors[f]:
            raise ClaimError(f"{where}: key '{key}': {f} = {v!r} is not a level; levels: {', '.join(factors[f])}")
        want[f] = lv
    return want
