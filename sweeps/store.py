"""The sweep store: one SQLite file, `<sweep dir>/hxt.sqlite`, written only by the driver.

Crash safety comes from SQLite transactions alone: a run's result (its `runs` row update, its
training curve and its evaluation rows) is committed in one transaction, so after a SIGKILL at any
moment a run is either fully recorded or not at all. Runs that a dead driver left `running` are
put back to `pending` when the sweep is opened again. `attempts` counts finished attempts (a
result came back, or the worker died), so a driver crash does not use up a run's retries.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from sweeps.grid import canonical_json, strip_id

__all__ = ["Store", "STORE_NAME", "FINISHED"]

STORE_NAME = "hxt.sqlite"
FINISHED = ("done", "diverged")  # terminal states that re-running never repeats


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """The driver's handle on a sweep directory's store."""

    def __init__(self, sweep_dir: str | Path, create: bool = True):
        self.dir = Path(sweep_dir)
        self.path = self.dir / STORE_NAME
        if not create and not self.path.is_file():
            raise ValueError(
                f"no sweep store at {str(self.path)!r} (expected a directory written by "
                f"'hxt sweep run ... --out DIR')"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(resources.files("sweeps").joinpath("schema.sql").read_text())

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _transaction(self):
        return _Transaction(self.db)

    def sweep_meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM sweep").fetchall())

    def init_sweep(self, meta: dict[str, str], runs: list[dict]) -> int:
        """Record the sweep and its runs (new ones as `pending`); re-queue runs left `running`.

        A directory holds one sweep: opening it with a different config is an error. Returns the
        number of runs that were re-queued.
        """
        existing = self.sweep_meta()
        if existing and existing.get("config_hash") != meta["config_hash"]:
            raise ValueError(
                f"--out {str(self.dir)!r} already holds sweep {existing.get('name')!r} with a different "
                f"config (hash {existing.get('config_hash')}, this file has {meta['config_hash']}); "
                f"choose another --out directory"
            )
        with self._transaction():
            if not existing:
                self.db.executemany("INSERT INTO sweep(key, value) VALUES (?, ?)", sorted(meta.items()))
            self.db.executemany(
                "INSERT OR IGNORE INTO runs(run_id, config_json, task, task_params, arch, pattern, "
                "neg_eigval, target_params, lr, seed, status, attempts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0)",
                [
                    (
                        r["run_id"],
                        canonical_json(strip_id(r)),
                        r["task"],
                        canonical_json(r["task_params"]),
                        r["arch"],
                        r["pattern"],
                        int(r["neg_eigval"]),
                        r["target_params"],
                        r["lr"],
                        r["seed"],
                    )
                    for r in runs
                ],
            )
            requeued = self.db.execute("UPDATE runs SET status = 'pending' WHERE status = 'running'").rowcount
        return requeued

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        return dict(rows)

    def todo(self, run_ids: list[str], max_attempts: int) -> list[str]:
        """The runs among `run_ids` still to do: pending, or failed with attempts left."""
        status = dict(self.db.execute("SELECT run_id, status || ':' || attempts FROM runs").fetchall())
        out = []
        for rid in run_ids:
            state, attempts = status[rid].split(":")
            if state == "pending" or (state == "failed" and int(attempts) < max_attempts):
                out.append(rid)
        return out

    def mark_running(self, rid: str) -> None:
        self.db.execute("UPDATE runs SET status = 'running', started_at = ? WHERE run_id = ?", (_now(), rid))

    def record(self, rid: str, result: dict) -> None:
        """Write one finished attempt (done, diverged or failed) in a single transaction."""
        fields = {
            key: result.get(key)
            for key in (
                "n_params",
                "n_params_total",
                "state_size",
                "d_model",
                "n_layers",
                "steps",
                "final_loss",
                "train_acc",
                "solved_step",
                "wall_seconds",
                "device",
                "git_commit",
            )
        }
        with self._transaction():
            self.db.execute("DELETE FROM metrics WHERE run_id = ?", (rid,))
            self.db.execute("DELETE FROM evals WHERE run_id = ?", (rid,))
            sets = ", ".join(f"{key} = ?" for key in fields)
            self.db.execute(
                f"UPDATE runs SET status = ?, error = ?, attempts = attempts + 1, finished_at = ?, {sets} "
                f"WHERE run_id = ?",
                (result["status"], result.get("error"), _now(), *fields.values(), rid),
            )
            self.db.executemany(
                "INSERT INTO metrics(run_id, step, loss, acc, lr) VALUES (?, ?, ?, ?, ?)",
                [(rid, m["step"], m["loss"], m["acc"], m.get("lr")) for m in result.get("metrics", [])],
            )
            self.db.executemany(
                "INSERT INTO evals(run_id, knob, value, in_range, slice, n, n_tokens, token_acc, seq_acc, "
                "scaled_acc, chance, loss) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        rid,
                        e["knob"],
                        e["value"],
                        int(e["in_range"]),
                        e["slice"],
                        e["n"],
                        e["n_tokens"],
                        e["token_acc"],
                        e["seq_acc"],
                        e["scaled_acc"],
                        e["chance"],
                        e["loss"],
                    )
                    for e in result.get("evals", [])
                ],
            )

    def runs(self) -> list[dict]:
        cursor = self.db.execute("SELECT * FROM runs ORDER BY rowid")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def run_config(self, rid: str) -> dict:
        (text,) = self.db.execute("SELECT config_json FROM runs WHERE run_id = ?", (rid,)).fetchone()
        return {**json.loads(text), "run_id": rid}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
