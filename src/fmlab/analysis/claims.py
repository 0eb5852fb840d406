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

from fmlab.analysis.claimparse import main_effects
from fmlab.analysis.pvalues import tost_p
from fmlab.analysis.ranking import higher_is_better
from fmlab.analysis.stats import VERDICTS, Fit, contrast, holm_verdicts

CLAIM_VERDICTS = ("supported", "contradicted", "undecided")


def claim_term(c: dict[str, Any]) -> str:
    """The name a claim's effect goes by: its term, with ' at f=v, ...' for a simple effect."""
    at = c.get("at") or {}
    return c["term"] + (" at " + ", ".join(f"{f}={v}" for f, v in at.items()) if at else "")


def _own_contrast(
    c: dict[str, Any], factors: dict[str, list[str]], baseline: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]] | None:
    """The two marginal means a claim compares when the effects table does not hold its term: a simple
    effect (a main effect 'at' other levels) or two arms against each other; None otherwise."""
    if c.get("kind") == "best":
        return None
    if c.get("at"):
        f, lv, ref = main_effects(factors, baseline)[c["term"]]
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
    return [
        c | (_best_verdict(c, best, cells) if c["kind"] == "best" else _effect_result(c, by_term, metric, x_text))
        for c in claims
    ]


def _best_verdict(c: dict[str, Any], best: dict[str, Any] | None, cells: pd.DataFrame) -> dict[str, Any]:
    """A 'best' claim's verdict and why: do the best set's cells match its cell?"""
    if best is None or not len(cells):
        return {"verdict": "undecided", "why": "no best set (too few complete trials)"}
    match = cells
    for f, lv in c["cell"].items():
        match = match[match[f].astype(str) == lv]
    names = set(match["cell"])
    inside = [n for n in best["set"] if n in names]
    if not names:
        return {"verdict": "undecided", "why": "no complete trial in a matching cell yet"}
    if len(inside) == len(best["set"]):
        return {
            "verdict": "supported",
            "why": f"every cell of the best set of {len(best['set'])} matches "
            f"({len(inside)} of {len(names)} matching cells); best: {best['best']}",
        }
    if inside:
        return {
            "verdict": "undecided",
            "why": f"{len(inside)} matching and {len(best['set']) - len(inside)} "
            f"other cell(s) share the best set of {len(best['set'])}, not told apart; best: "
            f"{best['best']}",
        }
    return {
        "verdict": "contradicted",
        "why": f"none of {len(names)} matching cell(s) in the best set of {len(best['set'])}; best: {best['best']}",
    }


def _effect_result(c: dict[str, Any], by_term: dict[str, pd.Series], metric: str, x_text: str) -> dict[str, Any]:
    """An effect or negligible claim's verdict, why, and its effect's estimate, CI, df and Holm p."""
    r = by_term.get(claim_term(c))
    verdict, why = _effect_verdict(c, r, metric)
    own = r is not None and r.get("kind") == "simple"  # tested in the claims' own family
    what = "simple effect" if c.get("at") else ("contrast" if own else "effect")
    res: dict[str, Any] = {"verdict": verdict, "why": f"the {what}'s verdict: {why.replace('X', x_text)}"}
    if r is not None and np.isfinite(r["estimate"]):
        res.update(
            estimate=float(r["estimate"]),
            lo=float(r["lo"]),
            hi=float(r["hi"]),
            df=float(r["df"]),
            p_holm=float(r["p_holm"]),
        )
    return res
