"""Batch assembly shared by the code-task generators.

Their example lengths are only known once an example is written, so a generator writes examples
back to back into one flat buffer (allocated for the longest possible batch but left untouched,
hence unpaged, beyond what is written) and records its supervised positions apart; `code_batch`
then builds exact-width padded arrays. Filling a [B, T_max] buffer sized for the worst case
instead would page in memory for every possible position, which costs more than generating.

A generator takes `flat_buffers`, then per example b writes into `begin_row`'s row, calls
`supervise` for each answer and `end_row` with the example's length and meta labels, and returns
the buffers, which `code_batch` turns into a Batch.
"""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import randint
from synthetic_tasks.base import Batch, pack_batch


@numba.njit(cache=True)
def flat_buffers(batch, width, max_supervised, n_meta):
    """(tokens, starts, seq_lens, supervised positions, their targets, counts, meta [n_meta, B]) for
    `batch` rows."""
    tokens = np.empty(batch * width, dtype=np.int64)
    starts = np.empty(batch, dtype=np.int64)
    seq_lens = np.empty(batch, dtype=np.int64)
    positions = np.empty(batch * max_supervised, dtype=np.int64)
    answers = np.empty(batch * max_supervised, dtype=np.int64)
    counts = np.zeros(batch, dtype=np.int64)
    meta = np.empty((n_meta, batch), dtype=np.int64)
    return tokens, starts, seq_lens, positions, answers, counts, meta


@numba.njit(cache=True, inline="always")
def begin_row(tokens, starts, seq_lens, b, width):
    """Example b's row: `width` cells of the flat buffer from where example b - 1 ended."""
    starts[b] = 0 if b == 0 else starts[b - 1] + seq_lens[b - 1]
    return tokens[starts[b] : starts[b] + width]


@numba.njit(cache=True, inline="always")
def end_row(seq_lens, meta, b, length, labels):
    """Example b is `length` tokens long; its meta column is the tuple of ints `labels`."""
    seq_lens[b] = length
    for i in range(len(labels)):
        meta[i, b] = labels[i]


@numba.njit(cache=True, inline="always")
def supervise(positions, answers, counts, b, max_supervised, position, answer):
    """Record that example b's target at `position` is `answer`."""
    slot = b * max_supervised + counts[b]
    positions[slot] = position
    answers[slot] = answer
    counts[b] += 1


@numba.njit(cache=True)
def pack_rows(tokens, starts, seq_lens, positions, answers, counts, pad):
    """Exact-width inputs / targets / loss_mask [B, T] from the flat buffers."""
    batch = seq_lens.shape[0]
    max_supervised = positions.shape[0] // batch
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


def code_batch(buffers, pad: int, names: tuple[str, ...], booleans: tuple[str, ...] = ()) -> Batch:
    """The Batch of a generator's filled `flat_buffers`, padded with `pad`; meta row i is labelled
    names[i], as bool where the name is in `booleans`."""
    *rows, meta = buffers
    inputs, targets, mask = pack_rows(*rows, pad)
    labels = {key: meta[i].astype(bool) if key in booleans else meta[i].copy() for i, key in enumerate(names)}
    return pack_batch(inputs, targets, mask, rows[2], labels)


@numba.njit(cache=True, inline="always")
def draw_names(state, names, k):
    """names[:k] = k distinct letters (indices into a-z), by a partial Fisher-Yates shuffle of the
    identity."""
    for v in range(26):
        names[v] = v
    for v in range(k):
        j = randint(state, v, 25)
        names[v], names[j] = names[j], names[v]


def codes(text: str, alphabet: str) -> np.ndarray:
    """The token ids of `text` in a character task's alphabet."""
    return np.array([alphabet.index(c) for c in text], dtype=np.int64)


@numba.njit(cache=True, inline="always")
def put(row, t, codes):
    """Write the token ids `codes` into `row` from position t; returns the position after them."""
    for j in range(codes.shape[0]):
        row[t + j] = codes[j]
    return t + codes.shape[0]
