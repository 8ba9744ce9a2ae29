"""Oracles for the code tasks: render each example as a Python program and let Python run it.

Every oracle turns the tokens back into program text, with each supervised question written as a
``print(...)`` of the asked expression, executes it with ``exec`` in a namespace that holds no
builtins but a ``print`` that records, and pairs the printed values, in order, with the positions
where the task asks them. Token layouts are read from docs/TASKS.md and each task's docstring.
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


def variable_tracking(task, tokens: list[int]) -> dict[int, int]:
    """Lines end in NEWLINE: ``x = c``, ``x = y``, ``x = y + c`` (mod M), ``x , y = y , x``, ``print x``."""
    words = {task.EQUALS: "=", task.PLUS: "+", task.COMMA: ",", task.PRINT: "print"}
    lines, asked, line = [], [], []
    for t, tok in enumerate(tokens):
        if tok == task.NEWLINE:
            if line[0] == "print":
                lines.append(f"print({line[1]})")
                asked.append(t - 1)
            elif "+" in line:
                target, _, source, _, constant = line
                lines.append(f"{target} = ({source} + {constant}) % {task.modulus}")
            else:
                lines.append(" ".join(line))
            line = []
        elif tok < task.modulus:
            line.append(str(tok))
        elif tok < task.modulus + 26:
            line.append(_VAR_NAMES[tok - task.modulus])
        else:
            line.append(words[tok])
    assert not line, "the program ends inside a line"
    answers = _run("\n".join(lines))
    return dict(zip(asked, answers, strict=True))


def straight_line_programs(task, tokens: list[int]) -> dict[int, int]:
    """Run the program up to its ``print(x)`` line; the text print writes is due from its newline on."""
    text = "".join(task.CHARS[tok] for tok in tokens)
    cut = text.index("\n", text.rindex("print(")) + 1
    printed = _run(text[:cut], {"range": range})
    assert len(printed) == 1, "one print per program"
    output = f"{printed[0]}\n"
    return {cut - 1 + j: task.CHARS.index(char) for j, char in enumerate(output)}


def boolean_formula(task, tokens: list[int]) -> dict[int, int]:
    """Translate the formula into a Python expression over 0/1 with not/and/or and run it."""
    assert tokens[-1] == task.EQUALS
    formula = [tok for tok in tokens[:-1] if tok != task.DOT]
    words = {task.ZERO: "0", task.ONE: "1", task.NOT: "not", task.AND: "and", task.OR: "or"}
    if task.params()["notation"] == "infix":
        words.update({task.LPAREN: "(", task.RPAREN: ")"})
        expression = " ".join(words[tok] for tok in formula)
    else:
        position = 0

        def parse() -> str:
            nonlocal position
            tok = formula[position]
            position += 1
            if tok == task.NOT:
                return f"(not {parse()})"
            if tok in (task.AND, task.OR):
                left = parse()
                return f"({left} {words[tok]} {parse()})"
            return words[tok]

        expression = parse()
        assert position == len(formula), "tokens left over after the formula"
    (value,) = _run(f"print({expression})")
    return {len(tokens) - 1: task.ONE if value else task.ZERO}


ORACLES = {
    "state_based_recall": state_based_recall,
    "state_based_recall_text": state_based_recall_text,
    "variable_tracking": variable_tracking,
    "straight_line_programs": straight_line_programs,
    "boolean_formula": boolean_formula,
}
