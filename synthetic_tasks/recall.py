"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology").

Attention solves it at any width; a recurrent model needs a state that grows with the number of
pairs N, which is why the recall half of the hybrid question lives here.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import randint, seed_state, uniform
from synthetic_tasks.base import Batch, Knob, Task, empty_batch, register

__all__ = ["MQAR"]


@numba.njit(cache=True)
def _draw_sizes(seed, batch, lo_t, hi_t, lo_n, top_n):
    """Each example's first two draws: N, then T >= 4N."""
    state = np.empty(1, dtype=np.uint64)
    lengths = np.empty(batch, dtype=np.int64)
    pairs = np.empty(batch, dtype=np.int64)
    for b in range(batch):
        seed_state(state, seed, b)
        pairs[b] = randint(state, lo_n, top_n)
        lengths[b] = randint(state, max(lo_t, 4 * pairs[b]), hi_t)
    return lengths, pairs


@numba.njit(cache=True)
def _fill_mqar(seed, lo_t, hi_t, lo_n, top_n, half, power, inputs, targets, mask):
    """N key-value pairs, then each key queried once at a power-law-distributed slot."""
    state = np.empty(1, dtype=np.uint64)
    width = inputs.shape[1]
    keys = np.arange(1, half)
    values = np.arange(half, 2 * half)
    key_swaps = np.empty(top_n, dtype=np.int64)
    value_swaps = np.empty(top_n, dtype=np.int64)
    # Slot s has weight (s + 1)^(power - 1), Zoology's power law over query gaps.
    weights = np.arange(1, width // 2 + 1).astype(np.float64) ** (power - 1.0)
    cumulative = np.cumsum(weights)
    priority = np.empty(width // 2, dtype=np.float64)
    taken = np.zeros(width // 2, dtype=np.bool_)
    chosen = np.empty(top_n, dtype=np.int64)
    for b in range(inputs.shape[0]):
        seed_state(state, seed, b)
        n = randint(state, lo_n, top_n)
        t_len = randint(state, max(lo_t, 4 * n), hi_t)
        # Partial Fisher-Yates: the first n entries become a uniform sample without replacement.
        for i in range(n):
            key_swaps[i] = randint(state, i, keys.shape[0] - 1)
            keys[i], keys[key_swaps[i]] = keys[key_swaps[i]], keys[i]
            value_swaps[i] = randint(state, i, values.shape[0] - 1)
            values[i], values[value_swaps[i]] = values[value_swaps[i]], values[i]
            inputs[b, 2 * i] = keys[i]
            inputs[b, 2 * i + 1] = values[i]
        # A sequential weighted draw of n slots without replacement. While at most half the
        # slots are wanted, redrawing taken slots is cheap; otherwise Efraimidis-Spirakis (the
        # n largest log(u) / w, in decreasing order) gives the same distribution.
        space = (t_len - 2 * n) // 2
        if 2 * n <= space:
            total = cumulative[space - 1]
            i = 0
            while i < n:
                # The first slot whose cumulative weight exceeds u (binary search).
                u = uniform(state) * total
                low, high = 0, space - 1
                while low < high:
                    middle = (low + high) >> 1
                    if cumulative[middle] > u:
                        high = middle
                    else:
                        low = middle + 1
                if not taken[low]:
                    taken[low] = True
                    chosen[i] = low
                    i += 1
        else:
            for slot in range(space):
                priority[slot] = np.log(1.0 - uniform(state)) / weights[slot]
            for i in range(n):
                best = -1
                for slot in range(space):
                    if not taken[slot] and (best < 0 or priority[slot] > priority[best]):
                        best = slot
                taken[best] = True
                chosen[i] = best
        for i in range(n):
            taken[chosen[i]] = False
        for i in range(n):
            position = 2 * n + 2 * chosen[i]
            inputs[b, position] = keys[i]
            targets[b, position] = values[i]
            mask[b, position] = True
        # Undo the swaps so that the next example starts from the same arrays (examples must
        # not depend on one another).
        for i in range(n - 1, -1, -1):
            keys[i], keys[key_swaps[i]] = keys[key_swaps[i]], keys[i]
            values[i], values[value_swaps[i]] = values[value_swaps[i]], values[i]


@register
class MQAR(Task):
    """MQAR: ``k1 v1 k2 v2 .. kN vN`` then a query region where every key appears once.

    Tokens (vocabulary V, default 8192): ``0`` blank (fills the query region between queries,
    and pads), keys ``1 .. V/2-1``, values ``V/2 .. V-1``. Keys and values are drawn without
    replacement. The query region (positions 2N .. T-1) has a slot at every even offset; the N
    queries take N distinct slots drawn with weights (s + 1)^(a − 1), a = 0.01 (most queries come
    soon after the context, a long tail far away), key i of the context taking the i-th slot
    drawn. The target at a query is that key's value. Knobs: ``length`` T (the whole sequence)
    and ``num_pairs`` N, with T >= 4N so that every key has a slot.
    """

    name = "mqar"
    family = "recall"
    knobs = {
        "length": Knob(4, 65536, "sequence length T"),
        "num_pairs": Knob(1, 16384, "number of key-value pairs N (needs T >= 4N)"),
    }
    eval_axes = ("num_pairs", "length")
    power = 0.01

    def __init__(self, vocab: int = 8192):
        if isinstance(vocab, bool) or not isinstance(vocab, (int, np.integer)):
            raise ValueError(f"parameter 'vocab' must be an even int in [8, 1048576], got {vocab!r}")
        if not (8 <= vocab <= 1 << 20 and vocab % 2 == 0):
            raise ValueError(f"parameter 'vocab' must be an even int in [8, 1048576], got {vocab!r}")
        self.vocab = int(vocab)
        self.BLANK = 0
        self.first_value = self.vocab // 2
        self.vocab_size = self.vocab
        self.pad_id = self.BLANK
        self.chance_accuracy = 1.0 / (self.vocab // 2)
        keys = self.first_value - 1
        self.train_range = {"length": (64, 256), "num_pairs": (1, min(16, keys))}
        self.eval_range = {"length": (256, 2048), "num_pairs": (min(16, keys), min(128, keys))}

    def params(self) -> dict:
        return {"vocab": self.vocab}

    def _sample(self, seed, batch, ranges):
        lo_t, hi_t = ranges["length"]
        lo_n, hi_n = ranges["num_pairs"]
        if 4 * lo_n > hi_t:
            raise ValueError(
                f"knobs 'num_pairs' = {lo_n} and 'length' <= {hi_t} are incompatible: mqar needs "
                f"length >= 4 * num_pairs"
            )
        if hi_n > self.first_value - 1:
            raise ValueError(
                f"knob 'num_pairs' = {hi_n} exceeds the {self.first_value - 1} keys of vocab {self.vocab}"
            )
        top_n = min(hi_n, hi_t // 4)
        lengths, pairs = _draw_sizes(seed, batch, lo_t, hi_t, lo_n, top_n)
        inputs, targets, mask = empty_batch(batch, int(lengths.max()), self.BLANK)
        _fill_mqar(seed, lo_t, hi_t, lo_n, top_n, self.first_value, self.power, inputs, targets, mask)
        return Batch(inputs, targets, mask, {"length": lengths, "num_pairs": pairs})

    def decode(self, batch: Batch, index: int) -> str:
        n = int(batch.meta["num_pairs"][index])
        tokens = batch.inputs[index]
        context = " ".join(f"{tokens[2 * i]}:{tokens[2 * i + 1]}" for i in range(n))
        queries = [
            f"@{p} {tokens[p]}→{batch.targets[index, p]}" for p in np.flatnonzero(batch.loss_mask[index])
        ]
        length = int(batch.meta["length"][index])
        return f"pairs (key:value): {context}\nqueries (T = {length}): {'  '.join(queries)}"
