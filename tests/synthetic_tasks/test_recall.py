"""MQAR: disjoint, unique keys and values; every key queried once; power-law query slots."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic_tasks import make_task


def test_keys_and_values_are_disjoint_and_unique():
    task = make_task("mqar")
    half = task.vocab // 2
    out = task.sample(0, 64, length=(64, 512), num_pairs=(1, 64))
    for b in range(64):
        n, t_len = int(out.meta["num_pairs"][b]), int(out.meta["length"][b])
        assert t_len >= 4 * n
        keys, values = out.inputs[b, 0 : 2 * n : 2], out.inputs[b, 1 : 2 * n : 2]
        assert ((1 <= keys) & (keys < half)).all() and ((half <= values) & (values < task.vocab)).all()
        assert len(set(keys.tolist())) == n and len(set(values.tolist())) == n
        queries = np.flatnonzero(out.loss_mask[b])
        assert len(queries) == n and ((queries - 2 * n) % 2 == 0).all() and queries.min() >= 2 * n
        assert queries.max() < t_len
        assert sorted(out.inputs[b, queries].tolist()) == sorted(keys.tolist())
        region = np.ones(out.inputs.shape[1], dtype=bool)
        region[: 2 * n] = False
        region[queries] = False
        assert (out.inputs[b, region] == task.BLANK).all()


def test_query_slots_follow_a_power_law():
    """Weights (s + 1)^-0.99: early slots are taken much more often than late ones."""
    task = make_task("mqar")
    out = task.sample(1, 2000, length=256, num_pairs=8)
    slots = (np.argwhere(out.loss_mask)[:, 1] - 16) // 2
    counts = np.bincount(slots, minlength=120)
    assert counts[:10].sum() > 3 * counts[-10:].sum()
    assert counts[-30:].sum() > 0  # the long tail is reached


def test_dense_queries_take_every_slot():
    """T = 4N leaves exactly N slots: the weighted-shuffle branch fills them all."""
    task = make_task("mqar")
    out = task.sample(2, 8, length=128, num_pairs=32)
    assert (out.loss_mask[:, 64::2]).all() and not out.loss_mask[:, 65::2].any()


def test_examples_are_independent_of_their_neighbours():
    task = make_task("mqar")
    alone = task.sample(3, 5, length=(64, 256))
    crowded = task.sample(3, 50, length=(64, 256), num_pairs=(1, 16))
    width = alone.inputs.shape[1]
    assert np.array_equal(alone.inputs, crowded.inputs[:5, :width])


def test_incompatible_knobs_and_parameters_raise():
    task = make_task("mqar")
    with pytest.raises(ValueError, match="num_pairs"):
        task.sample(0, 2, length=64, num_pairs=17)
    with pytest.raises(ValueError, match="num_pairs"):
        make_task("mqar", vocab=16).sample(0, 2, length=64, num_pairs=8)
    for bad in (7, 9, 2**22, "8192"):
        with pytest.raises(ValueError, match="vocab"):
            make_task("mqar", vocab=bad)
    small = make_task("mqar", vocab=8)
    assert small.train_range["num_pairs"] == (1, 3) and small.chance_accuracy == pytest.approx(1 / 4)
