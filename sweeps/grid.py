"""Grid expansion: a sweep config becomes a list of typed, frozen run configs.

`RunConfig` is the spine of a sweep: the grid produces it, its canonical JSON (sorted keys, no
whitespace, the hxt version included) is hashed into `run_id` and stored, workers receive that
JSON and rebuild it with `RunConfig.from_json`, and training reads it as attributes. The id is the
same in every process and on every machine, and changes when any field does.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from architectures.config import ModelConfig
from sweeps.config import SweepConfig, TaskSpec, TrainSpec
from synthetic_tasks import make_task
from synthetic_tasks.base import eval_bins

__all__ = ["RunConfig", "expand", "check_runs", "canonical_json", "eval_bins", "hxt_version"]


def hxt_version() -> str:
    """The installed package's version, or the checkout's pyproject.toml's where hxt runs from a
    source tree without being installed (so that run ids agree between the two)."""
    try:
        return version("hxt")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class RunConfig:
    """Everything one run does follows from these fields; nothing else reaches a worker.

    `model` is the run's model before sizing: the sweep's [model] table with the architecture's
    pattern, eigenvalue range and own departures and the task's vocabulary; `model_config()` gives
    the width `size_for` picks for `target_params`.
    """

    task: TaskSpec
    arch: str  # the architecture's label in the store and reports
    model: ModelConfig
    target_params: int
    lr: float
    seed: int
    train: TrainSpec
    device: str  # auto | cpu | cuda
    hxt_version: str

    def to_json(self) -> dict:
        return {
            "task": self.task.to_json(),
            "arch": self.arch,
            "model": {k: v for k, v in asdict(self.model).items() if v is not None},
            "target_params": self.target_params,
            "lr": self.lr,
            "seed": self.seed,
            "train": asdict(self.train),
            "device": self.device,
            "hxt_version": self.hxt_version,
        }

    @classmethod
    def from_json(cls, data: dict) -> RunConfig:
        data = {k: v for k, v in data.items() if k != "run_id"}
        return cls(
            task=TaskSpec.from_json(data["task"]),
            arch=data["arch"],
            model=ModelConfig(**data["model"]),
            target_params=data["target_params"],
            lr=data["lr"],
            seed=data["seed"],
            train=TrainSpec(**data["train"]),
            device=data["device"],
            hxt_version=data["hxt_version"],
        )

    @cached_property
    def run_id(self) -> str:
        """16 hex digits of sha256(canonical JSON of the run config)."""
        return hashlib.sha256(canonical_json(self.to_json()).encode()).hexdigest()[:16]

    def model_config(self) -> ModelConfig:
        """The sized model (raises ValueError, naming sizes that work, where none fits)."""
        from architectures import size_for

        return size_for(self.model, self.target_params)

    def with_backend(self, backend: str) -> RunConfig:
        return replace(self, model=replace(self.model, backend=backend))


def expand(config: SweepConfig) -> list[RunConfig]:
    """All runs of the sweep, in a stable order (task, arch, size, lr, seed).

    Builds each (task, architecture)'s ModelConfig, so the models' own checks run here; raises
    ValueError naming the architecture and the failing field.
    """
    runs = []
    version_ = hxt_version()
    shared = dict(config.model)
    models = {}
    for task in config.tasks:
        vocab_size = make_task(task.name, **task.params_dict).vocab_size
        for arch in config.archs:
            fields = {**shared, **dict(arch.model)}
            if config.device == "cpu" and fields.get("backend", "auto") == "auto":
                fields["backend"] = "torch"  # so that no Triton limit applies where Triton never runs
            try:
                models[task, arch] = ModelConfig(
                    vocab_size=vocab_size, pattern=arch.pattern, allow_neg_eigval=arch.neg_eigval, **fields
                )
            except ValueError as error:
                raise ValueError(f"architecture {arch.name!r} ([model] and arch.model): {error}") from None
    for task, arch, size, lr, seed in itertools.product(
        config.tasks, config.archs, config.sizes, config.lrs, config.seeds
    ):
        runs.append(
            RunConfig(
                task=task,
                arch=arch.name,
                model=models[task, arch],
                target_params=size,
                lr=lr,
                seed=seed,
                train=config.train,
                device=config.device,
                hxt_version=version_,
            )
        )
    return runs


def check_runs(runs: list[RunConfig]) -> dict[tuple[str, int], ModelConfig]:
    """Size every (architecture, target) as a worker will: returns the sized ModelConfig of each.

    The non-embedding count does not depend on the vocabulary, so one check per distinct model
    template and target suffices. Raises ValueError naming the architecture and the size.
    """
    sized: dict[tuple[str, int], ModelConfig] = {}
    done: dict[tuple[ModelConfig, int], ModelConfig] = {}
    for run in runs:
        key = (replace(run.model, vocab_size=2), run.target_params)
        if key not in done:
            try:
                done[key] = run.model_config()
            except ValueError as error:
                raise ValueError(
                    f"sizes: {run.target_params} cannot be built for architecture {run.arch!r}: {error}"
                ) from None
        sized.setdefault((run.arch, run.target_params), done[key])
    return sized
