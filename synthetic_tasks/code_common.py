"""Batch assembly shared by the code-task generators.

Their example lengths are only known once an example is written, so a generator writes examples
back to back into one flat buffer (allocated for the longest possible batch but left untouched,
hence unpaged, beyond what is written) and records its supervised positions apart; `pack_rows`
then builds exact-width padded arrays. Filling a [B, T_max] buffer sized for the worst case
instead would page in memory for every possible position, which costs more than generating.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def flat_buffers(batch, width, max_supervised):
    """(tokens, starts, seq_lens, supervised positions, their targets, counts) for `batch` rows."""
    tokens = np.empty(batch * width, dtype=np.int64)
    starts = np.empty(batch, dtype=np.int64)
    seq_lens = np.empty(batch, dtype=np.int64)
    positions = np.empty(batch * max_supervised, dtype=np.int64)
    answers = np.empty(batch * max_supervised, dtype=np.int64)
    counts = np.zeros(batch, dtype=np.int64)
    return tokens, starts, seq_lens, positions, answers, counts


@numba.njit(cache=True, inline="always")
def supervise(positions, answers, counts, b, max_supervised, position, answer):
    """Record that example b's target at `position` is `answer`."""
    slot = b * max_supervised + counts[b]
    positions[slot] = position
    answers[slot] = answer
    counts[b] += 1


@numba.njit(cache=True)
def pack_rows(tokens, starts, seq_lens, positions, answers, counts, max_supervised, pad):
    """Exact-width inputs / targets / loss_mask [B, T] from the flat buffers."""
    batch = seq_lens.shape[0]
    width = max(1, seq_lens.max())
    inputs = np.full((batch, width), pad, dtype=np.int64)
    targets = np.zeros((batch, width), dtype=np.int64)
    mask = np.zeros((batch, width), dtype=np.bool_)
    for b in range(batch):
        start = starts[b]
        for t in range(seq_lens[b]):
            inputs[b, t] = tokens[start + t]
        for j in range(counts[b]):
            slot = b * max_supervised + j
            targets[b, positions[slot]] = answers[slot]
            mask[b, positions[slot]] = True
    return inputs, targets, mask


@numba.njit(cache=True, inline="always")
def put_decimal(row, t, value, digit0):
    """Write the non-negative int `value` as digit tokens (token of digit d = digit0 + d) from row[t];
    return the position after the last digit."""
    digits = 1
    power = 10
    while value >= power:
        digits += 1
        power *= 10
    for j in range(digits - 1, -1, -1):
        row[t + j] = digit0 + value % 10
        value //= 10
    return t + digits


def codes(text: str, alphabet: str) -> np.ndarray:
    """The token ids of `text` in a character task's alphabet."""
    return np.array([alphabet.index(c) for c in text], dtype=np.int64)


@numba.njit(cache=True, inline="always")
def put(row, t, codes):
    """Write the token ids `codes` into `row` from position t; returns the position after them."""
    for j in range(codes.shape[0]):
        row[t + j] = codes[j]
    return t + codes.shape[0]
