"""A counter-based random number generator for numba-jitted generators.

Each example gets its own stream, `example_state(seed, index)`, so a batch is the same whatever
order (or thread) fills it, and no global RNG state is touched. The mixer is splitmix64.
"""

from __future__ import annotations

import numba
import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@numba.njit(cache=True, inline="always")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def example_state(seed, index):
    """A one-element uint64 state array for example `index` of a batch drawn with `seed`."""
    state = np.empty(1, dtype=np.uint64)
    state[0] = _mix(np.uint64(seed) * _GOLDEN + _mix(np.uint64(index) + _GOLDEN))
    return state


@numba.njit(cache=True, inline="always")
def seed_state(state, seed, index):
    """Reset an existing state array to the start of example `index`'s stream (no allocation)."""
    state[0] = _mix(np.uint64(seed) * _GOLDEN + _mix(np.uint64(index) + _GOLDEN))


@numba.njit(cache=True, inline="always")
def next_u64(state):
    state[0] += _GOLDEN
    return _mix(state[0])


@numba.njit(cache=True, inline="always")
def randint(state, low, high):
    """Uniform integer in [low, high] inclusive (the modulo bias is below 2^-40 for our ranges)."""
    span = np.uint64(high - low + 1)
    return low + np.int64(next_u64(state) % span)


@numba.njit(cache=True, inline="always")
def uniform(state):
    """Uniform float in [0, 1)."""
    return np.float64(next_u64(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
