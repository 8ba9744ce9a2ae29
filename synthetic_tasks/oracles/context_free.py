"""Oracles for the context-free tasks: a recursive-descent parser and a plain bracket stack."""

from __future__ import annotations


def modular_arithmetic_brackets(task, tokens: list[int]) -> dict[int, int]:
    """Parse ``expr := n | - n | ( expr ) | ( expr op expr )`` and evaluate with Python ints."""
    assert tokens[-1] == task.EQUALS
    symbols = tokens[:-1]
    apply = {task.PLUS: lambda a, b: a + b, task.MINUS: lambda a, b: a - b, task.TIMES: lambda a, b: a * b}

    def parse(i: int) -> tuple[int, int]:
        token = symbols[i]
        if token < task.modulus:
            return token, i + 1
        if token == task.MINUS:
            assert symbols[i + 1] < task.modulus
            return -symbols[i + 1], i + 2
        assert token == task.OPEN
        left, j = parse(i + 1)
        if symbols[j] == task.CLOSE:
            return left, j + 1
        right, k = parse(j + 1)
        assert symbols[k] == task.CLOSE
        return apply[symbols[j]](left, right), k + 1

    value, end = parse(0)
    assert end == len(symbols)
    return {len(tokens) - 1: value % task.modulus}


def dyck(task, tokens: list[int]) -> dict[int, int]:
    """At each position, the closer matching the innermost open bracket, or END if none is open."""
    k = task.kinds
    stack: list[int] = []
    answers = {}
    for t, token in enumerate(tokens):
        if token < k:
            stack.append(token)
        else:
            assert stack and stack[-1] == token - k, "the prefix is not a Dyck prefix"
            stack.pop()
        answers[t] = stack[-1] + k if stack else task.END
    return answers


ORACLES = {"modular_arithmetic_brackets": modular_arithmetic_brackets, "dyck": dyck}
