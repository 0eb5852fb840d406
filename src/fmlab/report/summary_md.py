"""The report's summary.md: the answer first, then the limits, the findings and the statistics as Markdown.

Its tables are the rows of fmlab.report.tables (and fmlab.analysis.arms for an arms study), the same rows
index.html shows (fmlab.report.html); figure titles and the diagnostics' reading come from there too.
"""

from __future__ import annotations

from fmlab.analysis import arms as farms
from fmlab.analysis.record import Analysis
from fmlab.report import answer as fanswer
from fmlab.report import tables as ftables
from fmlab.report.html import DIAG_READ, FIG_TITLES


def markdown(
    a: Analysis,
    figs: dict[str, str],
    best: dict | None,
    setup: list[list[str]] | None = None,
    ans: dict | None = None,
    limits: list[str] | None = None,
) -> str:
    """summary.md: the answer first, then the limits, the findings and the statistics."""
    limits = a.warnings if limits is None else limits
    parts = [f"# {a.label}", "", ftables.counts_line(a), ""]
    if ans is not None:
        parts += ["## Answer", "", *fanswer.markdown(ans)]
    if limits:
        parts += ["## Limits", "", *[f"- **{w}**" for w in limits], ""]
    parts += ["## Findings", "", *[f"- {f}" for f in a.findings or ["No comparisons could be made."]], ""]
    if "forest" in figs:
        parts += [f"![{FIG_TITLES['forest']}]({figs['forest']})", ""]
    if a.claims:
        parts += ["## Claims checked", "", _md_table(ftables.CLAIM_HEADER, ftables.claim_rows(a)), ""]
    if setup:
        parts += ["## Setup", "", _md_table(["", "median over complete trials"], setup), ""]
    parts += arms_md(a) if a.design == "arms" else grid_md(a)
    parts += ["## ANOVA", "", a.anova_note, ""]
    if a.anova is not None:
        parts += [_md_table(ftables.ANOVA_HEADER, ftables.anova_rows(a)), ""]
    parts += diagnostics_md(a, figs)
    parts += plan_md(a)
    parts += best_md(best)
    parts += [f"![{FIG_TITLES[k]}]({v})" for k, v in figs.items() if k not in ("residuals", "forest")]  # placed above
    return "\n".join(parts) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def arms_md(a: Analysis) -> list[str]:
    """An arms study's sections: the arms, the arms ranked, each arm vs the baseline."""
    return [
        *["## Arms", "", _md_table(["arm", "changes"], farms.definition_rows(a)), ""],
        *["## Arms ranked", "", _md_table(farms.ranked_header(a), farms.ranked_rows(a)), ""],
        "## Each arm vs the baseline (contrasts of the fitted model)",
        "",
        _md_table(farms.effect_header(a), farms.effect_rows(a)),
        "",
    ]


def grid_md(a: Analysis) -> list[str]:
    """A grid study's sections: the cells ranked, the effects."""
    parts = ["## Cells", ""]
    if a.best is not None:  # where the cell means and their intervals come from (the best set's fit)
        parts += [f"{a.select} per cell: {a.best['note']}; 95% intervals per cell from it.", ""]
    parts += [_md_table(ftables.cell_header(a), ftables.cell_rows(a)), ""]
    return parts + [
        "## Effects (contrasts of the fitted model)",
        "",
        a.model_note,
        "",
        _md_table(ftables.effect_header(a), ftables.effect_rows(a)),
        "",
    ]


def best_md(best: dict | None) -> list[str]:
    """The best trial on the test set: its accuracy and per-class accuracy; nothing without a checkpoint."""
    if not best:
        return []
    return [
        f"## Best trial {best['trial_id']} on the test set",
        "",
        f"test accuracy {100 * best['test_acc']:.2f}% on {best['n_test']} images",
        "",
        _md_table(
            ["class", "accuracy %"],
            [[c, f"{100 * v:.1f}"] for c, v in zip(best["classes"], best["per_class_acc"], strict=True)],
        ),
        "",
    ]


# ---------------------------------------------------------------- diagnostics (fmlab.analysis.diagnostics)


def diagnostics_md(a: Analysis, figs: dict[str, str]) -> list[str]:
    d = a.diagnostics
    if d is None:
        return ["## Diagnostics", "", "No fitted model: nothing to check.", ""]
    parts = ["## Diagnostics", "", DIAG_READ, "", _md_table(["check", "result"], ftables.diagnostic_rows(a)), ""]
    if "residuals" in figs:
        parts += [f"![{FIG_TITLES['residuals']}]({figs['residuals']})", ""]
    parts += [f"Seed-level check: {d.seed_note}.", ""]
    if len(d.seed_check):
        parts += [_md_table(ftables.seed_header(a), ftables.seed_rows(a)), ""]
    parts += [*[f"- **{s}**" for s in d.disagreements], *[f"- {n}" for n in d.notes]]
    return parts + ([""] if d.disagreements or d.notes else [])


# ---------------------------------------------------------------- seeds planned (fmlab.analysis.power)


def plan_md(a: Analysis) -> list[str]:
    if a.plan is None:
        return []
    return [
        "## Seeds planned",
        "",
        *[f"- {s}" for s in ftables.plan_sentences(a)],
        "",
        _md_table(ftables.PLAN_HEADER, ftables.plan_rows(a)),
        "",
    ]
