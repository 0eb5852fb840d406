"""The report's figures of the factors' and arms' effects and of the fitted model (Agg, PNG): main effects and
interactions (means over seeds), each arm against the baseline, the forest plot of the model's effects, its
residuals. Each takes an Analysis and a path; returns the path, or None when there is nothing to draw.
Every figure carries the study label (fmlab.report.plotting.save)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from fmlab.analysis.cells import t_ci
from fmlab.analysis.formatting import short_names, unit
from fmlab.analysis.record import Analysis
from fmlab.report.plotting import pyplot, save


def _levels_by_seed(df: pd.DataFrame, metric: str, cols: list[str]) -> pd.DataFrame:
    """Mean over seeds of per-seed means at each level combination of cols, with the 95% CI."""
    per_seed = df.groupby(["seed", *cols], observed=True)[metric].mean().reset_index()
    rows = []
    for key, g in per_seed.groupby(cols, observed=True, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(cols, key, strict=True)), **t_ci(g[metric])})
    return pd.DataFrame(rows)


def main_effects(a: Analysis, path: Path) -> Path | None:
    d = a.complete
    if not len(d) or not a.factors or not a.validated:  # data.val_size = 0: no selection metric to draw
        return None
    plt = pyplot()
    short = short_names(list(a.factors))
    k, u = unit(a.select, level=True)
    fig, axes = plt.subplots(1, len(a.factors), figsize=(3.2 * len(a.factors), 3.6), sharey=True, squeeze=False)
    for ax, (f, levels) in zip(axes[0], a.factors.items(), strict=True):
        t = _levels_by_seed(d, a.select, [f]).set_index(f).reindex(levels)
        x = np.arange(len(levels))
        err = k * np.vstack([t["mean"] - t["lo"], t["hi"] - t["mean"]])
        ax.errorbar(x, k * t["mean"], yerr=np.where(np.isfinite(err), err, 0), fmt="o-", capsize=4, color="#2b5d9c")
        base = a.baseline.get(f)
        ax.set_xticks(x, [f"{lv}\n(baseline)" if lv == base else lv for lv in levels], fontsize=9)
        ax.set_title(short[f], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{a.select}{u}")
    return save(fig, path, a.label)


def interactions(a: Analysis, path: Path) -> Path | None:
    pairs = list(itertools.combinations(a.factors, 2))
    d = a.complete
    if not pairs or not len(d):
        return None
    plt = pyplot()
    short = short_names(list(a.factors))
    k, u = unit(a.select, level=True)
    ncol = min(3, len(pairs))
    nrow = -(-len(pairs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False, sharey=True)
    for ax, (fa, fb) in zip(axes.flat, pairs, strict=False):
        t = _levels_by_seed(d, a.select, [fa, fb])
        x = {lv: i for i, lv in enumerate(a.factors[fa])}
        for j, lb in enumerate(a.factors[fb]):
            g = t[t[fb] == lb]
            g = g.assign(_x=g[fa].map(x).astype(float)).sort_values("_x")
            err = k * np.vstack([g["mean"] - g["lo"], g["hi"] - g["mean"]])
            ax.errorbar(
                g["_x"] + 0.04 * j,
                k * g["mean"],
                yerr=np.where(np.isfinite(err), err, 0),
                fmt="o-",
                capsize=3,
                label=f"{short[fb]}={lb}",
            )
        ax.set_xticks(range(len(x)), list(x), fontsize=9)
        ax.set_xlabel(short[fa])
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(pairs) :]:
        ax.axis("off")
    for row in axes:
        row[0].set_ylabel(f"{a.select}{u}")
    return save(fig, path, a.label)


def arm_effects(a: Analysis, path: Path) -> Path | None:
    """Arms study: each arm minus the baseline (mean over seeds of the paired differences, 95% CI), on the
    selection metric and on test accuracy; green/red = distinguishable better/worse after Holm."""
    from fmlab.analysis.ranking import higher_is_better

    eff = a.effects
    if not len(eff) or not np.isfinite(eff["estimate"]).any():
        return None
    plt = pyplot()
    sign = 1 if higher_is_better(a.select) else -1
    order = eff.assign(_k=eff["estimate"] * sign).sort_values("_k", na_position="first")  # best on top
    panels = [(a.select, order)]
    if len(a.test_effects):
        panels.append(("test_acc", a.test_effects.set_index("arm").reindex(order["arm"]).reset_index()))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels), 0.38 * len(order) + 1.6), sharey=True, squeeze=False
    )
    y = np.arange(len(order))
    for ax, (m, t) in zip(axes[0], panels, strict=True):
        k, u = unit(m)
        good = higher_is_better(m)
        colors = [
            "#2e8b57"
            if v in ("matters", "real but smaller than X") and (e > 0) == good
            else "#c0392b"
            if v in ("matters", "real but smaller than X")
            else "#6b7280"
            for v, e in zip(t["verdict"], t["estimate"], strict=True)
        ]
        mean = k * t["estimate"].to_numpy(dtype=float)
        err = k * np.vstack([t["estimate"] - t["lo"], t["hi"] - t["estimate"]]).astype(float)
        for i in range(len(t)):
            ax.errorbar(
                mean[i],
                y[i],
                xerr=np.where(np.isfinite(err[:, i : i + 1]), err[:, i : i + 1], 0),
                fmt="o",
                ms=5,
                capsize=3,
                color=colors[i],
            )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel(f"{m}: arm - baseline{u}, model contrast" + (" (selection)" if m == a.select else " (evaluated)"))
        ax.grid(axis="x", alpha=0.3)
    names = [
        f"{r} (= baseline)" if v.startswith("same trials") else f"{r} (n={n})"
        for r, n, v in zip(order["arm"], order["n_seeds"], order["verdict"], strict=True)
    ]
    axes[0][0].set_yticks(y, names, fontsize=8)
    return save(fig, path, a.label)


VERDICT_COLORS = {
    "matters": "#2b5d9c",
    "real but smaller than X": "#7fa7d6",
    "no effect larger than X": "#2e8b57",
    "undecided": "#9ca3af",
}


def forest(a: Analysis, path: Path) -> Path | None:
    """Every effect of the fitted model on the selection metric, largest first: estimate and 95% CI
    (the model's residual df), the band +-min_effect shaded, coloured by verdict (Holm family)."""
    tabs = [t for t in (a.effects, a.interactions) if len(t)]
    if not tabs:
        return None
    t = pd.concat(tabs, ignore_index=True)
    t = t[np.isfinite(t["estimate"].astype(float))]
    if not len(t):
        return None
    t = t.reindex(t["estimate"].abs().sort_values(ascending=True).index)  # largest at the top
    plt = pyplot()
    k, u = unit(a.select)
    x = a.min_effect.get(a.select, 0.0)
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(t) + 1.8))
    ax.axvspan(-k * x, k * x, color="#e5efe5", zorder=0, label=f"±{k * x:g}{u}: smaller than matters")
    ax.axvline(0, color="black", lw=0.8)
    y = np.arange(len(t))
    for i, (_, r) in enumerate(t.iterrows()):
        c = VERDICT_COLORS.get(r["verdict"], "#6b7280")
        ax.errorbar(
            k * r["estimate"],
            i,
            xerr=[[k * (r["estimate"] - r["lo"])], [k * (r["hi"] - r["estimate"])]],
            fmt="o",
            ms=4,
            capsize=3,
            color=c,
        )
    short = short_names(list(a.factors))
    names = [str(n) for n in t["term"]]
    for f, s in sorted(short.items(), key=lambda kv: -len(kv[0])):
        names = [n.replace(f, s) for n in names]
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel(f"effect on {a.select}{u} (contrast of the fitted model, 95% CI, df {t['df'].iloc[0]:.0f})")
    from matplotlib.lines import Line2D

    seen = [v for v in VERDICT_COLORS if v in set(t["verdict"])]
    handles = [
        Line2D([], [], marker="o", ls="", color=VERDICT_COLORS[v], label=v.replace("X", f"{k * x:g}{u}")) for v in seen
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right", title="verdict (Holm)", title_fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path, a.label)


def residuals(a: Analysis, path: Path) -> Path | None:
    """The fitted model's residuals: against the fitted values (outliers named by trial id) and a normal
    QQ plot; from the same fit the effects are contrasts of (fmlab.analysis.diagnostics)."""
    from scipy import stats

    from fmlab.analysis.diagnostics import OUTLIER

    d = a.diagnostics
    if d is None or len(d.residuals) < 3:
        return None
    plt = pyplot()
    r = d.residuals
    out = r[np.isfinite(r["student"]) & (r["student"].abs() > OUTLIER)]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"wspace": 0.3})
    ax.scatter(r["fitted"], r["resid"], s=14, color="#2b5d9c", alpha=0.8)
    ax.scatter(out["fitted"], out["resid"], s=40, facecolors="none", edgecolors="#c0392b")
    for _, o in out.iterrows():
        ax.annotate(
            str(o["id"]),
            (o["fitted"], o["resid"]),
            fontsize=7,
            color="#c0392b",
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel(f"fitted {d.metric}")
    ax.set_ylabel("residual")
    ax.set_title(f"residuals vs fitted (circled: |studentized| > {OUTLIER:g})", fontsize=10)
    ax.grid(alpha=0.3)
    (osm, osr), (slope, icept, _) = stats.probplot(r["resid"].to_numpy(float), dist="norm")
    bx.scatter(osm, osr, s=14, color="#2b5d9c", alpha=0.8)
    bx.plot(osm, slope * osm + icept, color="black", lw=0.8)
    bx.set_xlabel("normal quantile")
    bx.set_ylabel("ordered residual")
    from fmlab.analysis.formatting import fmt_p

    sw = f"Shapiro-Wilk p {fmt_p(d.shapiro_p)}"
    bx.set_title(f"normal QQ plot ({sw}, n = {len(r)})", fontsize=10)
    bx.grid(alpha=0.3)
    return save(fig, path, a.label)
