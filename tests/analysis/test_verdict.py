import numpy as np
import pandas as pd
import pytest

from analysis.fits import SolveFit
from analysis.verdict import (
    EXCEEDS,
    INCONCLUSIVE,
    PART_WINS,
    PENDING,
    TIES,
    TOO_FEW,
    classify,
    hybrid_verdicts,
    is_hybrid,
    part_arches,
)

PATTERNS = {"A": ("A", 1), "G": ("G", 1), "G-noneg": ("G", 0), "M": ("M", 1), "GGGA": ("GGGA", 1)}


def _frame(scores: dict[str, list[float]], in_range: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """Per-seed best-LR rows of one task at one size; `scores` are out-of-range scaled accuracies."""
    rows = []
    for arch, values in scores.items():
        pattern, neg = PATTERNS[arch]
        for seed, value in enumerate(values):
            inside = (in_range or {}).get(arch, [1.0] * len(values))[seed]
            rows.append(
                {
                    "task_label": "state_based_recall",
                    "arch": arch,
                    "pattern": pattern,
                    "neg_eigval": neg,
                    "target_params": 1_000_000,
                    "seed": seed,
                    "scaled_out": value,
                    "scaled_in": inside,
                }
            )
    return pd.DataFrame(rows)


def test_a_clear_hybrid_win():
    frame = _frame({"A": [0.30, 0.32, 0.28], "G": [0.20, 0.22, 0.18], "GGGA": [0.95, 0.97, 0.96]})
    (row,) = hybrid_verdicts(frame, n_boot=500).to_dict("records")
    assert row["verdict"] == EXCEEDS
    assert row["best_part"] == "A" and row["parts"] == "A, G"
    assert row["gap_out"] == pytest.approx(0.96 - 0.30)
    assert 0 < row["gap_out_lo"] <= row["gap_out"] <= row["gap_out_hi"]
    assert row["verdict_in"] == TIES  # everyone is perfect in range
    assert row["smaller_size_to_solve"] == "n/a"


def test_a_tie_within_the_band():
    frame = _frame({"A": [0.99, 1.0, 0.995], "G": [0.5, 0.52, 0.51], "GGGA": [1.0, 0.99, 0.995]})
    (row,) = hybrid_verdicts(frame, n_boot=500).to_dict("records")
    assert row["verdict"] == TIES
    assert -0.02 <= row["gap_out_lo"] and row["gap_out_hi"] <= 0.02


def test_a_part_wins():
    frame = _frame({"A": [0.10, 0.12, 0.11], "G": [0.90, 0.92, 0.91], "GGGA": [0.60, 0.65, 0.62]})
    (row,) = hybrid_verdicts(frame, n_boot=500).to_dict("records")
    assert row["verdict"] == PART_WINS
    assert row["best_part"] == "G"
    assert row["gap_out_hi"] < 0


@pytest.mark.parametrize("seeds", [1, 2])
def test_fewer_than_three_seeds_give_no_verdict_and_no_ci_even_with_a_large_gap(seeds):
    frame = _frame({"A": [0.1] * 3, "G": [0.2] * seeds, "GGGA": [0.9, 0.95, 0.92]})
    (row,) = hybrid_verdicts(frame, n_boot=200).to_dict("records")
    assert row["verdict"] == row["verdict_in"] == TOO_FEW and row["seeds"] == seeds
    assert row["gap_out"] == pytest.approx(0.92333 - 0.2, abs=1e-4)
    assert np.isnan(row["gap_out_lo"]) and np.isnan(row["gap_out_hi"])
    assert "fewer than 3 seeds" in row["note"]


def _runs(frame: pd.DataFrame, pending: dict[str, int]) -> pd.DataFrame:
    """Every run of the store: the finished rows plus `pending` unfinished seeds per arch."""
    extra = []
    for arch, n in pending.items():
        pattern, neg = PATTERNS[arch]
        for seed in range(n):
            extra.append(
                {
                    "task_label": "state_based_recall",
                    "arch": arch,
                    "pattern": pattern,
                    "neg_eigval": neg,
                    "target_params": 1_000_000,
                    "seed": 10 + seed,
                    "status": "pending",
                }
            )
    return pd.concat([frame.assign(status="done"), pd.DataFrame(extra)], ignore_index=True)


def test_a_hybrid_or_part_still_to_run_is_pending_not_missing():
    done = _frame({"A": [0.1] * 3, "G": [0.2] * 3})
    (row,) = hybrid_verdicts(done, n_boot=100, runs=_runs(done, {"GGGA": 3})).to_dict("records")
    assert row["hybrid"] == "GGGA" and row["verdict"] == PENDING and row["seeds"] == 0
    assert row["note"] == "no finished run of GGGA yet (3 pending)"
    assert hybrid_verdicts(done, n_boot=100).empty  # without the store's runs nothing is known of GGGA

    no_g = _frame({"A": [0.1] * 3, "GGGA": [0.9] * 3})
    (row,) = hybrid_verdicts(no_g, n_boot=100, runs=_runs(no_g, {"G": 3})).to_dict("records")
    assert row["verdict"] == PENDING and "G (neg_eigval=1) 3" in row["note"]
    assert "missing part" not in row["note"]


def test_a_wide_ci_spanning_zero_is_inconclusive():
    frame = _frame({"A": [0.1, 0.9, 0.2, 0.8], "G": [0.0, 0.0, 0.0, 0.0], "GGGA": [0.5, 0.5, 0.45, 0.55]})
    (row,) = hybrid_verdicts(frame, n_boot=500).to_dict("records")
    assert row["gap_out_lo"] < 0 < row["gap_out_hi"]
    assert row["verdict"] == INCONCLUSIVE


def test_a_missing_part_is_inconclusive_and_named():
    frame = _frame({"A": [0.1, 0.1, 0.1], "G-noneg": [0.2, 0.2, 0.2], "GGGA": [0.9, 0.95, 0.92]})
    (row,) = hybrid_verdicts(frame, n_boot=200).to_dict("records")
    assert row["verdict"] == INCONCLUSIVE
    assert "G (neg_eigval=1)" in row["note"]
    assert row["parts"] == "A"  # the no-negative-eigenvalue G is not a part of a neg_eigval hybrid


def test_parts_match_letters_and_the_eigenvalue_setting():
    frame = _frame({"A": [0.0], "G": [0.0], "G-noneg": [0.0], "M": [0.0], "GGGA": [0.0]})
    assert part_arches(frame, "GGGA", 1) == (["A", "G"], [])
    assert part_arches(frame, "GGGA", 0) == (["A", "G-noneg"], [])
    assert part_arches(frame, "MMMA", 1) == (["A", "M"], [])
    assert [is_hybrid(p) for p in ("A", "GGGG", "GA", "MMMA")] == [False, False, True, True]


@pytest.mark.parametrize(
    ("lo", "hi", "enough", "word"),
    [
        (0.05, 0.2, True, EXCEEDS),
        (0.001, 0.03, True, EXCEEDS),
        (-0.02, 0.02, True, TIES),
        (0.0, 0.0, True, TIES),
        (-0.3, -0.1, True, PART_WINS),
        (-0.1, 0.1, True, INCONCLUSIVE),
        (0.5, 0.6, False, TOO_FEW),
        (np.nan, np.nan, True, INCONCLUSIVE),
    ],
)
def test_classify(lo, hi, enough, word):
    assert classify(lo, hi, enough) == word


def _solve(status, size, lo=np.nan, hi=np.nan):
    return SolveFit(0.5, 0.9, np.log10(size), 3.0, lo, hi, status, 1e4, 1e7, np.empty((0, 2)))


def test_size_to_solve_comparison():
    frame = _frame({"A": [0.1, 0.1, 0.1], "G": [0.2, 0.2, 0.2], "GGGA": [0.9, 0.95, 0.92]})
    task = "state_based_recall"
    smaller = {(task, "GGGA"): _solve("fit", 1e5, 8e4, 1.2e5), (task, "A"): _solve("above range", 1e8)}
    smaller[(task, "G")] = _solve("fit", 1e6, 7e5, 2e6)
    assert hybrid_verdicts(frame, smaller, n_boot=100)["smaller_size_to_solve"].item() == "yes"
    larger = dict(smaller)
    larger[(task, "G")] = _solve("below range", 1e4)
    assert hybrid_verdicts(frame, larger, n_boot=100)["smaller_size_to_solve"].item() == "no"
    overlap = dict(smaller)
    overlap[(task, "G")] = _solve("fit", 1.1e5, 9e4, 1.5e5)
    assert hybrid_verdicts(frame, overlap, n_boot=100)["smaller_size_to_solve"].item() == "unclear"
