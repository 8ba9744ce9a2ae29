"""Task-specific checks of the code-evaluation tasks (the contract test covers the generic ones)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthetic_tasks import make_task
from synthetic_tasks.oracles import ORACLES

seeds = st.integers(0, 2**63 - 1)
supervisions = st.sampled_from(["final", "dense"])
VARS = "abcdefghijklmnopqrstuvwxyz"


def _tokens(task, batch, index) -> list[int]:
    row = batch.inputs[index]
    return [int(x) for x in row[row != task.pad_id]]


def _supervised(batch, index) -> dict[int, int]:
    return {int(t): int(batch.targets[index, t]) for t in np.flatnonzero(batch.loss_mask[index])}


def _recall_token_program(task, tokens):
    """(bits dict, initial addresses, swaps, query positions with their variables) read off tokens."""
    end = tokens.index(task.SEP)
    pairs = tokens[1:end]
    bits = {a - task.ADDR0: b - task.BIT0 for a, b in zip(pairs[::2], pairs[1::2])}
    start, end = end + 1, tokens.index(task.SEP, end + 1)
    init = tokens[start:end]
    addresses = {v - task.VAR0: a - task.ADDR0 for v, a in zip(init[::2], init[1::2])}
    events = []  # ("swap", x, y) or ("query", position, v), in program order
    t = end + 1
    while t < len(tokens):
        if tokens[t] == task.QUERY:
            events.append(("query", t + 1, tokens[t + 1] - task.VAR0))
            t += 2
        else:
            events.append(("swap", tokens[t] - task.VAR0, tokens[t + 1] - task.VAR0))
            t += 3
    return bits, addresses, events


@given(seed=seeds, supervision=supervisions, m=st.integers(5, 80), n=st.integers(0, 20), k=st.integers(2, 5))
def test_state_based_recall_stepwise_simulation_and_meta(seed, supervision, m, n, k):
    task = make_task("state_based_recall", supervision=supervision)
    batch = task.sample(seed, 4, m=m, num_swaps=n, num_vars=k)
    for i in range(4):
        tokens = _tokens(task, batch, i)
        bits, addresses, events = _recall_token_program(task, tokens)
        assert len(bits) == m == batch.meta["m"][i]
        assert sorted(bits) == list(bits) and all(0 <= a < task.num_addresses for a in bits)
        assert len(set(addresses.values())) == k == batch.meta["num_vars"][i]
        assert set(addresses.values()) <= set(bits)
        swaps = [e for e in events if e[0] == "swap"]
        queries = [e for e in events if e[0] == "query"]
        assert len(swaps) == n == batch.meta["num_swaps"][i]
        assert len(queries) == (n + 1 if supervision == "dense" else 1)
        assert {q[2] for q in queries} == {int(batch.meta["query"][i])}
        expected, current = {}, dict(addresses)
        for event in events:
            if event[0] == "swap":
                _, x, y = event
                assert x != y
                current[x], current[y] = current[y], current[x]
            else:
                _, position, v = event
                expected[position] = task.BIT0 + bits[current[v]]
        assert _supervised(batch, i) == expected
        q = int(batch.meta["query"][i])
        assert bool(batch.meta["moved"][i]) == (current[q] != addresses[q])


def _text_program(task, batch, index) -> str:
    return "".join(task.CHARS[t] for t in _tokens(task, batch, index))


@given(seed=seeds, supervision=supervisions, m=st.integers(5, 40), n=st.integers(0, 12), k=st.integers(2, 6))
def test_state_based_recall_text_is_python_that_asserts_the_answers(seed, supervision, m, n, k):
    task = make_task("state_based_recall_text", supervision=supervision)
    batch = task.sample(seed, 3, m=m, num_swaps=n, num_vars=k)
    for i in range(3):
        text = _text_program(task, batch, i)
        supervised = _supervised(batch, i)
        assert sorted(supervised) == [t - 1 for t, c in enumerate(text) if c == "?"]
        filled = list(text)
        for t, answer in supervised.items():
            filled[t + 1] = task.CHARS[answer]
        namespace = {"__builtins__": {}}
        exec("".join(filled), namespace)  # every assert holds with the supervised answers
        assert len(namespace["bits"]) == m
        for t, answer in supervised.items():
            flipped = list(filled)
            flipped[t + 1] = "1" if task.CHARS[answer] == "0" else "0"
            with pytest.raises(AssertionError):
                exec("".join(flipped), {"__builtins__": {}})
        lines = text.splitlines()
        assert len(lines) == 2 + n + (n + 1 if supervision == "dense" else 1)
        swaps = [line for line in lines if re.fullmatch(r"([a-z]), ([a-z]) = \2, \1", line)]
        assert len(swaps) == n == batch.meta["num_swaps"][i]
        names, values = lines[1].split(" = ")
        initial = dict(zip(names.split(", "), (int(v) for v in values.split(", "))))
        q = VARS[int(batch.meta["query"][i])]
        assert bool(batch.meta["moved"][i]) == (namespace[q] != initial[q])


@pytest.mark.parametrize("name", ["state_based_recall", "state_based_recall_text"])
@given(seed=seeds)
def test_recall_oracle_agrees(name, seed):
    task = make_task(name, supervision="dense")
    batch = task.sample(seed, 8, m=(5, 30), num_swaps=(0, 10), num_vars=(2, 5))
    for i in range(8):
        assert ORACLES[name](task, _tokens(task, batch, i)) == _supervised(batch, i)


def test_state_based_recall_scales_to_thousands_of_bits():
    task = make_task("state_based_recall")
    batch = task.sample(0, 1, m=4096, num_swaps=64)
    assert batch.inputs.shape == (1, 2 * 4096 + 2 * 5 + 3 * 64 + 5)
    assert batch.inputs.max() < task.vocab_size and batch.loss_mask.sum() == 1
    text_task = make_task("state_based_recall_text")
    text_batch = text_task.sample(0, 1, m=4096, num_swaps=64)
    assert text_batch.meta["m"][0] == 4096 and text_batch.loss_mask.sum() == 1


@pytest.mark.parametrize(
    ("knobs", "named"),
    [
        ({"m": 4, "num_vars": 5}, "'num_vars'"),
        ({"num_vars": 3, "query": 4}, "'query'"),
        ({"m": 4097}, "'m'"),
        ({"num_swaps": -1}, "'num_swaps'"),
    ],
)
@pytest.mark.parametrize("name", ["state_based_recall", "state_based_recall_text"])
def test_recall_rejects_impossible_knobs(name, knobs, named):
    with pytest.raises(ValueError, match=named):
        make_task(name).sample(0, 2, **knobs)


def test_recall_rejects_bad_structure():
    with pytest.raises(ValueError, match="supervision"):
        make_task("state_based_recall", supervision="sparse")
    with pytest.raises(ValueError, match="num_addresses"):
        make_task("state_based_recall", num_addresses=8)
