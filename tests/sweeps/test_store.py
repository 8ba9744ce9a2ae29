import pytest

from sweeps.config import parse_sweep
from sweeps.grid import expand
from sweeps.store import Store

TEXT = """
name = "s"
patterns = ["A"]
sizes = [20000]
lrs = [1e-3]
seeds = [0, 1, 2]
[model]
n_layers = 2
[[task]]
name = "parity"
"""
META = {
    "name": "s",
    "config_hash": "abc",
    "config_toml": TEXT,
    "created_at": "now",
    "git_commit": "",
    "hxt_version": "0",
}


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
    runs = expand(parse_sweep(TEXT))
    ids = [r["run_id"] for r in runs]
    with Store(tmp_path) as store:
        assert store.init_sweep(META, runs) == 0
        store.mark_running(ids[0])
        store.mark_running(ids[1])
        store.record(ids[1], _result("done"))
    with Store(tmp_path) as store:  # a new driver: the run left `running` goes back to the queue
        assert store.init_sweep(META, runs) == 1
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
        assert store.sweep_meta()["config_toml"] == TEXT
        with pytest.raises(ValueError, match="--out"):
            store.init_sweep({**META, "config_hash": "other"}, runs)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    runs = expand(parse_sweep(TEXT))
    bad = _result("done")
    bad["evals"].append(dict(bad["evals"][0]))  # duplicate primary key: the transaction must roll back
    with Store(tmp_path) as store:
        store.init_sweep(META, runs)
        with pytest.raises(Exception, match="UNIQUE"):
            store.record(runs[0]["run_id"], bad)
        assert store.db.execute("SELECT COUNT(*) FROM metrics").fetchone() == (0,)
        assert store.runs()[0]["status"] == "pending"


def test_status_of_a_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(ValueError, match="no sweep store"):
        Store(tmp_path / "nothing", create=False)
