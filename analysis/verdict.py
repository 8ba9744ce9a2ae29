"""The hybrid verdict: does a hybrid beat the best of its parts at matched parameters?

A hybrid is an architecture whose pattern holds at least two distinct mixer letters (`GGGA`, `MMMA`,
`GA`). Its parts are the single-letter patterns of its letters (recurrent ones with the same
`neg_eigval` setting) and always the transformer `A`, at the same target size. The gap is

    gap = mean over seeds(hybrid) - max over parts(mean over seeds(part))

in scaled accuracy, out-of-range (the headline) and in-range. Its CI is a percentile bootstrap: each
arm's seeds are resampled independently and the best part is re-chosen in every replicate, so the CI
also carries the uncertainty of which part is best.

Words, with the tie band TIE_BAND = 0.02 scaled accuracy and the 95 % CI [lo, hi]:
- `pending`: the hybrid, or one of its parts, has no finished run at this size yet but has runs
  pending or running;
- `too few seeds`: an arm has fewer than MIN_SEEDS = 3 finished seeds (a bootstrap over one or two
  seeds cannot bound the gap; outcomes of these tasks are often bimodal over seeds). Below
  MIN_SEEDS no CI is given, only the point gap;
- `inconclusive`: a part has no runs at this size, or the CI spans zero and the effect may be
  larger than the tie band;
- `ties`: the whole CI lies within [-TIE_BAND, +TIE_BAND] (any gap is practically negligible);
- `hybrid exceeds parts`: otherwise, lo > 0;
- `a part wins`: otherwise, hi < 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.fits import LEVEL, N_BOOT, SolveFit
from analysis.order import arch_order, is_hybrid, task_order

TIE_BAND = 0.02
MIN_SEEDS = 3
EXCEEDS, TIES, PART_WINS, INCONCLUSIVE = "hybrid exceeds parts", "ties", "a part wins", "inconclusive"
TOO_FEW, PENDING = "too few seeds", "pending"
TRANSFORMER = "A"

VERDICT_COLUMNS = [
    "task_label",
    "target_params",
    "hybrid",
    "parts",
    "best_part",
    "seeds",
    "hybrid_out",
    "part_out",
    "gap_out",
    "gap_out_lo",
    "gap_out_hi",
    "verdict",
    "hybrid_in",
    "part_in",
    "gap_in",
    "gap_in_lo",
    "gap_in_hi",
    "verdict_in",
    "smaller_size_to_solve",
    "note",
]


def classify(lo: float, hi: float, enough_seeds: bool, tie: float = TIE_BAND) -> str:
    """The verdict word for a gap CI [lo, hi]; see the module docstring."""
    if not enough_seeds:
        return TOO_FEW
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if -tie <= lo and hi <= tie:
        return TIES
    if lo > 0:
        return EXCEEDS
    if hi < 0:
        return PART_WINS
    return INCONCLUSIVE


def bootstrap_gap(
    hybrid: np.ndarray,
    parts: list[np.ndarray],
    rng: np.random.Generator,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
) -> tuple[float, float, float]:
    """Point gap (hybrid mean minus best part mean) and its percentile-bootstrap CI."""
    gap = float(np.mean(hybrid) - max(np.mean(part) for part in parts))
    replicates = _resampled_means(hybrid, rng, n_boot) - np.max(
        np.stack([_resampled_means(part, rng, n_boot) for part in parts]), axis=0
    )
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail])
    return gap, float(lo), float(hi)


def part_arches(cell: pd.DataFrame, pattern: str, neg_eigval: int) -> tuple[list[str], list[str]]:
    """The archs in `cell` (one task and size) that are parts of a hybrid, and the missing part names."""
    found, missing = [], []
    for letter in sorted(set(pattern) | {TRANSFORMER}):
        archs = sorted(cell.loc[_is_part(cell, letter, neg_eigval), "arch"].unique())
        if archs:
            found.extend(archs)
        else:
            missing.append(_part_name(letter, neg_eigval))
    return found, missing


def _is_part(cell: pd.DataFrame, letter: str, neg_eigval: int) -> pd.Series:
    """Rows of the single-mixer architecture `letter` (recurrent ones with the hybrid's eigenvalues)."""
    match = cell["pattern"] == letter
    return match if letter == TRANSFORMER else match & (cell["neg_eigval"] == neg_eigval)


def _part_name(letter: str, neg_eigval: int) -> str:
    return letter if letter == TRANSFORMER else f"{letter} (neg_eigval={neg_eigval})"


def hybrid_verdicts(
    best: pd.DataFrame,
    solve_fits: dict[tuple[str, str], SolveFit] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    tie: float = TIE_BAND,
    runs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per (task, size, hybrid) from per-seed best-LR rows (`scaled_in`, `scaled_out`).

    `solve_fits` maps (task, arch) to the out-of-range size-to-solve fit; it fills the
    `smaller_size_to_solve` column (`yes`, `no`, `unclear`, or `n/a` without fits). `runs` (every
    run of the store, any status, with `task_label`) adds the cells whose hybrid has not finished
    and names unfinished parts, so that a partial sweep says `pending` rather than missing.
    """
    rng = np.random.default_rng(seed)
    unfinished = _unfinished(runs)
    rows = []
    for (task, size), cell in best.groupby(["task_label", "target_params"], sort=True):
        archs = cell.drop_duplicates("arch").set_index("arch")
        for hybrid in [a for a in archs.index if is_hybrid(archs.at[a, "pattern"])]:
            pattern, neg_eigval = archs.at[hybrid, "pattern"], int(archs.at[hybrid, "neg_eigval"])
            parts, missing = part_arches(cell, pattern, neg_eigval)
            arms = {arch: cell[cell["arch"] == arch] for arch in [hybrid, *parts]}
            seeds = min(arm["seed"].nunique() for arm in arms.values())
            row = {"task_label": task, "target_params": size, "hybrid": hybrid, "parts": ", ".join(parts)}
            row["seeds"] = seeds
            waiting = _waiting(unfinished, task, size, pattern, neg_eigval, [hybrid, *parts])
            pending_parts = [m for m in missing if m in waiting]
            notes = []
            if [m for m in missing if m not in waiting]:
                notes.append(f"missing part {', '.join(m for m in missing if m not in waiting)}")
            if waiting:
                notes.append(
                    "runs still to come: " + ", ".join(f"{arch} {n}" for arch, n in sorted(waiting.items()))
                )
            if seeds < MIN_SEEDS:
                notes.append(f"fewer than {MIN_SEEDS} seeds in an arm")
            for region in ("out", "in"):
                column = f"scaled_{region}"
                values = {arch: arm[column].dropna().to_numpy() for arch, arm in arms.items()}
                usable = bool(parts) and all(len(v) for v in values.values())
                suffix = "" if region == "out" else "_in"
                if not usable:
                    row.update(
                        {f"hybrid_{region}": np.nan, f"part_{region}": np.nan, f"gap_{region}": np.nan}
                    )
                    row.update({f"gap_{region}_lo": np.nan, f"gap_{region}_hi": np.nan})
                    row[f"verdict{suffix}"] = PENDING if pending_parts else INCONCLUSIVE
                    if region == "out":
                        row["best_part"] = ""
                        notes.append("no out-of-range evaluation" if parts else "no parts")
                    continue
                part_means = {arch: values[arch].mean() for arch in parts}
                best_part = max(part_means, key=part_means.get)
                gap, lo, hi = bootstrap_gap(values[hybrid], [values[arch] for arch in parts], rng, n_boot)
                if seeds < MIN_SEEDS:
                    lo = hi = np.nan  # a bootstrap over one or two seeds bounds nothing
                row[f"hybrid_{region}"] = float(values[hybrid].mean())
                row[f"part_{region}"] = float(part_means[best_part])
                row.update({f"gap_{region}": gap, f"gap_{region}_lo": lo, f"gap_{region}_hi": hi})
                if pending_parts:
                    row[f"verdict{suffix}"] = PENDING
                elif missing:
                    row[f"verdict{suffix}"] = INCONCLUSIVE
                else:
                    row[f"verdict{suffix}"] = classify(lo, hi, seeds >= MIN_SEEDS, tie)
                if region == "out":
                    row["best_part"] = best_part
            row["smaller_size_to_solve"] = _compare_solve(solve_fits, task, hybrid, [] if missing else parts)
            row["note"] = "; ".join(notes)
            rows.append(row)
    rows += _unstarted_hybrids(best, runs)
    frame = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    tasks = {task: i for i, task in enumerate(task_order(frame["task_label"]))}
    archs = {arch: i for i, arch in enumerate(arch_order(frame["hybrid"]))}
    keys = [
        (tasks[t], s, archs[h])
        for t, s, h in zip(frame["task_label"], frame["target_params"], frame["hybrid"])
    ]
    return frame.iloc[sorted(range(len(frame)), key=keys.__getitem__)].reset_index(drop=True)


def _unfinished(runs: pd.DataFrame | None) -> pd.DataFrame:
    if runs is None:
        return pd.DataFrame(columns=["task_label", "target_params", "arch", "pattern", "neg_eigval"])
    return runs[runs["status"].isin(["pending", "running"])]


def _waiting(unfinished, task, size, pattern, neg_eigval, arches) -> dict[str, int]:
    """Unfinished runs in a cell, by arch for `arches`, and by part name (as `part_arches` names a
    missing part) for parts that have no finished run there."""
    cell = unfinished[(unfinished["task_label"] == task) & (unfinished["target_params"] == size)]
    if cell.empty:
        return {}
    out = {arch: int((cell["arch"] == arch).sum()) for arch in arches}
    for letter in sorted(set(pattern) | {TRANSFORMER}):
        others = cell[_is_part(cell, letter, neg_eigval) & ~cell["arch"].isin(arches)]
        if len(others):
            out[_part_name(letter, neg_eigval)] = len(others)
    return {arch: n for arch, n in out.items() if n}


def _unstarted_hybrids(best: pd.DataFrame, runs: pd.DataFrame | None) -> list[dict]:
    """Rows for (task, size, hybrid) cells with no finished run: `pending` if runs are to come,
    else `inconclusive` (every run failed or diverged)."""
    if runs is None:
        return []
    finished = set(zip(best["task_label"], best["target_params"], best["arch"]))
    hybrids = runs[[is_hybrid(p) for p in runs["pattern"]]]
    rows = []
    for (task, size, hybrid), cell in hybrids.groupby(["task_label", "target_params", "arch"], sort=True):
        if (task, size, hybrid) in finished:
            continue
        statuses = cell["status"].value_counts().to_dict()
        waiting = statuses.get("pending", 0) + statuses.get("running", 0)
        word = PENDING if waiting else INCONCLUSIVE
        note = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        row = {column: np.nan for column in VERDICT_COLUMNS}
        row.update(
            task_label=task,
            target_params=size,
            hybrid=hybrid,
            parts="",
            best_part="",
            seeds=0,
            verdict=word,
            verdict_in=word,
            smaller_size_to_solve="n/a",
            note=f"no finished run of {hybrid} yet ({note})" if waiting else f"no finished run ({note})",
        )
        rows.append(row)
    return rows


def _resampled_means(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[picks].mean(axis=1)


def _solve_interval(fit: SolveFit) -> tuple[float, float]:
    """Where the size to solve lies: the CI, or the censored range outside the sizes tried."""
    if fit.status == "below range":
        return 0.0, fit.size_min
    if fit.status == "above range":
        return fit.size_max, math.inf
    if math.isnan(fit.ci_low):
        return fit.size, fit.size
    return fit.ci_low, fit.ci_high


def _compare_solve(
    solve_fits: dict[tuple[str, str], SolveFit] | None, task: str, hybrid: str, parts: list[str]
) -> str:
    if not solve_fits or (task, hybrid) not in solve_fits or not parts:
        return "n/a"
    part_fits = [solve_fits[(task, arch)] for arch in parts if (task, arch) in solve_fits]
    if len(part_fits) < len(parts):
        return "n/a"
    hybrid_fit = solve_fits[(task, hybrid)]
    if hybrid_fit.status == "above range" and all(fit.status == "above range" for fit in part_fits):
        return "none solves"
    if hybrid_fit.status == "below range" and any(fit.status == "below range" for fit in part_fits):
        return "both at smallest"
    h_lo, h_hi = _solve_interval(hybrid_fit)
    p_lo, p_hi = min(_solve_interval(fit) for fit in part_fits)
    if h_hi < p_lo:
        return "yes"
    if h_lo > p_hi:
        return "no"
    return "unclear"
