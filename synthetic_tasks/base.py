"""The task contract shared by every generator.

A task is built once with its *structural* parameters (those that change the vocabulary or
the answer space, e.g. the modulus M or the group), then sampled many times with *difficulty*
knobs (those that change how hard one example is, e.g. the length L):

>>> task = make_task("parity")
>>> batch = task.sample(seed=0, batch=4, length=8)          # every example has L = 8
>>> batch.inputs.shape[0], bool(batch.loss_mask.any())
(4, True)
>>> batch = task.sample(seed=1, batch=4, length=(3, 40))    # L drawn per example in [3, 40]
>>> bool((3 <= batch.meta["length"]).all() and (batch.meta["length"] <= 40).all())
True

Every knob takes an int (fixed for the whole batch) or an inclusive ``(lo, hi)`` range (drawn
uniformly per example); the drawn value of every knob is recorded per example in ``meta``.
Targets are aligned with inputs: ``targets[b, t]`` is what the model must output after reading
``inputs[b, : t + 1]``, and only positions where ``loss_mask`` is true count. Padding positions
hold ``pad_id`` in inputs and 0 in targets, with the mask false.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

__all__ = [
    "Batch",
    "Knob",
    "Task",
    "TASKS",
    "register",
    "make_task",
    "derive_seed",
    "empty_batch",
    "eval_bins",
    "int_param",
    "pack_batch",
]


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray  # [B, T] int64
    targets: np.ndarray  # [B, T] int64
    loss_mask: np.ndarray  # [B, T] bool
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # each [B]

    def __post_init__(self):
        b, t = self.inputs.shape
        if self.targets.shape != (b, t) or self.loss_mask.shape != (b, t):
            raise ValueError(
                f"Batch shapes disagree: inputs {self.inputs.shape}, targets "
                f"{self.targets.shape}, loss_mask {self.loss_mask.shape}"
            )
        for key, value in self.meta.items():
            if value.shape != (b,):
                raise ValueError(f"Batch meta[{key!r}] has shape {value.shape}, expected ({b},)")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Knob:
    """A difficulty knob: its inclusive bounds and what it means."""

    low: int
    high: int
    help: str = ""

    def resolve(self, name: str, value) -> tuple[int, int]:
        """Check an int or (lo, hi) against the bounds; return it as an inclusive range."""
        if isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_int, value)):
            lo, hi = (int(v) for v in value)
        elif _is_int(value):
            lo = hi = int(value)
        else:
            # Floats are refused rather than truncated: `length = [2.5, 8]` is a typo, not a 2.
            raise ValueError(f"knob {name!r} takes an integer or a [lo, hi] pair of integers, got {value!r}")
        if not (self.low <= lo <= hi <= self.high):
            raise ValueError(
                f"knob {name!r} = {value!r} is outside its allowed range "
                f"[{self.low}, {self.high}] (or lo > hi)"
            )
        return lo, hi


class Task(ABC):
    """Base class of every task. Subclasses set the class attributes and implement `_sample`.

    Class attributes:
      name, family: registry name and family ("regular", "group", "context_free", "recall",
        "code").
      knobs: difficulty knobs by name.
      train_range / eval_range: inclusive (lo, hi) per knob for training and held-out
        evaluation; the evaluation range extends past the training one on at least one knob.
      eval_axes: the knobs that evaluation bins are taken along, in order of importance.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    knobs: ClassVar[dict[str, Knob]]
    eval_axes: ClassVar[tuple[str, ...]]

    # Set by __init__ of subclasses (they may depend on structural parameters).
    vocab_size: int
    pad_id: int
    chance_accuracy: float
    train_range: dict[str, tuple[int, int]]
    eval_range: dict[str, tuple[int, int]]

    def params(self) -> dict:
        """The structural parameters this instance was built with (for configs and hashing)."""
        return {}

    def sample(self, seed: int, batch: int, **difficulty) -> Batch:
        """Draw `batch` examples; the same (seed, batch, difficulty) always gives the same Batch."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        unknown = set(difficulty) - set(self.knobs)
        if unknown:
            raise ValueError(
                f"unknown knob(s) {sorted(unknown)} for task {self.name!r}; "
                f"known knobs: {sorted(self.knobs)}"
            )
        ranges = {}
        for name, knob in self.knobs.items():
            value = difficulty.get(name, self.train_range[name])
            ranges[name] = knob.resolve(name, value)
        return self._sample(int(seed) & 0x7FFF_FFFF_FFFF_FFFF, int(batch), ranges)

    @abstractmethod
    def _sample(self, seed: int, batch: int, ranges: dict[str, tuple[int, int]]) -> Batch:
        """Draw examples with every knob already resolved to an inclusive range."""

    @abstractmethod
    def decode(self, batch: Batch, index: int) -> str:
        """Render one example as human-readable text, with its supervised answers."""

    def eval_bins(self, knob: str, n_bins: int = 8) -> list[int]:
        """Values of `knob` to evaluate at, from this task's own train and evaluation ranges."""
        if knob not in self.knobs:
            raise ValueError(f"unknown knob {knob!r} for task {self.name!r}; known: {sorted(self.knobs)}")
        return eval_bins(self.train_range[knob], self.eval_range[knob], n_bins)


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


def int_param(name: str, value, low: int, high: int) -> int:
    """A structural parameter that must be an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"parameter {name!r} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


def empty_batch(batch: int, width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded ``inputs``, zero ``targets`` and false ``loss_mask`` buffers, each [B, T], for a
    generator to fill. Allocated by numpy: numba's own allocator page-faults afresh on every
    large array, which costs more than generating the tokens."""
    inputs = np.full((batch, width), pad_id, dtype=np.int64)
    targets = np.zeros((batch, width), dtype=np.int64)
    loss_mask = np.zeros((batch, width), dtype=np.bool_)
    return inputs, targets, loss_mask


def pack_batch(
    inputs: np.ndarray, targets: np.ndarray, loss_mask: np.ndarray, seq_lens: np.ndarray, meta: dict
) -> Batch:
    """Trim generator buffers, sized for the longest possible example, to the longest drawn one.

    Generators fill ``[B, T_max]`` buffers already padded with ``pad_id`` (targets 0, mask false);
    ``seq_lens`` [B] holds each example's token count.
    """
    width = max(int(seq_lens.max()), 1)
    return Batch(
        np.ascontiguousarray(inputs[:, :width]),
        np.ascontiguousarray(targets[:, :width]),
        np.ascontiguousarray(loss_mask[:, :width]),
        meta,
    )


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Bind a task class to its name in TASKS (the only place names are bound)."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    TASKS[cls.name] = cls
    return cls


def make_task(name: str, **params) -> Task:
    """Build a registered task by name; unknown names raise with the list of known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    try:
        return TASKS[name](**params)
    except TypeError as error:
        raise ValueError(f"bad parameters {params} for task {name!r}: {error}") from None


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed from (run seed, purpose); stable across machines and processes."""
    digest = hashlib.blake2b(f"{int(seed)}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
