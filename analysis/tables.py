"""From a loaded store to every number the report shows: frames, fits, verdicts, display tables.

`analyse` does the computation; the `*_table` functions turn its frames into the string tables that
report.md and report.html print, so a test can check a printed table against the frame behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.fits import N_BOOT, PowerLawFit, SolveFit, fit_power_law, fit_size_to_solve
from analysis.load import Store
from analysis.metrics import (
    HORIZON_THRESHOLD,
    best_over_lr,
    cell_summary,
    generalisation_curves,
    has_moved,
    horizon_columns,
    training_curves,
)
from analysis.order import arch_order, task_order
from analysis.plots import format_count
from analysis.verdict import hybrid_verdicts

SOLVE_TARGET = HORIZON_THRESHOLD


@dataclass(frozen=True)
class Analysis:
    store: Store
    best: pd.DataFrame  # one row per (task, arch, size, seed): the best-LR run
    summary: pd.DataFrame  # one row per (task, arch, size)
    curves: pd.DataFrame  # accuracy per difficulty bin
    training: pd.DataFrame  # the training curve of every best-LR run
    # (task, arch, "in" / "out" / "state"): accuracy in or out of range against parameters, and
    # out-of-range accuracy against recurrent state / KV-cache elements.
    solve_fits: dict[tuple[str, str, str], SolveFit]
    power_fits: dict[tuple[str, str], PowerLawFit]  # (task, arch)
    verdicts: pd.DataFrame
    notes: dict[str, list[str]] = field(default_factory=dict)  # task -> notes on skipped fits

    @property
    def tasks(self) -> list[str]:
        return task_order(self.summary["task_label"])


def analyse(store: Store, n_boot: int = N_BOOT, seed: int = 0) -> Analysis:
    best = best_over_lr(store)
    summary = cell_summary(best)
    curves = generalisation_curves(best, store.evals)
    training = training_curves(best, store.metrics)
    solve_fits: dict[tuple[str, str, str], SolveFit] = {}
    power_fits: dict[tuple[str, str], PowerLawFit] = {}
    notes: dict[str, list[str]] = {}
    for (task, arch), rows in best.groupby(["task_label", "arch"], sort=True):
        task_notes = notes.setdefault(task, [])
        sizes = rows["target_params"].nunique()
        if sizes < 2:
            if best.loc[best["task_label"] == task, "target_params"].nunique() > 1:
                task_notes.append(f"{arch} ran at one size only: no fits")
            continue
        for key, x, y in (
            ("in", "n_params", "tok_in"),
            ("out", "n_params", "tok_out"),
            ("state", "state_size", "tok_out"),
        ):
            points = rows.dropna(subset=[x, y])
            if key == "state" and points[x].nunique() < 2:
                continue  # the store recorded no state sizes
            chance = float(points["chance"].mean()) if len(points) else 0.0
            try:
                solve_fits[(task, arch, key)] = fit_size_to_solve(
                    points[x], points[y], chance, SOLVE_TARGET, n_boot, seed
                )
            except ValueError as error:
                task_notes.append(f"size to solve, {arch}, {key}: not fitted ({error})")
        if sizes < 3:
            if best.loc[best["task_label"] == task, "target_params"].nunique() > 2:
                task_notes.append(f"{arch} ran at {sizes} sizes only: no loss-scaling fit")
            continue
        points = rows.dropna(subset=["loss_in"])
        try:
            power_fits[(task, arch)] = fit_power_law(points["n_params"], points["loss_in"], n_boot, seed)
        except ValueError as error:
            task_notes.append(f"loss scaling, {arch}: not fitted ({error})")
    out_fits = {(task, arch): fit for (task, arch, region), fit in solve_fits.items() if region == "out"}
    verdicts = hybrid_verdicts(best, out_fits, n_boot=n_boot, seed=seed, runs=store.runs)
    return Analysis(store, best, summary, curves, training, solve_fits, power_fits, verdicts, notes)


def header_table(analysis: Analysis) -> pd.DataFrame:
    store = analysis.store
    runs, sweep = store.runs, store.sweep
    counts = store.status_counts
    commits = sorted(runs["git_commit"].dropna().unique())
    devices = sorted(runs["device"].dropna().unique())
    rows = [
        ("sweep", sweep.get("name", store.path.parent.name)),
        ("config hash", sweep.get("config_hash", "—")),
        ("sweep files", _sweep_files(store.configs)),
        ("git commit (sweep)", sweep.get("git_commit", "—")),
        ("git commit (runs)", ", ".join(commits) or "—"),
        ("hxt version", sweep.get("hxt_version", "—")),
        ("created", sweep.get("created_at", "—")),
        ("runs started / finished", f"{_first(runs['started_at'])} → {_last(runs['finished_at'])}"),
        ("device", ", ".join(devices) or "—"),
        ("compute", f"{runs['wall_seconds'].fillna(0).sum() / 3600:.2f} h of run wall time"),
        (
            "runs",
            f"{len(runs)} total: {counts['done']} done, {counts['failed']} failed, "
            f"{counts['diverged']} diverged"
            + (
                f", {counts['pending'] + counts['running']} pending/running"
                if counts["pending"] + counts["running"]
                else ""
            ),
        ),
        ("tasks", ", ".join(analysis.tasks)),
        ("architectures", ", ".join(arch_order(runs["arch"]))),
        ("target sizes", ", ".join(format_count(s) for s in sorted(runs["target_params"].unique()))),
        ("learning rates", ", ".join(f"{lr:g}" for lr in sorted(runs["lr"].unique()))),
        ("seeds", ", ".join(str(s) for s in sorted(runs["seed"].unique()))),
        ("store", str(store.path)),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


def _sweep_files(configs: pd.DataFrame) -> str:
    """How many sweep file texts the directory has run: more than one when the sweep grew."""
    if configs.empty:
        return "—"
    if len(configs) == 1:
        return "1"
    added = ", ".join(f"+{n} runs {at}" for n, at in zip(configs["runs_added"], configs["added_at"]))
    return f"{len(configs)} (grown: {added}); the config hash covers every run in the store"


def heatmap_table(analysis: Analysis) -> pd.DataFrame:
    """The numbers behind the heatmap: out-of-range scaled accuracy at each task's largest size."""
    summary = analysis.summary
    top = summary[summary["target_params"] == summary.groupby("task_label")["target_params"].transform("max")]
    grid = top.pivot(index="task_label", columns="arch", values="scaled_out")
    grid = grid.reindex(index=task_order(grid.index), columns=arch_order(grid.columns))
    table = grid.map(_fmt_acc).reset_index().rename(columns={"task_label": "task"})
    table.columns.name = None
    return table


def summary_table(analysis: Analysis, task: str) -> pd.DataFrame:
    rows = analysis.summary[analysis.summary["task_label"] == task].copy()
    order = {arch: i for i, arch in enumerate(arch_order(rows["arch"]))}
    rows = rows.sort_values(["target_params", "arch"], key=lambda c: c.map(order) if c.name == "arch" else c)
    best = analysis.best[analysis.best["task_label"] == task]
    lrs = best.groupby(["arch", "target_params"])["lr"].agg(
        lambda v: ", ".join(f"{x:g}" for x in sorted(set(v)))
    )
    table = pd.DataFrame(
        {
            "arch": rows["arch"],
            "size": rows["target_params"].map(format_count),
            "params": rows["n_params"].map(format_count),
            "seeds": rows["seeds"].astype(int).astype(str),
            "learned": [f"{k}/{n}" for k, n in zip(rows["learned"], rows["seeds"])],
            "best lr": [lrs.get((a, s), "—") for a, s in zip(rows["arch"], rows["target_params"])],
            "steps": [
                _fmt_steps(steps, planned, early, n)
                for steps, planned, early, n in zip(
                    rows["steps"], rows["steps_planned"], rows["stopped_early"], rows["seeds"]
                )
            ],
            "in: token": rows["tok_in"].map(_fmt_acc),
            "in: seq": rows["seq_in"].map(_fmt_acc),
            "in: scaled": rows["scaled_in"].map(_fmt_acc),
            "out: token [95% Wilson]": [
                _fmt_interval(v, lo, hi)
                for v, lo, hi in zip(rows["tok_out"], rows["tok_out_lo"], rows["tok_out_hi"])
            ],
            "out: seq": rows["seq_out"].map(_fmt_acc),
            "out: scaled": rows["scaled_out"].map(_fmt_acc),
            "out: scaled, best seed": rows["scaled_out_max"].map(_fmt_acc),
            "out: scaled, seed range": [
                _fmt_range(lo, hi, n)
                for lo, hi, n in zip(rows["scaled_out_min"], rows["scaled_out_max"], rows["seeds"])
            ],
        }
    )
    if has_moved(rows):
        table["moved in: scaled"] = rows["scaled_in_moved"].map(_fmt_acc)
        table["moved out: scaled"] = rows["scaled_out_moved"].map(_fmt_acc)
    knobs = set(analysis.curves.loc[analysis.curves["task_label"] == task, "knob"])
    for column in horizon_columns(rows):
        if column.removeprefix("horizon_") in knobs:
            table[f"horizon: {column.removeprefix('horizon_')}"] = rows[column].map(_fmt_int)
    return table.reset_index(drop=True)


def verdict_overview_table(analysis: Analysis) -> pd.DataFrame:
    """Task x hybrid at each task's largest size: the out-of-range verdict and gap."""
    v = analysis.verdicts
    v = v[v["target_params"] == v.groupby("task_label")["target_params"].transform("max")]
    cells = v.assign(
        cell=[
            f"{word} ({gap:+.2f})" if pd.notna(gap) else word for word, gap in zip(v["verdict"], v["gap_out"])
        ]
    )
    grid = cells.pivot(index="task_label", columns="hybrid", values="cell")
    grid = grid.reindex(index=task_order(grid.index), columns=arch_order(grid.columns)).fillna("—")
    sizes = v.groupby("task_label")["target_params"].first().map(format_count)
    table = grid.reset_index().rename(columns={"task_label": "task"})
    table.insert(1, "size", table["task"].map(sizes))
    table.columns.name = None
    return table


def verdict_table(analysis: Analysis) -> pd.DataFrame:
    v = analysis.verdicts
    return pd.DataFrame(
        {
            "task": v["task_label"],
            "size": v["target_params"].map(format_count),
            "hybrid": v["hybrid"],
            "best part (of)": [
                f"{b} (of {p})" if b else f"— (of {p or 'none'})" for b, p in zip(v["best_part"], v["parts"])
            ],
            "seeds": v["seeds"].astype(str),
            "out: hybrid": v["hybrid_out"].map(_fmt_acc),
            "out: best part": v["part_out"].map(_fmt_acc),
            "out: gap [95% CI]": [
                _fmt_gap(g, lo, hi) for g, lo, hi in zip(v["gap_out"], v["gap_out_lo"], v["gap_out_hi"])
            ],
            "verdict (out of range)": v["verdict"],
            "in: gap [95% CI]": [
                _fmt_gap(g, lo, hi) for g, lo, hi in zip(v["gap_in"], v["gap_in_lo"], v["gap_in_hi"])
            ],
            "verdict (in range)": v["verdict_in"],
            "smaller size to solve": v["smaller_size_to_solve"],
            "note": v["note"],
        }
    )


def solve_table(analysis: Analysis, task: str) -> pd.DataFrame:
    rows = []
    fitted = arch_order(a for (t, a, _) in analysis.solve_fits if t == task)
    for region, label in (
        ("in", "in range, vs params"),
        ("out", "out of range, vs params"),
        ("state", "out of range, vs state elements"),
    ):
        for arch in fitted:
            fit = analysis.solve_fits.get((task, arch, region))
            if fit is not None:
                rows.append((arch, label, _fmt_solve(fit), f"{fit.slope:.2f}", fit.status))
    return pd.DataFrame(
        rows, columns=["arch", "accuracy", f"size at {SOLVE_TARGET:g} [95% CI]", "slope / decade", "status"]
    )


def scaling_table(analysis: Analysis, task: str) -> pd.DataFrame:
    rows = []
    for arch in arch_order(a for (t, a) in analysis.power_fits if t == task):
        fit = analysis.power_fits[(task, arch)]
        rows.append(
            (
                arch,
                _fmt_interval(fit.E, *fit.ci["E"]),
                _fmt_interval(fit.A, *fit.ci["A"], ".3g"),
                _fmt_interval(fit.alpha, *fit.ci["alpha"]),
                f"{format_count(fit.n_min)} – {format_count(fit.n_max)}",
            )
        )
    return pd.DataFrame(rows, columns=["arch", "E [95% CI]", "A [95% CI]", "α [95% CI]", "params fitted"])


def problems_table(analysis: Analysis) -> pd.DataFrame:
    """Failed and diverged runs, grouped, with the first line of the last error."""
    runs = analysis.store.runs
    bad = runs[runs["status"].isin(["failed", "diverged"])]
    if bad.empty:
        return pd.DataFrame(columns=["task", "arch", "size", "lr", "status", "runs", "error (first)"])
    grouped = bad.groupby(["task_label", "arch", "target_params", "lr", "status"], sort=True)
    table = grouped.agg(runs=("run_id", "size"), error=("error", "first")).reset_index()
    return pd.DataFrame(
        {
            "task": table["task_label"],
            "arch": table["arch"],
            "size": table["target_params"].map(format_count),
            "lr": table["lr"].map(lambda x: f"{x:g}"),
            "status": table["status"],
            "runs": table["runs"].astype(str),
            "error (first)": table["error"].map(_first_line),
        }
    )


def _fmt_acc(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3f}"


def _fmt_int(value: float) -> str:
    return "—" if pd.isna(value) else f"{int(value)}"


def _fmt_interval(value: float, lo: float, hi: float, spec: str = ".3f", no_ci: str = "") -> str:
    """``value [lo, hi]`` in the format `spec`; without an interval the value then `no_ci`."""
    if pd.isna(value):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return f"{value:{spec}}{no_ci}"
    return f"{value:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def _fmt_gap(value: float, lo: float, hi: float) -> str:
    return _fmt_interval(value, lo, hi, "+.3f", " (no CI)")


def _fmt_steps(steps: float, planned: float, early: int, seeds: int) -> str:
    """Median steps trained, of the planned budget, and how many seeds stopped early."""
    if pd.isna(steps):
        return "—"
    text = f"{int(steps)}" if pd.isna(planned) else f"{int(steps)} of {int(planned)}"
    return f"{text}, {early}/{seeds} stopped early" if early else text


def _fmt_range(lo: float, hi: float, seeds: int) -> str:
    if pd.isna(lo):
        return "—"
    return f"{lo:.3f}" if seeds < 2 else f"{lo:.3f} – {hi:.3f}"


def _fmt_solve(fit: SolveFit) -> str:
    if fit.status == "below range":
        return f"< {format_count(fit.size_min)} (reached at every size)"
    if fit.status == "above range":
        return f"> {format_count(fit.size_max)} (not reached)"
    if np.isnan(fit.ci_low):
        return format_count(fit.size)
    return f"{format_count(fit.size)} [{format_count(fit.ci_low)}, {format_count(fit.ci_high)}]"


def _first_line(text) -> str:
    if text is None or pd.isna(text):
        return "—"
    line = str(text).strip().splitlines()[0] if str(text).strip() else "—"
    return line if len(line) <= 100 else line[:97] + "..."


def _first(values: pd.Series) -> str:
    values = values.dropna()
    return str(values.min()) if len(values) else "—"


def _last(values: pd.Series) -> str:
    values = values.dropna()
    return str(values.max()) if len(values) else "—"
