"""`hxt export` and `hxt tasks export`, through the real entry point."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from synthetic_tasks import derive_seed, make_task
from tests.analysis.synthetic_store import build_store
from tests.sweeps.cli_helpers import assert_one_line_error, digest, run_cli


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_writes_every_table_and_leaves_the_store_alone(tmp_path, capsys, fmt):
    sweep = build_store(tmp_path / "sweep")
    before = digest(sweep)
    code, out, err = run_cli(capsys, "export", sweep, "--format", fmt, "--out", tmp_path / "export")
    assert code == 0, err
    assert digest(sweep) == before
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    db = sqlite3.connect(sweep / "hxt.sqlite")
    for table in ("runs", "evals", "metrics", "configs"):
        expected = pd.read_sql_query(f"SELECT * FROM {table} ORDER BY rowid", db)
        shown = read(tmp_path / "export" / f"{table}.{fmt}")
        assert list(shown.columns) == list(expected.columns) and len(shown) == len(expected)
        assert f"{table}.{fmt}  ({len(expected)} rows)" in out
    runs = read(tmp_path / "export" / f"runs.{fmt}")
    assert sorted(runs["status"].unique()) == ["diverged", "done", "failed"]
    evals = read(tmp_path / "export" / f"evals.{fmt}")
    expected = pd.read_sql_query("SELECT token_acc FROM evals ORDER BY rowid", db)["token_acc"]
    np.testing.assert_allclose(evals["token_acc"], expected)
    header = read(tmp_path / "export" / f"sweep.{fmt}")
    assert dict(zip(header["key"], header["value"]))["config_hash"] == "cafe1234"
    db.close()


def test_export_errors_are_one_line(tmp_path, capsys):
    sweep = build_store(tmp_path / "sweep")
    (tmp_path / "a_file").write_text("x")
    before = digest(tmp_path)
    code, out, err = run_cli(capsys, "export", sweep, "--format", "xlsx")
    assert_one_line_error(code, out, err, "--format 'xlsx'", "parquet, csv")
    code, out, err = run_cli(capsys, "export", sweep, "--out", tmp_path / "a_file")
    assert_one_line_error(code, out, err, "--out", "is a file")
    assert digest(tmp_path) == before


def test_tasks_export_writes_the_generators_examples_with_knobs_and_meta(tmp_path, capsys):
    path = tmp_path / "recall.parquet"
    argv = ["tasks", "export", "state_based_recall", "--n", "40", "--out", path, "--seed", "4"]
    code, out, err = run_cli(capsys, *argv, "--num-swaps", "2,5", "--num-addresses", "256")
    assert code == 0, err
    frame = pd.read_parquet(path)
    assert len(frame) == 40 and frame["example"].tolist() == list(range(40))
    assert frame["num_swaps"].between(2, 5).all() and {"moved", "num_vars", "query"} <= set(frame.columns)
    # the rows are the generator's own batch, trimmed of padding
    task = make_task("state_based_recall", num_addresses=256)
    batch = task.sample(derive_seed(4, "export/0"), 40, num_swaps=(2, 5))
    for i, row in frame.iterrows():
        n = row["seq_len"]
        assert len(row["inputs"]) == len(row["targets"]) == len(row["loss_mask"]) == n
        assert list(row["inputs"]) == batch.inputs[i, :n].tolist()
        assert list(row["loss_mask"]) == batch.loss_mask[i, :n].tolist()
        assert (batch.inputs[i, n:] == task.pad_id).all() and row["num_swaps"] == batch.meta["num_swaps"][i]
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}
    assert meta["hxt_task"] == "state_based_recall" and meta["hxt_seed"] == "4"
    assert json.loads(meta["hxt_params"])["num_addresses"] == 256
    assert json.loads(meta["hxt_knobs"]) == {"num_swaps": [2, 5]}
    assert int(meta["hxt_vocab_size"]) == task.vocab_size and int(meta["hxt_pad_id"]) == task.pad_id

    # the same seed gives the same rows; JSON Lines and CSV carry the same examples
    for suffix in ("jsonl", "csv"):
        other = tmp_path / f"recall.{suffix}"
        code, _, err = run_cli(
            capsys, *argv[:-3], other, "--seed", "4", "--num-swaps", "2,5", "--num-addresses", "256"
        )
        assert code == 0, err
        if suffix == "jsonl":
            again = pd.read_json(other, lines=True)
            assert again["inputs"].tolist() == [list(v) for v in frame["inputs"]]
        else:
            again = pd.read_csv(other)
            assert again["inputs"].tolist() == [" ".join(map(str, v)) for v in frame["inputs"]]


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--n", "0", "--out", "x.parquet"], "--n must be >= 1"),
        (["--n", "5", "--out", "x.xlsx"], "unknown file type; allowed: .parquet, .csv, .jsonl"),
        (["--n", "5", "--out", "x.parquet", "--length", "2.5"], "'length'"),
        (["--n", "5", "--out", "x.parquet", "--depth", "3"], "--depth"),
    ],
)
def test_tasks_export_errors_are_one_line(tmp_path, capsys, monkeypatch, extra, named):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "tasks", "export", "parity", *extra)
    assert_one_line_error(code, out, err, named)
    assert list(tmp_path.iterdir()) == []
    code, out, err = run_cli(capsys, "tasks", "export", "parity", "--n", "5", "--out", tmp_path)
    assert_one_line_error(code, out, err, "is a directory")
