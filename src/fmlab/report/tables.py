"""The report's tables as rows of strings: cells, effects, ANOVA, claims, setup, diagnostics, seeds planned.

Each `*_rows(a)` takes a `fmlab.analysis.record.Analysis` and returns display strings, one list per row, under the
matching `*_header(a)` or `*_HEADER`; fmlab.report.build lays them out in summary.md and index.html, fmlab.cli.watch
shows cell_rows live. Also here: the CSV tables (write_tables). The JSON-safe dicts the CLI prints are in
fmlab.report.summary_json, HiPlot's table of every trial in fmlab.report.hiplot_page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fmlab.analysis import power as fpower
from fmlab.analysis.claims import claim_term
from fmlab.analysis.formatting import fmt_effect, fmt_p, unit
from fmlab.analysis.record import Analysis
from fmlab.config.metrics import ALL_TRAIN
from fmlab.durations import duration

# ---------------------------------------------------------------- CSV tables


def write_tables(a: Analysis, out: Path) -> dict[str, str]:
    tables = {"cells": a.cells, "effects": a.effects, "interactions": a.interactions, "test_effects": a.test_effects}
    if a.anova is not None:
        tables["anova"] = a.anova.rename_axis("term").reset_index()
    names = {}
    for k, df in tables.items():
        if len(df):
            df.to_csv(out / f"{k}.csv", index=False)
            names[k] = f"{k}.csv"
    return names


# ---------------------------------------------------------------- cells, effects, ANOVA, claims, setup


def counts_line(a: Analysis) -> str:
    c = a.counts
    chosen = (
        f"Selection metric: {a.select} (validation split); test accuracy is evaluated only, never used to choose."
        if a.validated
        else f"No validation split (data.val_size = 0): trained on {ALL_TRAIN}, tested at the last epoch; "
        "nothing is chosen, and test accuracy never chooses."
    )
    return (
        f"{c['complete']} of {c['planned']} planned trials complete ({c['failed']} failed, {c['waiting']} "
        f"waiting, {c['running']} running, {c['missing']} missing); {c['cells_complete']} of "
        f"{c['cells_planned']} cells, {c['seeds']} seed(s). {chosen}"
    )


def _ci(r: pd.Series, m: str) -> str:
    k, u = unit(m)
    d = 2 if k == 100 else 4
    mean = r.get(f"{m}_mean", math.nan)
    if not np.isfinite(mean):
        return "n/a"
    lo, hi = r.get(f"{m}_lo", math.nan), r.get(f"{m}_hi", math.nan)
    ci = f" [{k * lo:.{d}f}, {k * hi:.{d}f}]" if np.isfinite(lo) else " (no CI: n = 1)"
    return f"{k * mean:.{d}f}{ci}"


def cell_rows(a: Analysis, limit: int | None = None) -> list[list[str]]:
    """Ranked cells as strings: rank, cell, n, select mean [CI], std, test acc mean [CI]."""
    k, _ = unit(a.select)
    d = 2 if k == 100 else 4
    rows = []
    for _, r in a.cells.head(limit).iterrows():
        std = r.get(f"{a.select}_std", math.nan)
        rows.append(
            [
                str(r["rank"]) if a.validated else "-",  # nothing validated: no ranking
                r["cell"],
                str(r["n"]),
                _ci(r, a.select),
                f"{k * std:.{d}f}" if np.isfinite(std) else "n/a",
                _ci(r, "test_acc"),
            ]
        )
    return rows


def cell_header(a: Analysis) -> list[str]:
    _, u = unit(a.select, level=True)
    return ["rank", "cell", "n", f"{a.select} mean [95% CI]{u}", "std", "test_acc mean [95% CI] %"]


def effect_rows(a: Analysis) -> list[list[str]]:
    rows = []
    for tbl in (a.effects, a.interactions):
        for _, r in tbl.iterrows():
            ci = f"[{fmt_effect(r['lo'], a.select, False)}, {fmt_effect(r['hi'], a.select, False)}]"
            rows.append(
                [
                    r["term"],
                    fmt_effect(r["estimate"], a.select),
                    ci,
                    str(r["n_seeds"]),
                    fmt_p(r["p"]).lstrip("= "),
                    fmt_p(r["p_holm"]).lstrip("= "),
                    r["verdict"],
                ]
            )
    return rows


def effect_header(a: Analysis) -> list[str]:
    _, u = unit(a.select)
    return ["comparison", f"effect on {a.select}{u}", "95% CI", "seeds", "p", "Holm p", "verdict"]


def anova_rows(a: Analysis) -> list[list[str]]:
    if a.anova is None:
        return []
    f = lambda v, d: "" if not np.isfinite(v) else f"{v:.{d}g}"
    return [
        [
            str(i),
            f(r["df"], 3),
            f(r["sum_sq"], 4),
            f(r["F"], 4),
            fmt_p(r["PR(>F)"]).lstrip("= "),
            f(100 * r["share_ss"], 3),
        ]
        for i, r in a.anova.iterrows()
    ]


ANOVA_HEADER = ["term", "df", "sum of squares", "F", "p", "% of SS"]
CLAIM_HEADER = ["claim", "tested as", "verdict", "evidence"]


def claim_rows(a: Analysis) -> list[list[str]]:
    """Each claim: its text, what it was tested as, the verdict and why (estimate and CI, or the best set)."""
    rows = []
    for c in a.claims:
        if c["kind"] == "best":
            what = "in the best set: " + ", ".join(f"{k}={v}" for k, v in c["cell"].items())
        else:
            what = f"{c['kind']}{' (' + c['direction'] + ')' if c.get('direction') else ''}: {claim_term(c)}"
        ev = c["why"]
        if "estimate" in c:
            _, u = unit(a.select)
            ev += (
                f"; {fmt_effect(c['estimate'], a.select)}{u} [{fmt_effect(c['lo'], a.select, False)}, "
                f"{fmt_effect(c['hi'], a.select, False)}], Holm p {fmt_p(c['p_holm'])}"
            )
        rows.append([c["text"], what, c["verdict"], ev])
    return rows


def setup_rows(a: Analysis) -> list[list[str]]:
    """What every complete trial shares: the config keys set away from fmlab's defaults, parameters,
    epochs and training time (median and range over trials) -- the facts a results table quotes."""
    import json

    from fmlab.config.schema import Config, from_dict

    c = a.complete
    if c.empty or "config" not in c:
        return []
    flats = [from_dict(json.loads(js)).resolved().flat() for js in c["config"]]
    default = Config().resolved().flat()
    shared = {k: v for k, v in flats[0].items() if k != "seed" and all(f[k] == v for f in flats)}
    changed = ", ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
        for k, v in shared.items()
        if v != default[k]
    )
    rows = [["config shared by every trial (keys set away from the defaults)", changed or "(defaults)"]]

    def span(col: str, fmt: str | Callable[[float], str]) -> str:
        x = pd.to_numeric(c[col], errors="coerce").dropna() if col in c else pd.Series(dtype=float)
        if x.empty:
            return "n/a"
        f = fmt if callable(fmt) else lambda v: f"{v:{fmt}}"
        return f(x.median()) + (f" (range {f(x.min())} to {f(x.max())})" if x.min() != x.max() else "")

    rows += [
        ["parameters", span("n_params", ",.0f")],
        ["epochs per trial", span("epochs", ".0f")],
        ["training time per trial (whole trial: data, epochs, validation, test)", span("total_s", duration)],
        ["training images/s", span("train_images_per_s", ",.0f")],
    ]
    if "precision" in c:
        auto = any(f.get("train.precision") == "auto" for f in flats)
        what = "precision trained in" + (" (train.precision auto: the machine's pick)" if auto else "")
        rows.append([what, precision_text(c["precision"])])
    return rows


def precision_text(col: pd.Series) -> str:
    """The precisions trials trained in, with their counts when more than one: "bf16", "fp32 12, bf16 60"."""
    n = col.fillna("unknown").value_counts()
    return str(n.index[0]) if len(n) == 1 else ", ".join(f"{p} {k}" for p, k in n.items())


# ---------------------------------------------------------------- diagnostics (fmlab.analysis.diagnostics)


def diagnostic_rows(a: Analysis) -> list[list[str]]:
    """The residual tests and outliers as (check, result) rows."""
    d = a.diagnostics
    if d is None:
        return []
    outl = "; ".join(f"{o['id']} ({o['cell']}, seed {o['seed']}, {o['student']:+.1f})" for o in d.outliers)
    return [
        ["model", d.model],
        ["Shapiro-Wilk (normal residuals)", f"p {fmt_p(d.shapiro_p)} (n = {len(d.residuals)})"],
        [f"Brown-Forsythe (equal spread; {d.bf_by})", f"p {fmt_p(d.bf_p)}"],
        ["trials with |externally studentized residual| > 4", outl or "none"],
    ]


def seed_header(a: Analysis) -> list[str]:
    u = unit(a.select)[1]
    return [
        "comparison",
        f"model effect{u}",
        "model Holm p",
        f"seed-paired effect{u}",
        "95% CI",
        "df",
        "Holm p",
        "agree",
    ]


def seed_rows(a: Analysis) -> list[list[str]]:
    d = a.diagnostics
    if d is None or not len(d.seed_check):
        return []
    m = a.select
    return [
        [
            r["term"],
            fmt_effect(r["model_estimate"], m),
            fmt_p(r["model_p_holm"]).lstrip("= "),
            fmt_effect(r["estimate"], m),
            f"[{fmt_effect(r['lo'], m, False)}, {fmt_effect(r['hi'], m, False)}]",
            str(int(r["df"])),
            fmt_p(r["p_holm"]).lstrip("= "),
            "yes" if r["agree"] else "NO",
        ]
        for _, r in d.seed_check.iterrows()
    ]


# ---------------------------------------------------------------- seeds planned (fmlab.analysis.power)

PLAN_HEADER = ["effect", "estimate", "verdict", "detectable now (80% power)", "seeds of every cell to resolve"]


def plan_sentences(a: Analysis) -> list[str]:
    if a.plan is None:
        return []
    k, u = unit(a.select)
    return fpower.plan_lines(a.plan, scale=k, u=u)


def plan_rows(a: Analysis) -> list[list[str]]:
    if a.plan is None:
        return []
    rows = []
    for e in a.plan["effects"]:
        nan = lambda v: math.nan if v is None else v  # noqa: E731
        need = (
            ""
            if e["verdict"] != "undecided" or e["estimate"] is None
            else (f"~{e['seeds_needed']} ({e['route']})" if e["seeds_needed"] else f"more than {a.plan['cap']}")
        )
        rows.append(
            [
                e["term"],
                fmt_effect(nan(e["estimate"]), a.select),
                e["verdict"],
                fmt_effect(nan(e["mde_now"]), a.select, False),
                need,
            ]
        )
    return rows
