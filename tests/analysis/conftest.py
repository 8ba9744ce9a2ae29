"""Stores with known per-seed outcomes, shared by the metric and report tests."""

import sqlite3

import pytest

from tests.analysis.synthetic_store import build_store


def _set_evals(connection, column: str, value: float, in_range: int, arch: str, seeds) -> None:
    runs = f"SELECT run_id FROM runs WHERE arch = '{arch}' AND seed IN ({', '.join(map(str, seeds))})"
    connection.execute(
        f"UPDATE evals SET {column} = ? WHERE in_range = ? AND run_id IN ({runs})", (value, in_range)
    )


@pytest.fixture
def two_of_three(tmp_path):
    """Parity, A and G, 3 seeds: G's seeds reach in-range token accuracy ~0.99, exactly 0.9 and 0.89;
    A's stay at 0.6 in range, and A's seed 1 alone scores 0.8 scaled out of range."""
    path = build_store(
        tmp_path / "sweep", seeds=(0, 1, 2), archs=("A", "G"), tasks=("parity",), failures=False
    )
    connection = sqlite3.connect(path / "hxt.sqlite")
    _set_evals(connection, "token_acc", 0.9, 1, "G", [1])
    _set_evals(connection, "token_acc", 0.89, 1, "G", [2])
    _set_evals(connection, "token_acc", 0.6, 1, "A", [0, 1, 2])
    _set_evals(connection, "scaled_acc", 0.8, 0, "A", [1])
    connection.commit()
    connection.close()
    return path
