import pytest

from sweeps.config import parse_sweep
from sweeps.grid import expand
from sweeps.train import curriculum_ranges, lr_at, run

TEXT = """
name = "t"
sizes = [{size}]
lrs = [{lr}]
seeds = [{seed}]
device = "cpu"
[[arch]]
pattern = "{pattern}"
neg_eigval = {neg}
[model]
n_layers = 1
n_heads = 2
[train]
batch_size = {batch_size}
steps = {steps}
warmup = 20
early_stop_acc = 0.999
eval_examples_per_bin = 128
[[task]]
name = "parity"
train = {{ length = [2, {length}] }}
eval = {{ length = [2, 20] }}
"""


def _config(pattern="G", neg="true", size=4000, lr=1e-2, steps=500, seed=0, batch_size=32, length=10):
    text = TEXT.format(
        pattern=pattern,
        neg=neg,
        size=size,
        lr=lr,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        length=length,
    )
    return expand(parse_sweep(text))[0]


def _run(**fields):
    return run(_config(**fields))


def test_schedule_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 1.0, 100, 10, 0.1) for s in range(100)]
    assert lrs[9] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_curriculum_widens_the_range_then_uses_all_of_it():
    config = _config("A", size=2500, lr=1e-3, steps=100)
    highs = [curriculum_ranges(step, config)[0]["length"][1] for step in range(100)]
    assert highs[0] == 2 and highs[-1] == 10 and highs == sorted(highs)
    assert [curriculum_ranges(step, config)[1] for step in (49, 50)] == [False, True]


def test_cpu_runs_are_deterministic_and_divergence_is_recorded():
    first = _run(pattern="A", size=2500, lr=3e-3, steps=25)
    second = run(_config(pattern="A", size=2500, lr=3e-3, steps=25).to_json())  # as a worker receives it
    assert first["status"] == "done"
    first.pop("wall_seconds"), second.pop("wall_seconds")
    assert first == second
    diverged = _run(pattern="A", size=2500, lr=1e30, steps=25)
    assert diverged["status"] == "diverged" and "non-finite" in diverged["error"] and not diverged["evals"]


@pytest.mark.slow
def test_gdn_with_negative_eigenvalues_learns_parity():
    """Three seeds, judged with a margin: chance is 0.5, and each seed's worst in-range length is
    at 0.88-1.0 here (five seeds seen), so no one seed or CPU decides it."""
    worst = []
    for seed in range(3):
        result = _run(size=6000, steps=400, batch_size=64, length=8, seed=seed)
        assert result["status"] == "done", result["error"]
        in_range = [row["token_acc"] for row in result["evals"] if row["in_range"]]
        assert len(in_range) >= 5
        assert sum(in_range) / len(in_range) >= 0.75, (seed, in_range)
        worst.append(min(in_range))
    assert sum(worst) / len(worst) >= 0.8, worst


@pytest.mark.slow
def test_mamba2_with_input_dependent_dt_learns_parity():
    """Mamba2 with negative eigenvalues and dt rows at std 0.5 (docs/mamba2-init.md), where the paper's
    initialisation stays at chance: three seeds, each judged by its mean over the training range's
    bins (0.96-1.0 in five seeds seen; chance 0.5). Extrapolation at this budget varies by seed
    (0.5-1.0 at length 20), so it is left to the GPU study."""
    init = "".join(f"{k} = {v}\n" for k, v in dict(
        mamba_A_min=1.0, mamba_A_max=2.0, mamba_dt_min=0.3, mamba_dt_max=0.7, mamba_dt_std=0.5).items())
    for seed in range(3):
        text = TEXT.format(pattern="M", neg="true", size=10000, lr=3e-3, steps=500, seed=seed, batch_size=64,
                           length=8)
        text = text.replace("n_layers = 1\n", "n_layers = 2\n").replace("[train]", init + "[train]")
        result = run(expand(parse_sweep(text))[0])
        assert result["status"] == "done", result["error"]
        in_range = [row["token_acc"] for row in result["evals"] if row["in_range"]]
        assert len(in_range) >= 5 and sum(in_range) / len(in_range) >= 0.85, (seed, in_range)


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
            "length=2,6",
            "--eval",
            "length=2,8",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert ": done" in out and "length=8" in out and "token acc" in out
