"""The sweep driver: validate, record the grid, hand runs to an executor, store every result.

The driver is the only writer of the store. Order matters for crash safety and for clean errors:
the sweep file is validated and the backend checked *before* the store is opened, so a bad input
leaves no trace; each result is committed the moment it arrives.
"""

from __future__ import annotations

import sqlite3
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from sweeps.config import SweepConfig, load_sweep
from sweeps.grid import expand, hxt_version, sweep_hash
from sweeps.store import Store

__all__ = ["SweepSummary", "run_sweep", "git_commit", "check_sizes"]


@cache
def git_commit() -> str | None:
    """The commit of the hxt checkout, with "-dirty" if it has uncommitted changes; None outside git."""
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


def check_sizes(config: SweepConfig) -> dict[tuple[str, int], int]:
    """Check that every (architecture, size) can be built; returns the chosen d_model of each.

    The non-embedding count does not depend on the vocabulary, so one check per pair suffices.
    """
    from architectures import size_for

    widths = {}
    for arch in config.archs:
        for size in config.sizes:
            try:
                model = size_for(
                    arch.pattern,
                    target_params=size,
                    vocab_size=16,
                    n_layers=config.model.n_layers,
                    n_heads=config.model.n_heads,
                    mlp_ratio=config.model.mlp_ratio,
                    allow_neg_eigval=arch.neg_eigval,
                )
            except ValueError as error:
                raise ValueError(
                    f"sizes: {size} cannot be built for architecture {arch.name!r}: {error}"
                ) from None
            widths[arch.name, size] = model.d_model
    return widths


@dataclass(frozen=True)
class SweepSummary:
    total: int
    skipped: int  # already finished before this invocation
    counts: dict[str, int]  # status -> runs, after this invocation


def _progress(total: int, finished: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "running {task.fields[running]}  failed {task.fields[failed]}  diverged {task.fields[diverged]}"
        ),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )
    task = progress.add_task("runs", total=total, completed=finished, running=0, failed=0, diverged=0)
    return progress, task


def run_sweep(
    path: str | Path,
    out: str | Path,
    backend: str = "local",
    workers: int | None = None,
    slots_per_gpu: int | None = None,
    address: str | None = None,
    run_fn: Callable | None = None,
    show_progress: bool = True,
) -> SweepSummary:
    """Run every unfinished run of the sweep in `path`, recording results in `out`/hxt.sqlite."""
    from sweeps import backends

    if backend not in ("local", "ray"):
        raise ValueError(f"--backend {backend!r} is not known; allowed values: local, ray")
    if address is not None and backend != "ray":
        raise ValueError("--address only applies to --backend ray")
    config, text = load_sweep(path)
    check_sizes(config)
    slots = slots_per_gpu or backends.DEFAULT_SLOTS_PER_GPU
    if slots < 1:
        raise ValueError(f"--slots-per-gpu must be >= 1, got {slots}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if backend == "ray":
        backends._import_ray()
    runs = expand(config)
    by_id = {run["run_id"]: run for run in runs}
    meta = {
        "name": config.name,
        "config_hash": sweep_hash(runs),
        "config_toml": text,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit() or "",
        "hxt_version": hxt_version(),
    }
    with Store(out) as store:
        store.init_sweep(meta, runs)
        queue = deque(store.todo(list(by_id), config.max_attempts))
        skipped = len(runs) - len(queue)
        if queue:
            _execute(
                store, config, by_id, queue, backend, workers, slots, address, run_fn, show_progress, skipped
            )
        return SweepSummary(total=len(runs), skipped=skipped, counts=store.counts())


def _execute(store, config, by_id, queue, backend, workers, slots, address, run_fn, show_progress, skipped):
    from sweeps import backends

    extra = {"run_fn": run_fn} if run_fn is not None else {}
    if backend == "ray":
        executor = backends.RayExecutor(workers, config.device, slots, address, **extra)
    else:
        gpus = 0 if config.device == "cpu" else backends.gpu_count()
        n = workers or backends.default_workers(config.device, slots)
        executor = backends.LocalExecutor(min(n, len(queue)), gpus, slots, **extra)
    attempts = {r["run_id"]: r["attempts"] for r in store.runs()}
    progress, bar = _progress(len(by_id), skipped)
    counts = {"failed": 0, "diverged": 0}
    running: set[str] = set()
    commit = git_commit()
    try:
        if show_progress:
            progress.start()
        while queue or running:
            while queue and len(running) < executor.capacity:
                rid = queue.popleft()
                store.mark_running(rid)
                executor.submit(by_id[rid])
                running.add(rid)
            for rid, result in executor.wait(timeout=0.5):
                running.discard(rid)
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
                if status == "failed" and attempts[rid] < config.max_attempts:
                    queue.append(rid)
                else:
                    progress.advance(bar)
                if status in counts:
                    counts[status] += 1
            progress.update(bar, running=len(running), **counts)
    finally:
        executor.close()
        progress.stop()
