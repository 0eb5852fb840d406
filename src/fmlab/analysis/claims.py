"""A study file's claims (``[[claims]]``), checked against the study's fitted model.

Pure functions; nothing here prints or reads files. A claim is one of:

- ``kind = "effect"``: ``term`` (an effect or interaction as the effects table names it) differs from 0
  in ``direction`` ("better" or "worse", in the selection metric's sense). Supported when the effect's
  verdict is "matters" that way; contradicted when it matters the other way, is real but smaller than
  the smallest effect that matters, or shows no effect larger than it; undecided otherwise.
- ``kind = "negligible"``: ``term`` is smaller than the smallest effect that matters. Supported when the
  verdict is "no effect larger than X" or "real but smaller than X" (both put the CI inside +-X);
  contradicted when it matters; undecided otherwise.
- Either kind may add ``at`` (a table of factor = level) to a main effect: the claim is then about the
  simple effect, that factor's contrast at those levels of others ("with dropout, max pooling was worse":
  ``term = "model.pool: max vs avg"``, ``at = { "model.dropout" = 0.2 }``), a contrast of the same fit's
  marginal means. These simple effects are tested as one Holm family of their own (each test of 0 and its
  TOST), so the claims a file makes never change the effects table's verdicts.
- In an arms study a term is 'ARM vs baseline' or 'ARM vs ARM' (two arms against each other, e.g. batch
  norm with and without the conv bias): the latter is a contrast of the same fit, in that same family.
- ``kind = "best"``: the best network is a cell matching ``cell`` (a partial cell, e.g.
  ``{ "model.pool" = "avg" }``). Supported when every cell of the best set (Hsu's MCB) matches: the
  others are worse; contradicted when none does; undecided when matching and other cells share the best
  set, since the data cannot tell them apart (a matching cell merely being in it is not support).

The verdicts come from the same fit as the effects table (fmlab.analysis.stats), and from its Holm family for a
term the table holds; simple effects and arm-vs-arm contrasts are a family of the claims' own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.pvalues import tost_p
from fmlab.analysis.ranking import higher_is_better
from fmlab.analysis.stats import VERDICTS, Fit, contrast, effect_terms, holm_verdicts

KINDS = ("effect", "negligible", "best")
DIRECTIONS = ("better", "worse")
CLAIM_VERDICTS = ("supported", "contradicted", "undecided")


class ClaimError(ValueError):
    """A bad [[claims]] entry; the message names the claim and the key (the caller adds the file)."""


def term_names(factors: dict[str, list[str]], baseline: dict[str, str], design: str = "grid") -> list[str]:
    """Every term a claim may name: grid effects and two-way interactions, or 'ARM vs baseline' and
    'ARM vs ARM' (two arms compared with each other, e.g. batch norm with and without the conv bias)."""
    if design == "arms":
        arms = [a for a in factors["arm"] if a != baseline["arm"]]
        return [f"{a} vs {baseline['arm']}" for a in arms] + [f"{a} vs {b}" for a in arms for b in arms if a != b]
    return [name for name, _, _ in effect_terms(factors, baseline, interactions=True)]


def claim_term(c: dict[str, Any]) -> str:
    """The name a claim's effect goes by: its term, with ' at f=v, ...' for a simple effect."""
    at = c.get("at") or {}
    return c["term"] + (" at " + ", ".join(f"{f}={v}" for f, v in at.items()) if at else "")


def _mains(factors: dict[str, list[str]], baseline: dict[str, str]) -> dict[str, tuple[str, str, str]]:
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
    out = []
    for i, c in enumerate(raw, 1):
        where = f"[[claims]] #{i}"
        allowed = {"text", "kind", "term", "direction", "cell", "at"}
        for k in c:
            if k not in allowed:
                raise ClaimError(f"{where}: unknown key '{k}'; allowed: {', '.join(sorted(allowed))}")
        text, kind = c.get("text"), c.get("kind")
        if not isinstance(text, str) or not text.strip():
            raise ClaimError(f"{where}: key 'text': a non-empty string is required (what the claim says)")
        if kind not in KINDS:
            raise ClaimError(f"{where} ({text!r}): key 'kind': bad value {kind!r}; allowed: {', '.join(KINDS)}")
        claim: dict[str, Any] = {"text": text, "kind": kind}
        if kind == "best":
            cell = c.get("cell")
            if not isinstance(cell, dict) or not cell or {"term", "direction", "at"} & set(c):
                raise ClaimError(
                    f"{where} ({text!r}): kind 'best' takes key 'cell' (a table of factor = level, "
                    "e.g. cell = { \"model.pool\" = \"avg\" }) and no 'term', 'direction' or "
                    "'at'"
                )
            claim["cell"] = _levels(cell, "cell", factors, label, f"{where} ({text!r})")
        else:
            term = c.get("term")
            if term not in names:
                near = [n for n in names if isinstance(term, str) and term.split(":")[0] in n][:4]
                raise ClaimError(
                    f"{where} ({text!r}): key 'term': {term!r} is not an effect this study estimates; "
                    f"e.g. {'; '.join(near or names[:4])}"
                )
            claim["term"] = term
            if "at" in c:
                mains = _mains(factors, baseline) if design != "arms" else {}
                at = c["at"]
                if term not in mains or not isinstance(at, dict) or not at:
                    raise ClaimError(
                        f"{where} ({text!r}): key 'at' takes a table of factor = level and a main "
                        f"effect as 'term' (e.g. term = \"{next(iter(mains), 'f: b vs a')}\", "
                        'at = { "<another factor>" = <level> })'
                    )
                claim["at"] = _levels(at, "at", factors, label, f"{where} ({text!r})")
                if mains[term][0] in claim["at"]:
                    raise ClaimError(
                        f"{where} ({text!r}): key 'at': names {mains[term][0]}, the factor of 'term' "
                        "itself; 'at' holds the other factors' levels"
                    )
            if kind == "effect":
                if c.get("direction") not in DIRECTIONS:
                    raise ClaimError(
                        f"{where} ({text!r}): key 'direction': bad value {c.get('direction')!r}; "
                        f"allowed: {', '.join(DIRECTIONS)} (in the selection metric's sense)"
                    )
                claim["direction"] = c["direction"]
            elif "direction" in c or "cell" in c:
                raise ClaimError(f"{where} ({text!r}): kind 'negligible' takes only 'term' (and 'at')")
        out.append(claim)
    return out


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


def _own_contrast(
    c: dict[str, Any], factors: dict[str, list[str]], baseline: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]] | None:
    """The two marginal means a claim compares when the effects table does not hold its term: a simple
    effect (a main effect 'at' other levels) or two arms against each other; None otherwise."""
    if c.get("kind") == "best":
        return None
    if c.get("at"):
        f, lv, ref = _mains(factors, baseline)[c["term"]]
        return {f: lv, **c["at"]}, {f: ref, **c["at"]}
    base = baseline.get("arm")
    if "arm" in factors and base is not None:
        a, _, b = c["term"].partition(" vs ")
        if b != base and {a, b} <= set(factors["arm"]):
            return {"arm": a}, {"arm": b}
    return None


def simple_effects(
    m: Fit | None,
    claims: list[dict[str, Any]],
    factors: dict[str, list[str]],
    baseline: dict[str, str],
    metric: str,
    x: float,
) -> pd.DataFrame:
    """The contrasts claims make that the effects table does not hold (simple effects; arm vs arm), each a
    contrast of the study's fit m, one row each (named by claim_term), with Holm and verdicts over their own
    family. A factor the fit left out (held at one level so far), an arm it lacks, or a contrast the trials
    do not identify is untested."""
    want = [(c, pq) for c in claims if (pq := _own_contrast(c, factors, baseline)) is not None]
    if m is None or not want or m.grid is None:
        return pd.DataFrame()
    rows = []
    for c, (p, q) in want:
        levels = {**p, **q}.items()  # every factor and level in the fit (one held so far is left out of it)
        fitted = set(p) <= set(m.grid.columns) and all((m.grid[f].astype(str) == v).any() for f, v in levels)
        row = m.mean_at(p) - m.mean_at(q) if fitted else np.zeros(m.L.shape[1])
        est = contrast(m, row, None if fitted else False)  # None: check that the trials identify it
        rows.append({"kind": "simple", "term": claim_term(c), "metric": metric, **est})
    tab = pd.DataFrame(rows)
    tab["p_tost"] = tost_p(tab["estimate"].to_numpy(float), tab["se"].to_numpy(float), m.df_resid, x)
    holm_verdicts([tab], x)
    return tab


def _effect_verdict(claim: dict[str, Any], r: pd.Series | None, metric: str) -> tuple[str, str]:
    if r is None:
        return "undecided", "not estimated from these trials"
    v = str(r["verdict"])
    est = float(r["estimate"])
    if not np.isfinite(est) or v not in VERDICTS:
        return "undecided", v
    good = (est > 0) == higher_is_better(metric)
    way = "better" if good else "worse"
    if claim["kind"] == "negligible":
        if v in (VERDICTS[1], VERDICTS[2]):
            return "supported", v
        return ("contradicted", f"matters ({way})") if v == VERDICTS[0] else ("undecided", v)
    if v == VERDICTS[0]:
        return (
            ("supported", f"matters ({way})")
            if way == claim["direction"]
            else ("contradicted", f"matters the other way ({way})")
        )
    if v == VERDICTS[1]:
        return "contradicted", f"real ({way}) but smaller than the smallest effect that matters"
    if v == VERDICTS[2]:
        return "contradicted", v
    return "undecided", v


def check_claims(
    claims: list[dict[str, Any]],
    tables: list[pd.DataFrame],
    metric: str,
    x_text: str,
    best: dict[str, Any] | None,
    cells: pd.DataFrame,
) -> list[dict[str, Any]]:
    """Each claim with its verdict, the reason and the evidence (the effect's estimate and CI or the
    matching cells in the best set). tables: the effects and interactions of the selection metric."""
    rows = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(len(t) for t in tables) else None
    by_term = {r["term"]: r for _, r in rows.iterrows()} if rows is not None else {}
    out = []
    for c in claims:
        res = dict(c)
        if c["kind"] == "best":
            if best is None or not len(cells):
                res.update(verdict="undecided", why="no best set (too few complete trials)")
            else:
                match = cells
                for f, lv in c["cell"].items():
                    match = match[match[f].astype(str) == lv]
                names = set(match["cell"])
                inside = [n for n in best["set"] if n in names]
                if not names:
                    res.update(verdict="undecided", why="no complete trial in a matching cell yet")
                elif len(inside) == len(best["set"]):
                    res.update(
                        verdict="supported",
                        why=f"every cell of the best set of {len(best['set'])} matches "
                        f"({len(inside)} of {len(names)} matching cells); best: {best['best']}",
                    )
                elif inside:
                    res.update(
                        verdict="undecided",
                        why=f"{len(inside)} matching and {len(best['set']) - len(inside)} "
                        f"other cell(s) share the best set of {len(best['set'])}, not told apart; best: "
                        f"{best['best']}",
                    )
                else:
                    res.update(
                        verdict="contradicted",
                        why=f"none of {len(names)} matching cell(s) in the best set "
                        f"of {len(best['set'])}; best: {best['best']}",
                    )
        else:
            r = by_term.get(claim_term(c))
            verdict, why = _effect_verdict(c, r, metric)
            own = r is not None and r.get("kind") == "simple"  # tested in the claims' own family
            what = "simple effect" if c.get("at") else ("contrast" if own else "effect")
            res.update(verdict=verdict, why=f"the {what}'s verdict: {why.replace('X', x_text)}")
            if r is not None and np.isfinite(r["estimate"]):
                res.update(
                    estimate=float(r["estimate"]),
                    lo=float(r["lo"]),
                    hi=float(r["hi"]),
                    df=float(r["df"]),
                    p_holm=float(r["p_holm"]),
                )
        out.append(res)
    return out
