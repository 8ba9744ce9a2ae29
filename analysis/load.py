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
    """Task name, qualified by what differs where one name has several variants: structural
    parameters (`state_based_recall(m=64)`) or the difficulty ranges it trains and evaluates on
    (`parity(train length 3-20)`, e.g. after a sweep grew by a task with a longer training range)."""
    labels = pd.Series(runs["task"].to_numpy(dtype=object), index=runs.index, dtype=object)
    variant = pd.Series(
        [_variant(p, c) for p, c in zip(runs["task_params"], runs["config_json"])], index=runs.index
    )
    for task, group in runs.groupby("task"):
        variants = {text: json.loads(text) for text in variant[group.index].unique()}
        if len(variants) < 2:
            continue
        keys = sorted({key for facts in variants.values() for key in facts})
        differing = [key for key in keys if len({json.dumps(v.get(key)) for v in variants.values()}) > 1]
        for text, facts in variants.items():
            inside = ", ".join(_describe(key, facts.get(key)) for key in differing)
            labels[group.index[variant[group.index] == text]] = f"{task}({inside})"
    return labels


def _variant(task_params: str, config_json: str) -> str:
    """A run's task facts as flat JSON: its parameters and, where the config has them, its ranges."""
    facts = dict(json.loads(task_params))
    try:
        task = json.loads(config_json).get("task")
    except (TypeError, ValueError, AttributeError):
        task = None
    task = task if isinstance(task, dict) else {}
    for region in ("train", "eval"):
        for knob, bounds in (task.get(f"{region}_range") or {}).items():
            facts[f"{region} {knob}"] = bounds
    return json.dumps(facts, sort_keys=True)


def _describe(key: str, value) -> str:
    if " " in key and isinstance(value, list) and len(value) == 2:  # a range: "train length 3-20"
        return f"{key} {value[0]}-{value[1]}" if value[0] != value[1] else f"{key} {value[0]}"
    return f"{key}={value}"
