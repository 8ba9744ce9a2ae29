"""Figures for the report, drawn on bare `Figure` objects (Agg canvas; pyplot's global state unused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.fits import PowerLawFit, SolveFit
from analysis.metrics import HORIZON_THRESHOLD, MOVED
from analysis.order import arch_order, task_order

DPI = 110
MARKERS = "os^Dv<>PX*"
TRAIN_SHADE = {"color": "0.85", "alpha": 0.6, "zorder": 0}
# Training losses below this are solved to within float noise; letting the axis follow them down to
# 1e-10 would flatten every other architecture's plateau into one line.
LOSS_FLOOR = 1e-4


def arch_colours(archs) -> dict[str, tuple]:
    ordered = arch_order(archs)
    cmap = colormaps["tab10" if len(ordered) <= 10 else "tab20"]
    return {arch: cmap(i % cmap.N) for i, arch in enumerate(ordered)}


def format_count(n: float) -> str:
    """1234567 -> '1.23M': parameter counts as a researcher says them."""
    if not np.isfinite(n):
        return "—"
    for bound, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= bound:
            return f"{n / bound:.3g}{suffix}"
    return f"{n:.3g}"


def heatmap(summary: pd.DataFrame, path: Path) -> Path:
    """Task x arch scaled accuracy (in range and out of range) at each task's largest size."""
    largest = summary.groupby("task_label")["target_params"].transform("max")
    top = summary[summary["target_params"] == largest]
    tasks = task_order(top["task_label"])
    archs = arch_order(top["arch"])
    panels = [("scaled_in", "in range"), ("scaled_out", "out of range")]
    grids = [
        top.pivot(index="task_label", columns="arch", values=column).reindex(index=tasks, columns=archs)
        for column, _ in panels
    ]
    # Symmetric about chance so that noise just below chance stays pale; -1 is the floor for
    # chance 1/2 (answering the opposite every time), and rarer lower values share its colour.
    norm = TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0)
    cmap = colormaps["RdBu"].with_extremes(bad="0.9")
    width = max(8.0, 2 * (1.6 + 0.6 * len(archs)) + 2.5)
    fig = Figure(figsize=(width, 1.4 + 0.42 * len(tasks)), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, grid, (_, title) in zip(axes, grids, panels):
        data = grid.to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto")
        ax.set_xticks(
            range(len(archs)),
            archs,
            rotation=45 if len(archs) > 6 else 0,
            ha="right" if len(archs) > 6 else "center",
        )
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set_title(f"scaled accuracy, {title}")
        ax.set_xlabel("architecture")
        if data.size <= 300:
            for (i, j), value in np.ndenumerate(data):
                text = "—" if np.isnan(value) else f"{value:.2f}"
                dark = np.isfinite(value) and abs(norm(value) - 0.5) > 0.35
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.02)
    bar.set_label("scaled accuracy\n(0 = chance, 1 = perfect)", fontsize=8)
    bar.set_ticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    return _save(fig, path)


def generalisation(curves: pd.DataFrame, task: str, colours: dict[str, tuple], path: Path) -> Path:
    """Token accuracy per difficulty bin at the task's largest size; rows: all examples, then `moved`."""
    rows = curves[curves["task_label"] == task]
    size = rows["target_params"].max()
    rows = rows[rows["target_params"] == size]
    knobs = sorted(rows["knob"].unique())
    slices = ["all"] + ([MOVED] if (rows["slice"] == MOVED).any() else [])
    # Distinct markers keep coinciding curves (models stuck at the same constant answer) visible.
    markers = {arch: MARKERS[i % len(MARKERS)] for i, arch in enumerate(colours)}
    fig = Figure(figsize=(max(6.0, 5.0 * len(knobs)), 3.3 * len(slices) + 0.9), dpi=DPI, layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(slices), len(knobs), squeeze=False))
    for i, slice_ in enumerate(slices):
        for j, knob in enumerate(knobs):
            ax = axes[i, j]
            panel = rows[(rows["knob"] == knob) & (rows["slice"] == slice_)]
            inside = panel.loc[panel["in_range"] == 1, "value"]
            if len(inside):
                ax.axvspan(inside.min(), inside.max(), **TRAIN_SHADE, label="training range")
            for arch in arch_order(panel["arch"]):
                line = panel[panel["arch"] == arch].sort_values("value")
                ax.plot(
                    line["value"],
                    line["token_acc"],
                    marker=markers[arch],
                    ms=4,
                    color=colours[arch],
                    label=arch,
                )
                ax.fill_between(line["value"], line["lo"], line["hi"], color=colours[arch], alpha=0.15, lw=0)
            if len(panel):
                ax.axhline(panel["chance"].mean(), color="0.4", ls=":", lw=1, label="chance")
            ax.axhline(
                HORIZON_THRESHOLD,
                color="0.4",
                ls="--",
                lw=0.8,
                label=f"horizon threshold {HORIZON_THRESHOLD}",
            )
            values = panel["value"]
            if len(values) and values.min() > 0 and values.max() / values.min() >= 8:
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"{knob} (evaluation bin)")
            ax.set_ylabel("token accuracy")
            ax.set_title("moved examples only" if slice_ == MOVED else "all examples", fontsize=10)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(f"{task}: accuracy vs difficulty at {format_count(size)} target params")
    return _save(fig, path)


def size_to_solve(
    best: pd.DataFrame,
    fits: dict[tuple[str, str, str], SolveFit],
    task: str,
    colours: dict[str, tuple],
    path: Path,
) -> Path:
    """Token accuracy vs parameters, per seed, with the logistic fits and their bootstrap bands: in
    range on the left, out of range on the right, with chance and the target accuracy marked."""
    rows = best[best["task_label"] == task]
    fig = Figure(figsize=(11.0, 4.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, region, title in zip(axes, ("in", "out"), ("in range", "out of range")):
        region_fits = {arch: fits.get((task, arch, region)) for arch in colours}
        _seeds_and_fits(ax, rows, f"tok_{region}", region_fits, colours)
        ax.axhline(rows["chance"].mean(), color="0.4", ls=":", lw=1, label="chance")
        ax.axhline(HORIZON_THRESHOLD, color="0.4", ls="--", lw=0.8, label="target 0.9")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("non-embedding parameters")
        ax.set_title(f"token accuracy, {title}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("token accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"{task}: size to solve (logistic fit, 95 % bootstrap band)")
    return _save(fig, path)


def scaling(
    best: pd.DataFrame,
    fits: dict[tuple[str, str], PowerLawFit],
    task: str,
    colours: dict[str, tuple],
    path: Path,
) -> Path:
    """In-range evaluation loss vs parameters with the power-law fits and their bootstrap bands."""
    rows = best[best["task_label"] == task]
    fig = Figure(figsize=(7.5, 4.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    _seeds_and_fits(ax, rows, "loss_in", {arch: fits.get((task, arch)) for arch in colours}, colours)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("non-embedding parameters")
    ax.set_ylabel("in-range evaluation loss (nats / token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{task}: loss scaling L(N) = E + A/N^α (95 % bootstrap band)")
    return _save(fig, path)


def training(curves: pd.DataFrame, task: str, colours: dict[str, tuple], path: Path) -> Path:
    """`training_figure`, saved at `path`."""
    return _save(training_figure(curves, task, colours), path)


def training_figure(curves: pd.DataFrame, task: str, colours: dict[str, tuple]) -> Figure:
    """Training loss (upper row) and accuracy (lower row) against step at the task's largest size: a
    panel per architecture, up to four abreast, and a line per seed in shades of its colour."""
    rows = curves[curves["task_label"] == task]
    size = rows["target_params"].max()
    rows = rows[rows["target_params"] == size]
    archs = arch_order(rows["arch"])
    blocks = -(-len(archs) // 4)
    columns = -(-len(archs) // blocks)
    fig = Figure(figsize=(3.2 * columns + 0.3, 4.4 * blocks + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(2 * blocks, columns, sharex=True, squeeze=False)
    losses = rows.loc[rows["loss"] > 0, "loss"]
    for i in range(blocks * columns):
        loss_ax, acc_ax = axes[2 * (i // columns), i % columns], axes[2 * (i // columns) + 1, i % columns]
        if i >= len(archs):
            loss_ax.set_visible(False)
            acc_ax.set_visible(False)
            continue
        _seed_curves(loss_ax, acc_ax, rows[rows["arch"] == archs[i]], colours[archs[i]])
        loss_ax.set_ylim(max(losses.min() / 1.5, LOSS_FLOOR), losses.max() * 1.5)
        acc_ax.tick_params(labelbottom=True)
    fig.suptitle(f"{task}: training curves at {format_count(size)} target params, best LR per seed")
    return fig


def _seed_curves(loss_ax, acc_ax, rows: pd.DataFrame, colour: tuple) -> None:
    """One architecture's panel: each seed's training loss and accuracy, labelled with its learning
    rate and in-range evaluation accuracy."""
    seeds = sorted(rows["seed"].unique())
    for seed, shade in zip(seeds, _shades(colour, len(seeds))):
        line = rows[rows["seed"] == seed]
        first = line.iloc[0]
        label = f"seed {seed}, lr {first['lr']:g}: in-range {first['tok_in']:.2f}"
        loss_ax.plot(line["step"], line["loss"], color=shade, lw=1.2)
        acc_ax.plot(line["step"], line["acc"], color=shade, lw=1.2, label=label)
    learned = rows.drop_duplicates("seed")["learned"]
    loss_ax.set_title(f"{rows['arch'].iloc[0]}: {int(learned.sum())}/{len(learned)} learned", fontsize=10)
    loss_ax.set_yscale("log")
    loss_ax.set_ylabel("training loss")
    acc_ax.axhline(rows["chance"].mean(), color="0.4", ls=":", lw=1)
    acc_ax.axhline(HORIZON_THRESHOLD, color="0.4", ls="--", lw=0.8)
    acc_ax.set_ylim(-0.02, 1.02)
    acc_ax.set_ylabel("training accuracy")
    acc_ax.set_xlabel("step")
    acc_ax.legend(fontsize=7, loc="best")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3, which="both")


def _shades(colour: tuple, n: int) -> list[tuple]:
    """`n` shades of one colour, darker to lighter, so the seeds of an architecture read as one family."""
    rgb = np.array(to_rgb(colour))
    mix = np.linspace(-0.45, 0.45, n) if n > 1 else np.zeros(1)
    return [tuple(rgb * (1 + t) if t < 0 else rgb + (1 - rgb) * t) for t in mix]


def _seeds_and_fits(ax, rows: pd.DataFrame, column: str, fits: dict, colours: dict[str, tuple]) -> None:
    """`column` against parameters, one point per seed, and each architecture's fit (fits[arch],
    None where it has none) with its bootstrap band, over the parameter range of `rows`."""
    grid = np.logspace(np.log10(rows["n_params"].min()), np.log10(rows["n_params"].max()), 100)
    for arch in arch_order(rows["arch"]):
        points = rows[rows["arch"] == arch]
        ax.scatter(points["n_params"], points[column], s=14, color=colours[arch], alpha=0.7, label=arch)
        fit = fits[arch]
        if fit is not None:
            ax.plot(grid, fit.predict(grid), color=colours[arch], lw=1.5)
            if len(fit.boot):
                lo, hi = fit.band(grid)
                ax.fill_between(grid, lo, hi, color=colours[arch], alpha=0.15, lw=0)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
    return path
