"""Context-free tasks: expressions Python agrees with, Dyck prefixes and their labels."""

from __future__ import annotations

import pytest

from synthetic_tasks import make_task


def _nesting(tokens, open_, close) -> list[int]:
    depth, depths = 0, []
    for token in tokens:
        depth += (token == open_) - (token == close)
        depths.append(depth)
    return depths


def test_bracket_expressions_evaluate_as_python_says():
    task = make_task("modular_arithmetic_brackets", modulus=7)
    out = task.sample(0, 200, length=(1, 20))
    for b in range(200):
        text = task.decode(out, b).split("=")[0]
        answer = int(out.targets[b][out.loss_mask[b]][0])
        assert eval(text) % 7 == answer, text


def test_bracket_meta_labels_are_true():
    task = make_task("modular_arithmetic_brackets")
    out = task.sample(1, 100, length=(1, 30))
    for b in range(100):
        keep = out.inputs[b] != task.PAD
        tokens = out.inputs[b][keep].tolist()
        assert out.meta["tokens"][b] == len(tokens) and tokens[-1] == task.EQUALS
        depths = _nesting(tokens, task.OPEN, task.CLOSE)
        assert depths[-1] == 0 and min(depths) >= 0
        assert out.meta["depth"][b] == max(depths)
        assert sum(t < task.modulus for t in tokens) == out.meta["length"][b]
        if out.meta["length"][b] > 1:
            assert tokens[0] == task.OPEN and tokens[-2] == task.CLOSE


def test_bracket_leaves_take_every_form():
    task = make_task("modular_arithmetic_brackets")
    text = " ".join(task.decode(task.sample(2, 20, length=10), b) for b in range(20))
    assert "- - " in text or "( - " in text  # unary minus after an operator or an open bracket
    assert any(f"( {n} )" in text for n in range(5))


def test_dyck_prefixes_are_legal_and_labelled():
    task = make_task("dyck", kinds=3)
    out = task.sample(3, 100, length=(1, 80), max_depth=(1, 6))
    for b in range(100):
        keep = out.loss_mask[b]
        stack, peak = [], 0
        for token in out.inputs[b][keep].tolist():
            if token < 3:
                stack.append(token)
            else:
                assert stack and stack.pop() == token - 3
            peak = max(peak, len(stack))
            assert len(stack) <= out.meta["max_depth"][b]
        assert out.meta["peak_depth"][b] == peak


def test_dyck_targets_are_end_only_at_depth_zero():
    task = make_task("dyck")
    out = task.sample(4, 50, length=60)
    for b in range(50):
        tokens = out.inputs[b].tolist()
        depth = 0
        for t, token in enumerate(tokens):
            depth += 1 if token < task.kinds else -1
            assert (out.targets[b, t] == task.END) == (depth == 0)
            assert out.targets[b, t] == task.END or task.kinds <= out.targets[b, t] < 2 * task.kinds


def test_dyck_depth_one_alternates():
    task = make_task("dyck", kinds=1)
    out = task.sample(5, 4, length=10, max_depth=1)
    assert (out.inputs == [0, 1] * 5).all()


@pytest.mark.parametrize(
    "name, params",
    [("dyck", {"kinds": 0}), ("dyck", {"kinds": 65}), ("modular_arithmetic_brackets", {"modulus": 1})],
)
def test_bad_structural_parameters_raise(name, params):
    with pytest.raises(ValueError, match=next(iter(params))):
        make_task(name, **params)
