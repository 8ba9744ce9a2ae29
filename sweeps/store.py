"""The sweep store: one SQLite file, `<sweep dir>/hxt.sqlite`, written only by the driver.

Crash safety comes from SQLite transactions alone: a run's result (its `runs` row update, its
training curve and its evaluation rows) is committed in one transaction, so after a SIGKILL at any
moment a run is either fully recorded or not at all. Runs that a dead driver left `running` are
put back to `pending` when the sweep is opened again. `attempts` counts finished attempts (a
result came back, or the worker died), so a driver crash does not use up a run's retries.

A new store is built under a temporary name and renamed into place, so `hxt.sqlite` is always
either absent or a whole store: anything else found under that name (an empty file, another
program's database, a damaged store) is refused before anything is written. The driver writes in
WAL mode and switches back to a rollback journal when it closes, so that a reader of a finished
sweep (`Store.read_only`: `hxt sweep status`, `hxt report`, `hxt export`) opens the file
read-only and creates nothing beside it, even on read-only media.

A directory holds one sweep, which may grow: a later sweep file may add tasks, architectures,
sizes, learning rates or seeds (their runs are added; finished runs are kept), but not change the
settings every run shares (`shared`, see `sweeps.runner.shared_settings`). Every sweep file text
the directory has run is kept in `configs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from sweeps.files import check_writable_dir

__all__ = [
    "Store",
    "STORE_NAME",
    "FINISHED",
    "APPLICATION_ID",
    "runs_hash",
    "store_file",
    "connect_read_only",
]

STORE_NAME = "hxt.sqlite"
FINISHED = ("done", "diverged")  # terminal states that re-running never repeats
APPLICATION_ID = 0x68787431  # "hxt1" in the SQLite header; stores made before it carry 0
READ_TABLES = ("sweep", "runs", "metrics", "evals")  # what a reader needs (older stores lack configs)

_RESULT_FIELDS = (
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
    "step_mode",
    "capture_error",
    "pack_size",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def runs_hash(run_ids: Iterable[str]) -> str:
    """A sweep's identity: 16 hex digits of a hash of its set of run ids (order and comments do not count)."""
    return hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:16]


def _columns(run) -> dict:
    """The `runs` columns of one run of the grid, from its RunConfig (the one place that reads it)."""
    from sweeps.grid import canonical_json

    return {
        "run_id": run.run_id,
        "config_json": canonical_json(run.to_json()),
        "task": run.task.name,
        "task_params": canonical_json(run.task.params_dict),
        "arch": run.arch,
        "pattern": run.model.pattern,
        "neg_eigval": int(run.model.allow_neg_eigval),
        "target_params": run.target_params,
        "lr": run.lr,
        "seed": run.seed,
    }


def store_file(sweep_dir: str | Path) -> Path:
    """The store of a sweep directory (the store file itself is accepted too); it must exist."""
    path = Path(sweep_dir)
    if path.is_dir():
        path = path / STORE_NAME
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not an hxt store")
    if not path.exists():
        if path.name == STORE_NAME and path.parent.is_dir():
            raise ValueError(
                f"no sweep store at {str(path.parent)!r} (it holds no {STORE_NAME}; expected a directory "
                f"written by 'hxt sweep run ... --out DIR')"
            )
        raise ValueError(
            f"no sweep store at {str(path)!r} (expected a directory written by 'hxt sweep run ... --out DIR')"
        )
    return path


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open `path` without writing to it or beside it, and check that it is an hxt store."""
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        try:
            db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.OperationalError:
            # A WAL-mode store on read-only media without its index file: readable as immutable,
            # but only if no write-ahead log holds commits the main file lacks.
            db.close()
            wal = path.with_name(path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise ValueError(
                    f"cannot read the store {str(path)!r} read-only: its write-ahead log {wal.name} holds "
                    f"results not yet merged and the directory is not writable; copy the sweep directory "
                    f"to writable storage and read it there"
                ) from None
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True)
        _check_identity(db, path)
    except sqlite3.Error as error:
        raise ValueError(f"{str(path)!r} is damaged or not an hxt store ({error})") from None
    return db


def _check_identity(db: sqlite3.Connection, path: Path) -> None:
    try:
        (app_id,) = db.execute("PRAGMA application_id").fetchone()
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise ValueError(f"{str(path)!r} is damaged or not an hxt store ({error})") from None
    missing = [table for table in READ_TABLES if table not in tables]
    if app_id not in (APPLICATION_ID, 0) or missing:
        if path.stat().st_size == 0:
            what = "an empty file"
        elif app_id not in (APPLICATION_ID, 0):
            what = f"an SQLite database of another program (application id {app_id:#x})"
        elif not tables:
            what = "an empty SQLite database"
        else:
            what = f"an SQLite database without the tables {', '.join(missing)}"
        raise ValueError(f"{str(path)!r} is not an hxt store: it is {what}")


class Store:
    """A handle on a sweep directory's store: the driver's (`Store(dir)`) or a reader's (`read_only`)."""

    def __init__(self, sweep_dir: str | Path):
        """Open (or create) the store for the driver, which must hold the directory's lock."""
        self.dir = Path(sweep_dir)
        self.path = self.dir / STORE_NAME
        self.writable = True
        check_writable_dir(self.dir, "--out")
        if self.path.is_dir():
            raise ValueError(f"--out {str(self.dir)!r} holds {STORE_NAME} as a directory, not an hxt store")
        if self.path.exists():
            with Store.read_only(self.path) as probe:
                probe.check_integrity()
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            _create(self.path)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_schema())  # adds tables that older stores lack
        _add_missing_columns(self.db)

    @classmethod
    def read_only(cls, sweep_dir: str | Path) -> Store:
        """Open an existing store for reading; creates and changes nothing, refuses what is not a store."""
        store = cls.__new__(cls)
        store.path = store_file(sweep_dir)
        store.dir = store.path.parent
        store.writable = False
        store.db = connect_read_only(store.path)
        return store

    def close(self) -> None:
        if self.writable:
            # Back to a rollback journal, so that readers of the closed store create no -wal / -shm
            # files; skipped (the store stays in WAL mode, which is just as safe) if a reader holds it.
            try:
                self.db.execute("PRAGMA busy_timeout = 2000")
                self.db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.OperationalError:
                pass
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _transaction(self):
        return _Transaction(self.db)

    def check_integrity(self) -> None:
        """Refuse a damaged store (a truncated or overwritten file) before anything writes to it."""
        try:
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as error:
            problems = [str(error)]
        if problems != ["ok"]:
            raise ValueError(
                f"the store {str(self.path)!r} is damaged ({problems[0]}); it cannot be resumed: "
                f"copy out what `hxt export` can read and run the sweep into a new --out directory"
            )

    def sweep_meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM sweep").fetchall())

    def configs(self) -> list[dict]:
        """Every sweep file text this directory has run, oldest first (empty for older stores)."""
        tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "configs" not in tables:
            return []
        cursor = self.db.execute("SELECT * FROM configs ORDER BY seq")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def check_compatible(self, meta: dict[str, str]) -> None:
        """Refuse a sweep file that this directory's sweep cannot grow into (see the module docstring)."""
        existing = self.sweep_meta()
        if not existing:
            return
        where = f"--out {str(self.dir)!r}"
        if existing.get("name") != meta["name"]:
            raise ValueError(
                f"{where} holds sweep {existing.get('name')!r}, and this file is sweep {meta['name']!r}: a "
                f"directory holds one sweep; choose another --out directory"
            )
        if "shared" not in existing:
            raise ValueError(
                f"{where} holds a sweep written by an older hxt, which did not record its shared settings; "
                f"choose another --out directory"
            )
        changes = _differences(json.loads(existing["shared"]), json.loads(meta["shared"]))
        if changes:
            key, old, new = changes[0]
            more = (
                f" (and {len(changes) - 1} more: {', '.join(c[0] for c in changes[1:])})"
                if changes[1:]
                else ""
            )
            raise ValueError(
                f"{key} changed{more}: sweep {meta['name']!r} in {where} ran with {key} = {_show(old)}, this "
                f"file has {_show(new)}; settings every run shares (training budget, model shape, device "
                f"and kernel policy) cannot change within a sweep directory: choose another --out "
                f"(adding tasks, architectures, sizes, learning rates or seeds is fine)"
            )

    def init_sweep(self, meta: dict[str, str], runs: list) -> int:
        """Record the sweep, this file's text and its runs (new ones as `pending`); re-queue runs left
        `running` by a dead driver. Returns the number of runs re-queued.

        `meta` holds name, config_toml, created_at, git_commit, hxt_version and shared (JSON).
        """
        with self._transaction():
            self.check_compatible(meta)
            existing = self.sweep_meta()
            rows = [_columns(run) for run in runs]
            names = list(rows[0]) if rows else []
            before = self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            self.db.executemany(
                f"INSERT OR IGNORE INTO runs({', '.join(names)}, status, attempts) "
                f"VALUES ({', '.join('?' for _ in names)}, 'pending', 0)",
                [tuple(row.values()) for row in rows],
            )
            added = self.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] - before
            known = self.db.execute("SELECT 1 FROM configs WHERE config_toml = ?", (meta["config_toml"],))
            if known.fetchone() is None:
                self.db.execute(
                    "INSERT INTO configs(config_hash, config_toml, added_at, git_commit, n_runs, runs_added) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        runs_hash(row["run_id"] for row in rows),
                        meta["config_toml"],
                        _now(),
                        meta.get("git_commit", ""),
                        len(rows),
                        added,
                    ),
                )
            ids = [rid for (rid,) in self.db.execute("SELECT run_id FROM runs")]
            header = {key: meta[key] for key in ("name", "created_at", "git_commit", "hxt_version", "shared")}
            header = {**header, **{k: v for k, v in existing.items() if k in header}}
            header.update(config_hash=runs_hash(ids), config_toml=meta["config_toml"])
            self.db.executemany(
                "INSERT OR REPLACE INTO sweep(key, value) VALUES (?, ?)", sorted(header.items())
            )
            requeued = self.db.execute(
                "UPDATE runs SET status = 'pending', started_at = NULL WHERE status = 'running'"
            ).rowcount
        return requeued

    def counts(self, run_ids: Iterable[str] | None = None) -> dict[str, int]:
        """Runs by status: all of the store's, or those among `run_ids`."""
        if run_ids is None:
            return dict(self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
        wanted = set(run_ids)
        out: dict[str, int] = {}
        for rid, status in self.db.execute("SELECT run_id, status FROM runs"):
            if rid in wanted:
                out[status] = out.get(status, 0) + 1
        return out

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

    def requeue(self, run_ids: Iterable[str]) -> int:
        """Put runs this driver had started back to `pending` (it is stopping); returns how many."""
        with self._transaction():
            return sum(
                self.db.execute(
                    "UPDATE runs SET status = 'pending', started_at = NULL "
                    "WHERE run_id = ? AND status = 'running'",
                    (rid,),
                ).rowcount
                for rid in run_ids
            )

    def record(self, rid: str, result: dict) -> None:
        """Write one finished attempt (done, diverged or failed) in a single transaction."""
        fields = {key: result.get(key) for key in _RESULT_FIELDS}
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


def _schema() -> str:
    return resources.files("sweeps").joinpath("schema.sql").read_text()


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns the schema gained since a store was made (NULL in its earlier rows)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for name in _RESULT_FIELDS:
        if name not in have:
            kind = "INTEGER" if name == "pack_size" else "TEXT"
            db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")


def _create(path: Path) -> None:
    """Build an empty store beside `path` and rename it into place (so `path` is never half a store)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.executescript(_schema())
    finally:
        db.close()
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf where two JSON objects differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key, _MISSING), new.get(key, _MISSING), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


class _Missing:
    def __repr__(self) -> str:
        return "(not set)"


_MISSING = _Missing()


def _show(value) -> str:
    return repr(value) if value is _MISSING else json.dumps(value)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
