"""Where runs execute: `local` (a spawn-based pool of worker processes) or `ray` (Ray tasks).

Both are *executors* with the same three calls — `submit(run)`, `wait(timeout) -> [(run_id,
result)]`, `close()` — and a `capacity` (runs in flight at once). The driver (`sweeps.runner`) hands them
plain JSON run dicts and writes every result to the store itself; workers never touch the store.

Local on GPUs: worker *i* sees only the (i mod n)-th of the driver's n visible GPUs
(``CUDA_VISIBLE_DEVICES`` is set in the worker before CUDA starts), so ``slots_per_gpu`` small
models share each card. On CPU: N worker processes with one torch thread each. A worker that
dies (OOM kill, segfault, SIGKILL) fails only the run it held and is replaced; a worker whose
driver dies exits within a second.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import wait as wait_connections

__all__ = ["LocalExecutor", "RayExecutor", "gpu_count", "visible_gpus", "default_workers", "RAY_INSTALL"]

RAY_INSTALL = "pip install 'hxt[ray]'"
DEFAULT_SLOTS_PER_GPU = 6
# The driver stops its workers itself (on Ctrl-C, SIGTERM or at the end); a signal sent to the
# whole process group (a terminal's Ctrl-C, a batch system's SIGTERM) must not kill them first,
# or a worker's traceback and a burnt retry would reach the store before the driver stops cleanly.
_DRIVER_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def train_run(config: dict, device: str | None = None, threads: int = 1) -> dict:
    """`sweeps.train.run`, imported in the worker (the driver never needs torch)."""
    from sweeps.train import run

    return run(config, device=device, threads=threads)


def visible_gpus() -> list[str]:
    """The GPUs visible to the driver, as CUDA_VISIBLE_DEVICES entries (without initialising CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [d.strip() for d in visible.split(",")]
        # CUDA stops at the first invalid entry, "-1" included.
        return entries[: entries.index("-1")] if "-1" in entries else [d for d in entries if d]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def gpu_count() -> int:
    return len(visible_gpus())


def default_workers(device_policy: str, slots_per_gpu: int) -> int:
    gpus = 0 if device_policy == "cpu" else gpu_count()
    if gpus:
        return gpus * slots_per_gpu
    return max(1, os.cpu_count() or 1)


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _worker_main(conn, gpu: str | None, run_fn: Callable, parent: int) -> None:
    for signum in _DRIVER_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _DRIVER_SIGNALS)  # blocked by the driver at spawn
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    device = "cuda" if gpu is not None else "cpu"
    while True:
        try:
            run = conn.recv()
        except (EOFError, OSError):
            return
        if run is None:
            return
        config = {k: v for k, v in run.items() if k != "run_id"}
        try:
            result = run_fn(config, device=device, threads=1)
        except Exception:  # sweeps.train.run never raises; another run_fn might
            result = {"status": "failed", "error": traceback.format_exc()[-6000:]}
        conn.send((run["run_id"], result))


class _Slot:
    def __init__(self, gpu: str | None):
        self.gpu = gpu
        self.process = None
        self.conn = None
        self.run_id: str | None = None


class LocalExecutor:
    """A pool of spawned worker processes, one run at a time each."""

    def __init__(
        self,
        workers: int,
        gpus: int = 0,
        slots_per_gpu: int = DEFAULT_SLOTS_PER_GPU,
        run_fn: Callable = train_run,
    ):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        if slots_per_gpu < 1:
            raise ValueError(f"--slots-per-gpu must be >= 1, got {slots_per_gpu}")
        self.context = mp.get_context("spawn")
        self.run_fn = run_fn
        ids = visible_gpus()[:gpus] if gpus else []
        self.slots = [_Slot(ids[i % len(ids)] if ids else None) for i in range(workers)]
        self.capacity = workers

    def describe(self) -> str:
        where = f"GPUs {', '.join(sorted({s.gpu for s in self.slots}))}" if self.slots[0].gpu else "CPU"
        return f"{self.capacity} local worker{'s' if self.capacity > 1 else ''} ({where})"

    def _start(self, slot: _Slot) -> None:
        parent_conn, child_conn = self.context.Pipe()
        slot.process = self.context.Process(
            target=_worker_main, args=(child_conn, slot.gpu, self.run_fn, os.getpid()), daemon=True
        )
        # The child inherits the blocked mask through exec, so a signal that reaches it while Python
        # starts up waits until _worker_main has chosen to ignore it. Starting multiprocessing's
        # resource tracker unblocks these signals afterwards, so it must already run.
        resource_tracker.ensure_running()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DRIVER_SIGNALS)
        try:
            slot.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child_conn.close()
        slot.conn = parent_conn

    def submit(self, run: dict) -> None:
        slot = next(s for s in self.slots if s.run_id is None)
        if slot.process is None or not slot.process.is_alive():
            self._start(slot)
        slot.run_id = run["run_id"]
        slot.conn.send(run)

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        busy = [s for s in self.slots if s.run_id is not None]
        if not busy:
            return []
        ready = set(wait_connections([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout))
        out = []
        for slot in busy:
            if slot.conn not in ready and slot.process.sentinel not in ready:
                continue
            try:
                if not slot.conn.poll():
                    raise EOFError
                rid, result = slot.conn.recv()
            except (EOFError, OSError):
                slot.process.join(timeout=5)
                rid = slot.run_id
                result = {
                    "status": "failed",
                    "error": f"worker process died (exit code {slot.process.exitcode})",
                }
                slot.process = None
            out.append((rid, result))
            slot.run_id = None
        return out

    def close(self) -> None:
        for slot in self.slots:
            if slot.process is None:
                continue
            if slot.run_id is None and slot.process.is_alive():
                try:
                    slot.conn.send(None)
                except OSError:
                    pass
                slot.process.join(timeout=2)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)
            slot.process = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"the ray backend needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def _ray_task(run: dict, run_fn: Callable) -> tuple[str, dict]:
    config = {k: v for k, v in run.items() if k != "run_id"}
    return run["run_id"], run_fn(config, device=None, threads=1)


class RayExecutor:
    """Runs as Ray tasks: a local Ray instance, or an existing cluster with `address`.

    Each task asks for one CPU, and 1/slots_per_gpu of a GPU where the cluster has GPUs and the
    device policy allows them; Ray then sets CUDA_VISIBLE_DEVICES for it.
    """

    def __init__(
        self,
        workers: int | None,
        device_policy: str,
        slots_per_gpu: int = DEFAULT_SLOTS_PER_GPU,
        address: str | None = None,
        run_fn: Callable = train_run,
    ):
        ray = _import_ray()
        self.ray = ray
        self.owns = not ray.is_initialized()
        if self.owns:
            options = {"address": address} if address else {"num_cpus": workers or os.cpu_count() or 1}
            # The workers import hxt from the driver's checkout.
            env = {
                "env_vars": {
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p
                    )
                }
            }
            try:
                ray.init(include_dashboard=False, log_to_driver=False, runtime_env=env, **options)
            except ConnectionError as error:
                raise ValueError(f"--address {address!r}: cannot join a Ray cluster there: {error}") from None
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if device_policy != "cpu" else 0
        if workers is None:
            workers = gpus * slots_per_gpu if gpus else int(resources.get("CPU", 1))
        self.capacity = workers
        remote = ray.remote(_ray_task)
        self.remote = remote.options(num_cpus=1, num_gpus=1 / slots_per_gpu if gpus else 0, max_retries=0)
        self.run_fn = run_fn
        self.pending: dict = {}

    def describe(self) -> str:
        return f"Ray ({self.capacity} runs at once)"

    def submit(self, run: dict) -> None:
        self.pending[self.remote.remote(run, self.run_fn)] = run["run_id"]

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        if not self.pending:
            return []
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            rid = self.pending.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except Exception as error:  # the worker process died; the run itself never raises
                out.append((rid, {"status": "failed", "error": f"ray task failed: {error}"[-6000:]}))
        return out

    def close(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if self.owns:
            self.ray.shutdown()
