"""Read a sweep store (`<sweep dir>/hxt.sqlite`) into pandas, read-only.

The store is written only by the sweep driver (`sweeps/schema.sql` is its schema); analysis reads it
with plain SQL through `sweeps.store.connect_read_only` and never writes (not even beside it), so a
report can be regenerated at any time, even mid-sweep or from read-only media.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sweeps.store import connect_read_only, store_file

RUN_STATUSES = ("done", "failed", "diverged", "pending", "running")


@dataclass(frozen=True)
class Store:
    """The three tables of a store plus the sweep's key/value header and its sweep file history.

    `runs` holds every run (any status) with an added `task_label` column: the task name, or the name
    with its structural parameters when one task name appears with several parameter sets.
    `metrics` and `evals` hold rows of done runs only.
    """

    path: Path
    sweep: dict[str, str]
    runs: pd.DataFrame
    metrics: pd.DataFrame
    evals: pd.DataFrame
    configs: pd.DataFrame = field(default_factory=pd.DataFrame)  # every sweep file text run, oldest first

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]

    @property
    def status_counts(self) -> dict[str, int]:
        counts = self.runs["status"].value_counts()
        return {status: int(counts.get(status, 0)) for status in RUN_STATUSES}


def read_tables(sweep_dir: Path | str) -> tuple[Path, dict[str, str], dict[str, pd.DataFrame]]:
    """The store's file, its sweep header and every table (all rows), read-only.

    Raises ValueError when the path holds no hxt store or the store cannot be read.
    """
    path = store_file(sweep_dir)
    connection = connect_read_only(path)
    try:
        sweep = dict(connection.execute("SELECT key, value FROM sweep").fetchall())
        names = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        tables = {
            name: pd.read_sql_query(f"SELECT * FROM {name} ORDER BY rowid", connection)
            for name in ("runs", "metrics", "evals", "configs")
            if name in names
        }
    except (sqlite3.Error, pd.errors.DatabaseError) as error:
        raise ValueError(f"{str(path)!r} is not a readable hxt store ({error})") from None
    finally:
        connection.close()
    return path, sweep, tables


def load_store(sweep_dir: Path | str) -> Store:
    """Load a store for analysis; raise ValueError if it is missing, not a readable store, or has no
    done runs. Opens the file read-only and creates nothing beside it."""
    path, sweep, tables = read_tables(sweep_dir)
    runs = tables["runs"]
    done_ids = set(runs.loc[runs["status"] == "done", "run_id"])
    metrics = tables["metrics"][tables["metrics"]["run_id"].isin(done_ids)].reset_index(drop=True)
    evals = tables["evals"][tables["evals"]["run_id"].isin(done_ids)].reset_index(drop=True)

    done = runs[runs["status"] == "done"]
    if done.empty:
        counts = runs["status"].value_counts().to_dict()
        raise ValueError(f"the store {str(path)!r} has no done runs yet (run statuses: {counts or 'none'})")
    evaluated = set(evals["run_id"])
    if not evaluated:
        raise ValueError(f"the store {str(path)!r} has done runs but no evaluation rows")

    runs = runs.assign(task_label=_task_labels(runs))
    configs = tables.get("configs", pd.DataFrame())
    return Store(path=path, sweep=sweep, runs=runs, metrics=metrics, evals=evals, configs=configs)


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
