"""A study's report: index.html (offline, one folder), summary.md, PNG figures, hiplot.html, CSV tables.

`build_report(trials, epochs, meta, out_dir, best_ckpt)` takes the DataFrame contract documented on
`fmlab.analysis.analyse` and returns a JSON-safe dict (paths, counts, findings, warnings, top cells)
for the CLI to print. Figures are PNG files next to index.html, referenced by relative path, so the
folder can be opened from disk, copied or zipped; nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import arms as farms
from . import figures
from . import power as fpower
from .analysis import Analysis, analyse, fmt_effect, fmt_p, unit
from .stats import json_safe

TRIAL_COLS = ("val_acc", "val_loss", "test_acc", "test_loss", "epochs", "best_epoch", "train_s", "total_s", "n_params")


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
    write_hiplot(hiplot_experiment(trials, meta), out / "hiplot.html", a.label)
    tables = write_tables(a, out)
    rep = summary_dict(a, out, figs, best, tables)
    rep["best_set"] = best_set_dict(a)
    rep["min_effect"] = a.min_effect
    rep["claims"] = [{k: json_safe(v) for k, v in c.items()} for c in a.claims]
    rep["diagnostics"] = a.diagnostics.to_dict() if a.diagnostics is not None else None
    rep["seeds_planned"] = a.plan
    (out / "summary.json").write_text(json.dumps({k: rep[k] for k in ("label", "select", "effects", "best_set",
                                                                       "claims", "min_effect", "anova_note",
                                                                       "counts", "diagnostics", "seeds_planned")},
                                                 indent=1, default=str))  # fmt: skip
    setup = setup_rows(a)  # parses every trial's config: once, for both pages
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


# ---------------------------------------------------------------- HiPlot


def hiplot_experiment(trials: pd.DataFrame, meta: dict[str, Any]) -> Any:
    """The study's hip.Experiment (one row per trial, every state), coloured by the selection metric;
    the report writes it to hiplot.html and fmlab.api's StudyHandle.hiplot() returns it."""
    from .analysis import level_label

    levels = {f: [level_label(v) for v in lv] for f, lv in meta["factors"].items()}
    bools = [f for f, lv in levels.items() if set(lv) == {"true", "false"}]
    return _experiment(trials, list(levels), meta.get("select", "val_acc"), bools)


def _experiment(trials: pd.DataFrame, factors: list[str], color_by: str, bools: list[str]) -> Any:
    """Factors with non-numeric levels (bool, str), the state and the seed are declared categorical;
    numeric factors keep a numeric, ordered axis. bools: from the study's levels (the store may hand
    booleans over as 0/1)."""
    import hiplot as hip

    from .analysis import level_label

    def numeric(c: str) -> bool:
        vals = trials[c].dropna()
        return bool(len(vals)) and all(isinstance(v, (int, float, np.integer, np.floating))
                                       and not isinstance(v, (bool, np.bool_)) for v in vals)  # fmt: skip

    cat = [c for c in factors if c in bools or not numeric(c)]
    metrics = [c for c in TRIAL_COLS if c in trials]
    rows = []
    for _, r in trials.iterrows():
        row: dict[str, Any] = {}
        for c in ["id", "state", "seed", *factors, *metrics]:
            v = r.get(c)
            if isinstance(v, np.generic):
                v = v.item()
            if c in cat or c == "state":
                v = level_label(v, boolean=c in bools)
            elif v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
                v = None  # JSON has no NaN; HiPlot shows a missing value
            elif isinstance(v, float):
                v = round(v, 6)
            row[c] = v
        rows.append(row)
    exp = hip.Experiment.from_iterable(rows)
    for c in ("state", "seed", *cat):
        exp.parameters_definition[c].type = hip.ValueType.CATEGORICAL
    for c in (c for c in factors if c not in cat):  # HiPlot would guess categorical for few distinct values
        exp.parameters_definition[c].type = hip.ValueType.NUMERIC
    if color_by in metrics:
        exp.colorby = color_by
    order = ["state", "seed", *factors, *metrics][::-1]  # HiPlot lays out this list right to left
    exp.display_data(hip.Displays.PARALLEL_PLOT).update({"hide": ["uid", "id", "from_uid"], "order": order})
    exp.display_data(hip.Displays.TABLE).update({"hide": ["uid", "from_uid"], "order_by": [["id", "asc"]]})
    return exp


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


# ---------------------------------------------------------------- tables, dict, markdown, html


def write_tables(a: Analysis, out: Path) -> dict[str, str]:
    tables = {"cells": a.cells, "effects": a.effects, "interactions": a.interactions,
              "test_effects": a.test_effects}  # fmt: skip
    if a.anova is not None:
        tables["anova"] = a.anova.rename_axis("term").reset_index()
    names = {}
    for k, df in tables.items():
        if len(df):
            df.to_csv(out / f"{k}.csv", index=False)
            names[k] = f"{k}.csv"
    return names


def best_set_dict(a: Analysis) -> dict[str, Any] | None:
    """The best cell, the cells not distinguishable from it, the method and its note (JSON-safe)."""
    if a.best is None:
        return None
    return {"best": a.best["best"], "set": a.best["set"], "method": a.best["method"], "note": a.best["note"],
            "critical_value": json_safe(a.best["critical"]), "df": json_safe(a.best["df"])}




def summary_dict(a: Analysis, out: Path, figs: dict[str, str], best: dict | None,
                 tables: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    top = []
    for _, r in a.cells.head(10).iterrows():
        top.append({k: json_safe(r[k]) for k in a.cells.columns if not isinstance(r[k], pd.Categorical)})
    effects = []
    for tbl in (a.effects, a.interactions, a.test_effects):
        for _, r in tbl.iterrows():
            effects.append({k: json_safe(r.get(k)) for k in ("kind", "term", "estimate", "lo", "hi", "df", "n_seeds",
                                                             "p", "p_holm", "p_tost_holm", "verdict")}
                           | {"metric": r.get("metric", a.select)})  # fmt: skip
    return {
        "label": a.label, "select": a.select, "out_dir": str(out), "index": str(out / "index.html"),
        "summary_md": str(out / "summary.md"), "hiplot": str(out / "hiplot.html"),
        "figures": {k: str(out / v) for k, v in figs.items()}, "tables": {k: str(out / v) for k, v in tables.items()},
        "counts": a.counts, "warnings": a.warnings, "findings": a.findings, "effects": effects,
        "top_cells": [{k: (str(v) if k in a.factors else v) for k, v in c.items()} for c in top],
        "failed": [{k: json_safe(v) for k, v in f.items()} for f in a.failed], "missing_cells": a.missing_cells,
        "anova_note": a.anova_note,
        "design": a.design, "arms": a.arms,
        "cells_table": {"header": cell_header(a), "rows": cell_rows(a, 10)} if a.design == "grid" else
        {"header": farms.ranked_header(a), "rows": farms.ranked_rows(a)},
        "effects_table": {"header": effect_header(a), "rows": effect_rows(a)} if a.design == "grid" else
        {"header": farms.effect_header(a), "rows": farms.effect_rows(a)},
        "best": None if best is None else {k: best[k] for k in ("trial_id", "ckpt", "test_acc", "n_test", "classes",
                                                                  "per_class_acc")},
    }  # fmt: skip


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
        rows.append([str(r["rank"]), r["cell"], str(r["n"]), _ci(r, a.select),
                     f"{k * std:.{d}f}" if np.isfinite(std) else "n/a", _ci(r, "test_acc")])  # fmt: skip
    return rows


def cell_header(a: Analysis) -> list[str]:
    _, u = unit(a.select, level=True)
    return ["rank", "cell", "n", f"{a.select} mean [95% CI]{u}", "std", "test_acc mean [95% CI] %"]


def effect_rows(a: Analysis) -> list[list[str]]:
    rows = []
    for tbl in (a.effects, a.interactions):
        for _, r in tbl.iterrows():
            ci = f"[{fmt_effect(r['lo'], a.select, False)}, {fmt_effect(r['hi'], a.select, False)}]"
            rows.append([r["term"], fmt_effect(r["estimate"], a.select), ci, str(r["n_seeds"]),
                         fmt_p(r["p"]).lstrip("= "), fmt_p(r["p_holm"]).lstrip("= "), r["verdict"]])  # fmt: skip
    return rows


def effect_header(a: Analysis) -> list[str]:
    _, u = unit(a.select)
    return ["comparison", f"effect on {a.select}{u}", "95% CI", "seeds", "p", "Holm p", "verdict"]


def anova_rows(a: Analysis) -> list[list[str]]:
    if a.anova is None:
        return []
    f = lambda v, d: "" if not np.isfinite(v) else f"{v:.{d}g}"
    return [[str(i), f(r["df"], 3), f(r["sum_sq"], 4), f(r["F"], 4), fmt_p(r["PR(>F)"]).lstrip("= "),
             f(100 * r["share_ss"], 3)] for i, r in a.anova.iterrows()]  # fmt: skip


ANOVA_HEADER = ["term", "df", "sum of squares", "F", "p", "% of SS"]
CLAIM_HEADER = ["claim", "tested as", "verdict", "evidence"]


def claim_rows(a: Analysis) -> list[list[str]]:
    """Each claim: its text, what it was tested as, the verdict and why (estimate and CI, or the best set)."""
    rows = []
    for c in a.claims:
        if c["kind"] == "best":
            what = "in the best set: " + ", ".join(f"{k}={v}" for k, v in c["cell"].items())
        else:
            what = f"{c['kind']}{' (' + c['direction'] + ')' if c.get('direction') else ''}: {c['term']}"
        ev = c["why"]
        if "estimate" in c:
            _, u = unit(a.select)
            ev += (f"; {fmt_effect(c['estimate'], a.select)}{u} [{fmt_effect(c['lo'], a.select, False)}, "
                   f"{fmt_effect(c['hi'], a.select, False)}], Holm p {fmt_p(c['p_holm'])}")  # fmt: skip
        rows.append([c["text"], what, c["verdict"], ev])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows])


def setup_rows(a: Analysis) -> list[list[str]]:
    """What every complete trial shares: the config keys set away from fmlab's defaults, parameters,
    epochs and training time (median and range over trials) -- the facts a results table quotes."""
    import json

    from .config import Config, from_dict

    c = a.complete
    if c.empty or "config" not in c:
        return []
    flats = [from_dict(json.loads(js)).resolved().flat() for js in c["config"]]
    default = Config().resolved().flat()
    shared = {k: v for k, v in flats[0].items() if k != "seed" and all(f[k] == v for f in flats)}
    changed = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                        for k, v in shared.items() if v != default[k])  # fmt: skip
    rows = [["config shared by every trial (keys set away from the defaults)", changed or "(defaults)"]]

    def span(col: str, fmt: str) -> str:
        x = pd.to_numeric(c[col], errors="coerce").dropna() if col in c else pd.Series(dtype=float)
        if x.empty:
            return "n/a"
        return f"{x.median():{fmt}}" + (f" (range {x.min():{fmt}} to {x.max():{fmt}})" if x.min() != x.max() else "")

    rows += [["parameters", span("n_params", ",.0f")], ["epochs per trial", span("epochs", ".0f")],
             ["training time per trial, s (whole trial: data, epochs, validation, test)", span("total_s", ".0f")],
             ["training images/s", span("train_images_per_s", ",.0f")]]  # fmt: skip
    return rows


def _counts_line(a: Analysis) -> str:
    c = a.counts
    return (f"{c['complete']} of {c['planned']} planned trials complete ({c['failed']} failed, {c['waiting']} "
            f"waiting, {c['running']} running, {c['missing']} missing); {c['cells_complete']} of "
            f"{c['cells_planned']} cells, {c['seeds']} seed(s). Selection metric: {a.select} (validation split); "
            "test accuracy is evaluated only, never used to choose.")  # fmt: skip


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
    parts = [f"# {a.label}", "", _counts_line(a), ""]
    if a.warnings:
        parts += ["## Limits", "", *[f"- **{w}**" for w in a.warnings], ""]
    parts += ["## Findings", "", *[f"- {f}" for f in a.findings or ["No comparisons could be made."]], ""]
    if "forest" in figs:
        parts += [f"![{FIG_TITLES['forest']}]({figs['forest']})", ""]
    if a.claims:
        parts += ["## The original's claims", "", _md_table(CLAIM_HEADER, claim_rows(a)), ""]
    if setup:
        parts += ["## Setup", "", _md_table(["", "median over complete trials"], setup), ""]
    if a.design == "arms":
        parts += ["## Arms", "", _md_table(["arm", "changes"], farms.definition_rows(a)), ""]
        parts += ["## Arms ranked", "", _md_table(farms.ranked_header(a), farms.ranked_rows(a)), ""]
        parts += ["## Each arm vs the baseline (contrasts of the fitted model)", "",
                  _md_table(farms.effect_header(a), farms.effect_rows(a)), ""]  # fmt: skip
    else:
        parts += ["## Cells", "", _md_table(cell_header(a), cell_rows(a)), ""]
        parts += ["## Effects (contrasts of the fitted model)", "", a.model_note, "",
                  _md_table(effect_header(a), effect_rows(a)), ""]
    parts += ["## ANOVA", "", a.anova_note, ""]
    if a.anova is not None:
        parts += [_md_table(ANOVA_HEADER, anova_rows(a)), ""]
    parts += diagnostics_md(a, figs)
    parts += plan_md(a)
    if best:
        parts += [f"## Best trial {best['trial_id']} on the test set", "",
                  f"test accuracy {100 * best['test_acc']:.2f}% on {best['n_test']} images", "",
                  _md_table(["class", "accuracy %"], [[c, f"{100 * v:.1f}"] for c, v in
                            zip(best["classes"], best["per_class_acc"], strict=True)]), ""]  # fmt: skip
    parts += [f"![{FIG_TITLES[k]}]({v})" for k, v in figs.items() if k not in ("residuals", "forest")]  # placed above
    return "\n".join(parts) + "\n"


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
             f"<p class='muted'>{_h(_counts_line(a))}</p>",
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
                     + _html_table(CLAIM_HEADER, claim_rows(a)))  # fmt: skip
    if setup:
        parts.append("<h2>Setup</h2>" + _html_table(["", "median over complete trials"], setup))
    if a.design == "arms":
        parts += _arms_html(a, figs)
    else:
        parts += [_figure(figs, k) for k in ("main_effects", "interactions")]
        parts.append(f"<h2>Cells ranked by {_h(a.select)}</h2>" + _html_table(cell_header(a), cell_rows(a)))
        parts += [_figure(figs, k) for k in ("cells", "curves")]
        parts.append("<h2>Effects (contrasts of the fitted model)</h2><p class='muted'>Each comparison: the "
                     "difference of estimated marginal means (level minus baseline level) of one OLS fit over every "
                     "complete trial; interactions: the difference of those differences; 95% CIs from the "
                     f"model's residual. {_h(a.model_note)}</p>"
                     + _html_table(effect_header(a), effect_rows(a), good_col=6))  # fmt: skip
    parts.append(f"<h2>ANOVA</h2><p class='muted'>{_h(a.anova_note)}</p>")
    if a.anova is not None:
        parts.append(_html_table(ANOVA_HEADER, anova_rows(a)))
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


def diagnostic_rows(a: Analysis) -> list[list[str]]:
    """The residual tests and outliers as (check, result) rows."""
    d = a.diagnostics
    if d is None:
        return []
    outl = "; ".join(f"{o['id']} ({o['cell']}, seed {o['seed']}, {o['student']:+.1f})" for o in d.outliers)
    return [["model", d.model], ["Shapiro-Wilk (normal residuals)", f"p {fmt_p(d.shapiro_p)} (n = {len(d.residuals)})"],
            [f"Brown-Forsythe (equal spread; {d.bf_by})", f"p {fmt_p(d.bf_p)}"],
            ["trials with |externally studentized residual| > 4", outl or "none"]]  # fmt: skip


def seed_header(a: Analysis) -> list[str]:
    u = unit(a.select)[1]
    return ["comparison", f"model effect{u}", "model Holm p", f"seed-paired effect{u}", "95% CI", "df", "Holm p",
            "agree"]  # fmt: skip


def seed_rows(a: Analysis) -> list[list[str]]:
    d = a.diagnostics
    if d is None or not len(d.seed_check):
        return []
    m = a.select
    return [[r["term"], fmt_effect(r["model_estimate"], m), fmt_p(r["model_p_holm"]).lstrip("= "),
             fmt_effect(r["estimate"], m), f"[{fmt_effect(r['lo'], m, False)}, {fmt_effect(r['hi'], m, False)}]",
             str(int(r["df"])), fmt_p(r["p_holm"]).lstrip("= "), "yes" if r["agree"] else "NO"]
            for _, r in d.seed_check.iterrows()]  # fmt: skip


def diagnostics_md(a: Analysis, figs: dict[str, str]) -> list[str]:
    d = a.diagnostics
    if d is None:
        return ["## Diagnostics", "", "No fitted model: nothing to check.", ""]
    parts = ["## Diagnostics", "", DIAG_READ, "", _md_table(["check", "result"], diagnostic_rows(a)), ""]
    if "residuals" in figs:
        parts += [f"![{FIG_TITLES['residuals']}]({figs['residuals']})", ""]
    parts += [f"Seed-level check: {d.seed_note}.", ""]
    if len(d.seed_check):
        parts += [_md_table(seed_header(a), seed_rows(a)), ""]
    parts += [*[f"- **{s}**" for s in d.disagreements], *[f"- {n}" for n in d.notes]]
    return parts + ([""] if d.disagreements or d.notes else [])


def diagnostics_html(a: Analysis, figs: dict[str, str]) -> str:
    d = a.diagnostics
    if d is None:
        return "<h2>Diagnostics</h2><p class='muted'>No fitted model: nothing to check.</p>"
    parts = ["<h2>Diagnostics</h2>", f"<p class='muted'>{_h(DIAG_READ)}</p>",
             _html_table(["check", "result"], diagnostic_rows(a)), _figure(figs, "residuals"),
             f"<p>Seed-level check: {_h(d.seed_note)}.</p>"]  # fmt: skip
    if len(d.seed_check):
        parts.append(_html_table(seed_header(a), seed_rows(a)))
    items = [f"<li><b>{_h(s)}</b></li>" for s in d.disagreements] + [f"<li>{_h(n)}</li>" for n in d.notes]
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    return "\n".join(parts)


# ---------------------------------------------------------------- seeds planned (fmlab.power)

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
        need = "" if e["verdict"] != "undecided" or e["estimate"] is None else \
            (f"~{e['seeds_needed']} ({e['route']})" if e["seeds_needed"] else f"more than {a.plan['cap']}")  # fmt: skip
        rows.append([e["term"], fmt_effect(nan(e["estimate"]), a.select), e["verdict"],
                     fmt_effect(nan(e["mde_now"]), a.select, False), need])  # fmt: skip
    return rows


def plan_md(a: Analysis) -> list[str]:
    if a.plan is None:
        return []
    return ["## Seeds planned", "", *[f"- {s}" for s in plan_sentences(a)], "",
            _md_table(PLAN_HEADER, plan_rows(a)), ""]  # fmt: skip


def plan_html(a: Analysis) -> list[str]:
    if a.plan is None:
        return []
    return ["<h2>Seeds planned</h2><ul>" + "".join(f"<li>{_h(s)}</li>" for s in plan_sentences(a)) + "</ul>"
            + _html_table(PLAN_HEADER, plan_rows(a))]  # fmt: skip
