"""Context-free tasks: modular arithmetic with brackets, and Dyck-k.

Both need a stack to solve: the bracketed expression's value depends on the pending partial
results of every open bracket, and the legal closer of a Dyck prefix is the top of the stack of
open brackets (Delétang et al., ICLR 2023).
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import first_draws, next_u64, randint, seed_state
from synthetic_tasks.base import Batch, Knob, Task, empty_batch, int_param, register

__all__ = ["ModularArithmeticBrackets", "Dyck"]


@numba.njit(cache=True, inline="always")
def _draw_leaf_forms(state, n, forms):
    """After the leaf count, an example draws its n leaf forms (0: n, 1: - n, 2: ( n )) as the
    base-3 digits of draws in [0, 3^20); returns how many tokens the forms add."""
    trits = np.uint64(0)
    extra = 0
    for j in range(n):
        if j % 20 == 0:
            trits = np.uint64(randint(state, 0, 3486784400))
        forms[j] = np.int64(trits % np.uint64(3))
        trits //= np.uint64(3)
        extra += forms[j]
    return extra


@numba.njit(cache=True)
def _draw_bracket_sizes(seed, batch, lo, hi):
    """Leaf counts N and token counts (N leaves + their forms' extra tokens + 3 per inner node
    + '='), from the start of each example's stream, so that a batch is sized before it is filled."""
    state = np.empty(1, dtype=np.uint64)
    forms = np.empty(hi, dtype=np.int64)
    lengths = np.empty(batch, dtype=np.int64)
    seq_lens = np.empty(batch, dtype=np.int64)
    for b in range(batch):
        seed_state(state, seed, b)
        n = randint(state, lo, hi)
        lengths[b] = n
        seq_lens[b] = n + _draw_leaf_forms(state, n, forms) + 3 * (n - 1) + 1
    return lengths, seq_lens


@numba.njit(cache=True)
def _fill_brackets(seed, lo, hi, modulus, products, plus, open_, close, equals, pad, inputs, targets, mask):
    """Random fully bracketed expression trees with N leaves; the answer is the value mod M.

    The tree is written left to right from a work stack whose items are: n >= 1 (a subtree with
    n leaves still to write), 0 (close the innermost node and reduce it), -1 - op (write op).
    """
    batch, width = inputs.shape
    depths = np.empty(batch, dtype=np.int64)
    work = np.empty(3 * hi + 4, dtype=np.int64)
    values = np.empty(hi + 1, dtype=np.int64)
    ops = np.empty(hi + 1, dtype=np.int64)
    forms = np.empty(hi, dtype=np.int64)
    state = np.empty(1, dtype=np.uint64)
    for b in range(batch):
        seed_state(state, seed, b)
        n = randint(state, lo, hi)
        _draw_leaf_forms(state, n, forms)
        n_leaves, n_work, n_values, n_ops, pos, depth, peak = 0, 1, 0, 0, 0, 0, 0
        work[0] = n
        while n_work > 0:
            n_work -= 1
            item = work[n_work]
            if item == 1:
                x = randint(state, 0, modulus - 1)
                form = forms[n_leaves]
                n_leaves += 1
                # Forms n, - n, ( n ) written without branching on the form: always three
                # cells (clipped to the row), of which later tokens overwrite the unused ones.
                inputs[b, pos] = x * (form == 0) + (plus + 1) * (form == 1) + open_ * (form == 2)
                inputs[b, min(pos + 1, width - 1)] = x if form != 0 else pad
                inputs[b, min(pos + 2, width - 1)] = close if form == 2 else pad
                pos += 1 + form
                values[n_values] = (modulus - x) * (x != 0) if form == 1 else x
                peak = max(peak, depth + (form == 2))
                n_values += 1
            elif item > 1:
                # One draw for the split and the op: r = 3 * (left - 1) + op.
                r = randint(state, 0, 3 * item - 4)
                left = r // 3 + 1
                op = r - 3 * (left - 1)
                inputs[b, pos] = open_
                pos += 1
                depth += 1
                peak = max(peak, depth)
                work[n_work] = 0
                work[n_work + 1] = item - left
                work[n_work + 2] = -1 - op
                work[n_work + 3] = left
                n_work += 4
            elif item == 0:
                inputs[b, pos] = close
                pos += 1
                depth -= 1
                rhs = values[n_values - 1]
                lhs = values[n_values - 2]
                op = ops[n_ops - 1]
                n_ops -= 1
                n_values -= 1
                # Operands are in [0, M): wrap sums and differences without a division, and
                # select the result arithmetically (a branch on a random op mispredicts).
                total = lhs + rhs
                total -= modulus * (total >= modulus)
                difference = lhs - rhs
                difference += modulus * (difference < 0)
                product = products[lhs, rhs]
                values[n_values - 1] = total * (op == 0) + difference * (op == 1) + product * (op == 2)
            else:
                op = -1 - item
                inputs[b, pos] = plus + op
                pos += 1
                ops[n_ops] = op
                n_ops += 1
        for t in range(pos + 1, min(pos + 3, width)):
            inputs[b, t] = pad
        inputs[b, pos] = equals
        targets[b, pos] = values[0]
        mask[b, pos] = True
        depths[b] = peak
    return depths


@register
class ModularArithmeticBrackets(Task):
    """Modular arithmetic with brackets: a random expression tree over numbers in [0, M).

    Leaves are written ``n``, ``- n`` or ``( n )`` (uniformly); every inner node is
    ``( L op R )`` with op in {+, −, ×} and a uniformly random split of the leaves; the
    expression ends with ``=``, where the answer (the value mod M) sits.

    Tokens: ``0 .. M-1`` (numbers, and the answer), ``M`` (+), ``M+1`` (−, binary or unary),
    ``M+2`` (×), ``M+3`` ((), ``M+4`` ()), ``M+5`` (=), ``M+6`` (pad). Knob ``length`` is the
    number of leaves (operands); ``meta["depth"]`` is the deepest bracket nesting and
    ``meta["tokens"]`` the number of tokens including ``=``.
    """

    name = "modular_arithmetic_brackets"
    family = "context_free"
    knobs = {"length": Knob(1, 8192, "number of operands (leaves of the expression tree)")}
    eval_axes = ("length",)

    def __init__(self, modulus: int = 5):
        self.modulus = int_param("modulus", modulus, 2, 1000)
        m = self.modulus
        self.PLUS, self.MINUS, self.TIMES, self.OPEN, self.CLOSE = m, m + 1, m + 2, m + 3, m + 4
        self.EQUALS, self.PAD = m + 5, m + 6
        self.vocab_size = m + 7
        self.pad_id = self.PAD
        self.chance_accuracy = 1.0 / m
        # (a * b) mod M by lookup: a division per node would cost more than the rest of it.
        self._products = (np.arange(m)[:, None] * np.arange(m)[None, :] % m).astype(np.int16)
        self.train_range = {"length": (1, 8)}
        self.eval_range = {"length": (8, 48)}

    def params(self) -> dict:
        return {"modulus": self.modulus}

    def _sample(self, seed, batch, ranges):
        lo, hi = ranges["length"]
        lengths, seq_lens = _draw_bracket_sizes(seed, batch, lo, hi)
        inputs, targets, mask = empty_batch(batch, int(seq_lens.max()), self.PAD)
        depths = _fill_brackets(
            seed, lo, hi, self.modulus, self._products, self.PLUS, self.OPEN, self.CLOSE, self.EQUALS,
            self.PAD, inputs, targets, mask,
        )
        return Batch(inputs, targets, mask, {"length": lengths, "depth": depths, "tokens": seq_lens})

    def decode(self, batch: Batch, index: int) -> str:
        names = {i: str(i) for i in range(self.modulus)}
        names.update({self.PLUS: "+", self.MINUS: "-", self.TIMES: "*", self.OPEN: "(", self.CLOSE: ")"})
        names.update({self.EQUALS: "=", self.PAD: "_"})
        keep = batch.inputs[index] != self.PAD
        text = " ".join(names[int(t)] for t in batch.inputs[index][keep])
        answer = int(batch.targets[index][batch.loss_mask[index]][-1])
        return f"{text} {answer}   (mod {self.modulus})"


@numba.njit(cache=True)
def _fill_dyck(seed, lo, hi, lo_depth, hi_depth, kinds, end, inputs, targets, mask):
    """Prefixes of random Dyck-k words: a walk that opens or closes with equal odds, bounded by
    the drawn maximum depth; the target is the one legal closer (or `end` at depth 0)."""
    state = np.empty(1, dtype=np.uint64)
    batch = inputs.shape[0]
    bounds = np.empty(batch, dtype=np.int64)
    peaks = np.empty(batch, dtype=np.int64)
    # stack[1 .. depth] holds the open kinds; the sentinel stack[0] makes the target at depth 0
    # read END, so the loop needs no branch on depth (a random walk mispredicts every other one).
    stack = np.empty(hi_depth + 2, dtype=np.int64)
    stack[0] = end - kinds
    for b in range(batch):
        seed_state(state, seed, b)
        n = randint(state, lo, hi)
        bound = randint(state, lo_depth, hi_depth)
        bounds[b] = bound
        depth = 0
        peak = 0
        word = np.uint64(0)
        spare = 0
        for t in range(n):
            # Coin flips come 64 to a draw.
            if spare == 0:
                word = next_u64(state)
                spare = 64
            coin = (word & np.uint64(1)) == np.uint64(1)
            word >>= np.uint64(1)
            spare -= 1
            opening = (depth == 0) | ((depth < bound) & coin)
            kind = randint(state, 0, kinds - 1)  # used only when opening
            closer = kinds + stack[depth]
            stack[depth + 1] = kind  # above the top: harmless when closing
            inputs[b, t] = kind if opening else closer
            depth += 2 * np.int64(opening) - 1
            peak = max(peak, depth)
            targets[b, t] = kinds + stack[depth]
            mask[b, t] = True
        peaks[b] = peak
    return bounds, peaks


@register
class Dyck(Task):
    """Dyck-k: a prefix of a balanced string over k bracket types (tagging).

    Tokens: ``0 .. k-1`` open brackets, ``k .. 2k-1`` the matching closers (``k + i`` closes
    ``i``), ``2k`` END (a target only), ``2k+1`` pad. Target at position t: the token of the only
    closer that may legally follow the prefix (it closes the innermost open bracket), or END
    when every bracket is closed. Getting it right at every position means tracking the whole
    stack of open brackets.

    Knobs: ``length`` (prefix length) and ``max_depth`` (the nesting bound of the random walk,
    which opens and closes with equal odds); ``meta["peak_depth"]`` is the depth reached.
    """

    name = "dyck"
    family = "context_free"
    knobs = {
        "length": Knob(1, 65536, "prefix length L"),
        "max_depth": Knob(1, 4096, "bound on the nesting depth"),
    }
    eval_axes = ("length", "max_depth")

    def __init__(self, kinds: int = 2):
        self.kinds = int_param("kinds", kinds, 1, 64)
        self.END, self.PAD = 2 * self.kinds, 2 * self.kinds + 1
        self.vocab_size = 2 * self.kinds + 2
        self.pad_id = self.PAD
        self.chance_accuracy = 1.0 / (self.kinds + 1)
        self.train_range = {"length": (3, 40), "max_depth": (2, 10)}
        self.eval_range = {"length": (40, 256), "max_depth": (2, 32)}

    def params(self) -> dict:
        return {"kinds": self.kinds}

    def _sample(self, seed, batch, ranges):
        lo, hi = ranges["length"]
        lo_depth, hi_depth = ranges["max_depth"]
        lengths = first_draws(seed, batch, lo, hi)
        inputs, targets, mask = empty_batch(batch, int(lengths.max()), self.PAD)
        bounds, peaks = _fill_dyck(
            seed, lo, hi, lo_depth, hi_depth, self.kinds, self.END, inputs, targets, mask
        )
        meta = {"length": lengths, "max_depth": bounds, "peak_depth": peaks}
        return Batch(inputs, targets, mask, meta)

    def _name(self, token: int) -> str:
        pairs = "()[]{}<>"
        if token == self.END:
            return "."
        kind, closing = token % self.kinds, token >= self.kinds
        if self.kinds <= 4:
            return pairs[2 * kind + closing]
        return f"{')' if closing else '('}{kind}"

    def decode(self, batch: Batch, index: int) -> str:
        keep = batch.loss_mask[index]
        prefix = " ".join(self._name(int(t)) for t in batch.inputs[index][keep])
        closers = " ".join(self._name(int(t)) for t in batch.targets[index][keep])
        return f"prefix:       {prefix}\nlegal closer: {closers}   ('.' = none: all closed)"
