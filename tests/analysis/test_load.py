import json
import sqlite3

import pytest

from analysis.load import load_store
from tests.analysis.synthetic_store import SCHEMA, build_store


def test_loads_a_store_with_counts_and_header(tmp_path):
    store = load_store(build_store(tmp_path / "sweep"))
    assert store.sweep["config_hash"] == "cafe1234"
    assert store.status_counts == {"done": 16, "failed": 1, "diverged": 1, "pending": 0, "running": 0}
    assert set(store.evals["run_id"]) == set(store.done["run_id"])  # evals of done runs only
    assert (store.runs["task_label"] == store.runs["task"]).all()


def test_the_store_file_itself_is_accepted(tmp_path):
    build_store(tmp_path / "sweep")
    assert len(load_store(tmp_path / "sweep" / "hxt.sqlite").done) == 16


def test_task_labels_name_the_differing_parameters(tmp_path):
    path = build_store(tmp_path / "sweep", tasks=("state_based_recall",), archs=("A",), failures=False)
    connection = sqlite3.connect(path / "hxt.sqlite")
    connection.execute("UPDATE runs SET task_params = ? WHERE seed = 0", (json.dumps({"m": 64, "vars": 5}),))
    connection.execute(
        "UPDATE runs SET task_params = ? WHERE seed = 1", (json.dumps({"m": 1024, "vars": 5}),)
    )
    connection.commit()
    connection.close()
    labels = set(load_store(path).runs["task_label"])
    assert labels == {"state_based_recall(m=64)", "state_based_recall(m=1024)"}


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no sweep store at"):
        load_store(tmp_path / "nowhere")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="hxt.sqlite"):
        load_store(tmp_path / "empty_dir")


def test_corrupt_store_is_a_clear_error(tmp_path):
    (tmp_path / "hxt.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="not an hxt store"):
        load_store(tmp_path)


def test_sqlite_file_without_the_tables_is_a_clear_error(tmp_path):
    connection = sqlite3.connect(tmp_path / "hxt.sqlite")
    connection.execute("CREATE TABLE other (x)")
    connection.close()
    with pytest.raises(ValueError, match="not an hxt store"):
        load_store(tmp_path)


def test_store_without_done_runs_is_a_clear_error(tmp_path):
    connection = sqlite3.connect(tmp_path / "hxt.sqlite")
    connection.executescript(SCHEMA.read_text())
    connection.close()
    with pytest.raises(ValueError, match="no done runs"):
        load_store(tmp_path)


def test_loading_never_writes(tmp_path):
    path = build_store(tmp_path / "sweep") / "hxt.sqlite"
    before = path.read_bytes()
    load_store(path)
    assert path.read_bytes() == before


def test_the_sweep_file_history_is_loaded_and_shown(tmp_path):
    from analysis.tables import analyse, header_table

    path = build_store(tmp_path / "sweep")
    connection = sqlite3.connect(path / "hxt.sqlite")
    rows = [
        ("h1", "seeds = [0]", "2026-11-27T10:00:00+00:00", "", 8, 8),
        ("h2", "seeds = [0, 1]", "2026-11-28T09:00:00+00:00", "", 16, 8),
    ]
    connection.executemany(
        "INSERT INTO configs(config_hash, config_toml, added_at, git_commit, n_runs, runs_added) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    connection.commit()
    connection.close()
    store = load_store(path)
    assert store.configs["config_toml"].tolist() == ["seeds = [0]", "seeds = [0, 1]"]
    header = dict(header_table(analyse(store, n_boot=20)).values.tolist())
    assert header["sweep files"].startswith("2 (grown: +8 runs 2026-11-27T10:00:00+00:00, +8 runs 2026-11-28")


def test_task_labels_name_a_differing_training_range(tmp_path):
    path = build_store(tmp_path / "sweep", tasks=("parity",), archs=("A",), failures=False)
    connection = sqlite3.connect(path / "hxt.sqlite")
    for seed, high in ((0, 20), (1, 40)):
        task = {"name": "parity", "train_range": {"length": [3, high]}, "eval_range": {"length": [3, 256]}}
        connection.execute(
            "UPDATE runs SET config_json = ? WHERE seed = ?", (json.dumps({"task": task}), seed)
        )
    connection.commit()
    connection.close()
    labels = set(load_store(path).runs["task_label"])
    assert labels == {"parity(train length 3-20)", "parity(train length 3-40)"}
