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
supervisions = st.sampled_from(["final", "dense", "probed"])
bit_draws = st.sampled_from(["random", "balanced"])
VARS = "abcdefghijklmnopqrstuvwxyz"


def _recall_draws(m: tuple[int, int], n: tuple[int, int], k: tuple[int, int]):
    """`given` a recall task's seed, supervision, bits and m, n (swaps), k (variables) in these ranges."""
    return given(
        seed=seeds,
        supervision=supervisions,
        bits_param=bit_draws,
        m=st.integers(*m),
        n=st.integers(*n),
        k=st.integers(*k),
    )


def _recall_batch(name: str, size: int, seed, supervision, bits_param, m, n, k):
    """(task, batch) of `size` examples of recall task `name` with exactly m bits, n swaps, k variables."""
    task = make_task(name, supervision=supervision, bits=bits_param)
    return task, task.sample(seed, size, m=m, num_swaps=n, num_vars=k)


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


def _asked(supervision: str, n: int, k: int, q: int) -> list[int]:
    """The variables the queries ask, in order: q once (final) or after every line (dense), and
    under "probed" every other variable first, in order, after the initialisation line."""
    probes = [v for v in range(k) if v != q] if supervision == "probed" else []
    return probes + [q] * (1 if supervision == "final" else n + 1)


def _ones_allowed(bits: str, m: int) -> range:
    """How many ones an m-bit array may hold under the `bits` parameter."""
    return range(m // 2, (m + 1) // 2 + 1) if bits == "balanced" else range(m + 1)


@_recall_draws(m=(5, 80), n=(0, 20), k=(2, 5))
def test_state_based_recall_stepwise_simulation_and_meta(seed, supervision, bits_param, m, n, k):
    task, batch = _recall_batch("state_based_recall", 4, seed, supervision, bits_param, m, n, k)
    for i in range(4):
        tokens = _tokens(task, batch, i)
        bits, addresses, events = _recall_token_program(task, tokens)
        assert len(bits) == m == batch.meta["m"][i]
        assert set(bits.values()) <= {0, 1} and sum(bits.values()) in _ones_allowed(bits_param, m)
        assert sorted(bits) == list(bits) and all(0 <= a < task.num_addresses for a in bits)
        assert len(set(addresses.values())) == k == batch.meta["num_vars"][i]
        assert set(addresses.values()) <= set(bits)
        swaps = [e for e in events if e[0] == "swap"]
        queries = [e for e in events if e[0] == "query"]
        assert len(swaps) == n == batch.meta["num_swaps"][i]
        asked = _asked(supervision, n, k, int(batch.meta["query"][i]))
        assert [q[2] for q in queries] == asked
        if supervision == "final":
            assert [e[0] for e in events] == ["swap"] * n + ["query"]
        else:  # the probes and the first query of q after the init line, one query after each swap
            assert [e[0] for e in events] == ["query"] * (len(asked) - n) + ["swap", "query"] * n
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


@_recall_draws(m=(6, 40), n=(0, 12), k=(2, 6))
def test_state_based_recall_text_is_python_that_asserts_the_answers(seed, supervision, bits_param, m, n, k):
    task, batch = _recall_batch("state_based_recall_text", 3, seed, supervision, bits_param, m, n, k)
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
        assert sum(namespace["bits"]) in _ones_allowed(bits_param, m)
        for t, answer in supervised.items():
            flipped = list(filled)
            flipped[t + 1] = "1" if task.CHARS[answer] == "0" else "0"
            with pytest.raises(AssertionError):
                exec("".join(flipped), {"__builtins__": {}})
        lines = text.splitlines()
        asked = _asked(supervision, n, k, int(batch.meta["query"][i]))
        queried = [re.fullmatch(r"assert bits\[([a-z])\] == \?", line) for line in lines[2:]]
        assert [VARS.index(match[1]) for match in queried if match] == asked
        assert len(lines) == 2 + n + len(asked)
        swaps = [line for line in lines if re.fullmatch(r"([a-z]), ([a-z]) = \2, \1", line)]
        assert len(swaps) == n == batch.meta["num_swaps"][i]
        names, values = lines[1].split(" = ")
        initial = dict(zip(names.split(", "), (int(v) for v in values.split(", "))))
        q = VARS[int(batch.meta["query"][i])]
        assert bool(batch.meta["moved"][i]) == (namespace[q] != initial[q])


@pytest.mark.parametrize("name", ["state_based_recall", "state_based_recall_text"])
@given(seed=seeds, supervision=supervisions, bits=bit_draws)
def test_recall_oracle_agrees(name, seed, supervision, bits):
    task = make_task(name, supervision=supervision, bits=bits)
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


@pytest.mark.parametrize("name", ["state_based_recall", "state_based_recall_text"])
@pytest.mark.parametrize("m", [6, 7])
def test_balanced_bits_are_a_uniform_arrangement(name, m):
    """Every position is 1 half the time and, for odd m, either majority half the time: the count
    of ones says nothing about the queried bit (random bits give the count away, see
    docs/recall-protocol.md)."""
    task = make_task(name, bits="balanced")
    batch = task.sample(3, 4000, m=m, num_swaps=0, num_vars=2)
    if name == "state_based_recall":
        zero = task.BIT0
        rows = batch.inputs[:, 2 : 2 + 2 * m : 2] - zero  # the bit after each address
    else:
        zero = task.CHARS.index("0")
        rows = batch.inputs[:, 8 : 8 + 3 * m : 3] - zero  # "bits = [b, b, ...]"
    assert set(np.unique(rows)) == {0, 1}
    ones = rows.sum(1)
    assert set(np.unique(ones)) == set(range(m // 2, (m + 1) // 2 + 1))
    assert np.all(np.abs(rows.mean(0) - 0.5) < 0.04)
    if m % 2:
        assert abs((ones == m // 2).mean() - 0.5) < 0.04
    assert abs((batch.targets[batch.loss_mask] - zero).mean() - 0.5) < 0.04


def test_recall_rejects_bad_structure():
    with pytest.raises(ValueError, match="supervision"):
        make_task("state_based_recall", supervision="sparse")
    with pytest.raises(ValueError, match="'bits'"):
        make_task("state_based_recall", bits="biased")
    with pytest.raises(ValueError, match="'bits'"):
        make_task("state_based_recall_text", bits=1)
    with pytest.raises(ValueError, match="num_addresses"):
        make_task("state_based_recall", num_addresses=8)


@given(seed=seeds, supervision=supervisions)
def test_state_based_recall_decode_is_a_passing_program(seed, supervision):
    task = make_task("state_based_recall", supervision=supervision)
    batch = task.sample(seed, 2, m=(5, 20), num_swaps=(0, 6))
    for i in range(2):
        program = task.decode(batch, i)
        assert program.count("assert") == batch.loss_mask[i].sum()
        exec(program, {"__builtins__": {}})


def _run_printing(program: str, names: dict | None = None) -> list:
    printed: list = []
    exec(program, {"__builtins__": {}, "print": printed.append, **(names or {})})
    return printed


@given(
    seed=seeds,
    modulus=st.sampled_from([2, 10, 97]),
    statements=st.sets(st.sampled_from(["const", "copy", "add", "swap"]), min_size=1),
    print_prob=st.sampled_from([0.0, 0.25, 1.0]),
)
def test_variable_tracking_decode_runs_to_the_answers_and_meta_is_true(seed, modulus, statements, print_prob):
    task = make_task(
        "variable_tracking", modulus=modulus, statements=sorted(statements), print_prob=print_prob
    )
    batch = task.sample(seed, 4, num_vars=(2, 8), length=(0, 30))
    for i in range(4):
        program = task.decode(batch, i)
        lines = [line for line in program.splitlines() if not line.startswith("#")]
        k, n = int(batch.meta["num_vars"][i]), int(batch.meta["length"][i])
        assignments = [line for line in lines if not line.startswith("print(")]
        prints = [line for line in lines if line.startswith("print(")]
        assert len({line.split(" = ")[0] for line in assignments[:k]}) == k
        assert len(assignments) == k + n and len(prints) == batch.meta["num_prints"][i]
        assert lines[-1].startswith("print(")
        kinds = {
            "const": r"[a-z] = \d+",
            "copy": r"[a-z] = [a-z]",
            "add": rf"[a-z] = \([a-z] \+ \d+\) % {modulus}",
            "swap": r"([a-z]), ([a-z]) = \2, \1",
        }
        for line in assignments[k:]:
            assert any(re.fullmatch(kinds[kind], line) for kind in statements), line
        answers = [int(line.rsplit("# -> ", 1)[1]) for line in prints]
        assert _run_printing(program) == answers == [int(a) for a in batch.targets[i][batch.loss_mask[i]]]
        # age: statements since the finally printed variable was last written.
        final = prints[-1][len("print(") : prints[-1].index(")")]
        statements_only = assignments[k:]
        writes = [s for s, line in enumerate(statements_only, 1) if final in line.split(" = ")[0].split(", ")]
        assert batch.meta["age"][i] == n - (writes[-1] if writes else 0)


@given(seed=seeds, digits=st.integers(1, 5), nesting=st.integers(0, 3), n=st.integers(1, 10))
def test_straight_line_programs_structure_and_output(seed, digits, nesting, n):
    task = make_task("straight_line_programs")
    batch = task.sample(seed, 3, digits=digits, nesting=nesting, num_statements=n)
    for i in range(3):
        text = "".join(task.CHARS[t] for t in _tokens(task, batch, i))
        program, _, printed = text.partition("print(")
        call, _, output = printed.partition("\n")
        lines = program.splitlines()
        top_level = [line for line in lines if not line.startswith(" ")]
        assert len(top_level) == n == batch.meta["num_statements"][i]
        assert max((len(line) - len(line.lstrip(" "))) // 4 for line in lines) <= nesting
        constants = re.findall(r"(?:= |[+-] |< )(\d+)", program)
        assert all(len(c) == digits for c in constants), constants
        value = _run_printing(f"{program}print({call}\n", {"range": range})
        assert [f"{value[0]}\n"] == [output]
        assert abs(value[0]) < 10 ** (digits + 2)
        assert batch.meta["output_length"][i] == len(output) - 1
        supervised = np.flatnonzero(batch.loss_mask[i])
        assert "".join(task.CHARS[batch.targets[i, t]] for t in supervised) == output


def _prefix_value_and_depth(task, formula):
    """Evaluate prefix tokens right to left with a stack of (value, depth)."""
    stack = []
    for tok in reversed(formula):
        if tok in (task.ZERO, task.ONE):
            stack.append((tok - task.ZERO, 0))
        elif tok == task.NOT:
            value, depth = stack.pop()
            stack.append((1 - value, depth))
        else:
            (a, da), (b, db) = stack.pop(), stack.pop()
            stack.append(((a & b) if tok == task.AND else (a | b), 1 + max(da, db)))
    assert len(stack) == 1
    return stack[0]


@given(seed=seeds, size=st.integers(1, 60), padding=st.integers(0, 10))
def test_boolean_formula_prefix_and_infix_meta_and_value(seed, size, padding):
    prefix = make_task("boolean_formula")
    infix = make_task("boolean_formula", notation="infix")
    for task in (prefix, infix):
        batch = task.sample(seed, 3, size=size, padding=padding)
        for i in range(3):
            tokens = _tokens(task, batch, i)
            assert tokens[-1] == task.EQUALS and tokens.count(task.DOT) == padding
            assert tokens[-1 - padding : -1] == [task.DOT] * padding
            formula = tokens[: -1 - padding]
            assert sum(tok in (task.ZERO, task.ONE) for tok in formula) == size
            assert sum(tok in (task.AND, task.OR) for tok in formula) == size - 1
            if task is prefix:
                value, depth = _prefix_value_and_depth(task, formula)
                assert depth == batch.meta["depth"][i]
                assert batch.targets[i, len(tokens) - 1] == task.ZERO + value
            else:
                nest, deepest = 0, 0
                for tok in formula:
                    nest += (tok == task.LPAREN) - (tok == task.RPAREN)
                    deepest = max(deepest, nest)
                assert nest == 0 and deepest == batch.meta["depth"][i]
    # The two notations of the same seed are the same formula.
    a, b = prefix.sample(seed, 2, size=size), infix.sample(seed, 2, size=size)
    assert np.array_equal(a.targets[a.loss_mask], b.targets[b.loss_mask])


def test_boolean_formula_value_is_balanced():
    batch = make_task("boolean_formula").sample(0, 4000, size=(1, 32))
    assert 0.45 < batch.targets[batch.loss_mask].mean() < 0.55


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        ("variable_tracking", {"modulus": 1}, "modulus"),
        ("variable_tracking", {"statements": ["mul"]}, "statements"),
        ("variable_tracking", {"statements": []}, "statements"),
        ("variable_tracking", {"print_prob": 1.5}, "print_prob"),
        ("boolean_formula", {"notation": "postfix"}, "notation"),
        ("state_based_recall_text", {"supervision": "every"}, "supervision"),
    ],
)
def test_bad_structural_parameters_raise(name, params, named):
    with pytest.raises(ValueError, match=named):
        make_task(name, **params)


def test_variable_tracking_takes_statements_as_a_comma_separated_string():
    task = make_task("variable_tracking", statements="swap, add")
    assert task.params()["statements"] == ["add", "swap"]
    assert make_task("variable_tracking", **task.params()).params() == task.params()


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("boolean_formula", {"notation": "infix"}),
        ("variable_tracking", {"modulus": 97, "statements": ["add", "swap"], "print_prob": 1.0}),
        ("state_based_recall", {"supervision": "dense", "num_addresses": 64}),
        ("state_based_recall", {"supervision": "probed", "num_addresses": 64, "bits": "balanced"}),
        ("state_based_recall_text", {"supervision": "probed"}),
    ],
)
@given(seed=seeds)
def test_structural_variants_agree_with_their_oracles(name, params, seed):
    task = make_task(name, **params)
    for ranges in (task.train_range, task.eval_range):
        batch = task.sample(seed, 3, **ranges)
        for i in range(3):
            assert ORACLES[name](task, _tokens(task, batch, i)) == _supervised(batch, i)
