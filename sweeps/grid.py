"""Grid expansion: a sweep config becomes a list of run configs, each a plain JSON dict.

A run is identified by `run_id`, a hash of its canonical JSON (sorted keys, no whitespace) and the
hxt version, so it is the same in every process and on every machine, and changes when any field
does. The run config holds everything `sweeps.train.run` needs; nothing else reaches a worker.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from sweeps.config import SweepConfig

__all__ = ["expand", "run_id", "canonical_json", "eval_bins", "hxt_version", "sweep_hash"]


def hxt_version() -> str:
    try:
        return version("hxt")
    except PackageNotFoundError:
        return "0+unknown"


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def run_id(run: dict) -> str:
    """The run's identity: 16 hex digits of sha256(canonical JSON of the run config)."""
    return hashlib.sha256(canonical_json(run).encode()).hexdigest()[:16]


def sweep_hash(runs: list[dict]) -> str:
    """The sweep's identity: a hash of its set of run ids (so comments and key order do not count)."""
    return hashlib.sha256(",".join(sorted(r["run_id"] for r in runs)).encode()).hexdigest()[:16]


def eval_bins(train: tuple[int, int], evals: tuple[int, int], n_bins: int) -> list[int]:
    """Knob values to evaluate at: every value if few, else a geometric spread, ends included.

    The spread runs from the lower of the two ranges' lows to the higher of their highs, so that
    in-range and out-of-range difficulty both show; the training maximum is always a bin.
    """
    lo, hi = min(train[0], evals[0]), max(train[1], evals[1])
    if hi - lo + 1 <= n_bins:
        return list(range(lo, hi + 1))
    values = np.round(np.geomspace(max(lo, 1), hi, n_bins)).astype(int)
    values = np.unique(np.concatenate([[lo, train[1]], values[values >= lo], [hi]]))
    return [int(v) for v in values]


def expand(config: SweepConfig) -> list[dict]:
    """All runs of the sweep, in a stable order (task, arch, size, lr, seed), each with `run_id`."""
    runs = []
    version_ = hxt_version()
    model = {
        "n_layers": config.model.n_layers,
        "n_heads": config.model.n_heads,
        "mlp_ratio": config.model.mlp_ratio,
    }
    train = {name: getattr(config.train, name) for name in config.train.__dataclass_fields__}
    for task, arch, size, lr, seed in itertools.product(
        config.tasks, config.archs, config.sizes, config.lrs, config.seeds
    ):
        run = {
            "task": task.name,
            "task_params": task.params_dict,
            "train_range": {k: list(v) for k, v in task.train_range},
            "eval_range": {k: list(v) for k, v in task.eval_range},
            "eval_axes": list(task.eval_axes),
            "curriculum_knobs": list(task.curriculum_knobs),
            "arch": arch.name,
            "pattern": arch.pattern,
            "neg_eigval": arch.neg_eigval,
            "target_params": size,
            "lr": lr,
            "seed": seed,
            "model": model,
            "train": train,
            "device": config.device,
            "kernel_backend": config.kernel_backend,
            "hxt_version": version_,
        }
        # Round-trip through JSON so that the dict a worker sees is exactly the hashed one.
        run = json.loads(canonical_json(run))
        run["run_id"] = run_id(run)
        runs.append(run)
    return runs


def strip_id(run: dict) -> dict:
    """The run config without its id (what the id is a hash of)."""
    return {k: v for k, v in run.items() if k != "run_id"}
