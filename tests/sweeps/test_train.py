import pytest

from sweeps.config import parse_sweep
from sweeps.grid import expand, strip_id
from sweeps.train import curriculum_ranges, lr_at, run

TEXT = """
name = "t"
sizes = [{size}]
lrs = [{lr}]
seeds = [0]
device = "cpu"
[[arch]]
pattern = "{pattern}"
neg_eigval = {neg}
[model]
n_layers = 1
n_heads = 2
[train]
batch_size = 32
steps = {steps}
warmup = 20
early_stop_acc = 0.999
eval_examples_per_bin = 128
[[task]]
name = "parity"
train = {{ length = [2, 10] }}
eval = {{ length = [2, 20] }}
"""


def _run(pattern="G", neg="true", size=4000, lr=1e-2, steps=500):
    config = parse_sweep(TEXT.format(pattern=pattern, neg=neg, size=size, lr=lr, steps=steps))
    return run(strip_id(expand(config)[0]))


def test_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1.0, 100, 10, 0.1) for s in range(100)]
    assert lrs[9] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_curriculum_widens_the_range_then_uses_all_of_it():
    config = strip_id(
        expand(parse_sweep(TEXT.format(pattern="A", neg="true", size=2500, lr=1e-3, steps=100)))[0]
    )
    highs = [curriculum_ranges(step, config)[0]["length"][1] for step in range(100)]
    assert highs[0] == 2 and highs[-1] == 10 and highs == sorted(highs)
    assert [curriculum_ranges(step, config)[1] for step in (49, 50)] == [False, True]


def test_cpu_runs_are_deterministic_and_divergence_is_recorded():
    first, second = _run("A", size=2500, lr=3e-3, steps=25), _run("A", size=2500, lr=3e-3, steps=25)
    assert first["status"] == "done"
    first.pop("wall_seconds"), second.pop("wall_seconds")
    assert first == second
    diverged = _run("A", size=2500, lr=1e30, steps=25)
    assert diverged["status"] == "diverged" and "non-finite" in diverged["error"] and not diverged["evals"]


@pytest.mark.slow
def test_gdn_with_negative_eigenvalues_learns_parity():
    result = _run()
    assert result["status"] == "done", result["error"]
    in_range = [row for row in result["evals"] if row["in_range"]]
    assert len(in_range) >= 5
    assert min(row["token_acc"] for row in in_range) >= 0.95, in_range


def test_hxt_train_prints_metrics(capsys):
    from sweeps.cli import main

    main(
        [
            "train",
            "--pattern",
            "A",
            "--size",
            "2500",
            "--n-layers",
            "1",
            "--steps",
            "25",
            "--warmup",
            "5",
            "--train",
            "length=2:6",
            "--eval",
            "length=2:8",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert ": done" in out and "length=8" in out and "token acc" in out
