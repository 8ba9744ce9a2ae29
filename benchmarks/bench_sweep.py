"""Sweep throughput: runs per GPU-minute with 1, 2, 4, 6, 8 runs sharing each GPU.

Small models leave most of a GPU idle (kernel launches and Python dominate), so several runs per
GPU should multiply throughput; this measures by how much, through the real driver
(`sweeps.runner.run_sweep`, local backend): a fixed grid of `--runs` runs (one task, one pattern,
≈1 M non-embedding parameters, `--steps` steps each, early stopping off) per pattern and slot
count, with GPU utilisation sampled by nvidia-smi. The single-slot baseline runs only the first
`--baseline-runs` runs of the grid (its rate is what matters, and it is the slow one).

    python benchmarks/bench_sweep.py --out benchmarks/sweep_throughput.md   # GPU; sized for ~4 min on an H100
    python benchmarks/bench_sweep.py --smoke                                    # CPU, tiny, seconds

Prints a Markdown table (and writes it to --out) with the device, date and commit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps.backends import DEFAULT_SLOTS_PER_GPU, gpu_count  # noqa: E402
from sweeps.runner import git_commit, run_sweep  # noqa: E402

SWEEP = """
name = "bench-{pattern}-{slots}"
sizes = [{size}]
lrs = [1e-3]
seeds = {seeds}
device = "{device}"
[[arch]]
pattern = "{pattern}"
[model]
n_layers = {n_layers}
n_heads = {n_heads}
[train]
batch_size = {batch}
steps = {steps}
warmup = {warmup}
early_stop_acc = 2.0
log_every = 50
eval_examples_per_bin = 64
eval_batch_size = 64
eval_bins = 2
[[task]]
name = "parity"
train = {{ length = [3, 40] }}
eval = {{ length = [3, 64] }}
"""


class GpuSampler:
    """Samples utilisation (%) and memory (MiB) of the visible GPUs with nvidia-smi, every 0.5 s."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.process = None
        if shutil.which("nvidia-smi") is None:
            return
        self.process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "500",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            try:
                util, memory = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((util, memory))

    def stop(self) -> tuple[float | None, float | None]:
        if self.process is None:
            return None, None
        self.process.terminate()
        self.process.wait(timeout=5)
        if not self.samples:
            return None, None
        utils = [u for u, _ in self.samples]
        return sum(utils) / len(utils), max(m for _, m in self.samples)


def measure(pattern: str, slots: int, runs: int, args, gpus: int, workdir: Path) -> dict:
    text = SWEEP.format(
        pattern=pattern,
        slots=slots,
        size=args.size,
        seeds=list(range(runs)),
        device=args.device,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        batch=args.batch,
        steps=args.steps,
        warmup=max(1, args.steps // 10),
    )
    path = workdir / f"{pattern}-{slots}.toml"
    path.write_text(text)
    workers = slots * gpus if gpus else slots
    sampler = GpuSampler()
    start = time.perf_counter()
    summary = run_sweep(
        path, workdir / f"{pattern}-{slots}", workers=workers, slots_per_gpu=slots, show_progress=False
    )
    wall = time.perf_counter() - start
    util, memory = sampler.stop()
    done = summary.counts.get("done", 0)
    if done != runs:
        raise RuntimeError(
            f"{pattern} with {slots} slots: only {done} of {runs} runs finished: {summary.counts}"
        )
    per_minute = runs / (wall / 60) / max(gpus, 1)
    return {
        "pattern": pattern,
        "slots": slots,
        "runs": runs,
        "wall": wall,
        "rate": per_minute,
        "util": util,
        "memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", default="A,G", help="comma-separated mixer patterns")
    parser.add_argument("--slots", default=f"1,2,4,{DEFAULT_SLOTS_PER_GPU},8", help="slots per GPU to try")
    parser.add_argument("--runs", type=int, default=24, help="runs in the grid per setting")
    parser.add_argument("--baseline-runs", type=int, default=6, help="runs for the single-slot setting")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=1_000_000, help="target non-embedding parameters")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU version (checks the script runs)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    args.device = "auto"
    if args.smoke:
        args.device, args.patterns, args.slots = "cpu", "A", "1,2"
        args.runs, args.baseline_runs, args.steps, args.size, args.batch = 4, 2, 10, 2500, 8
        args.n_layers, args.n_heads = 1, 2
    gpus = 0 if args.device == "cpu" else gpu_count()
    if gpus == 0 and not args.smoke:
        sys.exit("no GPU visible: run with --smoke for the CPU check")
    device_name = "cpu"
    if gpus:
        import torch

        device_name = f"{gpus} x {torch.cuda.get_device_name(0)}"
    slots_list = [int(s) for s in args.slots.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hxt-bench-") as tmp:
        for pattern in args.patterns.split(","):
            for slots in slots_list:
                runs = args.baseline_runs if slots == 1 else args.runs
                row = measure(pattern, slots, runs, args, gpus, Path(tmp))
                rows.append(row)
                print(f"{pattern} slots={slots}: {row['runs']} runs in {row['wall']:.1f} s", file=sys.stderr)
    base = {r["pattern"]: r["rate"] for r in rows if r["slots"] == 1}
    fmt = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
    lines = [
        f"## Sweep throughput ({device_name}, {datetime.now(UTC):%Y-%m-%d}, commit {git_commit() or '?'})",
        "",
        f"Grid per setting: parity (L 3-40), target {args.size:,} non-embedding parameters, {args.n_layers} "
        f"layers, batch {args.batch}, {args.steps} steps, early stop off; {args.runs} runs "
        f"({args.baseline_runs} for 1 slot). Default --slots-per-gpu is {DEFAULT_SLOTS_PER_GPU}.",
        "",
        "| pattern | slots/GPU | runs | wall (s) | runs per GPU-minute | vs 1 slot | GPU util (mean %) "
        "| GPU mem (max MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speedup = r["rate"] / base[r["pattern"]] if r["pattern"] in base else None
        lines.append(
            f"| {r['pattern']} | {r['slots']} | {r['runs']} | {r['wall']:.1f} | {r['rate']:.2f} | "
            f"{fmt(speedup, '.2f')}x | {fmt(r['util'], '.0f')} | {fmt(r['memory'], '.0f')} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
