"""`hxt sweep run` as a process among others: progress in logs, growing sweeps, exit codes, the
lock on a sweep directory, and stopping on SIGINT / SIGTERM. Real drivers, real workers, real
signals; the store is read with plain SQL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
from pathlib import Path

import pytest

from sweeps.store import runs_hash
from tests.sweeps.cli_helpers import (
    alive,
    assert_one_line_error,
    children,
    digest,
    hxt,
    run_cli,
    sweep_file,
    wait_for,
)

pytestmark = pytest.mark.slow


def _rows(sweep: Path) -> dict[str, tuple]:
    """run id -> (status, attempts, metrics, evals), read-only (a live driver may hold the store)."""
    path = sweep / "hxt.sqlite"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        out = {}
        for rid, status, attempts in db.execute("SELECT run_id, status, attempts FROM runs"):
            metrics = db.execute("SELECT * FROM metrics WHERE run_id = ? ORDER BY step", (rid,)).fetchall()
            evals = db.execute("SELECT * FROM evals WHERE run_id = ? ORDER BY knob, value, slice", (rid,))
            out[rid] = (status, attempts, metrics, evals.fetchall())
        return out
    except sqlite3.OperationalError:  # the schema is not there yet
        return {}
    finally:
        db.close()


def _statuses(sweep: Path) -> list[tuple[str, int]]:
    return sorted((status, attempts) for status, attempts, _, _ in _rows(sweep).values())


def _holder(sweep: Path) -> dict | None:
    try:
        return json.loads((sweep / "hxt.lock").read_text())
    except (OSError, ValueError):
        return None


def _workers(driver_pid: int) -> list[int]:
    out = []
    for pid in children(driver_pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            out.append(pid)
    return out


def _data_files(sweep: Path) -> dict[str, str]:
    """The store's bytes and the lock's text (not SQLite's -shm index, which readers may touch)."""
    return {k: v for k, v in digest(sweep).items() if not k.endswith("-shm")}


def test_progress_lines_in_a_log_growth_and_a_changed_shared_setting(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    first = sweep_file(tmp_path, seeds=[0], name="first.toml")
    code, out, err = run_cli(capsys, "sweep", "run", first, "--out", sweep, "--summary-every", "1e-9")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "1 runs: 0 already finished, 1 to run on 1 local worker (CPU)"
    assert lines[-1] == f"{sweep}: 1 runs (0 already finished); now 1 done"
    (run_line,) = [line for line in lines if line.startswith("[")]
    assert re.fullmatch(
        r"\[1/1\] done     parity A 2\.5k lr 0\.003 seed 0: in-range acc [01]\.\d{3}, beyond [01]\.\d{3}, "
        r"\d+\.\d s",
        run_line,
    ), run_line
    summaries = lines[1:-1]
    summaries.remove(run_line)
    assert summaries and all(line.startswith("progress: ") for line in summaries)
    assert re.fullmatch(r"progress: 1/1 finished \(1 done\), 0 running, 0 to go; \d+s elapsed", summaries[-1])
    finished = _rows(sweep)

    # a second file adds a seed: the finished run is kept as it was, only the new one runs
    grown = sweep_file(tmp_path, seeds=[0, 1], name="grown.toml")
    code, out, err = run_cli(capsys, "sweep", "run", grown, "--out", sweep, "--quiet")
    assert code == 0 and err == "", err
    assert out == f"{sweep}: 2 runs (1 already finished); now 2 done\n"
    after = _rows(sweep)
    assert len(after) == 2 and all(row[:2] == ("done", 1) for row in after.values())
    assert {rid: after[rid] for rid in finished} == finished

    db = sqlite3.connect(f"{(sweep / 'hxt.sqlite').as_uri()}?mode=ro", uri=True)
    texts = [text for (text,) in db.execute("SELECT config_toml FROM configs ORDER BY seq")]
    (config_hash,) = db.execute("SELECT value FROM sweep WHERE key = 'config_hash'").fetchone()
    db.close()
    assert texts == [first.read_text(), grown.read_text()]
    assert config_hash == runs_hash(after)

    # changing what every run shares makes another sweep: refused, naming the key, nothing written
    longer = sweep_file(tmp_path, seeds=[0, 1], steps=40, name="longer.toml")
    before = digest(sweep)
    code, out, err = run_cli(capsys, "sweep", "run", longer, "--out", sweep)
    assert_one_line_error(code, out, err, "train.steps", "20", "40", str(sweep))
    assert digest(sweep) == before


def test_a_sweep_whose_run_failed_exits_1(tmp_path):
    sweep = tmp_path / "sweep"
    path = sweep_file(tmp_path, seeds=[0], steps=100_000, max_attempts=1)
    driver = hxt("sweep", "run", path, "--out", sweep)
    (worker,) = wait_for(lambda: _workers(driver.pid), "the worker to start", process=driver)
    os.kill(worker, signal.SIGKILL)  # what an out-of-memory kill does
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 1, (out, err)
    assert (
        "[1/1] failed   parity A 2.5k lr 0.003 seed 0 (attempt 1 of 1, no attempts left): worker process died"
        in out
    )
    assert err == f"1 runs failed; `hxt sweep status {sweep}` shows their errors\n"
    assert _statuses(sweep) == [("failed", 1)]


def test_one_driver_per_directory_a_killed_one_is_taken_over_and_signals_stop_cleanly(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    path = sweep_file(tmp_path, seeds=[0, 1], steps=1_000_000)  # runs that never finish by themselves
    host = socket.gethostname()

    def started(driver):
        wait_for(lambda: (_holder(sweep) or {}).get("pid") == driver.pid, "the lock", process=driver)
        wait_for(lambda: len(_workers(driver.pid)) == 2, "two workers", process=driver)
        wait_for(lambda: _statuses(sweep) == [("running", 0)] * 2, "two running runs", process=driver)
        return _workers(driver.pid)

    first = hxt("sweep", "run", path, "--out", sweep, "--quiet", start_new_session=True)
    started(first)
    since = _holder(sweep)["since"]

    # a second driver on the same directory is refused, naming the first, and writes nothing
    before = _data_files(sweep)
    second = hxt("sweep", "run", path, "--out", sweep, "--quiet")
    out, err = second.communicate(timeout=300)
    assert_one_line_error(second.returncode, out, err, f"pid {first.pid}", host, since, "in use")
    assert _data_files(sweep) == before
    code, out, _ = run_cli(capsys, "sweep", "status", sweep)
    assert code == 0 and f"driver: running (pid {first.pid} on host {host}" in out
    assert "runs: 2 running\n" in out

    # a killed driver: its workers follow it, and status tells its `running` rows are stale
    workers = _workers(first.pid)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), "the orphaned workers to exit")
    before = _data_files(sweep)
    code, out, _ = run_cli(capsys, "sweep", "status", sweep)
    assert code == 0 and f"the last one, pid {first.pid} on host {host}" in out and "is gone" in out
    assert "2 running (stale)" in out
    assert _data_files(sweep) == before

    # the next driver takes the stale lock over; SIGTERM stops it: workers gone, runs back to pending
    third = hxt("sweep", "run", path, "--out", sweep, "--quiet", start_new_session=True)
    workers = started(third)
    os.kill(third.pid, signal.SIGTERM)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 143, (out, err)
    assert out == "" and "Traceback" not in err
    note, stopped = err.splitlines()
    assert note.startswith(f"note: taking over from a driver that is gone (pid {first.pid} on host {host}")
    assert stopped == (
        f"{sweep}: stopped by SIGTERM; 2 interrupted runs put back to pending, 0 of 2 done; "
        f"run the same command to continue"
    )
    assert not any(alive(pid) for pid in workers)
    assert _statuses(sweep) == [("pending", 0)] * 2
    assert _holder(sweep) is None  # released: no name left in the lock file

    # Ctrl-C on a terminal signals the whole process group: workers ignore it, the driver stops them
    fourth = hxt("sweep", "run", path, "--out", sweep, "--quiet", start_new_session=True)
    workers = started(fourth)
    os.killpg(fourth.pid, signal.SIGINT)
    out, err = fourth.communicate(timeout=120)
    assert fourth.returncode == 130, (out, err)
    assert out == "" and err.count("\n") == 1 and "stopped by SIGINT; 2 interrupted runs" in err
    assert not any(alive(pid) for pid in workers)
    assert _statuses(sweep) == [("pending", 0)] * 2


def test_train_whose_run_failed_exits_non_zero(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA, where a cuda run fails")
    code, out, err = run_cli(
        capsys, "train", "--device", "cuda", "--steps", "3", "--warmup", "1", "--size", "3000"
    )
    assert code == 1 and "failed" in out + err


def test_a_time_limit_ends_the_sweep_with_its_runs_pending(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    path = sweep_file(tmp_path, seeds=[0, 1], steps=100_000)
    code, out, err = run_cli(capsys, "sweep", "run", path, "--out", sweep, "--quiet", "--time-limit", "3")
    assert code == 0, err
    assert out == f"{sweep}: 2 runs (0 already finished); now 2 pending\n"
    continue_line = "run the same command to continue"
    assert err == f"{sweep}: time limit of 3 s reached; 2 runs left pending; {continue_line}\n"
    assert _statuses(sweep) == [("pending", 0), ("pending", 0)]  # put back, no attempt counted
    assert _holder(sweep) is None  # the lock is released

    for bad in ("0", "-5", "nan"):
        before = digest(sweep)
        code, out, err = run_cli(capsys, "sweep", "run", path, "--out", sweep, "--time-limit", bad)
        assert_one_line_error(code, out, err, "--time-limit")
        assert digest(sweep) == before
