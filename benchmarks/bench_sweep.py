"""Sweep wall time, today's mode against the new defaults, with the stores compared run by run.

Two grids of issue 15, each run twice:

- parity: A, G, M, G-noneg, M-noneg x 2 learning rates x 2 seeds (20 runs); 100 k non-embedding
  parameters, 2 layers, batch 256, lengths 3-40, 3000 steps;
- state-based recall: A, G, M x 2 learning rates x 2 seeds (12 runs); 400 k, 4 layers, batch 128,
  `--sbr-steps` steps (3000 in the issue; fewer by default, to keep the call short).

Both through `hxt sweep run`'s own `sweeps.runner.run_sweep`. "today": one run per worker process
(``--pack 1``), `--slots` (10) workers on the GPU, steps eager (``train.capture = false``). "new":
the default training spec (steps captured as CUDA graphs) and runs packed (``--pack``,
`--pack-slots` pack workers on the GPU). The two stores are then compared run by run, matched by
(architecture, lr, seed): status, steps taken, the early-stop step and the evaluation (token
accuracy per bin), which should agree to bf16 noise. With `--estimates` it also prints
`estimate_gpu_seconds` for every study config.

    python benchmarks/bench_sweep.py --out $OUT/sweep.md            # GPU, about 6 minutes on an H200
    python benchmarks/bench_sweep.py --smoke                         # CPU, tiny, to check the script

Prints a Markdown table (and writes it to --out) with the device, date and commit.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweeps import backends  # noqa: E402
from sweeps.config import load_sweep  # noqa: E402
from sweeps.grid import expand  # noqa: E402
from sweeps.pack import estimate_gpu_seconds  # noqa: E402
from sweeps.runner import git_commit, run_sweep  # noqa: E402
from sweeps.store import Store  # noqa: E402

# Both grids: GRID, then the grid's own tables from GRID_TABLES.
GRID = """
name = "bench-{name}-{mode}"
patterns = ["A", "G", "M"]
sizes = [{size}]
lrs = [1e-3, 3e-3]
seeds = [0, 1]
device = "{device}"
[model]
n_layers = {layers}
[train]
batch_size = {batch}
steps = {steps}
warmup = {warmup}
log_every = 100
{extra}
"""

GRID_TABLES = {
    "parity": """
[[arch]]
name = "G-noneg"
pattern = "G"
neg_eigval = false
[[arch]]
name = "M-noneg"
pattern = "M"
neg_eigval = false
[[task]]
name = "parity"
train = {{ length = [3, 40] }}
eval = {{ length = [3, {eval_hi}] }}
""",
    "sbr": """
[[task]]
name = "state_based_recall"
params = {{ supervision = "dense" }}
eval_axes = ["num_swaps", "m"]
""",
}


class GpuSampler:
    """Samples utilisation (%) and memory (MiB) of the visible GPUs with nvidia-smi, every 0.5 s."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.process = None
        if shutil.which("nvidia-smi") is None:
            return
        self.process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             "-lms", "500"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

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
        return sum(u for u, _ in self.samples) / len(self.samples), max(m for _, m in self.samples)


def measure(name: str, mode: str, args, gpus: int, workdir: Path) -> dict:
    steps = args.parity_steps if name == "parity" else args.sbr_steps
    batch = args.parity_batch if name == "parity" else args.sbr_batch
    small = args.smoke
    extra = ["capture = false"] if mode == "today" else []
    extra += ["eval_examples_per_bin = 16", "eval_bins = 3"] if small else []
    text = (GRID + GRID_TABLES[name]).format(
        name=name, mode=mode, device=args.device, steps=steps, warmup=max(1, steps // 10), batch=batch,
        extra="\n".join(extra), eval_hi=20 if small else 80,
        size=3000 if small else (100_000 if name == "parity" else 400_000),
        layers=1 if small else (2 if name == "parity" else 4),
    )  # fmt: skip
    path = workdir / f"{name}-{mode}.toml"
    path.write_text(text)
    out = workdir / f"{name}-{mode}"

    sampler = GpuSampler()
    start = time.perf_counter()
    if mode == "today":
        workers = args.slots * max(gpus, 1)
        run_sweep(path, out, workers=workers, slots_per_gpu=args.slots, pack=1, show_progress=False)
    else:
        workers = args.pack_slots * max(gpus, 1)
        run_sweep(
            path, out, workers=workers, slots_per_gpu=args.pack_slots, pack=args.pack, show_progress=False
        )
    wall = time.perf_counter() - start
    util, memory = sampler.stop()
    with Store.read_only(out) as store:
        rows = store.runs()
        evals = {
            r["run_id"]: store.db.execute(
                "SELECT knob, value, slice, token_acc, in_range FROM evals WHERE run_id = ? "
                "ORDER BY knob, value, slice",
                (r["run_id"],),
            ).fetchall()
            for r in rows
        }
    return {"grid": name, "mode": mode, "wall": wall, "util": util, "memory": memory, "rows": rows,
            "evals": evals, "steps": steps}  # fmt: skip


def compare(today: dict, new: dict, tolerance: float) -> tuple[list[str], int]:
    """Per-run lines of the comparison (matched by arch, lr, seed) and the number beyond tolerance."""
    key = lambda r: (r["arch"], r["lr"], r["seed"])  # noqa: E731
    old = {key(r): r for r in today["rows"]}
    lines, off = [], 0
    for row in sorted(new["rows"], key=key):
        base = old[key(row)]
        a = {(k, v, s): acc for k, v, s, acc, _ in today["evals"][base["run_id"]]}
        b = {(k, v, s): acc for k, v, s, acc, _ in new["evals"][row["run_id"]]}
        shared = sorted(set(a) & set(b))
        delta = max((abs(a[x] - b[x]) for x in shared), default=float("nan"))
        mean_a = sum(a[x] for x in shared) / len(shared) if shared else float("nan")
        mean_b = sum(b[x] for x in shared) / len(shared) if shared else float("nan")
        same = base["status"] == row["status"] and (not shared or delta <= tolerance)
        off += not same
        lines.append(
            f"| {new['grid']} | {row['arch']} | {row['lr']:g} | {row['seed']} | {base['status']} / "
            f"{row['status']} | {base['steps']} / {row['steps']} | {mean_a:.3f} / {mean_b:.3f} | "
            f"{delta:.3f} | {'same' if same else '**differs**'} |"
        )
    return lines, off


def estimates() -> list[str]:
    lines = ["| study config | runs | pack 1 (h) | pack 16 (h) |", "|---|---:|---:|---:|"]
    for path in sorted(glob.glob(str(Path(__file__).resolve().parent.parent / "sweeps/configs/r*.toml"))):
        config, _ = load_sweep(path)
        runs = expand(config)
        one, packed = estimate_gpu_seconds(runs, 1), estimate_gpu_seconds(runs, 16)
        lines.append(
            f"| {Path(path).name} | {len(runs)} | {one.seconds / 3600:.2f} | {packed.seconds / 3600:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default="parity,sbr", help="comma-separated: parity, sbr")
    parser.add_argument("--modes", default="today,new", help="comma-separated: today, new")
    parser.add_argument("--parity-steps", type=int, default=3000)
    parser.add_argument("--sbr-steps", type=int, default=1000)
    parser.add_argument("--parity-batch", type=int, default=256)
    parser.add_argument("--sbr-batch", type=int, default=128)
    parser.add_argument("--slots", type=int, default=10, help="today's workers per GPU")
    parser.add_argument("--pack", type=int, default=16, help="largest pack (new mode)")
    parser.add_argument("--pack-slots", type=int, default=3, help="pack workers per GPU (new mode)")
    parser.add_argument(
        "--tolerance", type=float, default=0.05, help="largest |token acc difference| per bin"
    )
    parser.add_argument("--estimates", action="store_true", help="also estimate every study config")
    parser.add_argument("--smoke", action="store_true", help="a tiny CPU version (checks the script runs)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    args.device = "auto"
    if args.smoke:
        args.device, args.slots, args.pack_slots = "cpu", 2, 1
        args.parity_steps, args.sbr_steps, args.parity_batch, args.sbr_batch = 20, 20, 8, 8
    gpus = 0 if args.device == "cpu" else backends.gpu_count()
    if gpus == 0 and not args.smoke:
        sys.exit("no GPU visible: run with --smoke for the CPU check")
    device_name = "cpu"
    if gpus:
        import torch

        device_name = f"{gpus} x {torch.cuda.get_device_name(0)}"
    results = {}
    with tempfile.TemporaryDirectory(prefix="hxt-bench-") as tmp:
        for name in args.grids.split(","):
            for mode in args.modes.split(","):
                results[name, mode] = measure(name, mode, args, gpus, Path(tmp))
                r = results[name, mode]
                counts = {}
                for row in r["rows"]:
                    counts[row["status"]] = counts.get(row["status"], 0) + 1
                print(f"{name} {mode}: {len(r['rows'])} runs in {r['wall']:.1f} s {counts}", file=sys.stderr)
    fmt = lambda x, spec: "n/a" if x is None else format(x, spec)  # noqa: E731
    lines = [
        f"## Sweep wall time ({device_name}, {datetime.now(UTC):%Y-%m-%d}, commit {git_commit() or '?'})",
        "",
        f"today: one run a worker, {args.slots} workers a GPU, eager steps; new: captured steps, packs of "
        f"at most {args.pack}, {args.pack_slots} pack workers a GPU.",
        "",
        "| grid | mode | runs | steps | wall (s) | vs today | GPU util (mean %) | GPU mem (max MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, mode), r in results.items():
        base = results.get((name, "today"))
        speedup = base["wall"] / r["wall"] if base else None
        lines.append(
            f"| {name} | {mode} | {len(r['rows'])} | {r['steps']} | {r['wall']:.1f} | "
            f"{fmt(speedup, '.1f')}x | {fmt(r['util'], '.0f')} | {fmt(r['memory'], '.0f')} |"
        )
    for name in args.grids.split(","):
        if (name, "today") in results and (name, "new") in results:
            per_run, off = compare(results[name, "today"], results[name, "new"], args.tolerance)
            lines += [
                "",
                f"{name}: {off} of {len(per_run)} runs differ beyond {args.tolerance} token accuracy in some "
                "bin (or in status). Columns: today / new.",
                "",
                "| grid | arch | lr | seed | status | steps | mean eval token acc | max bin diff | verdict |",
                "|---|---|---:|---:|---|---:|---:|---:|---|",
                *per_run,
            ]
    if args.estimates:
        lines += ["", "GPU-time estimates (`sweeps.pack.estimate_gpu_seconds`, sweeps/throughput.json):", ""]
        lines += estimates()
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
