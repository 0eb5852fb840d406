"""A study's report: index.html (offline, one folder), summary.md, PNG figures, hiplot.html, CSV tables.

`build_report(trials, epochs, meta, out_dir, best_ckpt)` takes the DataFrame contract documented on
`fmlab.analysis.driver.analyse` and returns a JSON-safe dict (paths, counts, findings, warnings, top cells)
for the CLI to print. Figures are PNG files next to index.html, referenced by relative path, so the
folder can be opened from disk, copied or zipped; nothing is fetched from the network. Each file has its
writer: the tables' rows of strings and the CSV tables in fmlab.report.tables, the returned dict and
summary.json in fmlab.report.summary_json, summary.md in fmlab.report.summary_md, index.html in
fmlab.report.html, hiplot.html in fmlab.report.hiplot_page, the figures in fmlab.report.figures_trials and
fmlab.report.figures_fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fmlab.analysis.driver import analyse
from fmlab.analysis.record import Analysis
from fmlab.report import answer as fanswer
from fmlab.report import figures_fit, figures_trials, summary_json
from fmlab.report import tables as ftables
from fmlab.report.hiplot_page import hiplot_experiment, write_hiplot
from fmlab.report.html import page
from fmlab.report.summary_md import markdown


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
    figs = draw_figures(a, out)
    best = None
    if best_ckpt is not None:
        best = test_confusion(best_ckpt)
        figs["confusion"] = figures_trials.confusion(best, a.label, out / "confusion.png").name
    write_hiplot(hiplot_experiment(trials, meta), out / "hiplot.html", a.label)
    tables = ftables.write_tables(a, out)
    rep = summary_json.report_dict(a, out, figs, best, tables)
    limits = mixed_precision(a.complete) + other_limits(a.warnings, fanswer.caveated_terms(rep))
    summary_json.write_summary(rep, out)
    setup = ftables.setup_rows(a)  # parses every trial's config: once, for both pages
    (out / "summary.md").write_text(markdown(a, figs, best, setup, rep["answer"], limits))
    (out / "index.html").write_text(page(a, figs, best, tables, setup, live, reload_s, rep["answer"], limits))
    return rep


def draw_figures(a: Analysis, out: Path) -> dict[str, str]:
    """The study's PNG figures in out, {name: file name}: the figures a design has that had data to draw."""
    plots = [("cells", figures_trials.cells), ("curves", figures_trials.curves)]
    if a.design == "arms":
        plots.append(("arm_effects", figures_fit.arm_effects))
    else:
        plots += [
            ("forest", figures_fit.forest),
            ("main_effects", figures_fit.main_effects),
            ("interactions", figures_fit.interactions),
        ]
    plots.append(("residuals", figures_fit.residuals))
    figs: dict[str, str] = {}
    for name, fn in plots:
        path = fn(a, out / f"{name}.png")
        if path:
            figs[name] = path.name
    return figs


# ---------------------------------------------------------------- best trial on the test set


def test_confusion(ckpt_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Confusion matrix and per-class accuracy of a checkpoint on the test set (evaluated only), through the
    test-time views its trial was tested with (train.tta, train.tta_shifts), so its accuracy is the trial's."""
    import torch

    from fmlab.data import idx as data
    from fmlab.model.nets import build
    from fmlab.training import checkpoint
    from fmlab.training.evaluation import Views, view_logp

    cfg, weights, tj = checkpoint.load_trial(ckpt_dir)
    net = build(cfg.model)
    net.load_state_dict(weights)
    net.eval()
    ds = data.load(cfg.data, data_dir)
    x, y = data.normalize(ds.test.x, ds.mean, ds.std), ds.test.y
    views = Views.of(cfg)
    with torch.no_grad():
        pred = torch.cat([view_logp(net, x[i : i + 1000], views).argmax(1) for i in range(0, len(y), 1000)])
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


# ---------------------------------------------------------------- the limits the pages list


def mixed_precision(complete: pd.DataFrame) -> list[str]:
    """One limit when the complete trials trained in more than one precision (train.precision = "auto" picks
    per machine), saying how the fit takes it: as part of the seed block when every seed trained in one
    precision (sweeps run seed by seed), else not at all (precision is not a factor of the design)."""
    if "precision" not in complete or complete["precision"].dropna().nunique() < 2:
        return []
    col = complete["precision"].fillna("unknown")
    counts = ", ".join(f"{p} {n}" for p, n in col.value_counts().items())
    per_seed = complete.assign(p=col).groupby("seed")["p"].nunique()
    mixed = [str(s) for s, n in per_seed.items() if n > 1]
    how = (
        "each seed trained in one precision, so the fit's seed block takes precision's shift as a block"
        if not mixed
        else f"seed(s) {', '.join(mixed)} mix precisions, so the fit does not take precision as a block (it is "
        "not a factor of the design; bf16 autocast matched fp32's accuracy over seeds, studies/best.toml) and "
        "any shift between them lands in the residuals"
    )
    return [f"Mixed precision: trials trained in {counts} (train.precision auto picks per machine); {how}."]


def other_limits(warnings: list[str], caveated: list[str]) -> list[str]:
    """The study's limits less the seed-paired caveats that the answer states beside their effects."""
    said = tuple(f"Verdict depends on the model: {t}: " for t in caveated)  # fmlab.analysis.diagnostics' words
    return [w for w in warnings if not (said and w.startswith(said))]
