"""`hxt sweep status` and the option checks of `hxt sweep run`, through the real entry point."""

from __future__ import annotations

import pytest

from tests.analysis.synthetic_store import build_store
from tests.sweeps.cli_helpers import assert_one_line_error, digest, run_cli, sweep_file


def _table_rows(out: str, first: str) -> list[list[str]]:
    """The body rows of the rich table whose header starts with column `first`."""
    rows, inside = [], False
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃").split("│" if "│" in line else "┃")]
        if line.startswith("┃") and cells[0] == first:
            inside, rows = True, []
        elif inside and line.startswith("│"):
            rows.append(cells)
        elif inside and line.startswith("└"):
            return rows
    return rows


def test_status_has_rows_per_size_and_per_learning_rate(tmp_path, capsys):
    sweep = build_store(tmp_path / "sweep", sizes=(30_000, 100_000), lrs=(1e-3, 3e-3), seeds=(0,))
    before = digest(tmp_path)
    code, out, err = run_cli(capsys, "sweep", "status", sweep, "--by", "arch,size")
    assert code == 0, err
    assert "driver: none" in out and "runs: 1 diverged, 32 done, 1 failed" in out
    sizes = _table_rows(out, "size")
    assert [row[:3] for row in sizes] == [["30000", "18", "16"], ["100000", "16", "16"]]
    assert [row[0] for row in _table_rows(out, "lr")] == ["0.001", "0.003", "1"]
    by = [row for row in _table_rows(out, "arch") if len(row) == 8]
    assert [row[:3] for row in by][:2] == [["A", "30000", "5"], ["A", "100000", "4"]]
    assert digest(tmp_path) == before


def test_status_of_a_one_size_sweep_has_no_size_table(tmp_path, capsys):
    sweep = build_store(tmp_path / "sweep", failures=False)
    code, out, _ = run_cli(capsys, "sweep", "status", sweep)
    assert code == 0 and not _table_rows(out, "size") and not _table_rows(out, "lr")
    code, out, err = run_cli(capsys, "sweep", "status", sweep, "--by", "arch,colour")
    assert_one_line_error(code, out, err, "--by", "'colour'", "task, arch, size, lr, seed")


@pytest.mark.parametrize(
    "options, named",
    [
        (["--slots-per-gpu", "0"], "--slots-per-gpu must be >= 1, got 0"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--summary-every", "0"], "--summary-every must be > 0"),
        (["--backend", "slurm"], "--backend 'slurm' is not known; allowed values: local, ray"),
        (["--address", "auto"], "--address only applies to --backend ray"),
    ],
)
def test_sweep_run_option_errors_write_nothing(tmp_path, capsys, options, named):
    path = sweep_file(tmp_path)
    before = digest(tmp_path)
    code, out, err = run_cli(capsys, "sweep", "run", path, "--out", tmp_path / "sweep", *options)
    assert_one_line_error(code, out, err, named)
    assert digest(tmp_path) == before
