"""Boolean formula evaluation (NC1-complete; Olmo Hybrid §3.4).

A random formula over 0, 1, ¬, ∧, ∨ with ``size`` leaves, written in prefix (Polish) or fully
parenthesised infix notation, then ``padding`` filler tokens (extra computation steps for the
model), then ``=``, where its value is supervised. The tree shape comes from uniform random
splits (a random binary search tree, so depth grows like log size); every node, leaf or
operator, is negated with probability 1/2, which makes the value a fair coin.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import randint, seed_state
from synthetic_tasks.base import Batch, Knob, Task, register
from synthetic_tasks.code_common import begin_row, code_batch, end_row, flat_buffers, supervise

__all__ = ["BooleanFormula"]

_NOTATIONS = ("prefix", "infix")
_LEAF, _AND, _OR = 0, 1, 2


@numba.njit(cache=True)
def _formula_batch(seed, batch, size_lo, size_hi, pad_lo, pad_hi, infix, tok):
    """tok = (zero, not, and, or, lparen, rparen, dot, equals); one tree per example."""
    zero, not_tok, and_tok, or_tok, lparen, rparen, dot, equals = tok
    nodes_hi = 2 * size_hi - 1
    width = 2 * nodes_hi + (2 * (size_hi - 1) if infix else 0) + pad_hi + 1
    max_sup = 1
    flat, starts, seq_lens, positions, answers, counts, meta = flat_buffers(batch, width, max_sup, 3)
    # Nodes in prefix order: kind, negated, leaf bit / value, children, depth.
    kind = np.empty(nodes_hi, dtype=np.int64)
    negated = np.empty(nodes_hi, dtype=np.int64)
    value = np.empty(nodes_hi, dtype=np.int64)
    left = np.empty(nodes_hi, dtype=np.int64)
    right = np.empty(nodes_hi, dtype=np.int64)
    depth = np.empty(nodes_hi, dtype=np.int64)
    # Pending subtrees: (leaves, parent, is right child); LIFO gives prefix order.
    stack_size = np.empty(nodes_hi, dtype=np.int64)
    stack_parent = np.empty(nodes_hi, dtype=np.int64)
    stack_right = np.empty(nodes_hi, dtype=np.int64)
    emit = np.empty(2 * nodes_hi, dtype=np.int64)
    state = np.empty(1, dtype=np.uint64)
    for b in range(batch):
        seed_state(state, seed, b)
        size = randint(state, size_lo, size_hi)
        padding = randint(state, pad_lo, pad_hi)
        top = 0
        stack_size[0], stack_parent[0], stack_right[0] = size, -1, 0
        top = 1
        count = 0
        max_depth = 0
        while top > 0:
            top -= 1
            leaves, parent, is_right = stack_size[top], stack_parent[top], stack_right[top]
            node = count
            count += 1
            depth[node] = 0 if parent < 0 else depth[parent] + 1
            max_depth = max(max_depth, depth[node])
            if parent >= 0:
                if is_right:
                    right[parent] = node
                else:
                    left[parent] = node
            negated[node] = randint(state, 0, 1)
            if leaves == 1:
                kind[node] = _LEAF
                value[node] = randint(state, 0, 1)
            else:
                kind[node] = randint(state, _AND, _OR)
                split = randint(state, 1, leaves - 1)
                stack_size[top], stack_parent[top], stack_right[top] = leaves - split, node, 1
                stack_size[top + 1], stack_parent[top + 1], stack_right[top + 1] = split, node, 0
                top += 2
        # Children follow their parent in prefix order, so a reverse sweep evaluates bottom-up.
        for node in range(count - 1, -1, -1):
            if kind[node] == _LEAF:
                v = value[node]
            elif kind[node] == _AND:
                v = value[left[node]] & value[right[node]]
            else:
                v = value[left[node]] | value[right[node]]
            value[node] = v ^ negated[node]
        row = begin_row(flat, starts, seq_lens, b, width)
        t = 0
        if not infix:
            for node in range(count):
                if negated[node]:
                    row[t] = not_tok
                    t += 1
                if kind[node] == _LEAF:
                    row[t] = zero + (value[node] ^ negated[node])
                else:
                    row[t] = and_tok if kind[node] == _AND else or_tok
                t += 1
        else:
            # Work items: node >= 0 expands a subtree, -1 closes a bracket, -2 - node writes an
            # operator.
            emit[0] = 0
            top = 1
            while top > 0:
                top -= 1
                item = emit[top]
                if item == -1:
                    row[t] = rparen
                    t += 1
                elif item <= -2:
                    row[t] = and_tok if kind[-2 - item] == _AND else or_tok
                    t += 1
                else:
                    if negated[item]:
                        row[t] = not_tok
                        t += 1
                    if kind[item] == _LEAF:
                        row[t] = zero + (value[item] ^ negated[item])
                        t += 1
                    else:
                        row[t] = lparen
                        t += 1
                        emit[top] = -1
                        emit[top + 1] = right[item]
                        emit[top + 2] = -2 - item
                        emit[top + 3] = left[item]
                        top += 4
        for _ in range(padding):
            row[t] = dot
            t += 1
        row[t] = equals
        supervise(positions, answers, counts, b, max_sup, t, zero + value[0])
        end_row(seq_lens, meta, b, t + 1, (size, padding, max_depth))
    return flat, starts, seq_lens, positions, answers, counts, meta


@register
class BooleanFormula(Task):
    """Boolean formula evaluation with optional padding.

    Tokens: ``0`` 0, ``1`` 1 (leaves and answers), ``¬`` 2, ``∧`` 3, ``∨`` 4, ``(`` 5, ``)`` 6,
    ``·`` 7 (padding filler), ``=`` 8, pad 9. Prefix form (default): ``∨ ¬ 1 ∧ 0 ¬ 1 · · =``; infix
    form (``notation="infix"``): every binary node bracketed, ``( ¬ 1 ∨ ( 0 ∧ ¬ 1 ) ) · · =``; a
    ``¬`` precedes the node it negates. The value (token 0 or 1) is the target at ``=``.
    Meta: ``size`` (leaves), ``padding``, ``depth`` (of the tree; a single leaf has depth 0).

    >>> task = BooleanFormula()
    >>> batch = task.sample(seed=0, batch=3, size=4, padding=2)
    >>> batch.loss_mask.sum(axis=1).tolist()
    [1, 1, 1]
    """

    name = "boolean_formula"
    family = "code"
    knobs = {
        "size": Knob(1, 4096, "leaves of the formula"),
        "padding": Knob(0, 4096, "filler tokens between the formula and '='"),
    }
    eval_axes = ("size", "padding")
    chance_accuracy = 0.5
    ZERO, ONE, NOT, AND, OR, LPAREN, RPAREN, DOT, EQUALS = range(9)
    pad_id = 9
    vocab_size = 10
    SYMBOLS = ("0", "1", "¬", "∧", "∨", "(", ")", "·", "=")

    def __init__(self, notation: str = "prefix"):
        if notation not in _NOTATIONS:
            raise ValueError(f"parameter 'notation' must be one of {list(_NOTATIONS)}, got {notation!r}")
        self.notation = notation
        self.train_range = {"size": (1, 16), "padding": (0, 16)}
        self.eval_range = {"size": (1, 64), "padding": (0, 64)}

    def params(self) -> dict:
        return {"notation": self.notation}

    def _sample(self, seed, batch, ranges):
        tok = (
            self.ZERO,
            self.NOT,
            self.AND,
            self.OR,
            self.LPAREN,
            self.RPAREN,
            self.DOT,
            self.EQUALS,
        )
        buffers = _formula_batch(
            seed, batch, *ranges["size"], *ranges["padding"], self.notation == "infix", tok
        )
        return code_batch(buffers, self.pad_id, ("size", "padding", "depth"))

    def decode(self, batch: Batch, index: int) -> str:
        row = batch.inputs[index]
        tokens = [int(x) for x in row[row != self.pad_id]]
        text = " ".join(self.SYMBOLS[x] for x in tokens)
        return f"{text} {int(batch.targets[index, len(tokens) - 1])}"
