"""A study's report: index.html (offline, one folder), summary.md, PNG figures, hiplot.html, CSV tables.

`build_report(trials, epochs, meta, out_dir, best_ckpt)` takes the DataFrame contract documented on
`fmlab.analysis.analyse` and returns a JSON-safe dict (paths, counts, findings, warnings, top cells)
for the CLI to print. Figures are PNG files next to index.html, referenced by relative path, so the
folder can be opened from disk, copied or zipped; nothing is fetched from the network. The tables' rows of
strings, the CSV tables and HiPlot's table of trials are built in fmlab.tables.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import arms as farms
from . import figures
from . import tables as ftables
from .analysis import Analysis, analyse
from .stats import json_safe


def build_report(trials: pd.DataFrame, epochs: pd.DataFrame, meta: dict[str, Any], out_dir: str | Path,
                 best_ckpt: Path | None = None, live: str | None = None,
                 reload_s: int = 10) -> dict[str, Any]:  # fmt: skip
    """Write the report for one study into out_dir; returns what the CLI shows (JSON-safe).

    trials, epochs, meta: the contract on `fmlab.analysis.analyse`. best_ckpt: the checkpoint folder of
    the trial that is best on the validation metric (`fmlab.analysis.best_trial` picks its id); its
    confusion matrix and per-class accuracy on the test set are added; None skips them.
    live: a note for a page written while the sweep runs (fmlab.livereport); index.html then shows it and
    reloads itself every reload_s seconds.
    Returns: label, select, out_dir, index, summary_md, hiplot, figures {name: path}, tables {name: path},
    counts, warnings, findings (sentences), effects (rows), top_cells, cells_table / effects_table
    ({header, rows} as display strings), failed, missing_cells, anova_note, best (or None).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = analyse(trials, epochs, meta)
    figs: dict[str, str] = {}
    plots = [("cells", figures.cells), ("curves", figures.curves)]
    plots += [("arm_effects", figures.arm_effects)] if a.design == "arms" else \
        [("forest", figures.forest), ("main_effects", figures.main_effects),
         ("interactions", figures.interactions)]  # fmt: skip
    plots.append(("residuals", figures.residuals))
    for name, fn in plots:
        path = fn(a, out / f"{name}.png")
        if path:
            figs[name] = path.name
    best = None
    if best_ckpt is not None:
        best = test_confusion(best_ckpt)
        figs["confusion"] = figures.confusion(best, a.label, out / "confusion.png").name
    write_hiplot(ftables.hiplot_experiment(trials, meta), out / "hiplot.html", a.label)
    tables = ftables.write_tables(a, out)
    rep = ftables.summary_dict(a, out, figs, best, tables)
    rep["best_set"] = ftables.best_set_dict(a)
    rep["min_effect"] = a.min_effect
    rep["claims"] = [{k: json_safe(v) for k, v in c.items()} for c in a.claims]
    rep["diagnostics"] = a.diagnostics.to_dict() if a.diagnostics is not None else None
    rep["seeds_planned"] = a.plan
    (out / "summary.json").write_text(json.dumps({k: rep[k] for k in ("label", "select", "effects", "best_set",
                                                                       "claims", "min_effect", "anova_note",
                                                                       "counts", "diagnostics", "seeds_planned")},
                                                 indent=1, default=str))  # fmt: skip
    setup = ftables.setup_rows(a)  # parses every trial's config: once, for both pages
    (out / "summary.md").write_text(markdown(a, figs, best, setup))
    (out / "index.html").write_text(page(a, figs, best, tables, setup, live, reload_s))
    return rep


# ---------------------------------------------------------------- best trial on the test set


def test_confusion(ckpt_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Confusion matrix and per-class accuracy of a checkpoint on the test set (evaluated only)."""
    import torch

    from . import checkpoint, data
    from .model import build

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
    return {"trial_id": str(tj.get("trial_id", Path(ckpt_dir).name)), "ckpt": str(ckpt_dir),
            "classes": list(data.CLASSES), "confusion": cm.tolist(), "per_class_acc": per_class.tolist(),
            "test_acc": float(cm.diagonal().sum() / cm.sum()), "n_test": int(cm.sum())}  # fmt: skip


# ---------------------------------------------------------------- the pages: hiplot.html, summary.md, index.html


def write_hiplot(exp: Any, path: Path, label: str = "") -> Path:
    """A standalone HiPlot page of exp; with label, a banner naming the study and linking the report."""
    page = exp.to_html()
    if label:  # the study and its caveat on this page too ("quick: indicative only")
        banner = (f"<div style='font:14px system-ui,sans-serif;padding:6px 12px;background:#fff4e0;"
                  f"border-bottom:1px solid #f0b45b'>{html.escape(label)}: {len(exp.datapoints)} trials, one row "
                  "each. <a href='index.html'>Back to the report</a></div>")  # fmt: skip
        page = page.replace("<title>HiPlot</title>", f"<title>HiPlot: {html.escape(label)}</title>", 1)
        page = page.replace('<body style="margin:0px">', f'<body style="margin:0px">{banner}', 1)
    path.write_text(page)
    return path


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
}


def markdown(a: Analysis, figs: dict[str, str], best: dict | None, setup: list[list[str]] | None = None) -> str:
    parts = [f"# {a.label}", "", ftables.counts_line(a), ""]
    if a.warnings:
        parts += ["## Limits", "", *[f"- **{w}**" for w in a.warnings], ""]
    parts += ["## Findings", "", *[f"- {f}" for f in a.findings or ["No comparisons could be made."]], ""]
    if "forest" in figs:
        parts += [f"![{FIG_TITLES['forest']}]({figs['forest']})", ""]
    if a.claims:
        parts += ["## The original's claims", "", _md_table(ftables.CLAIM_HEADER, ftables.claim_rows(a)), ""]
    if setup:
        parts += ["## Setup", "", _md_table(["", "median over complete trials"], setup), ""]
    if a.design == "arms":
        parts += ["## Arms", "", _md_table(["arm", "changes"], farms.definition_rows(a)), ""]
        parts += ["## Arms ranked", "", _md_table(farms.ranked_header(a), farms.ranked_rows(a)), ""]
        parts += ["## Each arm vs the baseline (contrasts of the fitted model)", "",
                  _md_table(farms.effect_header(a), farms.effect_rows(a)), ""]  # fmt: skip
    else:
        parts += ["## Cells", "", _md_table(ftables.cell_header(a), ftables.cell_rows(a)), ""]
        parts += ["## Effects (contrasts of the fitted model)", "", a.model_note, "",
                  _md_table(ftables.effect_header(a), ftables.effect_rows(a)), ""]
    parts += ["## ANOVA", "", a.anova_note, ""]
    if a.anova is not None:
        parts += [_md_table(ftables.ANOVA_HEADER, ftables.anova_rows(a)), ""]
    parts += diagnostics_md(a, figs)
    parts += plan_md(a)
    if best:
        parts += [f"## Best trial {best['trial_id']} on the test set", "",
                  f"test accuracy {100 * best['test_acc']:.2f}% on {best['n_test']} images", "",
                  _md_table(["class", "accuracy %"], [[c, f"{100 * v:.1f}"] for c, v in
                            zip(best["classes"], best["per_class_acc"], strict=True)]), ""]  # fmt: skip
    parts += [f"![{FIG_TITLES[k]}]({v})" for k, v in figs.items() if k not in ("residuals", "forest")]  # placed above
    return "\n".join(parts) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


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
    return (f"<figure><img src='{_h(figs[key])}' alt='{_h(FIG_TITLES[key])}'>"
            f"<figcaption>{_h(FIG_TITLES[key])}</figcaption></figure>")  # fmt: skip


def page(a: Analysis, figs: dict[str, str], best: dict | None, tables: dict[str, str],
         setup: list[list[str]] | None = None, live: str | None = None, reload_s: int = 10) -> str:  # fmt: skip
    quick = "indicative only" in a.label
    badge = f' <span class="badge">{_h(a.budget)}{": indicative only" if quick else ""}</span>'
    # a live page reloads itself; the final page (live None) has no refresh, so an open tab stops there
    reload = f"<meta http-equiv='refresh' content='{int(reload_s)}'>" if live else ""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{reload}<title>{_h(a.label)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{_h(a.study)} study{badge}</h1>",
             f"<p class='warn' id='live'>{_h(live)}</p>" if live else "",
             f"<p class='muted'>{_h(ftables.counts_line(a))}</p>",
             "<nav><a href='hiplot.html'>HiPlot: every trial</a><a href='summary.md'>summary.md</a>"
             + "".join(f"<a href='{_h(v)}'>{_h(v)}</a>" for v in tables.values()) + "</nav>"]  # fmt: skip
    if a.warnings:
        parts.append("<div class='warn'><b>Limits of this study</b><ul>"
                     + "".join(f"<li>{_h(w)}</li>" for w in a.warnings) + "</ul></div>")  # fmt: skip
    parts.append("<h2>Findings</h2><ul>" + "".join(f"<li>{_h(f)}</li>" for f in a.findings
                 or ["No comparisons could be made."]) + "</ul>")  # fmt: skip
    parts.append(_figure(figs, "forest"))
    if a.claims:
        parts.append("<h2>The original's claims</h2><p class='muted'>Each claim of the study file checked against "
                     "the effects above (same fit, same Holm family) or the best set.</p>"
                     + _html_table(ftables.CLAIM_HEADER, ftables.claim_rows(a)))  # fmt: skip
    if setup:
        parts.append("<h2>Setup</h2>" + _html_table(["", "median over complete trials"], setup))
    if a.design == "arms":
        parts += _arms_html(a, figs)
    else:
        parts += [_figure(figs, k) for k in ("main_effects", "interactions")]
        parts.append(f"<h2>Cells ranked by {_h(a.select)}</h2>"
                     + _html_table(ftables.cell_header(a), ftables.cell_rows(a)))  # fmt: skip
        parts += [_figure(figs, k) for k in ("cells", "curves")]
        parts.append("<h2>Effects (contrasts of the fitted model)</h2><p class='muted'>Each comparison: the "
                     "difference of estimated marginal means (level minus baseline level) of one OLS fit over every "
                     "complete trial; interactions: the difference of those differences; 95% CIs from the "
                     f"model's residual. {_h(a.model_note)}</p>"
                     + _html_table(ftables.effect_header(a), ftables.effect_rows(a), good_col=6))  # fmt: skip
    parts.append(f"<h2>ANOVA</h2><p class='muted'>{_h(a.anova_note)}</p>")
    if a.anova is not None:
        parts.append(_html_table(ftables.ANOVA_HEADER, ftables.anova_rows(a)))
    parts.append(diagnostics_html(a, figs))
    parts += plan_html(a)
    if best:
        parts.append(f"<h2>Best trial on the test set</h2><p>Trial <code>{_h(best['trial_id'])}</code> (chosen on "
                     f"{_h(a.select)}): test accuracy {100 * best['test_acc']:.2f}% on {best['n_test']} images.</p>"
                     + _figure(figs, "confusion")
                     + _html_table(["class", "accuracy %"], [[c, f"{100 * v:.1f}"] for c, v in
                                   zip(best["classes"], best["per_class_acc"], strict=True)]))  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)


def _arms_html(a: Analysis, figs: dict[str, str]) -> list[str]:
    """An arms study's sections: effects figure, each arm vs the baseline, the ranked arms, definitions."""
    return [_figure(figs, "arm_effects"),
            "<h2>Each arm vs the baseline (contrasts of the fitted model)</h2><p class='muted'>Each arm minus the "
            f"baseline in one OLS fit arm + seed block ({_h(a.model_note)}). Holm over the arms, "
            f"separately for {_h(a.select)} (selection) and test accuracy (evaluated only); the verdict is on "
            f"{_h(a.select)}.</p>" + _html_table(farms.effect_header(a), farms.effect_rows(a), good_col=8),
            f"<h2>Arms ranked by {_h(a.select)}</h2>" + _html_table(farms.ranked_header(a), farms.ranked_rows(a)),
            _figure(figs, "cells"), _figure(figs, "curves"),
            "<h2>Arms: what each changes from the baseline</h2>"
            + _html_table(["arm", "changes"], farms.definition_rows(a))]  # fmt: skip


# ---------------------------------------------------------------- diagnostics (fmlab.diagnostics)

FIG_TITLES["residuals"] = "The fitted model's residuals: against the fitted values, and a normal QQ plot"
DIAG_READ = ("A p-value under 0.05 puts the assumption in doubt (with many trials these tests flag small "
             "departures too): read the CIs with care; when the spread grows with the mean, try "
             '[analysis] transform = "log".')  # fmt: skip


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


def diagnostics_html(a: Analysis, figs: dict[str, str]) -> str:
    d = a.diagnostics
    if d is None:
        return "<h2>Diagnostics</h2><p class='muted'>No fitted model: nothing to check.</p>"
    parts = ["<h2>Diagnostics</h2>", f"<p class='muted'>{_h(DIAG_READ)}</p>",
             _html_table(["check", "result"], ftables.diagnostic_rows(a)), _figure(figs, "residuals"),
             f"<p>Seed-level check: {_h(d.seed_note)}.</p>"]  # fmt: skip
    if len(d.seed_check):
        parts.append(_html_table(ftables.seed_header(a), ftables.seed_rows(a)))
    items = [f"<li><b>{_h(s)}</b></li>" for s in d.disagreements] + [f"<li>{_h(n)}</li>" for n in d.notes]
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    return "\n".join(parts)


# ---------------------------------------------------------------- seeds planned (fmlab.power)


def plan_md(a: Analysis) -> list[str]:
    if a.plan is None:
        return []
    return ["## Seeds planned", "", *[f"- {s}" for s in ftables.plan_sentences(a)], "",
            _md_table(ftables.PLAN_HEADER, ftables.plan_rows(a)), ""]  # fmt: skip


def plan_html(a: Analysis) -> list[str]:
    if a.plan is None:
        return []
    return ["<h2>Seeds planned</h2><ul>" + "".join(f"<li>{_h(s)}</li>" for s in ftables.plan_sentences(a)) + "</ul>"
            + _html_table(ftables.PLAN_HEADER, ftables.plan_rows(a))]  # fmt: skip
