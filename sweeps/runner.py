"""The sweep driver: validate, record the grid, hand runs to an executor, store every result.

The driver is the only writer of the store. Order matters for crash safety and for clean errors:
the sweep file is validated and the backend checked *before* the store is opened, so a bad input
leaves no trace; each result is committed the moment it arrives.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from sweeps.config import SweepConfig, load_sweep
from sweeps.files import check_writable_dir
from sweeps.grid import check_runs, expand, hxt_version
from sweeps.lock import SweepLock
from sweeps.progress import make_progress
from sweeps.store import STORE_NAME, Store

__all__ = ["SweepSummary", "run_sweep", "drive", "git_commit", "shared_settings"]


@cache
def git_commit() -> str | None:
    """The commit of the hxt checkout, with "-dirty" if it has uncommitted changes; None outside git.

    A copy of a checkout without its .git (e.g. on a lent GPU machine) names its commit in the
    environment variable HXT_GIT_COMMIT.
    """
    if os.environ.get("HXT_GIT_COMMIT"):
        return os.environ["HXT_GIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def shared_settings(config: SweepConfig) -> dict:
    """The settings every run of a sweep shares; a sweep directory refuses a file that changes them.

    Tasks, architectures, sizes, learning rates and seeds are the grid's axes and may grow.
    """
    return config.shared_settings()


DEFAULT_PACK = 16  # runs a GPU worker trains together as one stacked model (hxt sweep run --pack)


@dataclass(frozen=True)
class SweepSummary:
    total: int  # runs of this sweep file
    skipped: int  # already finished before this invocation
    counts: dict[str, int]  # status -> runs of this file, after this invocation
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the driver
    requeued: int = 0  # runs put back to pending when the driver stopped
    time_limited: bool = False  # the --time-limit ended this invocation before every run finished
    held: int = 0  # runs not started because their pack's estimated GPU time did not fit the time left
    in_store: int = 0  # runs in the directory, this file's and earlier files'


def run_sweep(
    path: str | Path,
    out: str | Path,
    backend: str = "local",
    workers: int | None = None,
    slots_per_gpu: int | None = None,
    pack: int | None = None,
    address: str | None = None,
    run_fn: Callable | None = None,
    show_progress: bool = True,
    progress: str = "auto",
    summary_every: float = 60.0,
    time_limit: float | None = None,
) -> SweepSummary:
    """Run every unfinished run of the sweep in `path`, recording results in `out`/hxt.sqlite.

    `progress`: "auto" (a bar on a terminal, lines in a log), "bar", "log" or "none"
    (`show_progress=False` is "none"). SIGINT and SIGTERM stop the sweep cleanly: the workers
    are stopped, their runs put back to pending, and the summary says which signal came.

    `time_limit` (seconds of wall time from the call): at the limit the sweep stops as on SIGTERM,
    its runs in training going back to pending. Packing on GPUs, a pack is started only while its
    estimated GPU time (`sweeps.pack.estimate_gpu_seconds`, an upper bound) fits the time left, so
    that a slice of GPU time is not spent on packs that would be cut off; runs held back stay
    pending (`SweepSummary.held`).
    """
    from sweeps import backends

    if backend not in ("local", "ray"):
        raise ValueError(f"--backend {backend!r} is not known; allowed values: local, ray")
    if address is not None and backend != "ray":
        raise ValueError("--address only applies to --backend ray")
    if slots_per_gpu is not None and slots_per_gpu < 1:
        raise ValueError(f"--slots-per-gpu must be >= 1, got {slots_per_gpu}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {time_limit}")
    deadline = None if time_limit is None else time.monotonic() + time_limit
    if pack is not None and (isinstance(pack, bool) or not isinstance(pack, int) or pack < 1):
        raise ValueError(f"--pack must be a positive integer, got {pack!r}")
    if pack is not None and pack > 1 and backend != "local":
        raise ValueError("--pack > 1 applies to --backend local only; allowed with ray: --pack 1")
    slots = backends.DEFAULT_SLOTS_PER_GPU if slots_per_gpu is None else slots_per_gpu
    reporter = make_progress(progress if show_progress else "none", summary_every)
    config, text = load_sweep(path)
    runs = expand(config)
    check_runs(runs)
    if backend == "ray":
        backends._import_ray()
    jobs = {run.run_id: {"run_id": run.run_id, **run.to_json()} for run in runs}
    meta = {
        "name": config.name,
        "config_toml": text,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit() or "",
        "hxt_version": hxt_version(),
        "shared": json.dumps(shared_settings(config), sort_keys=True),
    }

    def executor(n_runs: int):
        extra = {"run_fn": run_fn} if run_fn is not None else {}
        if backend == "ray":
            return backends.RayExecutor(workers, config.device, slots, address, **extra)
        gpus = 0 if config.device == "cpu" else backends.gpu_count()
        # Packing pays on a GPU (one stacked model instead of many small ones); a CPU core trains
        # one run fastest alone.
        cap = pack if pack is not None else (DEFAULT_PACK if gpus and run_fn is None else 1)
        if cap > 1:
            from sweeps.pack import PackExecutor

            per_gpu = PackExecutor.DEFAULT_SLOTS_PER_GPU if slots_per_gpu is None else slots_per_gpu
            n = workers or backends.default_workers(config.device, per_gpu)
            # The throughput table is a GPU's: on CPU only the hard stop at the deadline applies.
            return PackExecutor(n, gpus, per_gpu, cap=cap, deadline=deadline if gpus else None)
        n = workers or backends.default_workers(config.device, slots)
        return backends.LocalExecutor(min(n, n_runs), gpus, slots, **extra)

    return drive(out, meta, runs, jobs, config.max_attempts, executor, reporter, deadline)


def drive(
    out,
    meta: dict,
    runs: list,
    jobs: dict[str, dict],
    max_attempts: int,
    executor,
    reporter,
    deadline: float | None = None,
) -> SweepSummary:
    """Hold the directory's lock, record the grid, run what is left; see `run_sweep`.

    `jobs` maps run id to the plain JSON dict a worker receives; `executor(n)` builds the executor
    for n runs. `deadline` is a `time.monotonic()` time at which the driver stops as on SIGTERM.
    An executor may hand a run back unstarted with a result of status "pending" (a pack held back
    by its deadline): the run goes back to pending and is not submitted again in this invocation.
    Everything that can refuse the directory is checked read-only first, so a refusal writes
    nothing.
    """
    check_writable_dir(out, "--out")
    path = Path(out) / STORE_NAME
    if path.is_dir():
        raise ValueError(f"--out {str(out)!r} holds {STORE_NAME} as a directory, not an hxt store")
    if path.exists():
        with Store.read_only(path) as existing:
            existing.check_integrity()
            existing.check_compatible(meta)
    with SweepLock(out) as lock, Store(out) as store, _Signals() as signals:
        if lock.previous is not None:
            reporter.note(f"note: taking over from a driver that is gone ({lock.previous.describe()})")
        store.init_sweep(meta, runs)
        queue = deque(store.todo(list(jobs), max_attempts))
        skipped = len(jobs) - len(queue)
        stop = _Stop(signals, deadline)
        requeued = held = 0
        if queue and not stop():
            requeued, held = _execute(
                store, lock, stop, jobs, queue, max_attempts, executor, reporter, skipped
            )
        counts = store.counts(list(jobs))
        return SweepSummary(
            total=len(jobs),
            skipped=skipped,
            counts=counts,
            interrupted=signals.received,
            requeued=requeued,
            in_store=sum(store.counts().values()),
            time_limited=signals.received is None and counts.get("pending", 0) > 0 and deadline is not None,
            held=held,
        )


class _Signals:
    """SIGINT and SIGTERM set a flag that the driver loop checks, instead of raising mid-write."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        self.received = self.received or signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class _Stop:
    """Whether the driver should stop: a signal came, or the deadline passed."""

    def __init__(self, signals: _Signals, deadline: float | None):
        self.signals, self.deadline = signals, deadline

    def __call__(self) -> bool:
        return self.signals.received is not None or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )


def _execute(
    store, lock, stop, jobs, queue, max_attempts, make_executor, reporter, skipped
) -> tuple[int, int]:
    """The driver loop; returns the runs put back to pending on an early stop, and the runs the
    executor held back unstarted."""
    executor = make_executor(len(queue))
    rows = {row["run_id"]: row for row in store.runs()}
    attempts = {rid: row["attempts"] for rid, row in rows.items()}
    counts: dict[str, int] = {}
    running: set[str] = set()
    commit = git_commit()
    held = 0
    reporter.start(len(jobs), skipped, len(queue), executor.describe())
    try:
        while (queue or running) and not stop():
            while queue and len(running) < executor.capacity and not stop():
                rid = queue.popleft()
                store.mark_running(rid)
                executor.submit(jobs[rid])
                running.add(rid)
            for rid, result in executor.wait(timeout=0.5):
                running.discard(rid)
                if result.get("status") == "pending":  # held back unstarted: not an attempt
                    store.requeue([rid])
                    held += 1
                    continue
                result["git_commit"] = commit
                try:
                    store.record(rid, result)
                except (sqlite3.IntegrityError, KeyError, TypeError, ValueError) as error:
                    # A malformed result must not take the sweep down: keep the run, as failed.
                    result = {
                        "status": "failed",
                        "error": f"could not store the result: {error!r}",
                        "git_commit": commit,
                    }
                    store.record(rid, result)
                attempts[rid] += 1
                status = result["status"]
                final = not (status == "failed" and attempts[rid] < max_attempts)
                if final:
                    counts[status] = counts.get(status, 0) + 1
                else:
                    queue.append(rid)
                reporter.finished(rows[rid], result, attempts[rid], max_attempts, final)
            reporter.update(len(running), counts)
            lock.heartbeat()
    finally:
        executor.close()  # stops workers still holding runs
        reporter.stop()
        requeued = store.requeue(running) if running else 0
    return requeued, held
