import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.runner import run_sweep
from sweeps.store import STORE_NAME
from tests.sweeps.cli_helpers import sweep_file

ROOT = Path(__file__).resolve().parents[2]


def _sweep_file(tmp_path, seeds, steps=20):
    return sweep_file(tmp_path, seeds, steps)


def _snapshot(db_path: Path) -> dict:
    db = sqlite3.connect(db_path)
    out = {}
    for rid, status, attempts, loss in db.execute("SELECT run_id, status, attempts, final_loss FROM runs"):
        metrics = db.execute("SELECT step, loss, acc, lr FROM metrics WHERE run_id = ? ORDER BY step", (rid,))
        evals = db.execute(
            "SELECT knob, value, slice, n, token_acc, seq_acc, loss FROM evals WHERE run_id = ? "
            "ORDER BY knob, value, slice",
            (rid,),
        )
        out[rid] = {
            "status": status,
            "attempts": attempts,
            "final_loss": loss,
            "metrics": metrics.fetchall(),
            "evals": evals.fetchall(),
        }
    db.close()
    return out


@pytest.mark.slow
def test_a_sigkilled_sweep_resumes_without_losing_or_repeating_runs(tmp_path):
    path = _sweep_file(tmp_path, range(8), steps=40)
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweeps.cli", "sweep", "run", str(path), "--out", str(out), "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 180
    done = 0
    while time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
        if (out / STORE_NAME).exists():
            db = sqlite3.connect(out / STORE_NAME)
            try:
                done = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'done'").fetchone()[0]
            except sqlite3.OperationalError:  # schema not created yet
                done = 0
            db.close()
            if done >= 2:
                break
    assert driver.poll() is None, driver.stderr.read().decode()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = _snapshot(out / STORE_NAME)
    finished = {rid: row for rid, row in before.items() if row["status"] == "done"}
    assert 2 <= len(finished) < 8
    # runs the dead driver left `running` are redone (attempts stays 1: the crash was not theirs)

    summary = run_sweep(path, out, workers=2, show_progress=False)
    after = _snapshot(out / STORE_NAME)
    assert summary.total == 8 and summary.skipped == len(finished)
    assert len(after) == 8 and all(row["status"] == "done" for row in after.values())
    assert all(row["attempts"] == 1 for row in after.values())
    for rid, row in finished.items():
        assert after[rid] == row
    # CPU runs are deterministic: a run interrupted by the kill and redone matches a fresh run
    assert all(len(row["evals"]) == len(next(iter(finished.values()))["evals"]) for row in after.values())


@pytest.mark.slow
def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    path = _sweep_file(tmp_path, range(5))
    from tests.sweeps.faulty import run as faulty_run

    summary = run_sweep(path, tmp_path / "out", workers=2, run_fn=faulty_run, show_progress=False)
    assert summary.counts == {"done": 1, "failed": 3, "diverged": 1}
    db = sqlite3.connect(tmp_path / "out" / STORE_NAME)
    rows = {
        seed: (status, attempts, error)
        for seed, status, attempts, error in db.execute("SELECT seed, status, attempts, error FROM runs")
    }
    assert rows[0][:2] == ("done", 1)
    assert rows[1][:2] == ("failed", 2) and "injected failure" in rows[1][2]
    assert rows[2][:2] == ("failed", 2) and "worker process died" in rows[2][2]
    assert rows[3][:2] == ("diverged", 1) and "non-finite" in rows[3][2]
    assert rows[4][:2] == ("failed", 2) and "could not store the result" in rows[4][2]
    # a diverged run keeps its curve up to the divergence, and has no evaluation
    (seed3,) = db.execute("SELECT run_id FROM runs WHERE seed = 3").fetchone()
    assert db.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?", (seed3,)).fetchone()[0] >= 1
    assert db.execute("SELECT COUNT(*) FROM evals WHERE run_id = ?", (seed3,)).fetchone()[0] == 0
    from sweeps.cli import main

    main(["sweep", "status", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "1 diverged" in out and "injected failure" in out and "worker process died" in out
    # re-running does not repeat finished runs nor failed runs out of attempts
    again = run_sweep(path, tmp_path / "out", workers=2, run_fn=faulty_run, show_progress=False)
    assert again.skipped == 5 and again.counts == summary.counts


@pytest.mark.slow
def test_ray_backend_matches_the_local_backend(tmp_path):
    pytest.importorskip("ray")
    path = _sweep_file(tmp_path, range(2))
    local = run_sweep(path, tmp_path / "local", workers=2, show_progress=False)
    ray_ = run_sweep(path, tmp_path / "ray", backend="ray", workers=2, show_progress=False)
    assert local.counts == ray_.counts == {"done": 2}
    a, b = _snapshot(tmp_path / "local" / STORE_NAME), _snapshot(tmp_path / "ray" / STORE_NAME)
    assert a == b and all(row["evals"] for row in a.values())
