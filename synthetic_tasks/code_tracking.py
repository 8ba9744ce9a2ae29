"""Variable tracking with reassignment: straight-line programs whose values the model must follow.

k variables, each initialised to a constant, then a program of statements ``x = 7``, ``x = y``,
``x = y + 3`` (mod M) and ``x, y = y, x``, with ``print(x)`` reveals interleaved (each statement is
followed by one with probability ``print_prob``) and a final ``print`` query. Every printed value
is supervised. Variable names are k distinct letters drawn per example, so that every name's
token is trained whatever k the training range allows.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import randint, seed_state, uniform
from synthetic_tasks.base import Batch, Knob, Task, register
from synthetic_tasks.code_common import begin_row, code_batch, draw_names, end_row, flat_buffers, supervise

__all__ = ["VariableTracking"]

_VAR_NAMES = "abcdefghijklmnopqrstuvwxyz"
STATEMENTS = ("const", "copy", "add", "swap")
_CONST, _COPY, _ADD, _SWAP = range(4)


@numba.njit(cache=True)
def _tracking_batch(seed, batch, k_lo, k_hi, n_lo, n_hi, modulus, kinds, print_prob, tok):
    """tok = (var0, equals, plus, comma, print, newline); values are tokens 0 .. M-1."""
    var0, equals, plus, comma, print_tok, newline = tok
    width = 4 * k_hi + 11 * n_hi + 3
    max_sup = n_hi + 1
    flat, starts, seq_lens, positions, answers, counts, meta = flat_buffers(batch, width, max_sup, 4)
    names = np.arange(26)
    values = np.empty(26, dtype=np.int64)
    written = np.empty(26, dtype=np.int64)  # index of the statement that last wrote each variable
    state = np.empty(1, dtype=np.uint64)
    for b in range(batch):
        seed_state(state, seed, b)
        k = randint(state, k_lo, k_hi)
        n = randint(state, n_lo, n_hi)
        draw_names(state, names, k)
        row = begin_row(flat, starts, seq_lens, b, width)
        t = 0
        for v in range(k):
            values[v] = randint(state, 0, modulus - 1)
            written[v] = 0
            row[t] = var0 + names[v]
            row[t + 1] = equals
            row[t + 2] = values[v]
            row[t + 3] = newline
            t += 4
        prints = 0
        age = 0
        for s in range(1, n + 2):
            if s <= n:
                kind = kinds[randint(state, 0, kinds.shape[0] - 1)]
                x = randint(state, 0, k - 1)
                y = randint(state, 0, k - 2)
                if y >= x:
                    y += 1
                row[t] = var0 + names[x]
                if kind == _SWAP:
                    row[t + 1] = comma
                    row[t + 2] = var0 + names[y]
                    row[t + 3] = equals
                    row[t + 4] = var0 + names[y]
                    row[t + 5] = comma
                    row[t + 6] = var0 + names[x]
                    t += 7
                    values[x], values[y] = values[y], values[x]
                    written[y] = s
                else:
                    row[t + 1] = equals
                    t += 2
                    if kind == _CONST:
                        values[x] = randint(state, 0, modulus - 1)
                        row[t] = values[x]
                        t += 1
                    elif kind == _COPY:
                        values[x] = values[y]
                        row[t] = var0 + names[y]
                        t += 1
                    else:
                        # The source may be x itself (x = x + 3).
                        if randint(state, 0, k - 1) == 0:
                            y = x
                        c = randint(state, 1, modulus - 1)
                        values[x] = (values[y] + c) % modulus
                        row[t] = var0 + names[y]
                        row[t + 1] = plus
                        row[t + 2] = c
                        t += 3
                row[t] = newline
                t += 1
                written[x] = s
            if s == n + 1 or uniform(state) < print_prob:
                z = randint(state, 0, k - 1)
                row[t] = print_tok
                row[t + 1] = var0 + names[z]
                row[t + 2] = newline
                supervise(positions, answers, counts, b, max_sup, t + 1, values[z])
                t += 3
                prints += 1
                if s == n + 1:
                    age = n - written[z]
        end_row(seq_lens, meta, b, t, (k, n, prints, age))
    return flat, starts, seq_lens, positions, answers, counts, meta


@register
class VariableTracking(Task):
    """Variable tracking with reassignment, token form.

    Tokens: values ``0 .. M-1`` (ids 0 .. M-1, also the answers), variables ``a .. z`` (ids M ..
    M+25), then ``=``, ``+``, ``,``, ``print``, newline, pad. Lines, each ending in newline::

        x = 7            x = y            x = y + 3        x , y = y , x        print x

    the first k lines initialise the k variables (letters drawn per example) to constants; then
    ``length`` statements of the kinds in ``statements`` (uniformly), each followed by a ``print``
    with probability ``print_prob``; then a final ``print``. ``x = y + 3`` means (y + 3) mod M.
    The value printed is the target at the printed variable's token.

    Meta: ``num_vars``, ``length``, ``num_prints`` (final included) and ``age`` (statements since
    the finally printed variable was last written; the initialisation counts as statement 0).

    >>> task = VariableTracking()
    >>> batch = task.sample(seed=0, batch=2, num_vars=3, length=5)
    >>> bool((batch.meta["num_prints"] == batch.loss_mask.sum(axis=1)).all())
    True
    """

    name = "variable_tracking"
    family = "code"
    knobs = {
        "num_vars": Knob(2, 26, "variables k (distinct letters drawn per example)"),
        "length": Knob(0, 4096, "statements after the initialisation, prints not counted"),
    }
    eval_axes = ("length", "num_vars")

    def __init__(self, modulus: int = 10, statements=STATEMENTS, print_prob: float = 0.25):
        if (
            isinstance(modulus, bool)
            or not isinstance(modulus, (int, np.integer))
            or not 2 <= modulus <= 1000
        ):
            raise ValueError(f"parameter 'modulus' must be an int in [2, 1000], got {modulus!r}")
        if isinstance(statements, str):
            statements = [kind.strip() for kind in statements.split(",")]
        if (
            not statements
            or any(s not in STATEMENTS for s in statements)
            or len(set(statements)) != len(statements)
        ):
            raise ValueError(
                f"parameter 'statements' must be a non-empty list (or comma-separated string) of "
                f"distinct kinds from {list(STATEMENTS)}, got {statements!r}"
            )
        if (
            isinstance(print_prob, bool)
            or not isinstance(print_prob, (int, float))
            or not 0 <= print_prob <= 1
        ):
            raise ValueError(f"parameter 'print_prob' must be a number in [0, 1], got {print_prob!r}")
        self.modulus = int(modulus)
        self.statements = tuple(s for s in STATEMENTS if s in statements)
        self.print_prob = float(print_prob)
        self.VAR0 = self.modulus
        self.EQUALS, self.PLUS, self.COMMA, self.PRINT, self.NEWLINE = range(self.VAR0 + 26, self.VAR0 + 31)
        self.pad_id = self.VAR0 + 31
        self.vocab_size = self.pad_id + 1
        self.chance_accuracy = 1.0 / self.modulus
        self.train_range = {"num_vars": (2, 5), "length": (4, 32)}
        self.eval_range = {"num_vars": (2, 8), "length": (4, 128)}

    def params(self) -> dict:
        return {"modulus": self.modulus, "statements": list(self.statements), "print_prob": self.print_prob}

    def _sample(self, seed, batch, ranges):
        kinds = np.array([STATEMENTS.index(s) for s in self.statements], dtype=np.int64)
        tok = (self.VAR0, self.EQUALS, self.PLUS, self.COMMA, self.PRINT, self.NEWLINE)
        buffers = _tracking_batch(
            seed, batch, *ranges["num_vars"], *ranges["length"], self.modulus, kinds, self.print_prob, tok
        )
        return code_batch(buffers, self.pad_id, ("num_vars", "length", "num_prints", "age"))

    def decode(self, batch: Batch, index: int) -> str:
        """The program as Python (``x = (y + 3) % M`` for additions), each print with its answer."""
        # The word of every token but NEWLINE and pad, by id: values, variables, then the symbols.
        vocabulary = [*map(str, range(self.modulus)), *_VAR_NAMES, "=", "+", ",", "print"]
        row = batch.inputs[index]
        lines, words = [f"# M={self.modulus}, answers after '# ->'"], []
        for t, tok in enumerate(int(x) for x in row):
            if tok == self.pad_id:
                break
            if tok == self.NEWLINE:
                if words[0] == "print":
                    lines.append(f"print({words[1]})  # -> {int(batch.targets[index, t - 1])}")
                elif "+" in words:
                    lines.append(f"{words[0]} = ({words[2]} + {words[4]}) % {self.modulus}")
                else:
                    lines.append(" ".join(words).replace(" ,", ","))
                words = []
            else:
                words.append(vocabulary[tok])
        return "\n".join(lines)
