"""Straight-line programs (after "Learning to Execute", Zaremba & Sutskever 2014, simplified).

A small Python program, one token per character: assignments with ``+``, ``-`` and ``*`` (times a
one-digit number), ``if`` on comparisons and bounded ``for`` loops nested up to a depth, ending in
``print(x)``; the printed text (the value's characters and the newline ``print`` writes) follows
and is supervised character by character, as a model would have to write it.

Every variable a statement reads is assigned at top level beforehand, so no branch can leave it
undefined. Values stay below 10^(digits + 2) in magnitude: a statement that would exceed that is
replaced by a constant assignment to the same variable, which keeps outputs short and int64 safe.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import randint, seed_state
from synthetic_tasks.base import Batch, Knob, Task, register
from synthetic_tasks.code_common import (
    begin_row,
    code_batch,
    codes,
    draw_names,
    end_row,
    flat_buffers,
    put,
    put_decimal,
    supervise,
)

__all__ = ["StraightLinePrograms"]

CHARS = "\n ()*+-:<=>_0123456789abcdefghijklmnopqrstuvwxyz"
_MAX_VARS = 4
_MIN_ITER, _MAX_ITER = 2, 5


def _codes(text: str) -> np.ndarray:
    return codes(text, CHARS)


_NL, _SPACE, _MINUS, _COLON = (CHARS.index(c) for c in "\n -:")
_DIGIT0, _LETTER_A = CHARS.index("0"), CHARS.index("a")
_OPS = _codes("+-*")
_FOR = _codes("for _ in range(")
_CLOSE_COLON = _codes("):")
_IF = _codes("if ")
_LESS, _GREATER = _codes(" < "), _codes(" > ")
_ASSIGN = _codes(" = ")
_PRINT = _codes("print(")
_CLOSE = CHARS.index(")")

# Header kinds, expression kinds and operators of the statement arrays below.
_H_FOR, _H_LESS, _H_GREATER = 0, 1, 2
_E_CONST, _E_VAR_CONST, _E_VAR_VAR = 0, 1, 2
_ADD, _SUB, _MUL = 0, 1, 2


@numba.njit(cache=True)
def _put_int(row, t, value):
    if value < 0:
        row[t] = _MINUS
        t += 1
        value = -value
    return put_decimal(row, t, value, _DIGIT0)


@numba.njit(cache=True, inline="always")
def _constant(state, digits):
    if digits == 1:
        return randint(state, 0, 9)
    return randint(state, 10 ** (digits - 1), 10**digits - 1)


@numba.njit(cache=True, inline="always")
def _other(state, defined, avoid):
    """A defined variable other than `avoid` (needs at least two defined)."""
    v = randint(state, 0, defined - 2)
    return v + 1 if v >= avoid else v


@numba.njit(cache=True, inline="always")
def _evaluate(values, kind, op, a, b):
    if kind == _E_CONST:
        return a
    left = values[a]
    right = b if kind == _E_VAR_CONST else values[b]
    if op == _ADD:
        return left + right
    if op == _SUB:
        return left - right
    return left * right


@numba.njit(cache=True)
def _execute(values, depth, h_kind, h_a, h_b, target, kind, op, a, b, cap, remaining):
    """Run one statement (depth headers around one assignment) on `values`; False past the cap."""
    if depth == 0:
        values[target] = _evaluate(values, kind, op, a, b)
        return abs(values[target]) < cap
    level = 0
    remaining[0] = -1
    while level >= 0:
        if remaining[level] < 0:
            # Entering a header: a loop runs h_a times, an if once or not at all.
            if h_kind[level] == _H_FOR:
                remaining[level] = h_a[level]
            elif h_kind[level] == _H_LESS:
                remaining[level] = 1 if values[h_a[level]] < h_b[level] else 0
            else:
                remaining[level] = 1 if values[h_a[level]] > values[h_b[level]] else 0
        if remaining[level] > 0:
            remaining[level] -= 1
            if level + 1 == depth:
                values[target] = _evaluate(values, kind, op, a, b)
                if abs(values[target]) >= cap:
                    return False
            else:
                level += 1
                remaining[level] = -1
        else:
            level -= 1
    return True


@numba.njit(cache=True)
def _put_assignment(row, t, indent, names, target, kind, op, a, b):
    for _ in range(4 * indent):
        row[t] = _SPACE
        t += 1
    row[t] = _LETTER_A + names[target]
    t = put(row, t + 1, _ASSIGN)
    if kind == _E_CONST:
        t = _put_int(row, t, a)
    else:
        row[t] = _LETTER_A + names[a]
        row[t + 1] = _SPACE
        row[t + 2] = _OPS[op]
        row[t + 3] = _SPACE
        t += 4
        if kind == _E_VAR_CONST:
            t = _put_int(row, t, b)
        else:
            row[t] = _LETTER_A + names[b]
            t += 1
    row[t] = _NL
    return t + 1


@numba.njit(cache=True)
def _programs_batch(seed, batch, d_lo, d_hi, nest_lo, nest_hi, s_lo, s_hi):
    line = 4 * nest_hi + 20 + d_hi
    width = s_hi * (nest_hi + 1) * line + 9 + d_hi + 4
    max_sup = d_hi + 4
    flat, starts, seq_lens, positions, answers, counts, meta = flat_buffers(batch, width, max_sup, 4)
    names = np.arange(26)
    values = np.zeros(_MAX_VARS, dtype=np.int64)
    trial = np.zeros(_MAX_VARS, dtype=np.int64)
    h_kind = np.empty(nest_hi + 1, dtype=np.int64)
    h_a = np.empty(nest_hi + 1, dtype=np.int64)
    h_b = np.empty(nest_hi + 1, dtype=np.int64)
    remaining = np.empty(nest_hi + 1, dtype=np.int64)
    state = np.empty(1, dtype=np.uint64)
    for i in range(batch):
        seed_state(state, seed, i)
        digits = randint(state, d_lo, d_hi)
        nesting = randint(state, nest_lo, nest_hi)
        n = randint(state, s_lo, s_hi)
        cap = 10 ** (digits + 2)
        draw_names(state, names, _MAX_VARS)
        row = begin_row(flat, starts, seq_lens, i, width)
        t = 0
        defined = 0
        target = 0
        for s in range(n):
            depth = 0
            if s > 0 and nesting > 0 and randint(state, 0, 1) == 1:
                depth = randint(state, 1, nesting)
            for j in range(depth):
                if randint(state, 0, 1) == 0:
                    h_kind[j] = _H_FOR
                    h_a[j] = randint(state, _MIN_ITER, _MAX_ITER)
                elif defined >= 2 and randint(state, 0, 1) == 0:
                    h_kind[j] = _H_GREATER
                    h_a[j] = randint(state, 0, defined - 1)
                    h_b[j] = _other(state, defined, h_a[j])
                else:
                    h_kind[j] = _H_LESS
                    h_a[j] = randint(state, 0, defined - 1)
                    h_b[j] = _constant(state, digits)
            # Expressions: a constant (top level only), variable op constant (times only a
            # one-digit number, and only at top level, so loops grow values linearly), or
            # variable op variable (+ and -).
            kind = _E_CONST if s == 0 else randint(state, 0 if depth == 0 else 1, 2)
            if kind == _E_VAR_VAR and defined < 2:
                kind = _E_VAR_CONST
            op, a, b = _ADD, 0, 0
            if kind == _E_CONST:
                a = _constant(state, digits)
            elif kind == _E_VAR_CONST:
                op = randint(state, 0, 2 if depth == 0 else 1)
                a = randint(state, 0, defined - 1)
                b = randint(state, 2, 9) if op == _MUL else _constant(state, digits)
            else:
                op = randint(state, 0, 1)
                a = randint(state, 0, defined - 1)
                b = _other(state, defined, a)
            if s == 0 or (depth == 0 and defined < _MAX_VARS and randint(state, 0, 1) == 0):
                target = defined
                defined += 1
            else:
                target = randint(state, 0, defined - 1)
            if depth == 0:
                value = _evaluate(values, kind, op, a, b)
                if abs(value) >= cap:
                    kind, op, a, b = _E_CONST, _ADD, _constant(state, digits), 0
                    value = a
                values[target] = value
            else:
                # A block runs on a copy so that a rejected one leaves the values as they were.
                for v in range(_MAX_VARS):
                    trial[v] = values[v]
                if _execute(trial, depth, h_kind, h_a, h_b, target, kind, op, a, b, cap, remaining):
                    for v in range(_MAX_VARS):
                        values[v] = trial[v]
                else:
                    depth, kind, op, a, b = 0, _E_CONST, _ADD, _constant(state, digits), 0
                    values[target] = a
            for j in range(depth):
                for _ in range(4 * j):
                    row[t] = _SPACE
                    t += 1
                if h_kind[j] == _H_FOR:
                    t = put(row, t, _FOR)
                    t = _put_int(row, t, h_a[j])
                    t = put(row, t, _CLOSE_COLON)
                else:
                    t = put(row, t, _IF)
                    row[t] = _LETTER_A + names[h_a[j]]
                    if h_kind[j] == _H_LESS:
                        t = put(row, t + 1, _LESS)
                        t = _put_int(row, t, h_b[j])
                    else:
                        t = put(row, t + 1, _GREATER)
                        row[t] = _LETTER_A + names[h_b[j]]
                        t += 1
                    row[t] = _COLON
                    t += 1
                row[t] = _NL
                t += 1
            t = _put_assignment(row, t, depth, names, target, kind, op, a, b)
        t = put(row, t, _PRINT)
        row[t] = _LETTER_A + names[target]
        row[t + 1] = _CLOSE
        row[t + 2] = _NL
        t += 3
        # The printed text follows; each of its characters is the target one position earlier.
        start = t
        t = _put_int(row, t, values[target])
        row[t] = _NL
        t += 1
        for p in range(start - 1, t - 1):
            supervise(positions, answers, counts, i, max_sup, p, row[p + 1])
        end_row(seq_lens, meta, i, t, (digits, nesting, n, t - start - 1))
    return flat, starts, seq_lens, positions, answers, counts, meta


@register
class StraightLinePrograms(Task):
    """Straight-line programs with ``if`` and ``for``, one token per character.

    Characters (ids in this order): newline, space, ``( ) * + - : < = > _``, ``0``-``9``,
    ``a``-``z``; then pad. An example (digits=2, nesting=2, num_statements=3)::

        q = 58
        for _ in range(3):
            if q < 90:
                q = q + 17
        k = q * 4
        print(k)
        368

    The targets are the printed characters ``368`` and the final newline, each due one position
    earlier (the first at the newline after ``print(k)``). ``digits`` is the number of digits of
    every constant (one-digit multipliers and loop counts aside), ``nesting`` the deepest
    ``for``/``if`` nesting allowed, ``num_statements`` the top-level statements before the print.
    Meta adds ``output_length`` (characters of the printed value).
    """

    name = "straight_line_programs"
    family = "code"
    knobs = {
        "digits": Knob(1, 9, "digits of each constant"),
        "nesting": Knob(0, 4, "deepest nesting of for/if blocks"),
        "num_statements": Knob(1, 256, "top-level statements before the print"),
    }
    eval_axes = ("num_statements", "digits", "nesting")
    chance_accuracy = 0.1
    vocab_size = len(CHARS) + 1
    pad_id = len(CHARS)
    CHARS = CHARS

    def __init__(self):
        self.train_range = {"digits": (1, 2), "nesting": (0, 1), "num_statements": (1, 6)}
        self.eval_range = {"digits": (1, 4), "nesting": (0, 2), "num_statements": (1, 12)}

    def _sample(self, seed, batch, ranges):
        buffers = _programs_batch(
            seed, batch, *ranges["digits"], *ranges["nesting"], *ranges["num_statements"]
        )
        return code_batch(buffers, self.pad_id, ("digits", "nesting", "num_statements", "output_length"))

    def decode(self, batch: Batch, index: int) -> str:
        """The program and, after ``# output:``, the printed text it is supervised on."""
        text = "".join(CHARS[int(c)] for c in batch.inputs[index] if c != self.pad_id)
        program, _, output = text.rpartition("print(")
        call, _, printed = output.partition("\n")
        return f"{program}print({call}\n# output: {printed.rstrip()}"
