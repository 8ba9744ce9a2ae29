"""Multi-query associative recall (MQAR; Arora et al. 2023, "Zoology").

Attention solves it at any width; a recurrent model needs a state that grows with the number of
pairs N, which is why the recall half of the hybrid question lives here.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import next_u64, randint, seed_state, uniform
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


@numba.njit(cache=True, inline="always")
def _push(k, scaled, small, large, n_small, n_large):
    """Push column k onto `small` (scaled weight below 1) or `large`; returns both stacks' sizes."""
    if scaled[k] < 1.0:
        small[n_small] = k
        return n_small + 1, n_large
    large[n_large] = k
    return n_small, n_large + 1


@numba.njit(cache=True)
def _alias_table(weights):
    """Walker's alias table (Vose's construction) for drawing index k with probability
    proportional to weights[k] in O(1): pick k uniformly, keep it with probability keep[k],
    else take alias[k]."""
    size = weights.shape[0]
    scaled = weights * (size / weights.sum())
    keep = np.ones(size)
    alias = np.arange(size)
    small = np.empty(size, dtype=np.int64)
    large = np.empty(size, dtype=np.int64)
    n_small = n_large = 0
    for k in range(size):
        n_small, n_large = _push(k, scaled, small, large, n_small, n_large)
    while n_small > 0 and n_large > 0:
        n_small -= 1
        n_large -= 1
        low, high = small[n_small], large[n_large]
        keep[low] = scaled[low]
        alias[low] = high
        scaled[high] -= 1.0 - scaled[low]
        n_small, n_large = _push(high, scaled, small, large, n_small, n_large)
    return keep, alias


@numba.njit(cache=True)
def _fill_mqar(seed, lo_t, hi_t, lo_n, top_n, half, power, inputs, targets, mask):
    """N key-value pairs, then each key queried once at a power-law-distributed slot."""
    state = np.empty(1, dtype=np.uint64)
    used = np.zeros(2 * half, dtype=np.bool_)  # by token; cleared after each example
    keys = np.empty(top_n, dtype=np.int64)
    values = np.empty(top_n, dtype=np.int64)
    # Slot s has weight (s + 1)^(power - 1), Zoology's power law over query gaps.
    # Sized by the knob range, not by this batch, so that an example never depends on the others.
    weights = np.arange(1, hi_t // 2 + 1).astype(np.float64) ** (power - 1.0)
    keep, alias = _alias_table(weights)
    n_columns = np.uint64(keep.shape[0])
    priority = np.empty(hi_t // 2, dtype=np.float64)
    taken = np.zeros(hi_t // 2, dtype=np.bool_)
    chosen = np.empty(top_n, dtype=np.int64)
    for b in range(inputs.shape[0]):
        seed_state(state, seed, b)
        n = randint(state, lo_n, top_n)
        t_len = randint(state, max(lo_t, 4 * n), hi_t)
        # Without replacement by redrawing tokens already used: a sequential uniform draw.
        for i in range(n):
            key = randint(state, 1, half - 1)
            while used[key]:
                key = randint(state, 1, half - 1)
            value = randint(state, half, 2 * half - 1)
            while used[value]:
                value = randint(state, half, 2 * half - 1)
            used[key] = used[value] = True
            keys[i], values[i] = key, value
            inputs[b, 2 * i] = key
            inputs[b, 2 * i + 1] = value
        # A sequential weighted draw of n slots without replacement. While at most half the
        # slots are wanted, redrawing taken slots is cheap; otherwise Efraimidis-Spirakis (the
        # n largest log(u) / w, in decreasing order) gives the same distribution.
        space = (t_len - 2 * n) // 2
        if 2 * n <= space:
            # Draw from the slots of the longest possible example and redraw slots past this
            # example's end or already taken: what is kept follows the weights of the rest.
            i = 0
            while i < n:
                # One 64-bit draw: the high half picks the column, the low half the coin.
                x = next_u64(state)
                slot = np.int64(((x >> np.uint64(32)) * n_columns) >> np.uint64(32))
                if np.float64(x & np.uint64(0xFFFFFFFF)) * 2.0**-32 >= keep[slot]:
                    slot = alias[slot]
                if slot < space and not taken[slot]:
                    taken[slot] = True
                    chosen[i] = slot
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
            used[keys[i]] = used[values[i]] = False


@register
class MQAR(Task):
    """MQAR: ``k1 v1 k2 v2 .. kN vN`` then a query region where every key appears once.

    Tokens (vocabulary V, default 8192): ``0`` blank (fills the query region between queries,
    and pads), keys ``1 .. V/2-1``, values ``V/2 .. V-1``. Keys and values are drawn without
    replacement. The query region (positions 2N .. T-1) has a slot at every even offset; the N
    queries take N distinct slots drawn with weights (s + 1)^(a − 1), a = 0.01 (most queries come
    soon after the context, a long tail far away), key i of the context taking the i-th slot
    drawn. The target at a query is that key's value. Knobs: ``length`` T (the whole sequence)
    and ``num_pairs`` N, with T >= 4N so that every key has a slot: each example draws N from
    its range (capped at T_max // 4), then T from [max(T_min, 4N), T_max].
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
