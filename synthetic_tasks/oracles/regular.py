"""Oracles for the regular tasks, from docs/TASKS.md and each task's documented token layout."""

from __future__ import annotations

import operator


def parity(task, tokens: list[int]) -> dict[int, int]:
    bits = [tok for tok in tokens if tok != task.EQUALS]
    if task.params()["tagging"]:
        return {t: sum(bits[: t + 1]) % 2 for t in range(len(bits))}
    assert tokens[-1] == task.EQUALS and len(bits) == len(tokens) - 1
    return {len(tokens) - 1: sum(bits) % 2}


def even_pairs(task, tokens: list[int]) -> dict[int, int]:
    bits = tokens[:-1]
    assert tokens[-1] == task.EQUALS
    unequal = sum(1 for a, b in zip(bits, bits[1:]) if a != b)
    return {len(tokens) - 1: unequal % 2}


def modular_arithmetic(task, tokens: list[int]) -> dict[int, int]:
    """Parse into terms (products) joined by + and −, evaluate with Python ints, then reduce."""
    ops = {task.PLUS: "+", task.MINUS: "-", task.TIMES: "*"}
    assert tokens[-1] == task.EQUALS
    symbols = [ops.get(tok, tok) for tok in tokens[:-1]]
    terms: list[tuple[int, list[int]]] = []  # (sign, factors)
    sign = 1
    factors = [symbols[0]]
    for op, number in zip(symbols[1::2], symbols[2::2]):
        if op == "*":
            factors.append(number)
        else:
            terms.append((sign, factors))
            sign = 1 if op == "+" else -1
            factors = [number]
    terms.append((sign, factors))
    value = 0
    for sign, factors in terms:
        product = 1
        for factor in factors:
            product = operator.mul(product, factor)
        value += sign * product
    return {len(tokens) - 1: value % task.modulus}


def cycle_navigation(task, tokens: list[int]) -> dict[int, int]:
    steps = {task.LEFT: -1, task.STAY: 0, task.RIGHT: 1}
    assert tokens[-1] == task.EQUALS
    position = sum(steps[tok] for tok in tokens[:-1])
    return {len(tokens) - 1: position % task.cycle}


ORACLES = {
    "parity": parity,
    "even_pairs": even_pairs,
    "modular_arithmetic": modular_arithmetic,
    "cycle_navigation": cycle_navigation,
}
