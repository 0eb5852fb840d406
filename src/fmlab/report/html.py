"""The report's index.html: one offline page (inline CSS, figures by relative path), built from an Analysis.

fmlab.report.build writes it next to summary.md (fmlab.report.summary_md); the rows of every table come from
fmlab.report.tables (and fmlab.analysis.arms for an arms study), the same rows summary.md shows, so the two
never differ. FIG_TITLES and DIAG_READ are the words both pages share.
"""

from __future__ import annotations

import html
from typing import Any

from fmlab.analysis import arms as farms
from fmlab.analysis.record import Analysis
from fmlab.report import answer as fanswer
from fmlab.report import tables as ftables

FIG_TITLES = {
    "cells": "Cells ranked by the selection metric (mean and 95% CI over seeds)",
    "curves": "Learning curves per cell (mean over seeds; band = ±1 std)",
    "forest": "Every effect on the selection metric, largest first: contrasts of the fitted model with 95% CIs; "
    "shaded: smaller than the smallest effect that matters; colour: verdict",
    "main_effects": "Raw means of each level over seeds (descriptive; the effects and their CIs are the forest plot)",
    "interactions": "Two-way interactions, raw means over seeds and the other factors (descriptive)",
    "arm_effects": "Each arm minus the baseline: contrasts of the model arm + seed block (95% CI; coloured = better or "
    "worse after Holm)",
    "confusion": "Best trial on the test set: confusion matrix and per-class accuracy",
    "residuals": "The fitted model's residuals: against the fitted values, and a normal QQ plot",
}
DIAG_READ = (
    "A p-value under 0.05 puts the assumption in doubt (with many trials these tests flag small "
    "departures too): read the CIs with care; when the spread grows with the mean, try "
    '[analysis] transform = "log".'
)


CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1150px;padding:0 18px 40px;color:#1d2330}
h1{font-size:24px;margin:22px 0 4px}
h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:3px}
.badge{display:inline-block;background:#b3541e;color:#fff;border-radius:4px;padding:2px 8px;
font-size:13px;font-weight:600}
.warn{background:#fff4e0;border:1px solid #f0b45b;border-radius:6px;padding:8px 14px;margin:12px 0}
.warn li{margin:3px 0} .muted{color:#5b6475;font-size:13px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #d5d9e2;padding:3px 8px;text-align:left}
th{background:#eef1f6} td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.good td{background:#e8f6ea}
figure{margin:14px 0} figure img{max-width:100%;border:1px solid #e3e6ec} figcaption{font-size:13px;color:#5b6475}
nav a{margin-right:14px}
.answer{background:#eef6ff;border:1px solid #9cc3ea;border-radius:6px;padding:4px 14px;margin:12px 0}
.answer h2{border:0;margin:6px 0 4px} .answer p{margin:4px 0} .answer ul{margin:4px 0;padding-left:20px}
.answer li{margin:2px 0}
"""


def _h(s: Any) -> str:
    return html.escape(str(s))


def _html_table(header: list[str], rows: list[list[str]], good_col: int | None = None) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = []
    for r in rows:
        cls = ' class="good"' if good_col is not None and r[good_col] == "matters" else ""
        tds = "".join(f'<td class="num">{_h(c)}</td>' if _isnum(c) else f"<td>{_h(c)}</td>" for c in r)
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _isnum(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or s[0] in "+-<[") and not s.startswith("[n")


def _figure(figs: dict[str, str], key: str) -> str:
    if key not in figs:
        return ""
    return (
        f"<figure><img src='{_h(figs[key])}' alt='{_h(FIG_TITLES[key])}'>"
        f"<figcaption>{_h(FIG_TITLES[key])}</figcaption></figure>"
    )


def page(
    a: Analysis,
    figs: dict[str, str],
    best: dict | None,
    tables: dict[str, str],
    setup: list[list[str]] | None = None,
    live: str | None = None,
    reload_s: int = 10,
    ans: dict | None = None,
    limits: list[str] | None = None,
) -> str:
    """index.html: the answer first (ans, fmlab.report.answer.compose), then the limits (limits: the study's
    warnings less the caveats the answer carries; a.warnings when None), findings, tables and figures."""
    limits = a.warnings if limits is None else limits
    parts = _head(a, tables, live, reload_s)
    if ans is not None:
        parts.append(answer_html(ans))
    if limits:
        parts.append(
            "<div class='warn'><b>Limits of this study</b><ul>"
            + "".join(f"<li>{_h(w)}</li>" for w in limits)
            + "</ul></div>"
        )
    parts.append(
        "<h2>Findings</h2><ul>"
        + "".join(f"<li>{_h(f)}</li>" for f in a.findings or ["No comparisons could be made."])
        + "</ul>"
    )
    parts.append(_figure(figs, "forest"))
    if a.claims:
        parts.append(
            "<h2>Claims checked</h2><p class='muted'>Each claim of the study file checked against "
            "the effects above (same fit; a simple effect or an arm-vs-arm contrast in a Holm family of the "
            "claims' own) or the best set.</p>" + _html_table(ftables.CLAIM_HEADER, ftables.claim_rows(a))
        )
    if setup:
        parts.append("<h2>Setup</h2>" + _html_table(["", "median over complete trials"], setup))
    parts += _arms_html(a, figs) if a.design == "arms" else _grid_html(a, figs)
    parts.append(f"<h2>ANOVA</h2><p class='muted'>{_h(a.anova_note)}</p>")
    if a.anova is not None:
        parts.append(_html_table(ftables.ANOVA_HEADER, ftables.anova_rows(a)))
    parts.append(diagnostics_html(a, figs))
    parts += plan_html(a)
    if best:
        parts.append(_best_html(a, figs, best))
    parts.append("</body></html>")
    return "\n".join(parts)


def _head(a: Analysis, tables: dict[str, str], live: str | None, reload_s: int) -> list[str]:
    """The page's head and title (the budget's badge), the live note, the counts and the links to the files."""
    quick = "indicative only" in a.label
    badge = f' <span class="badge">{_h(a.budget)}{": indicative only" if quick else ""}</span>'
    # a live page reloads itself; the final page (live None) has no refresh, so an open tab stops there
    reload = f"<meta http-equiv='refresh' content='{int(reload_s)}'>" if live else ""
    return [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{reload}<title>{_h(a.label)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>{_h(a.study)} study{badge}</h1>",
        f"<p class='warn' id='live'>{_h(live)}</p>" if live else "",
        f"<p class='muted'>{_h(ftables.counts_line(a))}</p>",
        "<nav><a href='hiplot.html'>HiPlot: every trial</a><a href='summary.md'>summary.md</a>"
        + "".join(f"<a href='{_h(v)}'>{_h(v)}</a>" for v in tables.values())
        + "</nav>",
    ]


def _grid_html(a: Analysis, figs: dict[str, str]) -> list[str]:
    """A grid study's sections: main effects and interactions figures, the cells ranked, the effects."""
    return [
        *[_figure(figs, k) for k in ("main_effects", "interactions")],
        f"<h2>Cells ranked by {_h(a.select)}</h2>" + _html_table(ftables.cell_header(a), ftables.cell_rows(a)),
        *[_figure(figs, k) for k in ("cells", "curves")],
        "<h2>Effects (contrasts of the fitted model)</h2><p class='muted'>Each comparison: the "
        "difference of estimated marginal means (level minus baseline level) of one OLS fit over every "
        "complete trial; interactions: the difference of those differences; 95% CIs from the "
        f"model's residual. {_h(a.model_note)}</p>"
        + _html_table(ftables.effect_header(a), ftables.effect_rows(a), good_col=6),
    ]


def _best_html(a: Analysis, figs: dict[str, str], best: dict) -> str:
    """The best trial on the test set: its accuracy, the confusion figure, the per-class accuracy."""
    return (
        f"<h2>Best trial on the test set</h2><p>Trial <code>{_h(best['trial_id'])}</code> (chosen on "
        f"{_h(a.select)}): test accuracy {100 * best['test_acc']:.2f}% on {best['n_test']} images.</p>"
        + _figure(figs, "confusion")
        + _html_table(
            ["class", "accuracy %"],
            [[c, f"{100 * v:.1f}"] for c, v in zip(best["classes"], best["per_class_acc"], strict=True)],
        )
    )


def answer_html(ans: dict) -> str:
    """The answer box: what to use in bold, then each effect, the undecided ones and the claims."""
    rest = fanswer.lines(ans)[1:]
    items = "".join(f"<li>{_h(s)}</li>" for s in rest)
    return (
        f"<div class='answer' id='answer'><h2>The answer</h2><p><b>{_h(ans['use'])}</b></p>"
        + (f"<ul>{items}</ul>" if items else "")
        + "</div>"
    )


def _arms_html(a: Analysis, figs: dict[str, str]) -> list[str]:
    """An arms study's sections: effects figure, each arm vs the baseline, the ranked arms, definitions."""
    return [
        _figure(figs, "arm_effects"),
        "<h2>Each arm vs the baseline (contrasts of the fitted model)</h2><p class='muted'>Each arm minus the "
        f"baseline in one OLS fit arm + seed block ({_h(a.model_note)}). Holm over the arms, "
        f"separately for {_h(a.select)} (selection) and test accuracy (evaluated only); the verdict is on "
        f"{_h(a.select)}.</p>" + _html_table(farms.effect_header(a), farms.effect_rows(a), good_col=8),
        f"<h2>Arms ranked by {_h(a.select)}</h2>" + _html_table(farms.ranked_header(a), farms.ranked_rows(a)),
        _figure(figs, "cells"),
        _figure(figs, "curves"),
        "<h2>Arms: what each changes from the baseline</h2>"
        + _html_table(["arm", "changes"], farms.definition_rows(a)),
    ]


def diagnostics_html(a: Analysis, figs: dict[str, str]) -> str:
    d = a.diagnostics
    if d is None:
        return "<h2>Diagnostics</h2><p class='muted'>No fitted model: nothing to check.</p>"
    parts = [
        "<h2>Diagnostics</h2>",
        f"<p class='muted'>{_h(DIAG_READ)}</p>",
        _html_table(["check", "result"], ftables.diagnostic_rows(a)),
        _figure(figs, "residuals"),
        f"<p>Seed-level check: {_h(d.seed_note)}.</p>",
    ]
    if len(d.seed_check):
        parts.append(_html_table(ftables.seed_header(a), ftables.seed_rows(a)))
    items = [f"<li><b>{_h(s)}</b></li>" for s in d.disagreements] + [f"<li>{_h(n)}</li>" for n in d.notes]
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    return "\n".join(parts)


def plan_html(a: Analysis) -> list[str]:
    if a.plan is None:
        return []
    return [
        "<h2>Seeds planned</h2><ul>"
        + "".join(f"<li>{_h(s)}</li>" for s in ftables.plan_sentences(a))
        + "</ul>"
        + _html_table(ftables.PLAN_HEADER, ftables.plan_rows(a))
    ]
