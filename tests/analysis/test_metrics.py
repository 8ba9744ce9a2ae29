import sqlite3

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_store
from analysis.metrics import best_over_lr, cell_summary, horizons, run_accuracies, wilson_interval
from analysis.tables import analyse, summary_table
from tests.analysis.synthetic_store import build_store


def test_wilson_interval_known_value_and_edges():
    lo, hi = wilson_interval([8, 0, 10, 0], [10, 10, 10, 0])
    assert (lo[0], hi[0]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert lo[1] == 0.0 and 0 < hi[1] < 0.35  # zero successes still has a nonzero upper bound
    assert hi[2] == 1.0 and 0.65 < lo[2] < 1
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def _evals(rows):
    columns = [
        "run_id",
        "knob",
        "value",
        "in_range",
        "slice",
        "n",
        "n_tokens",
        "token_acc",
        "seq_acc",
        "chance",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(
        scaled_acc=(frame["token_acc"] - frame["chance"]) / (1 - frame["chance"]), loss=1 - frame["token_acc"]
    )


def test_accuracies_pool_bins_by_tokens_and_examples():
    evals = _evals(
        [
            ("r", "length", 8, 1, "all", 10, 100, 1.0, 1.0, 0.5),
            ("r", "length", 16, 1, "all", 30, 300, 0.5, 0.1, 0.5),
            ("r", "length", 64, 0, "all", 10, 100, 0.6, 0.0, 0.5),
            ("r", "length", 64, 0, "moved", 5, 50, 0.8, 0.2, 0.5),
        ]
    )
    row = run_accuracies(evals).set_index("run_id").loc["r"]
    assert row["tok_in"] == pytest.approx((100 + 150) / 400)
    assert row["seq_in"] == pytest.approx((10 + 3) / 40)
    assert row["scaled_in"] == pytest.approx(2 * 0.625 - 1)
    assert row["tok_out"] == pytest.approx(0.6) and row["ntok_out"] == 100
    assert row["tok_out_moved"] == pytest.approx(0.8) and np.isnan(row["tok_in_moved"])


def test_horizon_is_the_largest_bin_reaching_the_threshold():
    evals = _evals(
        [
            ("r", "length", v, int(v <= 16), "all", 10, 10, acc, acc, 0.5)
            for v, acc in [(8, 0.95), (16, 0.92), (32, 0.5), (64, 0.91), (128, 0.6)]
        ]
        + [("s", "length", 8, 1, "all", 10, 10, 0.7, 0.7, 0.5)]
    )
    found = horizons(evals).set_index("run_id")["horizon"]
    assert found["r"] == 64 and np.isnan(found["s"])


def test_learning_rate_is_chosen_in_range_never_out_of_range(tmp_path):
    path = build_store(tmp_path / "sweep", lrs=(1e-3, 3e-3), failures=False)
    connection = sqlite3.connect(path / "hxt.sqlite")
    # The larger rate is worse in range but perfect out of range: it must not be chosen.
    bad = "(SELECT run_id FROM runs WHERE lr = 0.003)"
    connection.execute(
        f"UPDATE evals SET token_acc = 0.8, scaled_acc = 0.6 WHERE in_range = 1 AND run_id IN {bad}"
    )
    connection.execute(
        f"UPDATE evals SET token_acc = 1.0, scaled_acc = 1.0 WHERE in_range = 0 AND run_id IN {bad}"
    )
    connection.commit()
    connection.close()
    best = best_over_lr(load_store(path))
    assert (best["lr"] == 1e-3).all()
    assert len(best) == 2 * 4 * 2  # tasks x archs x seeds, one size
    assert (best["n_lrs"] == 2).all()
    summary = cell_summary(best)
    assert (summary["seeds"] == 2).all()
    assert (summary["scaled_out"] < 1.0).all()


def test_a_seed_learned_when_its_in_range_token_accuracy_reaches_the_threshold(two_of_three):
    best = best_over_lr(load_store(two_of_three)).set_index(["arch", "seed"])
    assert best.loc[("G", 1), "tok_in"] == pytest.approx(0.9)
    assert best.loc["G", "learned"].tolist() == [True, True, False]  # 0.9 counts, 0.89 does not
    assert not best.loc["A", "learned"].any()
    summary = cell_summary(best.reset_index()).set_index("arch")
    assert summary.loc["G", "learned"] == 2 and summary.loc["A", "learned"] == 0


def test_the_best_seed_is_the_largest_out_of_range_scaled_accuracy(two_of_three):
    best = best_over_lr(load_store(two_of_three))
    summary = cell_summary(best).set_index("arch")
    assert summary.loc["A", "scaled_out_max"] == pytest.approx(0.8)
    others = best.loc[(best["arch"] == "A") & (best["seed"] != 1), "scaled_out"]
    assert summary.loc["A", "scaled_out"] == pytest.approx((0.8 + others.sum()) / 3)
    assert summary.loc["A", "scaled_out"] < 0.5  # the mean hides the one seed that generalised


def test_steps_trained_against_the_budget_and_early_stops_are_counted(two_of_three):
    # G's seeds 0 and 1 stop early (at 120 and 160 of a 200-step budget), seed 2 trains it all.
    connection = sqlite3.connect(two_of_three / "hxt.sqlite")
    for seed, stop in ((0, 120), (1, 160)):
        connection.execute(
            "UPDATE runs SET steps = ?, solved_step = ? WHERE arch = 'G' AND seed = ?", (stop, stop, seed)
        )
    connection.execute(
        "UPDATE runs SET config_json = json_set(config_json, '$.train', json('{\"steps\": 200}'))"
    )
    connection.commit()
    connection.close()
    analysis = analyse(load_store(two_of_three))
    summary = analysis.summary.set_index("arch")
    assert summary.loc["G", "stopped_early"] == 2 and summary.loc["A", "stopped_early"] == 0
    assert summary.loc["G", "steps"] == 160 and summary.loc["G", "steps_planned"] == 200
    table = summary_table(analysis, "parity").set_index("arch")
    assert table.loc["G", "steps"] == "160 of 200, 2/3 stopped early"
    assert table.loc["A", "steps"] == "200 of 200"
