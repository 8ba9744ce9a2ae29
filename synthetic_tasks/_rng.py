"""A counter-based random number generator for numba-jitted generators.

Each example gets its own stream, `seed_state(state, seed, index)`, so a batch is the same whatever
order (or thread) fills it, and no global RNG state is touched. The mixer is splitmix64.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO32 = np.uint64(1 << 32)
_LOW32 = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def seed_state(state, seed, index):
    """Set a one-element uint64 state array to the start of example `index`'s stream of a batch
    drawn with `seed` (no allocation)."""
    state[0] = _mix(np.uint64(seed) * _GOLDEN + _mix(np.uint64(index) + _GOLDEN))


@numba.njit(cache=True, inline="always")
def next_u64(state):
    state[0] += _GOLDEN
    return _mix(state[0])


@numba.njit(cache=True, inline="always")
def randint(state, low, high):
    """Uniform integer in [low, high] inclusive (bias below span / 2^64).

    Spans below 2^32 take floor(x * span / 2^64), computed exactly in two 32-bit halves, which
    avoids a 64-bit division per draw (the division cost more than the rest of a generator).
    """
    span = np.uint64(high - low + 1)
    x = next_u64(state)
    if span < _TWO32:
        upper = (x >> np.uint64(32)) * span
        lower = ((x & _LOW32) * span) >> np.uint64(32)
        return low + np.int64((upper + lower) >> np.uint64(32))
    return low + np.int64(x % span)


@numba.njit(cache=True, inline="always")
def uniform(state):
    """Uniform float in [0, 1)."""
    return np.float64(next_u64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True)
def first_draws(seed, batch, low, high):
    """The first draw, ``randint(low, high)``, of each example's stream, [B].

    Generators draw an example's length first, so a batch can be sized exactly (these values),
    then filled by re-seeding each stream and drawing the length again.
    """
    state = np.empty(1, dtype=np.uint64)
    values = np.empty(batch, dtype=np.int64)
    for b in range(batch):
        seed_state(state, seed, b)
        values[b] = randint(state, low, high)
    return values
