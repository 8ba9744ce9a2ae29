"""`hxt tasks list` and `hxt tasks show`, through the real entry point."""

from __future__ import annotations

import pytest

from sweeps.cli import main
from synthetic_tasks import TASKS


def _run(capsys, *argv) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_task_with_its_family_and_chance(capsys):
    code, out, _ = _run(capsys, "tasks", "list")
    assert code == 0
    for name, cls in TASKS.items():
        assert name in out and cls.family in out
    assert "3-40 | 40-256" in out and "0.5" in out


@pytest.mark.parametrize("name", sorted(TASKS))
def test_show_prints_examples_for_every_task(capsys, name):
    code, out, _ = _run(capsys, "tasks", "show", name, "--n", "2", "--seed", "5")
    assert code == 0
    assert out.startswith(name) and out.count("# example") == 2


def test_show_takes_knobs_ranges_and_parameters(capsys):
    argv = ["tasks", "show", "modular_arithmetic", "--modulus", "7", "--length=3", "--n", "1"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "modulus=7" in out and "(mod 7)" in out and "length=3" in out
    code, out, _ = _run(capsys, "tasks", "show", "dyck", "--max-depth", "2", "--length", "5,9", "--n", "3")
    assert code == 0 and "max_depth=2" in out
    code, out, _ = _run(capsys, "tasks", "show", "parity", "--tagging", "true", "--length", "4", "--n", "1")
    assert code == 0 and "tagging=True" in out and "→" in out


@pytest.mark.parametrize(
    "argv, named",
    [
        (["tasks", "show", "no_such_task"], "parity"),
        (["tasks", "show", "parity", "--length", "0"], "length"),
        (["tasks", "show", "parity", "--length", "9,3"], "length"),
        (["tasks", "show", "parity", "--length", "2.5"], "length"),
        (["tasks", "show", "parity", "--length", "2.5,8"], "length"),
        (["tasks", "show", "parity", "--depth", "3"], "--depth"),
        (["tasks", "show", "parity", "--length"], "--length"),
        (["tasks", "show", "modular_arithmetic", "--modulus", "one"], "modulus"),
        (["tasks", "show", "mqar", "--length", "64", "--num-pairs", "20"], "num_pairs"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, argv, named):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert named in err and err.count("\n") == 1 and "Traceback" not in err + out
