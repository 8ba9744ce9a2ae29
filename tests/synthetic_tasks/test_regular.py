"""Regular tasks: layouts, answers recomputed by other means, structural parameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_tasks import make_task


def _rows(task, batch):
    for b in range(batch.inputs.shape[0]):
        keep = batch.inputs[b] != task.pad_id
        yield batch.inputs[b][keep], batch.targets[b][keep], batch.loss_mask[b][keep]


def test_parity_final_form():
    task = make_task("parity")
    out = task.sample(0, 32, length=(1, 50))
    for (tokens, targets, mask), length in zip(_rows(task, out), out.meta["length"]):
        assert len(tokens) == length + 1 and tokens[-1] == task.EQUALS
        assert set(tokens[:-1]) <= {task.ZERO, task.ONE}
        assert mask.tolist() == [False] * length + [True]
        assert targets[-1] == tokens[:-1].sum() % 2


def test_parity_tagging_form_supervises_every_prefix():
    task = make_task("parity", tagging=True)
    out = task.sample(1, 16, length=(1, 50))
    for tokens, targets, mask in _rows(task, out):
        assert task.EQUALS not in tokens and mask.all()
        assert targets.tolist() == (np.cumsum(tokens) % 2).tolist()


def test_even_pairs_is_first_bit_differs_from_last():
    task = make_task("even_pairs")
    out = task.sample(2, 64, length=(1, 30))
    for tokens, targets, _ in _rows(task, out):
        bits = tokens[:-1]
        assert targets[-1] == int(bits[0] != bits[-1])
    assert len(set(out.targets[out.loss_mask].tolist())) == 2


def test_modular_arithmetic_matches_python_precedence():
    """Python's own parser (on the decoded text) agrees, and precedence changes some answers."""
    task = make_task("modular_arithmetic", modulus=7)
    out = task.sample(3, 200, length=(2, 12))
    differs_from_left_to_right = 0
    for b in range(200):
        text = task.decode(out, b).split("=")[0]
        answer = int(out.targets[b][out.loss_mask[b]][0])
        assert eval(text) % 7 == answer, text
        symbols = text.split()
        value = int(symbols[0])
        for op, number in zip(symbols[1::2], symbols[2::2]):
            value = eval(f"{value} {op} {number}")
        differs_from_left_to_right += value % 7 != answer
    assert differs_from_left_to_right > 20


def test_modular_arithmetic_layout():
    task = make_task("modular_arithmetic", modulus=5)
    out = task.sample(4, 16, length=6)
    ops = {task.PLUS, task.MINUS, task.TIMES}
    for tokens, targets, mask in _rows(task, out):
        assert len(tokens) == 12 and tokens[-1] == task.EQUALS and mask.sum() == 1
        assert all(t < 5 for t in tokens[0:-1:2]) and all(t in ops for t in tokens[1:-1:2])
        assert 0 <= targets[-1] < 5


def test_cycle_navigation_counts_moves():
    task = make_task("cycle_navigation", cycle=7)
    out = task.sample(5, 64, length=(1, 60))
    for tokens, targets, _ in _rows(task, out):
        moves = tokens[:-1] - task.STAY
        assert set(moves.tolist()) <= {-1, 0, 1}
        assert targets[-1] == moves.sum() % 7
    moves = out.inputs[(out.inputs >= task.LEFT) & (out.inputs <= task.RIGHT)]
    assert np.bincount(moves - task.LEFT).min() > 0.25 * moves.size


@settings(max_examples=10)
@given(modulus=st.integers(2, 30), seed=st.integers(0, 2**32))
def test_vocabulary_follows_the_modulus(modulus, seed):
    task = make_task("modular_arithmetic", modulus=modulus)
    assert task.vocab_size == modulus + 5 and task.chance_accuracy == pytest.approx(1 / modulus)
    out = task.sample(seed, 8)
    assert out.inputs.max() < task.vocab_size and out.targets.max() < modulus


@pytest.mark.parametrize(
    "name, params",
    [
        ("modular_arithmetic", {"modulus": 1}),
        ("modular_arithmetic", {"modulus": "5"}),
        ("modular_arithmetic", {"modulus": True}),
        ("cycle_navigation", {"cycle": 1}),
        ("parity", {"tagging": "yes"}),
        ("parity", {"modulus": 3}),
        ("even_pairs", {"tagging": True}),
    ],
)
def test_bad_structural_parameters_raise(name, params):
    with pytest.raises(ValueError, match=next(iter(params))):
        make_task(name, **params)
