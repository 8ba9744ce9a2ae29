"""Build small sweep stores with `sweeps/schema.sql` and made-up, known results (no training)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

SCHEMA = Path(__file__).resolve().parents[2] / "sweeps" / "schema.sql"

# (task, knob, training range, evaluation bins, chance, has a moved slice)
TASKS = {
    "parity": ("length", (3, 40), [8, 16, 32, 40, 64, 128, 256], 0.5, False),
    "state_based_recall": ("num_swaps", (1, 8), [2, 4, 8, 16, 32], 0.5, True),
}
PATTERNS = {"A": ("A", 1), "G": ("G", 1), "M": ("M", 1), "GGGA": ("GGGA", 1)}

# Out-of-range token accuracy at the largest size: the hybrid generalises on recall, G on parity.
SKILL = {
    ("parity", "A"): 0.55,
    ("parity", "G"): 1.0,
    ("parity", "M"): 0.55,
    ("parity", "GGGA"): 1.0,
    ("state_based_recall", "A"): 0.65,
    ("state_based_recall", "G"): 0.6,
    ("state_based_recall", "M"): 0.52,
    ("state_based_recall", "GGGA"): 0.98,
}


def build_store(
    path: Path,
    sizes=(100_000,),
    seeds=(0, 1),
    lrs=(1e-3,),
    archs=tuple(PATTERNS),
    tasks=tuple(TASKS),
    failures: bool = True,
    rng_seed: int = 0,
    n_per_bin: int = 200,
) -> Path:
    """Write `path/hxt.sqlite`; with `failures`, one extra run failed and one diverged."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rng_seed)
    connection = sqlite3.connect(path / "hxt.sqlite")
    connection.executescript(SCHEMA.read_text())
    header = {
        "name": "demo",
        "config_hash": "cafe1234",
        "config_toml": "",
        "created_at": "2026-11-27T10:00:00Z",
        "git_commit": "abc1234",
        "hxt_version": "0.1.0",
    }
    connection.executemany("INSERT INTO sweep VALUES (?, ?)", header.items())
    run_index = 0
    for task in tasks:
        knob, (low, high), bins, chance, moved = TASKS[task]
        for arch in archs:
            pattern, neg = PATTERNS[arch]
            for size_index, size in enumerate(sizes):
                # Larger models get closer to their skill; the scale makes a logistic in log size.
                reach = 1.0 / (1.0 + np.exp(-3.0 * (size_index - (len(sizes) - 1) / 2 + 0.5)))
                for seed in seeds:
                    for lr_index, lr in enumerate(lrs):
                        run_id = f"run{run_index:05d}"
                        run_index += 1
                        lr_penalty = 0.03 * lr_index
                        skill = chance + (SKILL[(task, arch)] - chance) * (reach if len(sizes) > 1 else 1.0)
                        _insert_run(connection, run_id, task, arch, pattern, neg, size, lr, seed, "done")
                        for value in bins:
                            in_range = low <= value <= high
                            acc = 1.0 - lr_penalty if in_range else skill - lr_penalty
                            for slice_ in ["all", "moved"] if moved else ["all"]:
                                noisy = float(
                                    np.clip(
                                        acc + rng.normal(0, 0.01) - (0.02 if slice_ == "moved" else 0), 0, 1
                                    )
                                )
                                n, n_tokens = n_per_bin, n_per_bin
                                connection.execute(
                                    "INSERT INTO evals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                    (
                                        run_id,
                                        knob,
                                        value,
                                        int(in_range),
                                        slice_,
                                        n,
                                        n_tokens,
                                        noisy,
                                        noisy,
                                        (noisy - chance) / (1 - chance),
                                        chance,
                                        float(-np.log(max(noisy, 1e-3)) + 0.05 * (1e6 / size) ** 0.3),
                                    ),
                                )
                        # As training logs: from the first logging step (never 0), a curve per run.
                        for step in (50, 100, 200):
                            train_acc = chance + (1 - chance) * step / 200 * (0.5 + 0.1 * (run_index % 5))
                            connection.execute(
                                "INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                                (run_id, step, 1.0 / step + 0.01 * run_index, train_acc, lr),
                            )
    if failures:
        _insert_run(
            connection,
            "failed0",
            tasks[0],
            archs[0],
            *PATTERNS[archs[0]],
            sizes[0],
            1.0,
            0,
            "failed",
            error="RuntimeError: CUDA out of memory\ntraceback...",
        )
        _insert_run(
            connection,
            "diverged0",
            tasks[0],
            archs[-1],
            *PATTERNS[archs[-1]],
            sizes[0],
            1.0,
            0,
            "diverged",
            error="loss is nan at step 37",
        )
    connection.commit()
    connection.close()
    return path


def _insert_run(connection, run_id, task, arch, pattern, neg, size, lr, seed, status, error=None):
    config = {"task": task, "arch": arch, "size": size, "lr": lr, "seed": seed}
    done = status == "done"
    connection.execute(
        "INSERT INTO runs (run_id, config_json, task, task_params, arch, pattern, neg_eigval, target_params,"
        " lr, seed, status, attempts, error, n_params, n_params_total, state_size, d_model, n_layers, steps,"
        " final_loss, train_acc, solved_step, started_at, finished_at, wall_seconds, device, git_commit)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            json.dumps(config),
            task,
            "{}",
            arch,
            pattern,
            neg,
            size,
            lr,
            seed,
            status,
            1,
            error,
            int(size * 1.03) if done else None,
            int(size * 1.2) if done else None,
            int(size // 25) if done else None,
            64,
            4,
            200 if done else None,
            0.1 if done else None,
            0.99 if done else None,
            None,
            "2026-11-27T10:01:00Z",
            "2026-11-27T10:05:00Z" if done else None,
            240.0,
            "cpu",
            "abc1234",
        ),
    )
