"""The task contract, checked on every registered task (code tasks included) against its oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_tasks import TASKS, Batch, make_task
from synthetic_tasks.oracles import ORACLES

# Every registered task with default parameters, plus structural variants of our own families.
VARIANTS = [(name, {}) for name in sorted(TASKS)] + [
    ("parity", {"tagging": True}),
    ("modular_arithmetic", {"modulus": 7}),
    ("cycle_navigation", {"cycle": 3}),
    ("group_cyclic", {"n": 2}),
    ("modular_arithmetic_brackets", {"modulus": 11}),
    ("dyck", {"kinds": 1}),
    ("dyck", {"kinds": 5}),
    ("mqar", {"vocab": 64}),
    ("state_based_recall", {"supervision": "dense"}),
    ("state_based_recall_text", {"supervision": "dense"}),
    ("boolean_formula", {"notation": "infix"}),
]


def _id(variant) -> str:
    name, params = variant
    return name + "".join(f"[{k}={v}]" for k, v in params.items())


@pytest.fixture(scope="module", params=VARIANTS, ids=[_id(v) for v in VARIANTS])
def task(request):
    name, params = request.param
    return make_task(name, **params)


seeds = st.integers(0, 2**63 - 1)


@st.composite
def difficulties(draw, task) -> dict:
    """A sub-range (or a fixed value) of each knob, inside the task's train or eval range."""
    ranges = task.train_range if draw(st.booleans()) else task.eval_range
    out = {}
    for name, (lo, hi) in ranges.items():
        a = draw(st.integers(lo, hi))
        out[name] = a if draw(st.booleans()) else (a, draw(st.integers(a, hi)))
    return out


def _sample(task, seed, batch, difficulty) -> tuple[Batch, dict]:
    """Sample, and the difficulty used. A knob combination the task rejects as jointly impossible
    (mqar: T >= 4N; state-based recall: num_vars <= m) must name a knob; it is then replaced by the
    task's own ranges rather than filtered out, which left too few examples for some tasks."""
    try:
        return task.sample(seed, batch, **difficulty), difficulty
    except ValueError as error:
        assert any(knob in str(error) for knob in task.knobs), error
    return task.sample(seed, batch), {}


def _seq_len(task, row: np.ndarray) -> int:
    """The example's length: everything up to its last non-pad token."""
    real = np.flatnonzero(row != task.pad_id)
    return int(real[-1]) + 1 if real.size else 0


def test_every_task_has_an_oracle():
    assert set(TASKS) <= set(ORACLES), sorted(set(TASKS) - set(ORACLES))


@settings(max_examples=30)
@given(data=st.data(), seed=seeds, batch=st.integers(1, 6))
def test_targets_match_oracle(task, data, seed, batch):
    difficulty = data.draw(difficulties(task))
    out, difficulty = _sample(task, seed, batch, difficulty)
    assert out.inputs.dtype == np.int64 and out.targets.dtype == np.int64
    assert out.loss_mask.dtype == np.bool_
    assert out.inputs.shape[0] == batch and out.inputs.shape == out.targets.shape == out.loss_mask.shape
    assert ((0 <= out.inputs) & (out.inputs < task.vocab_size)).all()
    assert ((0 <= out.targets) & (out.targets < task.vocab_size)).all()
    for knob in task.knobs:
        lo, hi = task.knobs[knob].resolve(knob, difficulty.get(knob, task.train_range[knob]))
        realised = out.meta[knob]
        assert realised.shape == (batch,), knob
        assert ((lo <= realised) & (realised <= hi)).all(), (knob, lo, hi, realised)
    oracle = ORACLES[task.name]
    for b in range(batch):
        length = _seq_len(task, out.inputs[b])
        assert not out.loss_mask[b, length:].any(), "a padding position is supervised"
        assert (out.targets[b, length:] == 0).all()
        expected = oracle(task, out.inputs[b, :length].tolist())
        supervised = np.flatnonzero(out.loss_mask[b])
        assert sorted(expected) == supervised.tolist(), "loss_mask differs from the oracle's positions"
        got = {int(t): int(out.targets[b, t]) for t in supervised}
        assert got == expected, task.decode(out, b)


@settings(max_examples=5)
@given(seed=seeds)
def test_same_seed_same_batch_and_different_seeds_differ(task, seed):
    first = task.sample(seed, 16)
    again = task.sample(seed, 16)
    other = task.sample(seed ^ 1, 16)
    for name in ("inputs", "targets", "loss_mask"):
        assert np.array_equal(getattr(first, name), getattr(again, name)), name
    assert first.meta.keys() == again.meta.keys()
    for key in first.meta:
        assert np.array_equal(first.meta[key], again.meta[key]), key
    assert first.inputs.shape != other.inputs.shape or not np.array_equal(first.inputs, other.inputs)


def test_examples_do_not_depend_on_batch_size(task):
    small, large = task.sample(7, 3), task.sample(7, 12)
    for b in range(3):
        n = _seq_len(task, small.inputs[b])
        assert np.array_equal(small.inputs[b, :n], large.inputs[b, :n])
        assert np.array_equal(small.targets[b, :n], large.targets[b, :n])


def test_ranges_and_attributes(task):
    assert task.family in {"regular", "group", "context_free", "recall", "code"}
    assert set(task.train_range) == set(task.knobs) == set(task.eval_range)
    assert task.eval_axes and set(task.eval_axes) <= set(task.knobs)
    assert 0 < task.chance_accuracy < 1
    assert 0 <= task.pad_id < task.vocab_size
    beyond = False
    for name, knob in task.knobs.items():
        for lo, hi in (task.train_range[name], task.eval_range[name]):
            assert knob.low <= lo <= hi <= knob.high, name
        beyond |= task.eval_range[name][1] > task.train_range[name][1]
    assert beyond, "the evaluation range must extend past the training range on some knob"
    assert isinstance(task.params(), dict)
    assert make_task(task.name, **task.params()).params() == task.params()


def test_full_train_and_eval_ranges_sample(task):
    for ranges in (task.train_range, task.eval_range):
        out = task.sample(3, 4, **ranges)
        assert out.loss_mask.any(axis=1).all(), "every example supervises something"


def test_knobs_outside_their_range_raise(task):
    for name, knob in task.knobs.items():
        for bad in (knob.low - 1, knob.high + 1, (knob.high, knob.low), "3", True, 2.5):
            if bad == (knob.high, knob.low) and knob.low == knob.high:
                continue
            with pytest.raises(ValueError, match=name):
                task.sample(0, 2, **{name: bad})
    with pytest.raises(ValueError, match="no_such_knob"):
        task.sample(0, 2, no_such_knob=3)
    with pytest.raises(ValueError):
        task.sample(0, 0)


def test_decode_renders_every_example(task):
    out = task.sample(11, 3)
    for b in range(3):
        text = task.decode(out, b)
        assert isinstance(text, str) and text.strip()


def test_eval_bins_span_train_low_to_eval_high(task):
    for axis in task.eval_axes:
        bins = task.eval_bins(axis)
        assert bins == sorted(set(bins))
        assert bins[0] == min(task.train_range[axis][0], task.eval_range[axis][0])
        assert bins[-1] == max(task.train_range[axis][1], task.eval_range[axis][1])
