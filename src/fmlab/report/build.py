"""A study's report: index.html (offline, one folder), summary.md, PNG figures, hiplot.html, CSV tables.

`build_report(trials, epochs, meta, out_dir, best_ckpt)` takes the DataFrame contract documented on
`fmlab.analysis.driver.analyse` and returns a JSON-safe dict (paths, counts, findings, warnings, top cells)
for the CLI to print. Figures are PNG files next to index.html, referenced by relative path, so the
folder can be opened from disk, copied or zipped; nothing is fetched from the network. The tables' rows of
strings, the CSV tables and HiPlot's table of trials are built in fmlab.report.tables.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis import arms as farms
from fmlab.analysis.driver import analyse
from fmlab.analysis.record import Analysis
from fmlab.analysis.stats import json_safe
from fmlab.report import answer as fanswer
from fmlab.report import figures_fit, figures_trials
from fmlab.report import tables as ftables
from fmlab.report.html import DIAG_READ, FIG_TITLES, page


def build_report(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    meta: dict[str, Any],
    out_dir: str | Path,
    best_ckpt: Path | None = None,
    live: str | None = None,
    reload_s: int = 10,
) -> dict[str, Any]:
    """Write the report for one study into out_dir; returns what the CLI shows (JSON-safe).

    trials, epochs, meta: the contract on `fmlab.analysis.driver.analyse`. best_ckpt: the checkpoint folder of
    the trial that is best on the validation metric (`fmlab.analysis.ranking.best_trial` picks its id); its
    confusion matrix and per-class accuracy on the test set are added; None skips them.
    live: a note for a page written while the sweep runs (fmlab.report.live); index.html then shows it and
    reloads itself every reload_s seconds.
    Returns: label, select, answer (fmlab.report.answer.compose), out_dir, index, summary_md, hiplot,
    figures {name: path}, tables {name: path},
    counts, warnings, findings (sentences), effects (rows), top_cells, cells_table / effects_table
    ({header, rows} as display strings), failed, missing_cells, anova_note, best (or None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = analyse(trials, epochs, meta)
    figs: dict[str, str] = {}
    plots = [("cells", figures_trials.cells), ("curves", figures_trials.curves)]
    plots += (
        [("arm_effects", figures_fit.arm_effects)]
        if a.design == "arms"
        else [
            ("forest", figures_fit.forest),
            ("main_effects", figures_fit.main_effects),
            ("interactions", figures_fit.interactions),
        ]
    )
    plots.append(("residuals", figures_fit.residuals))
    for name, fn in plots:
        path = fn(a, out / f"{name}.png")
        if path:
            figs[name] = path.name
    best = None
    if best_ckpt is not None:
        best = test_confusion(best_ckpt)
        figs["confusion"] = figures_trials.confusion(best, a.label, out / "confusion.png").name
    write_hiplot(ftables.hiplot_experiment(trials, meta), out / "hiplot.html", a.label)
    tables = ftables.write_tables(a, out)
    rep = ftables.summary_dict(a, out, figs, best, tables)
    rep["best_set"] = ftables.best_set_dict(a)
    rep["min_effect"] = a.min_effect
    rep["claims"] = [{k: json_safe(v) for k, v in c.items()} for c in a.claims]
    rep["diagnostics"] = a.diagnostics.to_dict() if a.diagnostics is not None else None
    rep["seeds_planned"] = a.plan
    rep["answer"] = fanswer.compose(rep)  # the plain answer, from the same dict summary.json carries
    limits = other_limits(a.warnings, fanswer.caveated_terms(rep))
    (out / "summary.json").write_text(
        json.dumps(
            {
                k: rep[k]
                for k in (
                    "label",
                    "select",
                    "answer",
                    "effects",
                    "best_set",
                    "claims",
                    "min_effect",
                    "anova_note",
                    "counts",
                    "diagnostics",
                    "seeds_planned",
                )
            },
            indent=1,
            default=str,
        )
    )
    setup = ftables.setup_rows(a)  # parses every trial's config: once, for both pages
    (out / "summary.md").write_text(markdown(a, figs, best, setup, rep["answer"], limits))
    (out / "index.html").write_text(page(a, figs, best, tables, setup, live, reload_s, rep["answer"], limits))
    return rep


# ---------------------------------------------------------------- best trial on the test set


def test_confusion(ckpt_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Confusion matrix and per-class accuracy of a checkpoint on the test set (evaluated only)."""
    import torch

    from fmlab.data import idx as data
    from fmlab.model.nets import build
    from fmlab.training import checkpoint

    cfg, weights, tj = checkpoint.load_trial(ckpt_dir)
    net = build(cfg.model)
    net.load_state_dict(weights)
    net.eval()
    ds = data.load(cfg.data, data_dir)
    x, y = data.normalize(ds.test.x, ds.mean, ds.std), ds.test.y
    with torch.no_grad():
        pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(y), 1000)])
    cm = np.zeros((len(data.CLASSES),) * 2, dtype=int)
    np.add.at(cm, (y.numpy(), pred.numpy()), 1)
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {
        "trial_id": str(tj.get("trial_id", Path(ckpt_dir).name)),
        "ckpt": str(ckpt_dir),
        "classes": list(data.CLASSES),
        "confusion": cm.tolist(),
        "per_class_acc": per_class.tolist(),
        "test_acc": float(cm.diagonal().sum() / cm.sum()),
        "n_test": int(cm.sum()),
    }


# ---------------------------------------------------------------- the pages: hiplot.html, summary.md, index.html


def write_hiplot(exp: Any, path: Path, label: str = "") -> Path:
    """A standalone HiPlot page of exp; with label, a banner naming the study and linking the report."""
    page = exp.to_html()
    if label:  # the study and its caveat on this page too ("quick: indicative only")
        banner = (
            f"<div style='font:14px system-ui,sans-serif;padding:6px 12px;background:#fff4e0;"
            f"border-bottom:1px solid #f0b45b'>{html.escape(label)}: {len(exp.datapoints)} trials, one row "
            "each. <a href='index.html'>Back to the report</a></div>"
        )
        page = page.replace("<title>HiPlot</title>", f"<title>HiPlot: {html.escape(label)}</title>", 1)
        page = page.replace('<body style="margin:0px">', f'<body style="margin:0px">{banner}', 1)
    path.write_text(page)
    return path


def other_limits(warnings: list[str], caveated: list[str]) -> list[str]:
    """The study's limits less the seed-paired caveats that the answer states beside their effects."""
    said = tuple(f"Verdict depends on the model: {t}: " for t in caveated)  # fmlab.analysis.diagnostics' words
    return [w for w in warnings if not (said and w.startswith(said))]


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
    if a.design == "arms":
        parts += ["## Arms", "", _md_table(["arm", "changes"], farms.definition_rows(a)), ""]
        parts += ["## Arms ranked", "", _md_table(farms.ranked_header(a), farms.ranked_rows(a)), ""]
        parts += [
            "## Each arm vs the baseline (contrasts of the fitted model)",
            "",
            _md_table(farms.effect_header(a), farms.effect_rows(a)),
            "",
        ]
    else:
        parts += ["## Cells", ""]
        if a.best is not None:  # where the cell means and their intervals come from (the best set's fit)
            parts += [f"{a.select} per cell: {a.best['note']}; 95% intervals per cell from it.", ""]
        parts += [_md_table(ftables.cell_header(a), ftables.cell_rows(a)), ""]
        parts += [
            "## Effects (contrasts of the fitted model)",
            "",
            a.model_note,
            "",
            _md_table(ftables.effect_header(a), ftables.effect_rows(a)),
            "",
        ]
    parts += ["## ANOVA", "", a.anova_note, ""]
    if a.anova is not None:
        parts += [_md_table(ftables.ANOVA_HEADER, ftables.anova_rows(a)), ""]
    parts += diagnostics_md(a, figs)
    parts += plan_md(a)
    if best:
        parts += [
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
    parts += [f"![{FIG_TITLES[k]}]({v})" for k, v in figs.items() if k not in ("residuals", "forest")]  # placed above
    return "\n".join(parts) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


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
