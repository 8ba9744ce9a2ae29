import json
import sqlite3

import pytest

from sweeps.config import parse_sweep
from sweeps.grid import expand
from sweeps.runner import shared_settings
from sweeps.store import APPLICATION_ID, Store, runs_hash
from tests.sweeps.cli_helpers import sweep_toml


def _sweep(seeds=(0, 1, 2), steps=1000):
    text = sweep_toml(
        name="s", patterns=["A"], sizes=[20000], lrs=[1e-3], seeds=list(seeds), model={"n_layers": 2},
        train={"steps": steps}, task={"name": "parity"},
    )  # fmt: skip
    config = parse_sweep(text)
    meta = {
        "name": config.name,
        "config_toml": text,
        "created_at": "now",
        "git_commit": "",
        "hxt_version": "0",
        "shared": json.dumps(shared_settings(config), sort_keys=True),
    }
    return meta, expand(config)


def _result(status, loss=0.5):
    return {
        "status": status,
        "error": None if status == "done" else "boom",
        "n_params": 10,
        "n_params_total": 20,
        "state_size": 5,
        "d_model": 4,
        "n_layers": 2,
        "steps": 3,
        "final_loss": loss,
        "train_acc": 0.5,
        "solved_step": None,
        "wall_seconds": 1.0,
        "device": "cpu",
        "git_commit": "c",
        "metrics": [{"step": 1, "loss": loss, "acc": 0.5, "lr": 1e-3}],
        "evals": [
            {
                "knob": "length",
                "value": 3,
                "in_range": True,
                "slice": "all",
                "n": 4,
                "n_tokens": 4,
                "token_acc": 0.5,
                "seq_acc": 0.5,
                "scaled_acc": 0.0,
                "chance": 0.5,
                "loss": loss,
            }
        ],
    }


def test_lifecycle_requeue_retry_and_one_sweep_per_directory(tmp_path):
    meta, runs = _sweep()
    ids = [r.run_id for r in runs]
    with Store(tmp_path) as store:
        assert store.init_sweep(meta, runs) == 0
        store.mark_running(ids[0])
        store.mark_running(ids[1])
        store.record(ids[1], _result("done"))
    with Store(tmp_path) as store:  # a new driver: the run left `running` goes back to the queue
        assert store.init_sweep(meta, runs) == 1
        assert store.todo(ids, max_attempts=2) == [ids[0], ids[2]]
        store.record(ids[0], _result("failed"))
        assert store.todo(ids, max_attempts=2) == [ids[0], ids[2]]  # one retry left
        store.record(ids[0], _result("failed", loss=0.25))
        assert store.todo(ids, max_attempts=2) == [ids[2]]
        store.record(ids[2], _result("diverged"))
        rows = {r["run_id"]: r for r in store.runs()}
        assert rows[ids[0]]["attempts"] == 2 and rows[ids[0]]["error"] == "boom"
        assert rows[ids[1]]["status"] == "done" and rows[ids[1]]["attempts"] == 1
        # a retried run's rows replace its earlier ones rather than adding to them
        assert store.db.execute("SELECT loss FROM metrics WHERE run_id = ?", (ids[0],)).fetchall() == [
            (0.25,)
        ]
        assert store.db.execute("SELECT COUNT(*) FROM evals").fetchone() == (3,)
        assert store.sweep_meta()["config_toml"] == meta["config_toml"]
        with pytest.raises(ValueError, match="holds sweep 's'.*'other'"):
            store.init_sweep({**meta, "name": "other"}, runs)


def test_a_sweep_grows_and_keeps_every_config_text(tmp_path):
    meta, runs = _sweep(seeds=(0, 1))
    grown_meta, grown = _sweep(seeds=(0, 1, 2, 3))
    with Store(tmp_path) as store:
        store.init_sweep(meta, runs)
        store.record(runs[0].run_id, _result("done"))
        store.init_sweep(grown_meta, grown)
        store.init_sweep(meta, runs)  # the first file again: nothing new, no new history entry
        rows = {r["run_id"]: r for r in store.runs()}
        assert set(rows) == {r.run_id for r in grown}
        assert rows[runs[0].run_id]["status"] == "done"
        assert store.todo([r.run_id for r in grown], 2) == [r.run_id for r in grown[1:]]
        configs = store.configs()
        assert [c["config_toml"] for c in configs] == [meta["config_toml"], grown_meta["config_toml"]]
        assert [(c["n_runs"], c["runs_added"]) for c in configs] == [(2, 2), (4, 2)]
        assert store.sweep_meta()["config_hash"] == runs_hash(rows)
        assert store.counts([r.run_id for r in runs]) == {"done": 1, "pending": 1}


def test_a_changed_shared_setting_is_refused_naming_the_key(tmp_path):
    meta, runs = _sweep()
    changed_meta, changed = _sweep(steps=1500)
    with Store(tmp_path) as store:
        store.init_sweep(meta, runs)
        before = store.runs()
        with pytest.raises(ValueError, match=r"^train.steps changed: .* = 1000, this file has 1500"):
            store.init_sweep(changed_meta, changed)
        assert store.runs() == before and len(store.configs()) == 1


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    meta, runs = _sweep()
    bad = _result("done")
    bad["evals"].append(dict(bad["evals"][0]))  # duplicate primary key: the transaction must roll back
    with Store(tmp_path) as store:
        store.init_sweep(meta, runs)
        with pytest.raises(Exception, match="UNIQUE"):
            store.record(runs[0].run_id, bad)
        assert store.db.execute("SELECT COUNT(*) FROM metrics").fetchone() == (0,)
        assert store.runs()[0]["status"] == "pending"


def test_requeue_puts_only_running_runs_back(tmp_path):
    meta, runs = _sweep()
    ids = [r.run_id for r in runs]
    with Store(tmp_path) as store:
        store.init_sweep(meta, runs)
        store.mark_running(ids[0])
        store.mark_running(ids[1])
        store.record(ids[1], _result("done"))
        assert store.requeue(ids[:2]) == 1
        assert store.counts() == {"pending": 2, "done": 1}


def test_a_closed_store_is_marked_as_ours_and_left_without_a_log(tmp_path):
    meta, runs = _sweep()
    with Store(tmp_path) as store:
        store.init_sweep(meta, runs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hxt.sqlite"]
    db = sqlite3.connect(f"{(tmp_path / 'hxt.sqlite').as_uri()}?mode=ro", uri=True)
    assert db.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    db.close()
    with Store.read_only(tmp_path) as store:
        assert store.counts() == {"pending": 3}
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.db.execute("DELETE FROM runs")


def test_a_damaged_store_is_refused_before_writing(tmp_path):
    meta, runs = _sweep()
    with Store(tmp_path) as store:
        store.init_sweep(meta, runs)
    data = bytearray((tmp_path / "hxt.sqlite").read_bytes())
    data[-2000:] = b"\xff" * 2000  # the tail of the last page: row data, not the schema
    (tmp_path / "hxt.sqlite").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        Store(tmp_path)
    assert (tmp_path / "hxt.sqlite").read_bytes() == bytes(data)


def test_status_of_a_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(ValueError, match="no sweep store"):
        Store.read_only(tmp_path / "nothing")


def test_a_store_made_before_the_step_mode_columns_gains_them_and_keeps_its_rows(tmp_path):
    meta, runs = _sweep()
    with Store(tmp_path) as store:
        store.init_sweep(meta, runs)
        store.record(runs[0].run_id, _result("done"))
        for column in ("step_mode", "capture_error", "pack_size"):
            store.db.execute(f"ALTER TABLE runs DROP COLUMN {column}")  # as an older store has it
    with Store(tmp_path) as store:
        store.record(runs[1].run_id, {**_result("done"), "step_mode": "graph", "pack_size": 3})
        rows = {row["run_id"]: row for row in store.runs()}
    assert rows[runs[0].run_id]["status"] == "done" and rows[runs[0].run_id]["step_mode"] is None
    assert (rows[runs[1].run_id]["step_mode"], rows[runs[1].run_id]["pack_size"]) == ("graph", 3)
