"""The report's figures of the trials as measured (Agg, PNG): the cells' means, the learning curves, the best
trial's confusion matrix. Each takes what it draws and a path; returns the path, or None when there is
nothing to draw. Every figure carries the study label (fmlab.report.plotting.save)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from fmlab.analysis.formatting import unit
from fmlab.analysis.record import Analysis
from fmlab.report.plotting import pyplot, save


def cells(a: Analysis, path: Path) -> Path | None:
    if not len(a.cells):
        return None
    plt = pyplot()
    c = a.cells.iloc[::-1]
    k, u = unit(a.select, level=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.28 * len(c) + 1.6), sharey=True)
    for ax, m in zip(axes, [a.select, "test_acc"], strict=True):
        if m == a.select and not a.validated:  # data.val_size = 0: said, not drawn as an empty axis
            ax.text(
                0.5, 0.5, "no validation split\n(data.val_size = 0)", ha="center", va="center", transform=ax.transAxes
            )
            ax.set_xticks([])
            continue
        if f"{m}_mean" not in c:
            continue
        mean, lo, hi = (k if m == a.select else 100) * c[[f"{m}_mean", f"{m}_lo", f"{m}_hi"]].to_numpy().T
        y = np.arange(len(c))
        err = np.vstack([mean - lo, hi - mean])
        ax.errorbar(
            mean,
            y,
            xerr=np.where(np.isfinite(err), err, 0),
            fmt="o",
            ms=4,
            capsize=2,
            color="#2b5d9c" if m == a.select else "#6b7280",
        )
        ax.set_xlabel(f"{m}{u if m == a.select else ' %'}" + (" (selection)" if m == a.select else " (evaluated)"))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(np.arange(len(c)), [f"{r} (n={n})" for r, n in zip(c["cell"], c["n"], strict=True)], fontsize=8)
    return save(fig, path, a.label)


def curves(a: Analysis, path: Path) -> Path | None:
    cv = a.curves
    metrics = [m for m in ("train_loss", "val_loss", "val_acc") if f"{m}_mean" in cv and cv[f"{m}_mean"].notna().any()]
    if metrics == ["train_loss"] and "train_acc_mean" in cv:  # nothing validated (data.val_size = 0)
        metrics.append("train_acc")
    if not len(cv) or not metrics:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.2))
    axes = np.atleast_1d(axes)
    top = list(a.cells["cell"].head(5))
    colors = plt.get_cmap("tab10").colors
    for ax, m in zip(axes, metrics, strict=True):
        k = 100 if m.endswith("acc") else 1
        for cell, g in cv.groupby("cell", sort=False):
            hi = cell in top
            col = colors[top.index(cell)] if hi else "#b8bcc6"
            mean, std = k * g[f"{m}_mean"], k * g[f"{m}_std"].fillna(0)
            ax.plot(
                g["epoch"],
                mean,
                color=col,
                lw=1.8 if hi else 0.8,
                zorder=3 if hi else 1,
                label=f"#{top.index(cell) + 1} {cell}" if hi else None,
            )
            if hi:
                ax.fill_between(g["epoch"], mean - std, mean + std, color=col, alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(m + (" %" if k == 100 else ""))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: int(labels[i].split()[0][1:]))  # "#3 ..." -> 3
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=1,
        fontsize=8,
        bbox_to_anchor=(0.5, -0.01),
        title=(f"top {len(top)} cells by {a.select}" if a.validated else f"{len(top)} cells, no validation")
        + (" (others grey)" if len(a.cells) > len(top) else ""),
        title_fontsize=8,
    )
    return save(fig, path, a.label)


def confusion(best: dict[str, Any], label: str, path: Path) -> Path:
    plt = pyplot()
    cm = np.asarray(best["confusion"], dtype=float)
    rate = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    classes = best["classes"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.4), gridspec_kw={"width_ratios": [1.25, 1], "wspace": 0.5})
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    for i, j in itertools.product(range(len(classes)), repeat=2):
        if cm[i, j]:
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rate[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"trial {best['trial_id']}: test acc {100 * best['test_acc']:.2f}% (n={best['n_test']})", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    acc = 100 * np.asarray(best["per_class_acc"])
    bx.barh(range(len(classes)), acc, color="#2b5d9c")
    bx.set_yticks(range(len(classes)), classes, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlim(0, 100)
    bx.set_xlabel("per-class test accuracy %")
    for i, v in enumerate(acc):
        inside = v > 88
        bx.text(
            v - 1 if inside else v + 1,
            i,
            f"{v:.1f}",
            va="center",
            ha="right" if inside else "left",
            fontsize=8,
            color="white" if inside else "black",
        )
    bx.grid(axis="x", alpha=0.3)
    return save(fig, path, label)
