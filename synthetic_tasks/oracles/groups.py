"""Oracles for the group word problems: compose the permutations as tuples, step by step.

Token layout (docs/TASKS.md and each task's docstring): token i is the permutation
``task.elements[i]``; the product is "left first, then right": ``(p · q)(i) = q(p(i))``.
"""

from __future__ import annotations


def _compose(p: tuple[int, ...], q: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(q[p[i]] for i in range(len(p)))


def prefix_products(task, tokens: list[int]) -> dict[int, int]:
    elements = list(task.elements)
    product = tuple(range(len(elements[0])))
    answers = {}
    for t, token in enumerate(tokens):
        product = _compose(product, elements[token])
        answers[t] = elements.index(product)
    return answers


ORACLES = {
    name: prefix_products
    for name in (
        "group_cyclic",
        "group_s3",
        "group_a4xz5",
        "group_z60",
        "group_a5",
        "group_s5",
        "group_s5_swaps",
    )
}
