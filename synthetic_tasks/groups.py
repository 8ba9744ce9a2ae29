"""Group word problems (Merrill, Petty, Sabharwal, ICML 2024, "The Illusion of State").

Input g1 .. gL, one token per group element; tagging target: the prefix product g1 · .. · gt at
every position. Every group is a permutation group: token i is the permutation ``elements[i]``
(a tuple of images; token 0 is the identity), and the product is "apply left, then right":
``(p · q)(i) = q(p(i))``. The multiplication table is built once per group from the
permutations and handed to the numba generator as an array.

Groups: Z_n (rotations of n points), S3, A4 × Z5 (A4 on points 0-3, Z5 rotating points 4-8),
Z60, A5, S5, and S5 with inputs restricted to the 10 transpositions ("only swaps", which one
negative-eigenvalue GDN layer can track; Grazzi et al. 2025, Fig. 4).
"""

from __future__ import annotations

import functools
import itertools

import numba
import numpy as np

from synthetic_tasks._rng import first_draws, randint, seed_state
from synthetic_tasks.base import Batch, Knob, Task, empty_batch, register

__all__ = [
    "GroupWord",
    "CyclicGroup",
    "GroupS3",
    "GroupA4xZ5",
    "GroupZ60",
    "GroupA5",
    "GroupS5",
    "GroupS5Swaps",
    "cyclic_elements",
    "symmetric_elements",
    "alternating_elements",
    "multiplication_table",
]

Perm = tuple[int, ...]


def cyclic_elements(n: int) -> list[Perm]:
    """Z_n as rotations: element k sends point i to i + k mod n."""
    return [tuple((i + k) % n for i in range(n)) for k in range(n)]


def symmetric_elements(n: int) -> list[Perm]:
    """S_n in lexicographic order (the identity first)."""
    return list(itertools.permutations(range(n)))


def _is_even(perm: Perm) -> bool:
    inversions = sum(1 for i, j in itertools.combinations(range(len(perm)), 2) if perm[i] > perm[j])
    return inversions % 2 == 0


def alternating_elements(n: int) -> list[Perm]:
    """A_n: the even permutations, in lexicographic order."""
    return [p for p in symmetric_elements(n) if _is_even(p)]


def _a4_times_z5() -> list[Perm]:
    return [a + tuple(4 + (j + k) % 5 for j in range(5)) for a in alternating_elements(4) for k in range(5)]


def multiplication_table(elements: list[Perm]) -> np.ndarray:
    """``table[a, b]`` = index of ``elements[a] · elements[b]`` (a first, then b)."""
    perms = np.asarray(elements, dtype=np.int64)  # [G, d]
    index = {p: i for i, p in enumerate(elements)}
    # composed[a, b, i] = elements[b][elements[a][i]]
    composed = perms[np.arange(len(elements))[None, :, None], perms[:, None, :]]  # [G, G, d]
    table = np.empty((len(elements), len(elements)), dtype=np.int64)
    for a in range(len(elements)):
        for b in range(len(elements)):
            product = tuple(composed[a, b].tolist())
            if product not in index:
                raise ValueError("the elements are not closed under composition")
            table[a, b] = index[product]
    return table


@functools.cache
def _group(kind: str, n: int) -> tuple[tuple[Perm, ...], np.ndarray]:
    builders = {
        "Z": lambda: cyclic_elements(n),
        "S": lambda: symmetric_elements(n),
        "A": lambda: alternating_elements(n),
        "A4xZ5": _a4_times_z5,
    }
    elements = builders[kind]()
    table = multiplication_table(elements)
    table.setflags(write=False)
    return tuple(elements), table


@numba.njit(cache=True)
def _fill_words(seed, lo, hi, table, generators, inputs, targets, mask):
    """Uniform words over `generators`; targets are the prefix products via `table`."""
    state = np.empty(1, dtype=np.uint64)
    last = generators.shape[0] - 1
    for b in range(inputs.shape[0]):
        seed_state(state, seed, b)
        n = randint(state, lo, hi)
        product = 0
        for t in range(n):
            g = generators[randint(state, 0, last)]
            product = table[product, g]
            inputs[b, t] = g
            targets[b, t] = product
            mask[b, t] = True


class GroupWord(Task):
    """Prefix products of a random word over a finite group (tagging).

    Tokens ``0 .. |G|-1`` are the group elements (``elements[i]``, token 0 the identity), and
    ``|G|`` is the pad. The target at position t is the token of g1 · .. · gt.
    """

    family = "group"
    knobs = {"length": Knob(1, 65536, "word length L")}
    eval_axes = ("length",)

    def _build(self, kind: str, n: int, label: str) -> None:
        elements, table = _group(kind, n)
        self.group = label
        self.elements = elements
        self.table = table
        self.generators = np.arange(len(elements), dtype=np.int64)
        self.vocab_size = len(elements) + 1
        self.pad_id = len(elements)
        self.chance_accuracy = 1.0 / len(elements)
        self.train_range = {"length": (3, 40)}
        self.eval_range = {"length": (40, 256)}

    def _sample(self, seed, batch, ranges):
        lo, hi = ranges["length"]
        lengths = first_draws(seed, batch, lo, hi)
        inputs, targets, mask = empty_batch(batch, int(lengths.max()), self.pad_id)
        _fill_words(seed, lo, hi, self.table, self.generators, inputs, targets, mask)
        return Batch(inputs, targets, mask, {"length": lengths})

    def element_name(self, token: int) -> str:
        """Cycle notation of an element, e.g. ``(0 1)(2 4 3)``; ``e`` for the identity.
        Cyclic groups write the residue k of the rotation by k instead."""
        if self.group.startswith("Z"):
            return str(token)
        perm = self.elements[token]
        seen, cycles = set(), []
        for start in range(len(perm)):
            if start in seen or perm[start] == start:
                continue
            cycle, point = [], start
            while point not in seen:
                seen.add(point)
                cycle.append(point)
                point = perm[point]
            cycles.append("(" + " ".join(map(str, cycle)) + ")")
        return "".join(cycles) or "e"

    def decode(self, batch: Batch, index: int) -> str:
        keep = batch.loss_mask[index]
        word = [self.element_name(int(t)) for t in batch.inputs[index][keep]]
        prefix = [self.element_name(int(t)) for t in batch.targets[index][keep]]
        return f"{self.group} word:   {' '.join(word)}\nprefix products: {' '.join(prefix)}"


@register
class CyclicGroup(GroupWord):
    """Z_n (abelian; n structural, default 5): token k is the rotation by k."""

    name = "group_cyclic"

    def __init__(self, n: int = 5):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= 128:
            raise ValueError(f"parameter 'n' must be an int in [2, 128], got {n!r}")
        self.n = int(n)
        self._build("Z", self.n, f"Z{self.n}")

    def params(self) -> dict:
        return {"n": self.n}


@register
class GroupS3(GroupWord):
    """S3, the smallest non-abelian group (solvable)."""

    name = "group_s3"

    def __init__(self):
        self._build("S", 3, "S3")


@register
class GroupA4xZ5(GroupWord):
    """A4 × Z5 (order 60, solvable); A4 acts on points 0-3 and Z5 rotates points 4-8."""

    name = "group_a4xz5"

    def __init__(self):
        self._build("A4xZ5", 0, "A4xZ5")


@register
class GroupZ60(GroupWord):
    """Z60 (order 60, abelian): the solvable control for A5."""

    name = "group_z60"

    def __init__(self):
        self._build("Z", 60, "Z60")


@register
class GroupA5(GroupWord):
    """A5 (order 60, the smallest non-solvable group: NC1-complete word problem)."""

    name = "group_a5"

    def __init__(self):
        self._build("A", 5, "A5")


@register
class GroupS5(GroupWord):
    """S5 (order 120, non-solvable)."""

    name = "group_s5"

    def __init__(self):
        self._build("S", 5, "S5")


@register
class GroupS5Swaps(GroupWord):
    """S5 with inputs restricted to the 10 transpositions; prefix products range over all of S5."""

    name = "group_s5_swaps"

    def __init__(self):
        self._build("S", 5, "S5-swaps")
        moved = [sum(1 for i, p in enumerate(perm) if i != p) for perm in self.elements]
        self.generators = np.array([i for i, m in enumerate(moved) if m == 2], dtype=np.int64)
        # After t swaps the prefix product lies in the parity coset of (-1)^t, which position alone
        # reveals: a guesser that knows t is right 1 time in 60, not 1 in 120.
        self.chance_accuracy = 2.0 / len(self.elements)
