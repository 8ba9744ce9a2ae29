"""Accuracies, horizons and the best-over-learning-rate selection.

Conventions (the report restates them):
- A run's in-range (out-of-range) accuracy pools every evaluation bin whose knob value lies inside
  (outside) the training range: token accuracy weighted by supervised tokens, sequence accuracy by
  examples. When a task is binned along several knobs, the bins of all knobs are pooled.
- Scaled accuracy is `(acc - chance) / (1 - chance)`: 0 at chance, 1 when perfect, negative below chance.
- The horizon along a knob is the largest knob value whose bin reaches token accuracy >= 0.9 (NaN
  when no bin does).
- The learning rate is chosen per (task, arch, size, seed) by in-range scaled accuracy (ties: lower
  in-range loss, then the smaller rate). Out-of-range results never influence the choice.
- A seed has learned when its best-LR run's in-range token accuracy reaches the horizon threshold.
- A run stopped early when it passed the early-stop test (`solved_step` is set); its planned budget
  is its config's `train.steps`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis.load import Store

KEYS = ["task_label", "arch", "target_params", "seed"]
CELL = ["task_label", "arch", "target_params"]
HORIZON_THRESHOLD = 0.9
MOVED = "moved"

# Per-run columns produced for each region (in / out) and slice ("" for all, "_moved").
_POOLED = ["tok", "seq", "scaled", "loss", "chance", "ntok", "n", "correct"]


def wilson_interval(successes, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion; NaN where n == 0."""
    successes = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        denominator = 1.0 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return lo, hi


def run_accuracies(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run: pooled in-range and out-of-range accuracies, for all examples and `moved` ones.

    Columns `{tok,seq,scaled,loss,chance,ntok,n,correct}_{in,out}` and the same with a `_moved`
    suffix (NaN where a run has no such bins).
    """
    e = evals.assign(
        correct=evals["token_acc"] * evals["n_tokens"],
        w_seq=evals["seq_acc"] * evals["n"],
        w_scaled=evals["scaled_acc"] * evals["n_tokens"],
        w_loss=evals["loss"] * evals["n_tokens"],
        w_chance=evals["chance"] * evals["n_tokens"],
        region=np.where(evals["in_range"].astype(bool), "in", "out"),
    )
    sums = (
        e.groupby(["run_id", "slice", "region"])[
            ["correct", "w_seq", "w_scaled", "w_loss", "w_chance", "n_tokens", "n"]
        ]
        .sum()
        .reset_index()
    )
    ntok = sums["n_tokens"].where(sums["n_tokens"] > 0)
    nex = sums["n"].where(sums["n"] > 0)
    pooled = pd.DataFrame(
        {
            "run_id": sums["run_id"],
            "suffix": np.where(sums["slice"] == "all", "", "_" + sums["slice"].astype(str)),
            "region": sums["region"],
            "tok": sums["correct"] / ntok,
            "seq": sums["w_seq"] / nex,
            "scaled": sums["w_scaled"] / ntok,
            "loss": sums["w_loss"] / ntok,
            "chance": sums["w_chance"] / ntok,
            "ntok": sums["n_tokens"],
            "n": sums["n"],
            "correct": sums["correct"],
        }
    )
    pooled = pooled[pooled["suffix"].isin(["", "_" + MOVED])]
    wide = pooled.pivot(index="run_id", columns=["region", "suffix"], values=_POOLED)
    wide.columns = [f"{metric}_{region}{suffix}" for metric, region, suffix in wide.columns]
    for region in ("in", "out"):
        for suffix in ("", "_" + MOVED):
            for metric in _POOLED:
                column = f"{metric}_{region}{suffix}"
                if column not in wide.columns:
                    wide[column] = np.nan
    return wide.reset_index()


def horizons(evals: pd.DataFrame, threshold: float = HORIZON_THRESHOLD) -> pd.DataFrame:
    """One row per run and knob (slice "all"): the largest knob value with token accuracy >= threshold."""
    e = evals[evals["slice"] == "all"]
    reached = e[e["token_acc"] >= threshold].groupby(["run_id", "knob"])["value"].max()
    every = e.groupby(["run_id", "knob"]).size().index  # runs that reach no bin keep a NaN row
    return reached.reindex(every).rename("horizon").reset_index()


def best_over_lr(store: Store) -> pd.DataFrame:
    """One row per (task, arch, size, seed): the done run whose learning rate did best in range."""
    accuracy = run_accuracies(store.evals)
    runs = store.done.merge(accuracy, on="run_id", how="inner")
    runs = runs.assign(n_params=runs["n_params"].fillna(runs["target_params"]))
    ranked = runs.sort_values(
        ["scaled_in", "loss_in", "lr"], ascending=[False, True, True], na_position="last", kind="stable"
    )
    best = ranked.groupby(KEYS, sort=True).head(1).copy()
    n_lrs = runs.groupby(KEYS)["lr"].nunique().rename("n_lrs")
    best = best.merge(n_lrs, on=KEYS)
    best["chance"] = best["chance_in"].fillna(best["chance_out"])
    best["learned"] = best["tok_in"] >= HORIZON_THRESHOLD  # NaN (no in-range bins) is not learned
    best["stopped_early"] = best["solved_step"].notna()
    best["steps_planned"] = best["config_json"].map(_planned_steps)

    horizon = horizons(store.evals[store.evals["run_id"].isin(best["run_id"])])
    if not horizon.empty:
        wide = horizon.pivot(index="run_id", columns="knob", values="horizon")
        wide.columns = [f"horizon_{knob}" for knob in wide.columns]
        best = best.merge(wide.reset_index(), on="run_id", how="left")
    return best.sort_values(KEYS).reset_index(drop=True)


def horizon_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(column for column in frame.columns if column.startswith("horizon_"))


def has_moved(frame: pd.DataFrame) -> bool:
    return "tok_out_moved" in frame.columns and bool(
        frame[["tok_in_moved", "tok_out_moved"]].notna().any().any()
    )


def cell_summary(best: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, arch, size): means over seeds, the seed range (its `_max` is the best
    seed), how many seeds learned, pooled Wilson intervals.

    The Wilson interval pools the supervised tokens of all seeds: it covers the sampling error of the
    evaluation set only; the seed-to-seed spread is the `_min` / `_max` columns.
    """
    mean_columns = [
        f"{metric}_{region}{suffix}"
        for region in ("in", "out")
        for suffix in ("", "_" + MOVED)
        for metric in ("tok", "seq", "scaled", "loss")
    ]
    grouped = best.groupby(CELL, sort=True)
    summary = grouped[mean_columns].mean()
    summary["seeds"] = grouped["seed"].nunique()
    summary["learned"] = grouped["learned"].sum().astype("int64")
    summary["steps"] = grouped["steps"].median()
    summary["steps_planned"] = grouped["steps_planned"].max()
    summary["stopped_early"] = grouped["stopped_early"].sum().astype("int64")
    summary["n_params"] = grouped["n_params"].mean().round().astype("int64")
    summary["state_size"] = grouped["state_size"].mean()
    summary["pattern"] = grouped["pattern"].first()
    summary["neg_eigval"] = grouped["neg_eigval"].first()
    summary["chance"] = grouped["chance"].mean()
    for column in ("scaled_in", "scaled_out"):
        summary[f"{column}_min"] = grouped[column].min()
        summary[f"{column}_max"] = grouped[column].max()
    for region in ("in", "out"):
        sums = grouped[[f"correct_{region}", f"ntok_{region}"]].sum(min_count=1)
        lo, hi = wilson_interval(sums[f"correct_{region}"], sums[f"ntok_{region}"].fillna(0))
        summary[f"tok_{region}_lo"] = lo
        summary[f"tok_{region}_hi"] = hi
    for column in horizon_columns(best):
        summary[column] = grouped[column].agg(_median_low)
    return summary.reset_index()


def generalisation_curves(best: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per difficulty bin for the best-LR runs, averaged over seeds with a pooled Wilson band."""
    rows = evals.merge(best[["run_id", *CELL]], on="run_id")
    rows = rows.assign(correct=rows["token_acc"] * rows["n_tokens"])
    grouped = rows.groupby([*CELL, "knob", "slice", "value"], sort=True)
    curves = grouped.agg(
        token_acc=("token_acc", "mean"),
        seq_acc=("seq_acc", "mean"),
        scaled_acc=("scaled_acc", "mean"),
        chance=("chance", "mean"),
        in_range=("in_range", "max"),
        correct=("correct", "sum"),
        n_tokens=("n_tokens", "sum"),
        seeds=("run_id", "nunique"),
    ).reset_index()
    lo, hi = wilson_interval(curves["correct"], curves["n_tokens"])
    return curves.assign(lo=lo, hi=hi)


def training_curves(best: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The training curve (step, loss, acc) of every best-LR run, with its cell, seed, peak learning
    rate, chance, in-range token accuracy and whether it learned."""
    runs = best[["run_id", *CELL, "seed", "lr", "chance", "tok_in", "learned"]]
    steps = metrics[["run_id", "step", "loss", "acc"]]  # its `lr` is the schedule's, step by step
    return steps.merge(runs, on="run_id").sort_values([*KEYS, "step"]).reset_index(drop=True)


def _planned_steps(config_json: str) -> float:
    """The run's planned optimiser steps (`train.steps` of its config); NaN when the config has none."""
    steps = json.loads(config_json).get("train", {}).get("steps")
    return float(steps) if steps is not None else np.nan


def _median_low(values: pd.Series) -> float:
    """The lower median: always one of the observed bins (NaN when no seed reached the threshold)."""
    finite = np.sort(values.dropna().to_numpy())
    if len(finite) < len(values) or len(finite) == 0:
        # A seed with no horizon counts as below every bin, so the lower median may be NaN.
        finite = np.concatenate([np.full(len(values) - len(finite), -np.inf), finite])
    value = finite[(len(finite) - 1) // 2]
    return float(value) if np.isfinite(value) else np.nan
