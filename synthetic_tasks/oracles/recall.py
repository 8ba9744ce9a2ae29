"""Oracle for MQAR: read the key-value context, then answer every later key with its value.

Token layout (docs/TASKS.md, the task docstring): 0 blank, keys 1 .. V/2-1, values V/2 .. V-1; the
context is the leading run of (key, value) pairs; every key after it is a query.
"""

from __future__ import annotations


def mqar(task, tokens: list[int]) -> dict[int, int]:
    half = task.vocab // 2

    def is_key(token: int) -> bool:
        return 1 <= token < half

    def is_value(token: int) -> bool:
        return half <= token < task.vocab

    table: dict[int, int] = {}
    i = 0
    while i + 1 < len(tokens) and is_key(tokens[i]) and is_value(tokens[i + 1]):
        assert tokens[i] not in table, "a key appears twice in the context"
        table[tokens[i]] = tokens[i + 1]
        i += 2
    return {t: table[tokens[t]] for t in range(i, len(tokens)) if is_key(tokens[t])}


ORACLES = {"mqar": mqar}
