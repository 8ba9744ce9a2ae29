"""Read a sweep store (`<sweep dir>/hxt.sqlite`) into pandas, read-only.

The store is written only by the sweep driver (`sweeps/schema.sql` is its schema); analysis reads it
with plain SQL and never writes, so a report can be regenerated at any time, even mid-sweep.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

STORE_NAME = "hxt.sqlite"
RUN_STATUSES = ("done", "failed", "diverged", "pending", "running")


@dataclass(frozen=True)
class Store:
    """The three tables of a store plus the sweep's key/value header.

    `runs` holds every run (any status) with an added `task_label` column: the task name, or the name
    with its structural parameters when one task name appears with several parameter sets.
    `metrics` and `evals` hold rows of done runs only.
    """

    path: Path
    sweep: dict[str, str]
    runs: pd.DataFrame
    metrics: pd.DataFrame
    evals: pd.DataFrame

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]

    @property
    def status_counts(self) -> dict[str, int]:
        counts = self.runs["status"].value_counts()
        return {status: int(counts.get(status, 0)) for status in RUN_STATUSES}


def store_path(sweep_dir: Path | str) -> Path:
    """The store file of a sweep directory (a path to the file itself is accepted too)."""
    path = Path(sweep_dir)
    if path.is_dir():
        path = path / STORE_NAME
    if not path.is_file():
        raise ValueError(f"sweep_dir: no store at {path} (expected a sweep directory holding {STORE_NAME})")
    return path


def load_store(sweep_dir: Path | str) -> Store:
    """Load a store; raise ValueError if it is missing, not a readable store, or has no done runs."""
    path = store_path(sweep_dir)
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise ValueError(f"sweep_dir: cannot open the store {path}: {error}") from error
    try:
        sweep = dict(connection.execute("SELECT key, value FROM sweep").fetchall())
        runs = pd.read_sql_query("SELECT * FROM runs", connection)
        metrics = pd.read_sql_query(
            "SELECT m.* FROM metrics m JOIN runs r USING (run_id) WHERE r.status = 'done'", connection
        )
        evals = pd.read_sql_query(
            "SELECT e.* FROM evals e JOIN runs r USING (run_id) WHERE r.status = 'done'", connection
        )
    except (sqlite3.Error, pd.errors.DatabaseError) as error:
        raise ValueError(f"sweep_dir: {path} is not a readable hxt store ({error})") from error
    finally:
        connection.close()

    done = runs[runs["status"] == "done"]
    if done.empty:
        counts = runs["status"].value_counts().to_dict()
        raise ValueError(
            f"sweep_dir: the store {path} has no done runs yet (run statuses: {counts or 'none'})"
        )
    evaluated = set(evals["run_id"])
    if not evaluated:
        raise ValueError(f"sweep_dir: the store {path} has done runs but no evaluation rows")

    runs = runs.assign(task_label=_task_labels(runs))
    return Store(path=path, sweep=sweep, runs=runs, metrics=metrics, evals=evals)


def _task_labels(runs: pd.DataFrame) -> pd.Series:
    """Task name, qualified by the structural parameters that differ where a name has several sets."""
    labels = pd.Series(runs["task"].to_numpy(dtype=object), index=runs.index, dtype=object)
    for task, group in runs.groupby("task"):
        variants = {text: json.loads(text) for text in group["task_params"].unique()}
        if len(variants) < 2:
            continue
        keys = sorted({key for params in variants.values() for key in params})
        differing = [key for key in keys if len({json.dumps(p.get(key)) for p in variants.values()}) > 1]
        for text, params in variants.items():
            inside = ", ".join(f"{key}={params.get(key)}" for key in differing)
            labels[group.index[group["task_params"] == text]] = f"{task}({inside})"
    return labels
