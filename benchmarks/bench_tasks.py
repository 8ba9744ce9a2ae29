"""Generator throughput: tokens per second for every registered task, beside its oracle's.

Runs on one core (numba threads = 1, the process pinned to one CPU) at training-sized batches
drawn from each task's training range. Tokens are counted up to each example's last non-pad
token. Targets (issue 2): >= 10 M tokens/s for the regular tasks, >= 1 M tokens/s for the code
tasks, and >= 20x the oracle everywhere.

    python benchmarks/bench_tasks.py [--batch 256] [--seconds 1.0] [--write] [TASK ...]
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from synthetic_tasks import TASKS, make_task  # noqa: E402
from synthetic_tasks.oracles import ORACLES  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
TARGETS = {"regular": 10e6, "code": 1e6}


def _lengths(task, inputs: np.ndarray) -> np.ndarray:
    real = inputs != task.pad_id  # [B, T]
    width = inputs.shape[1]
    last = width - np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), last, 0)


def _rates(run, seconds: float) -> tuple[float, float]:
    """(median, best) over calls of tokens/s, calls repeated for about `seconds`. On a shared
    machine a mean over wall time measures the neighbours; the median call is the conservative
    figure and the best call the cost without interference (timeit's convention)."""
    rates, elapsed, seed = [], 0.0, 1
    while elapsed < seconds or len(rates) < 5:
        done, spent = run(seed)
        rates.append(done / spent)
        elapsed += spent
        seed += 1
    return float(np.median(rates)), float(np.max(rates))


def _generator_rates(task, batch: int, seconds: float) -> tuple[float, float]:
    # Compile, then warm up: the allocator settles (its mmap threshold and heap grow) only after
    # a few hundred batches, and the first calls measured would pay for it.
    start = time.perf_counter()
    while time.perf_counter() - start < 0.5:
        task.sample(0, batch)

    def run(seed):
        start = time.perf_counter()
        out = task.sample(seed, batch)
        spent = time.perf_counter() - start
        return int(_lengths(task, out.inputs).sum()), spent

    return _rates(run, seconds)


def _oracle_rates(task, batch: int, seconds: float) -> tuple[float, float]:
    oracle = ORACLES[task.name]

    def run(seed):
        out = task.sample(seed, batch)
        lengths = _lengths(task, out.inputs)
        start = time.perf_counter()
        for row, length in zip(out.inputs, lengths):
            oracle(task, row[:length].tolist())
        return int(lengths.sum()), time.perf_counter() - start

    return _rates(run, seconds)


def _keep_freed_memory() -> bool:
    """Stop glibc from handing freed heap memory back to the OS.

    By default a freed block over ~1 MB at the top of the heap is returned to the OS, so the next
    batch of that size page-faults afresh: for MQAR at T = 256 that is ~160 us of a ~200 us batch,
    and it comes and goes with the allocator's history. A training process can set the same
    (MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ in its environment).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_trim_threshold, 1 << 28) and libc.mallopt(m_mmap_threshold, 1 << 26))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        command = ["git", "rev-parse", "--short", "HEAD"]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tasks", nargs="*", help="task names (default: every registered task)")
    parser.add_argument("--batch", type=int, default=256, help="examples per batch")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds of timed calls per rate")
    parser.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    kept = _keep_freed_memory()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    names = args.tasks or sorted(TASKS, key=lambda n: (TASKS[n].family, n))
    unknown = sorted(set(names) - set(TASKS))
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; known tasks: {', '.join(sorted(TASKS))}")

    rows = [
        "| task | family | generator M tok/s, median (best) | oracle M tok/s, median (best) "
        "| ratio, median (best) | target | met (median) |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for name in names:
        task = make_task(name)
        generator, generator_best = _generator_rates(task, args.batch, args.seconds)
        # A task still missing its oracle is reported, not skipped.
        nan = float("nan")
        oracle, oracle_best = _oracle_rates(task, args.batch, args.seconds) if name in ORACLES else (nan, nan)
        floor = TARGETS.get(task.family)
        target = f">= {floor / 1e6:.0f} M/s, >= 20x" if floor else ">= 20x"
        met = generator / oracle >= 20 and (floor is None or generator >= floor)
        rows.append(
            f"| {name} | {task.family} | {generator / 1e6:.1f} ({generator_best / 1e6:.1f}) "
            f"| {oracle / 1e6:.2f} ({oracle_best / 1e6:.2f}) "
            f"| {generator / oracle:.0f}x ({generator_best / oracle_best:.0f}x) | {target} "
            f"| {'yes' if met else 'NO'} |"
        )
        print(rows[-1], flush=True)

    header = (
        f"## Task generators — {datetime.date.today().isoformat()}, commit {_commit()}\n\n"
        f"Device: {_cpu_name()}, one core (numba {numba.__version__}, NUMBA_NUM_THREADS=1), "
        f"batch {args.batch}, training ranges; median and best over calls (one batch each) for "
        f"about {args.seconds:g} s. Tokens counted up to each example's last non-pad token. "
        f"Load average at the start: {load:.1f} on {os.cpu_count()} CPUs. glibc "
        f"trim/mmap thresholds {'raised (freed batches reused)' if kept else 'left at defaults'}.\n"
    )
    table = "\n".join(rows)
    print("\n" + header + "\n" + table)
    if args.write:
        with RESULTS.open("a") as file:
            if RESULTS.stat().st_size == 0:
                file.write("# Benchmark results\n")
            file.write("\n" + header + "\n" + table + "\n")
        print(f"\nappended to {RESULTS}")


if __name__ == "__main__":
    main()
