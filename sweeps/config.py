"""Sweep files: TOML in, frozen dataclasses out, every mistake caught before anything runs.

A sweep file names the grid's axes (tasks, architectures, sizes, learning rates, seeds) and the
settings every run shares (model shape, training budget, evaluation, device policy)::

    name = "demo"
    patterns = ["A", "G", "M", "GGGA"]     # architectures by mixer pattern ...
    sizes = [20_000]                        # target non-embedding parameter counts
    lrs = [3e-3]
    seeds = [0, 1]

    [[arch]]                                # ... plus named variants
    name = "G-noneg"
    pattern = "G"
    neg_eigval = false
    [[arch]]
    name = "A-nope"
    pattern = "A"
    model = { pos = "none" }                # this variant's departures from [model]

    [model]                                 # any ModelConfig field but the grid's own
    n_layers = 4
    n_heads = 2
    backend = "auto"                        # recurrent kernels: auto | triton | torch

    [train]
    batch_size = 32
    steps = 1500

    [[task]]
    name = "parity"
    train = { length = [3, 20] }            # knobs left out keep the task's own ranges
    eval = { length = [3, 64] }

Every user error raises one ValueError naming the offending key and the allowed values. Parsing
needs neither torch nor the models; `sweeps.grid.expand` then builds every run's ModelConfig, which
runs the mixers' own checks, and `sweeps.grid.check_runs` sizes every model.
"""

from __future__ import annotations

import inspect
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from architectures.config import BACKENDS, ModelConfig, field_type
from sweeps.files import read_text_file
from synthetic_tasks import TASKS, make_task

__all__ = ["ArchSpec", "SweepConfig", "TaskSpec", "TrainSpec", "load_sweep", "parse_sweep", "MODEL_KEYS"]

DEVICES = ("auto", "cpu", "cuda")
CURRICULA = ("linear", "none")
# ModelConfig fields the grid sets itself, and from what.
GRID_MODEL_KEYS = {
    "vocab_size": "the task",
    "pattern": "'patterns' / arch.pattern",
    "allow_neg_eigval": "arch.neg_eigval",
    "d_model": "'sizes' (size_for picks the width)",
}
# The keys of [model] (and of an [[arch]]'s model table): every other ModelConfig field.
MODEL_KEYS = {f.name: field_type(f.type) for f in fields(ModelConfig) if f.name not in GRID_MODEL_KEYS}


@dataclass(frozen=True)
class TaskSpec:
    """One task of the grid: structural parameters and the difficulty ranges to train/evaluate on."""

    name: str
    params: tuple[tuple[str, object], ...]  # sorted (key, value) pairs, hashable
    train_range: tuple[tuple[str, tuple[int, int]], ...]  # every knob, sorted by name
    eval_range: tuple[tuple[str, tuple[int, int]], ...]
    eval_axes: tuple[str, ...]
    curriculum_knobs: tuple[str, ...]

    @property
    def params_dict(self) -> dict:
        return dict(self.params)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "params": self.params_dict,
            "train_range": {k: list(v) for k, v in self.train_range},
            "eval_range": {k: list(v) for k, v in self.eval_range},
            "eval_axes": list(self.eval_axes),
            "curriculum_knobs": list(self.curriculum_knobs),
        }

    @classmethod
    def from_json(cls, data: dict) -> TaskSpec:
        return cls(
            name=data["name"],
            params=tuple(sorted(data["params"].items())),
            train_range=tuple(sorted((k, tuple(v)) for k, v in data["train_range"].items())),
            eval_range=tuple(sorted((k, tuple(v)) for k, v in data["eval_range"].items())),
            eval_axes=tuple(data["eval_axes"]),
            curriculum_knobs=tuple(data["curriculum_knobs"]),
        )


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: a label for the store, the mixer pattern, the eigenvalue range, and the
    ModelConfig fields in which it departs from the sweep's [model] table."""

    name: str
    pattern: str
    neg_eigval: bool = True
    model: tuple[tuple[str, object], ...] = ()  # sorted (field, value) pairs


@dataclass(frozen=True)
class TrainSpec:
    """The training budget and evaluation shared by every run of a sweep."""

    batch_size: int = 32
    steps: int = 1000
    warmup: int = 100
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    early_stop_acc: float = 0.99  # 1.0 would need a perfect window; > 1 never stops
    early_stop_window: int = 50  # steps averaged for the early-stop test
    curriculum: str = "linear"
    curriculum_fraction: float = 0.5  # share of the steps over which the curriculum ramps
    log_every: int = 25
    eval_examples_per_bin: int = 256
    eval_batch_size: int = 128
    eval_bins: int = 8  # bins per evaluation axis (fewer where the knob has fewer values)
    capture: bool = True  # on CUDA, replay each training step as a CUDA graph (sweeps.train)


@dataclass(frozen=True)
class SweepConfig:
    name: str
    tasks: tuple[TaskSpec, ...]
    archs: tuple[ArchSpec, ...]
    sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    model: tuple[tuple[str, object], ...] = ()  # the [model] table: sorted (ModelConfig field, value)
    train: TrainSpec = field(default_factory=TrainSpec)
    device: str = "auto"
    max_attempts: int = 2
    description: str = ""

    def shared_settings(self) -> dict:
        """What every run of the sweep shares, by key: a sweep directory may gain runs along the
        grid's axes, but a change here makes it another sweep."""
        return {
            **{f"model.{k}": v for k, v in self.model},
            **{f"train.{k}": v for k, v in asdict(self.train).items()},
            "device": self.device,
        }


def load_sweep(path: str | Path) -> tuple[SweepConfig, str]:
    """Read and validate a sweep file; returns the config and the file's text."""
    text = read_text_file(path, "sweep file")
    return parse_sweep(text, source=str(path)), text


def parse_sweep(text: str, source: str = "<sweep>") -> SweepConfig:
    """Parse and validate the TOML text of a sweep file."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{source}: not valid TOML: {error}") from None
    return _sweep_from_dict(raw)


_TOP_KEYS = {
    "name": "sweep name",
    "description": "free text",
    "patterns": "list of mixer patterns, e.g. ['A', 'GGGA']",
    "arch": "array of tables {name, pattern, neg_eigval, model}",
    "sizes": "list of target non-embedding parameter counts",
    "lrs": "list of learning rates",
    "seeds": "list of run seeds",
    "device": f"one of {DEVICES}",
    "max_attempts": "attempts per run before it stays failed",
    "model": "table of ModelConfig fields: " + ", ".join(MODEL_KEYS),
    "train": "table of training settings",
    "task": "array of tables {name, params, train, eval, eval_axes, curriculum_knobs}",
}


def _check_keys(table: dict, allowed, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"unknown key {where}{unknown[0]!r}; allowed keys: {', '.join(sorted(allowed))}")


def _int(value, key: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{key} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{key} must be <= {high}, got {value}")
    return value


def _float(value, key: str, low: float | None = None, high: float | None = None, open_low=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{key} must be finite, got {value}")
    if low is not None and (value <= low if open_low else value < low):
        raise ValueError(f"{key} must be {'>' if open_low else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{key} must be <= {high}, got {value}")
    return value


def _choice(value, key: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{key} = {value!r} is not allowed; allowed values: {', '.join(allowed)}")
    return value


def _list(raw: dict, key: str, convert) -> tuple:
    if key not in raw:
        raise ValueError(f"missing key {key!r} ({_TOP_KEYS[key]})")
    values = raw[key]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{key} must be a non-empty list, got {values!r}")
    out = tuple(convert(v, f"{key}[{i}]") for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise ValueError(f"{key} has duplicate entries: {list(out)}")
    return out


def _pattern(value, key: str) -> str:
    """A pattern's type; its letters are checked against MIXERS when the runs' models are built."""
    if not isinstance(value, str) or not value or not value.isalpha() or not value.isupper():
        raise ValueError(
            f"{key} must be a non-empty pattern string of mixer letters such as 'GGGA', got {value!r}"
        )
    return value


def _model_table(raw, where: str) -> tuple[tuple[str, object], ...]:
    """A table of ModelConfig fields, type-checked; the models' own checks run in `expand`."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table of ModelConfig fields: {', '.join(MODEL_KEYS)}")
    for key, value in raw.items():
        if key in GRID_MODEL_KEYS:
            raise ValueError(f"{where}.{key} is set by the grid, from {GRID_MODEL_KEYS[key]}; remove it")
        if key not in MODEL_KEYS:
            raise ValueError(f"unknown key {where}.{key!r}; allowed keys: {', '.join(MODEL_KEYS)}")
        kind = MODEL_KEYS[key]
        if kind is float:
            raw[key] = _float(value, f"{where}.{key}", 0.0, open_low=True)
        elif kind is int:
            _int(value, f"{where}.{key}", 1)
        elif kind is bool and not isinstance(value, bool):
            raise ValueError(f"{where}.{key} must be true or false, got {value!r}")
        elif kind is str and not isinstance(value, str):
            raise ValueError(f"{where}.{key} must be a string, got {value!r}")
    if "backend" in raw:
        _choice(raw["backend"], f"{where}.backend", BACKENDS)
    return tuple(sorted(raw.items()))


def _archs(raw: dict) -> tuple[ArchSpec, ...]:
    patterns = raw.get("patterns", [])
    if not isinstance(patterns, list):
        raise ValueError(f"patterns must be a list of mixer patterns such as ['A', 'GGGA'], got {patterns!r}")
    archs = [ArchSpec(name=_pattern(p, f"patterns[{i}]"), pattern=p) for i, p in enumerate(patterns)]
    extra = raw.get("arch", [])
    if not isinstance(extra, list):
        raise ValueError("arch must be an array of tables ([[arch]] name, pattern, neg_eigval, model)")
    for i, table in enumerate(extra):
        where = f"arch[{i}]."
        if not isinstance(table, dict):
            raise ValueError(f"arch[{i}] must be a table with keys name, pattern, neg_eigval, model")
        _check_keys(table, ("name", "pattern", "neg_eigval", "model"), where)
        if "pattern" not in table:
            raise ValueError(f"missing key {where}pattern (a mixer pattern such as 'GGGA')")
        pattern = _pattern(table["pattern"], f"{where}pattern")
        name = table.get("name", pattern)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}name must be a non-empty string, got {name!r}")
        neg = table.get("neg_eigval", True)
        if not isinstance(neg, bool):
            raise ValueError(f"{where}neg_eigval must be true or false, got {neg!r}")
        model = _model_table(dict(table.get("model", {})), f"arch[{i}].model")
        archs.append(ArchSpec(name=name, pattern=pattern, neg_eigval=neg, model=model))
    if not archs:
        raise ValueError("no architectures: give 'patterns' and/or [[arch]] tables")
    names = [a.name for a in archs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"architecture name {duplicates[0]!r} is declared twice (patterns / arch.name)")
    return tuple(archs)


def _ranges(table, task, where: str, defaults: dict) -> dict[str, tuple[int, int]]:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of knob = [lo, hi] or knob = value")
    out = dict(defaults)
    for knob_name, value in table.items():
        if knob_name not in task.knobs:
            raise ValueError(
                f"unknown knob {where}.{knob_name!r} for task {task.name!r}; "
                f"known knobs: {', '.join(sorted(task.knobs))}"
            )
        if isinstance(value, list):
            value = tuple(value)
        try:
            out[knob_name] = task.knobs[knob_name].resolve(knob_name, value)
        except ValueError as error:
            raise ValueError(f"{where}.{knob_name}: {error}") from None
    return out


def _check_sampling(
    task, train: dict, evals: dict, axes: list[str], curriculum: list[str], where: str
) -> None:
    """Draw one example at the corners a run will visit, so that knobs that constrain each other
    (e.g. more variables than bits) fail here rather than inside a worker."""
    corners = [train, {**train, **{knob: (train[knob][0],) * 2 for knob in curriculum}}]
    for knob in axes:
        lo = min(train[knob][0], evals[knob][0])
        hi = max(train[knob][1], evals[knob][1])
        corners += [{**train, knob: lo}, {**train, knob: hi}]
    for ranges in corners:
        try:
            task.sample(0, 1, **ranges)
        except ValueError as error:
            raise ValueError(f"{where}: impossible difficulty {ranges}: {error}") from None


def _tasks(raw: dict) -> tuple[TaskSpec, ...]:
    tables = raw.get("task")
    if not isinstance(tables, list) or not tables:
        raise ValueError("missing [[task]] tables: a sweep needs at least one task")
    specs = []
    for i, table in enumerate(tables):
        where = f"task[{i}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where} must be a table")
        _check_keys(table, ("name", "params", "train", "eval", "eval_axes", "curriculum_knobs"), f"{where}.")
        name = table.get("name")
        if not isinstance(name, str) or name not in TASKS:
            raise ValueError(f"unknown task {where}.name = {name!r}; known tasks: {', '.join(sorted(TASKS))}")
        params = table.get("params", {})
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params must be a table of the task's structural parameters")
        allowed = [p for p in inspect.signature(TASKS[name]).parameters if p != "self"]
        for key in params:
            if key not in allowed:
                raise ValueError(
                    f"unknown parameter {where}.params.{key} for task {name!r}; allowed parameters: "
                    f"{', '.join(allowed) or '(none)'}"
                )
        try:
            task = make_task(name, **params)
        except ValueError as error:
            raise ValueError(f"{where}.params: {error}") from None
        train = _ranges(table.get("train", {}), task, f"{where}.train", dict(task.train_range))
        evals = _ranges(table.get("eval", {}), task, f"{where}.eval", dict(task.eval_range))
        axes = table.get("eval_axes", list(task.eval_axes))
        curriculum = table.get("curriculum_knobs", list(task.eval_axes))
        for key, knobs in (("eval_axes", axes), ("curriculum_knobs", curriculum)):
            if not isinstance(knobs, list) or not all(isinstance(k, str) for k in knobs):
                raise ValueError(f"{where}.{key} must be a list of knob names, got {knobs!r}")
            for knob_name in knobs:
                if knob_name not in task.knobs:
                    raise ValueError(
                        f"unknown knob {knob_name!r} in {where}.{key}; known knobs of {name!r}: "
                        f"{', '.join(sorted(task.knobs))}"
                    )
        if not axes:
            raise ValueError(f"{where}.eval_axes must name at least one knob of {sorted(task.knobs)}")
        _check_sampling(task, train, evals, axes, curriculum, where)
        specs.append(
            TaskSpec(
                name=name,
                params=tuple(sorted(task.params().items())),
                train_range=tuple(sorted(train.items())),
                eval_range=tuple(sorted(evals.items())),
                eval_axes=tuple(axes),
                curriculum_knobs=tuple(curriculum),
            )
        )
    if len(set(specs)) != len(specs):
        raise ValueError("two [[task]] tables describe the same task with the same settings")
    return tuple(specs)


def _train(raw) -> TrainSpec:
    if not isinstance(raw, dict):
        raise ValueError("train must be a table of training settings")
    base = TrainSpec()
    _check_keys(raw, TrainSpec.__dataclass_fields__, "train.")
    get = raw.get
    spec = TrainSpec(
        batch_size=_int(get("batch_size", base.batch_size), "train.batch_size", 1),
        steps=_int(get("steps", base.steps), "train.steps", 1),
        warmup=_int(get("warmup", base.warmup), "train.warmup", 0),
        min_lr_ratio=_float(get("min_lr_ratio", base.min_lr_ratio), "train.min_lr_ratio", 0.0, 1.0),
        weight_decay=_float(get("weight_decay", base.weight_decay), "train.weight_decay", 0.0),
        grad_clip=_float(get("grad_clip", base.grad_clip), "train.grad_clip", 0.0, open_low=True),
        early_stop_acc=_float(get("early_stop_acc", base.early_stop_acc), "train.early_stop_acc", 0.0, 2.0),
        early_stop_window=_int(
            get("early_stop_window", base.early_stop_window), "train.early_stop_window", 1
        ),
        curriculum=_choice(get("curriculum", base.curriculum), "train.curriculum", CURRICULA),
        curriculum_fraction=_float(
            get("curriculum_fraction", base.curriculum_fraction), "train.curriculum_fraction", 0.0, 1.0
        ),
        log_every=_int(get("log_every", base.log_every), "train.log_every", 1),
        eval_examples_per_bin=_int(
            get("eval_examples_per_bin", base.eval_examples_per_bin), "train.eval_examples_per_bin", 1
        ),
        eval_batch_size=_int(get("eval_batch_size", base.eval_batch_size), "train.eval_batch_size", 1),
        eval_bins=_int(get("eval_bins", base.eval_bins), "train.eval_bins", 2),
        capture=get("capture", base.capture),
    )
    if not isinstance(spec.capture, bool):
        raise ValueError(f"train.capture must be true or false, got {spec.capture!r}")
    if spec.warmup >= spec.steps:
        raise ValueError(f"train.warmup = {spec.warmup} must be smaller than train.steps = {spec.steps}")
    return spec


def _sweep_from_dict(raw: dict) -> SweepConfig:
    _check_keys(raw, _TOP_KEYS, "")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("missing key 'name' (a non-empty sweep name)")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError("description must be a string")
    model = _model_table(dict(raw.get("model", {})), "model")
    archs = _archs(raw)
    n_layers = dict(model).get("n_layers", ModelConfig.n_layers)
    for arch in archs:
        layers = dict(arch.model).get("n_layers", n_layers)
        if layers % len(arch.pattern):
            raise ValueError(
                f"model.n_layers = {layers} is not a multiple of the length of pattern "
                f"{arch.pattern!r} (architecture {arch.name!r}); patterns are tiled over depth"
            )
    # Cheap checks first; tasks last, since checking them draws examples.
    sizes = _list(raw, "sizes", lambda v, k: _int(v, k, 1))
    lrs = _list(raw, "lrs", lambda v, k: _float(v, k, 0.0, open_low=True))
    seeds = _list(raw, "seeds", lambda v, k: _int(v, k, 0, 2**62))
    train = _train(raw.get("train", {}))
    device = _choice(raw.get("device", "auto"), "device", DEVICES)
    if device == "cpu":
        for where, table in [("model", model)] + [(f"arch {a.name!r} model", a.model) for a in archs]:
            if dict(table).get("backend") == "triton":
                raise ValueError(
                    f"{where}.backend = 'triton' needs a CUDA device, but device = 'cpu'; "
                    f"allowed backends on cpu: auto, torch"
                )
    max_attempts = _int(raw.get("max_attempts", 2), "max_attempts", 1, 100)
    return SweepConfig(
        name=name,
        description=description,
        tasks=_tasks(raw),
        archs=archs,
        sizes=sizes,
        lrs=lrs,
        seeds=seeds,
        model=model,
        train=train,
        device=device,
        max_attempts=max_attempts,
    )
