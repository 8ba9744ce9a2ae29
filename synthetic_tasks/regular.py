"""Regular languages / state tracking: parity, modular arithmetic, cycle navigation, even pairs.

Sources: Delétang et al. (ICLR 2023), Grazzi et al. (ICLR 2025). Every task here has a finite-state
answer; the final-answer forms end with an ``=`` token whose position carries the answer, so a
model always knows where it is asked. Answers are themselves tokens of the task's vocabulary
(bits 0/1, digits 0..M-1, positions 0..C-1).

Protocol (Grazzi et al.): train lengths 3-40, evaluate 40-256.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import first_draws, next_u64, randint, seed_state
from synthetic_tasks.base import Batch, Knob, Task, empty_batch, int_param, register

__all__ = ["Parity", "ModularArithmetic", "CycleNavigation", "EvenPairs"]

_LENGTH_TRAIN = (3, 40)
_LENGTH_EVAL = (40, 256)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"parameter {name!r} must be true or false, got {value!r}")
    return bool(value)


def _render(tokens, names) -> str:
    return " ".join(names[int(t)] for t in tokens)


class _LengthTask(Task):
    """A task of this module: one knob, the length, drawn first by every example; `_fill` writes a
    batch into buffers `_width(longest length)` wide."""

    family = "regular"
    eval_axes = ("length",)

    def _sample(self, seed, batch, ranges):
        lo, hi = ranges["length"]
        lengths = first_draws(seed, batch, lo, hi)
        inputs, targets, mask = empty_batch(batch, self._width(int(lengths.max())), self.PAD)
        self._fill(seed, lo, hi, inputs, targets, mask)
        return Batch(inputs, targets, mask, {"length": lengths})

    def _decode_final(self, batch: Batch, index: int, names: dict[int, str]) -> str:
        """The example's tokens, then its one answer (the target at ``=``)."""
        keep = batch.inputs[index] != self.PAD
        answer = int(batch.targets[index][batch.loss_mask[index]][-1])
        return f"{_render(batch.inputs[index][keep], names)} {answer}"

    def _residue_tokens(self, n: int, count: int) -> range:
        """The ids of `count` tokens after the residues 0 .. n-1 (which are also the answers), the
        last of them the pad; sets the vocabulary and chance (1/n) to match."""
        self.vocab_size = n + count
        self.pad_id = self.PAD = n + count - 1
        self.chance_accuracy = 1.0 / n
        return range(n, n + count)


@numba.njit(cache=True)
def _fill_bits(seed, lo, hi, tagging, even_pairs, equals, inputs, targets, mask):
    """Random bit strings; answers are prefix parity (tagging) or parity / b1 != bL (final)."""
    state = np.empty(1, dtype=np.uint64)
    for b in range(inputs.shape[0]):
        seed_state(state, seed, b)
        n = randint(state, lo, hi)
        word = np.uint64(0)
        parity = 0
        first = 0
        bit = 0
        for t in range(n):
            # One 64-bit draw feeds 64 bits.
            if t & 63 == 0:
                word = next_u64(state)
            bit = np.int64((word >> np.uint64(t & 63)) & np.uint64(1))
            if t == 0:
                first = bit
            parity ^= bit
            inputs[b, t] = bit
            if tagging:
                targets[b, t] = parity
                mask[b, t] = True
        if not tagging:
            inputs[b, n] = equals
            targets[b, n] = (first ^ bit) if even_pairs else parity
            mask[b, n] = True


class _BitTask(_LengthTask):
    knobs = {"length": Knob(1, 65536, "number of bits L")}
    chance_accuracy = 0.5
    vocab_size = 4
    pad_id = 3
    ZERO, ONE, EQUALS, PAD = 0, 1, 2, 3

    _tagging = False
    _even_pairs = False

    def __init__(self):
        self.train_range = {"length": _LENGTH_TRAIN}
        self.eval_range = {"length": _LENGTH_EVAL}

    def _width(self, longest: int) -> int:
        return longest + (not self._tagging)

    def _fill(self, seed, lo, hi, inputs, targets, mask):
        _fill_bits(seed, lo, hi, self._tagging, self._even_pairs, self.EQUALS, inputs, targets, mask)

    def decode(self, batch: Batch, index: int) -> str:
        names = {self.ZERO: "0", self.ONE: "1", self.EQUALS: "=", self.PAD: "_"}
        if not self._tagging:
            return self._decode_final(batch, index, names)
        keep = batch.inputs[index] != self.PAD
        answers = batch.targets[index][batch.loss_mask[index]]
        return f"{_render(batch.inputs[index][keep], names)}\n→ {' '.join(str(a) for a in answers)}"


@register
class Parity(_BitTask):
    """Parity of a bit string.

    Tokens: ``0``, ``1`` (bits), ``2`` (``=``), ``3`` (pad). Final form (default): ``b1 .. bL =``;
    the answer (Σb mod 2, as token 0 or 1) sits at the ``=``. Tagging form (``tagging=True``): no
    ``=``; the target at position t is the parity of b1..bt.

    >>> Parity().sample(seed=0, batch=1, length=4).inputs.shape
    (1, 5)
    """

    name = "parity"

    def __init__(self, tagging: bool = False):
        super().__init__()
        self._tagging = _check_bool("tagging", tagging)

    def params(self) -> dict:
        return {"tagging": self._tagging}


@register
class EvenPairs(_BitTask):
    """Even pairs: is the number of adjacent unequal pairs odd? (Equals b1 != bL.)

    Tokens as in parity: ``b1 .. bL =``, answer 0/1 at the ``=``. L = 1 has no pairs (answer 0).
    """

    name = "even_pairs"
    _even_pairs = True


@numba.njit(cache=True)
def _fill_modular_arithmetic(seed, lo, hi, modulus, plus, equals, inputs, targets, mask):
    """``n op n .. op n =`` with ops + − × (× binds tighter); the answer is the value mod M."""
    state = np.empty(1, dtype=np.uint64)
    for b in range(inputs.shape[0]):
        seed_state(state, seed, b)
        n = randint(state, lo, hi)
        # The value is total + sign * term, where term is the product still being built.
        term = randint(state, 0, modulus - 1)
        inputs[b, 0] = term
        total = 0
        sign = 1
        for k in range(1, n):
            op = randint(state, 0, 2)
            x = randint(state, 0, modulus - 1)
            inputs[b, 2 * k - 1] = plus + op
            inputs[b, 2 * k] = x
            if op == 2:
                term = (term * x) % modulus
            else:
                total = (total + sign * term) % modulus
                sign = 1 if op == 0 else -1
                term = x
        inputs[b, 2 * n - 1] = equals
        targets[b, 2 * n - 1] = (total + sign * term) % modulus
        mask[b, 2 * n - 1] = True


@register
class ModularArithmetic(_LengthTask):
    """Modular arithmetic without brackets: ``n op n op .. n =`` with n in [0, M).

    Tokens: ``0 .. M-1`` (numbers, and the answer), ``M`` (+), ``M+1`` (−), ``M+2`` (×),
    ``M+3`` (=), ``M+4`` (pad). × binds tighter than + and −, which associate left; the answer
    (the value mod M, in [0, M)) sits at the ``=``. Knob ``length`` is the number of operands.

    >>> task = ModularArithmetic(modulus=5)
    >>> task.decode(task.sample(seed=3, batch=1, length=3), 0).count("=")
    1
    """

    name = "modular_arithmetic"
    knobs = {"length": Knob(1, 32768, "number of operands L")}

    def __init__(self, modulus: int = 5):
        self.modulus = int_param("modulus", modulus, 2, 1000)
        self.PLUS, self.MINUS, self.TIMES, self.EQUALS, _ = self._residue_tokens(self.modulus, 5)
        self.train_range = {"length": (2, 20)}
        self.eval_range = {"length": (20, 128)}

    def params(self) -> dict:
        return {"modulus": self.modulus}

    def _width(self, longest: int) -> int:
        return 2 * longest

    def _fill(self, seed, lo, hi, inputs, targets, mask):
        _fill_modular_arithmetic(seed, lo, hi, self.modulus, self.PLUS, self.EQUALS, inputs, targets, mask)

    def decode(self, batch: Batch, index: int) -> str:
        names = {i: str(i) for i in range(self.modulus)}
        names.update({self.PLUS: "+", self.MINUS: "-", self.TIMES: "*", self.EQUALS: "=", self.PAD: "_"})
        return f"{self._decode_final(batch, index, names)}   (mod {self.modulus})"


@numba.njit(cache=True)
def _fill_cycle(seed, lo, hi, cycle, left, equals, inputs, targets, mask):
    """Moves −1/0/+1 on a cycle of C positions from 0; the answer is the final position."""
    state = np.empty(1, dtype=np.uint64)
    for b in range(inputs.shape[0]):
        seed_state(state, seed, b)
        n = randint(state, lo, hi)
        displacement = 0
        trits = np.uint64(0)
        spare = 0
        for t in range(n):
            # One draw in [0, 3^20) gives 20 uniform moves (its base-3 digits).
            if spare == 0:
                trits = np.uint64(randint(state, 0, 3486784400))
                spare = 20
            rest = trits // np.uint64(3)
            move = np.int64(trits - np.uint64(3) * rest)
            trits = rest
            spare -= 1
            inputs[b, t] = left + move
            displacement += move - 1
        position = displacement % cycle
        inputs[b, n] = equals
        targets[b, n] = position
        mask[b, n] = True


@register
class CycleNavigation(_LengthTask):
    """Cycle navigation: start at position 0 of a cycle of C positions, apply L moves.

    Tokens: ``0 .. C-1`` (positions: the answer), ``C`` (move −1), ``C+1`` (stay), ``C+2``
    (move +1), ``C+3`` (=), ``C+4`` (pad). Input ``a1 .. aL =``; the final position mod C sits at
    the ``=``.
    """

    name = "cycle_navigation"
    knobs = {"length": Knob(1, 65536, "number of moves L")}

    def __init__(self, cycle: int = 5):
        self.cycle = int_param("cycle", cycle, 2, 1000)
        self.LEFT, self.STAY, self.RIGHT, self.EQUALS, _ = self._residue_tokens(self.cycle, 5)
        self.train_range = {"length": _LENGTH_TRAIN}
        self.eval_range = {"length": _LENGTH_EVAL}

    def params(self) -> dict:
        return {"cycle": self.cycle}

    def _width(self, longest: int) -> int:
        return longest + 1

    def _fill(self, seed, lo, hi, inputs, targets, mask):
        _fill_cycle(seed, lo, hi, self.cycle, self.LEFT, self.EQUALS, inputs, targets, mask)

    def decode(self, batch: Batch, index: int) -> str:
        names = {self.LEFT: "-1", self.STAY: "0", self.RIGHT: "+1", self.EQUALS: "=", self.PAD: "_"}
        return f"{self._decode_final(batch, index, names)}   (cycle of {self.cycle})"
