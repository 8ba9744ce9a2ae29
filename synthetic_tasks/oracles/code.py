"""Oracles for the code tasks: render each example as a Python program and let Python run it.

Every oracle turns the tokens back into program text, with each supervised question written as a
``print(...)`` of the asked expression, executes it with ``exec`` in a namespace that holds no
builtins but a ``print`` that records, and pairs the printed values, in order, with the positions
where the task asks them. Token layouts are read from TASKS.md and each task's docstring.
"""

from __future__ import annotations

import re

_VAR_NAMES = "abcdefghijklmnopqrstuvwxyz"


def _run(program: str, names: dict | None = None) -> list:
    """Execute program text with no builtins; return what it printed, in order."""
    printed: list = []
    namespace = {"__builtins__": {}, "print": printed.append, **(names or {})}
    exec(compile(program, "<oracle>", "exec"), namespace)
    return printed


def state_based_recall(task, tokens: list[int]) -> dict[int, int]:
    """Lines: ``BITS (@addr bit)* SEP``, ``(var @addr)* SEP``, swaps ``x y SEP``, queries ``QUERY v``."""
    var = lambda tok: _VAR_NAMES[tok - task.VAR0]
    address = lambda tok: tok - task.ADDR0
    assert tokens[0] == task.BITS
    end = tokens.index(task.SEP)
    pairs = tokens[1:end]
    entries = ", ".join(f"{address(a)}: {bit - task.BIT0}" for a, bit in zip(pairs[::2], pairs[1::2]))
    lines = [f"bits = {{{entries}}}"]
    start, end = end + 1, tokens.index(task.SEP, end + 1)
    init = tokens[start:end]
    lines.append(f"{', '.join(var(v) for v in init[::2])} = {', '.join(str(address(a)) for a in init[1::2])}")
    asked = []
    t = end + 1
    while t < len(tokens):
        if tokens[t] == task.QUERY:
            lines.append(f"print(bits[{var(tokens[t + 1])}])")
            asked.append(t + 1)
            t += 2
        else:
            assert tokens[t + 2] == task.SEP
            x, y = var(tokens[t]), var(tokens[t + 1])
            lines.append(f"{x}, {y} = {y}, {x}")
            t += 3
    answers = _run("\n".join(lines))
    return {pos: task.BIT0 + value for pos, value in zip(asked, answers, strict=True)}


def state_based_recall_text(task, tokens: list[int]) -> dict[int, int]:
    """Run the text itself with each ``assert E == ?`` made ``print(E)``; answers sit before ``?``."""
    text = "".join(task.CHARS[tok] for tok in tokens)
    asked = [t - 1 for t, char in enumerate(text) if char == "?"]
    program = re.sub(r"^assert (.+) == \?$", r"print(\1)", text, flags=re.MULTILINE)
    answers = _run(program)
    return {pos: task.CHARS.index(str(value)) for pos, value in zip(asked, answers, strict=True)}


ORACLES = {
    "state_based_recall": state_based_recall,
    "state_based_recall_text": state_based_recall_text,
}
