"""The counter-based generator behind every task: pinned streams, bounds, uniformity."""

from __future__ import annotations

import numba
import numpy as np

from synthetic_tasks._rng import first_draws, next_u64, randint, seed_state, uniform


@numba.njit
def example_state(seed, index):
    state = np.empty(1, dtype=np.uint64)
    seed_state(state, seed, index)
    return state


@numba.njit
def _draws(seed, index, n, low, high):
    state = example_state(seed, index)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = randint(state, low, high)
    return out


@numba.njit
def _head(seed, index):
    state = example_state(seed, index)
    return next_u64(state), next_u64(state), randint(state, 0, 999)


@numba.njit
def _uniforms(n):
    state = example_state(5, 5)
    out = np.empty(n)
    for i in range(n):
        out[i] = uniform(state)
    return out


def test_streams_are_pinned():
    assert _head(42, 3) == (10336206633959435771, 17543034517007426432, 835)


def test_seed_state_restarts_a_stream():
    state = example_state(42, 3)
    first = next_u64(state)
    seed_state(state, 42, 3)
    assert next_u64(state) == first
    assert example_state(42, 3)[0] != example_state(42, 4)[0] != example_state(43, 3)[0]


def test_randint_bounds_and_uniformity():
    draws = _draws(1, 0, 120_000, -2, 3)
    assert draws.min() == -2 and draws.max() == 3
    counts = np.bincount(draws + 2)
    # Six cells of expected 20 000: a chi-square above 30 has probability below 1e-5.
    assert ((counts - 20_000) ** 2 / 20_000).sum() < 30
    assert set(_draws(1, 0, 100, 7, 7)) == {7}
    wide = _draws(1, 0, 10_000, 0, 2**40)
    assert wide.min() >= 0 and wide.max() <= 2**40 and wide.max() > 2**39


def test_uniform_is_in_unit_interval():
    values = _uniforms(50_000)
    assert values.min() >= 0 and values.max() < 1 and abs(values.mean() - 0.5) < 0.01


def test_first_draws_match_each_stream():
    values = first_draws(9, 6, 3, 40)
    assert values.tolist() == [int(_draws(9, b, 1, 3, 40)[0]) for b in range(6)]
