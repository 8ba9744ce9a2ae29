import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps.config import parse_sweep
from sweeps.grid import check_runs, expand

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name = "t"
patterns = ["A", "GGGA"]
sizes = [20000]
lrs = [1e-3]
seeds = [0, 1]

[[arch]]
name = "G-noneg"
pattern = "G"
neg_eigval = false

[model]
n_layers = 4

[train]
steps = 100
warmup = 10

[[task]]
name = "parity"
train = { length = [3, 10] }
"""


def test_good_config_parses_with_defaults_from_the_task():
    config = parse_sweep(GOOD)
    assert [a.name for a in config.archs] == ["A", "GGGA", "G-noneg"]
    assert config.archs[2].neg_eigval is False and config.archs[0].neg_eigval is True
    (task,) = config.tasks
    assert dict(task.train_range) == {"length": (3, 10)}
    assert dict(task.eval_range) == {"length": (40, 256)}  # the task's own evaluation range
    assert task.eval_axes == ("length",)
    assert len(expand(config)) == 1 * 3 * 1 * 1 * 2


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps" / "configs").glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_configs_plan(path, capsys):
    from sweeps.cli import main

    main(["sweep", "plan", str(path)])
    out = capsys.readouterr().out
    config = parse_sweep(path.read_text())
    assert f"{len(expand(config))} runs" in out and "PFLOP" in out
    assert len(config.seeds) >= 3 or config.name == "demo"  # a study draws no verdict from fewer


BAD = {
    "unknown top-level key": (
        GOOD.replace('name = "t"', 'name = "t"\nepochs = 3'),
        ["'epochs'", "allowed keys"],
    ),
    "unknown nested key": (
        GOOD.replace("steps = 100", "steps = 100\nbatchsize = 3"),
        ["train.", "'batchsize'", "batch_size"],
    ),
    "unknown task": (GOOD.replace('name = "parity"', 'name = "parrity"'), ["'parrity'", "parity"]),
    "unknown pattern letter": (GOOD.replace('"GGGA"', '"GGXA"'), ["'X'", "A, G, M"]),
    "unknown knob": (GOOD.replace("length = [3, 10]", "size = [3, 10]"), ["'size'", "length"]),
    "impossible range": (GOOD.replace("length = [3, 10]", "length = [10, 3]"), ["length", "allowed range"]),
    "impossible value": (GOOD.replace("lrs = [1e-3]", "lrs = [-1.0]"), ["lrs[0]", "> 0"]),
    "bad device": (
        GOOD.replace("seeds = [0, 1]", 'seeds = [0, 1]\ndevice = "tpu"'),
        ["device", "auto, cpu, cuda"],
    ),
    "depth not a multiple": (GOOD.replace("n_layers = 4", "n_layers = 3"), ["model.n_layers", "GGGA"]),
    "patterns not a list": (GOOD.replace('patterns = ["A", "GGGA"]', "patterns = 5"), ["patterns", "list"]),
    "patterns a string": (GOOD.replace('patterns = ["A", "GGGA"]', 'patterns = "GA"'), ["patterns", "list"]),
    "task name a list": (GOOD.replace('name = "parity"', 'name = ["parity"]'), ["task[0].name", "parity"]),
    "eval_axes nested": (
        GOOD.replace(
            "train = { length = [3, 10] }", 'train = { length = [3, 10] }\neval_axes = [["length"]]'
        ),
        ["task[0].eval_axes", "list of knob names"],
    ),
    "curriculum_knobs of tables": (
        GOOD.replace(
            "train = { length = [3, 10] }", "train = { length = [3, 10] }\ncurriculum_knobs = [{a = 1}]"
        ),
        ["task[0].curriculum_knobs", "list of knob names"],
    ),
    "unknown task parameter": (
        GOOD.replace(
            "train = { length = [3, 10] }", "train = { length = [3, 10] }\nparams = { modulus = 3 }"
        ),
        ["task[0].params.modulus", "allowed parameters", "tagging"],
    ),
    "triton on cpu": (
        GOOD.replace("n_layers = 4", 'n_layers = 4\nbackend = "triton"').replace(
            "seeds = [0, 1]", 'seeds = [0, 1]\ndevice = "cpu"'
        ),
        ["backend = 'triton'", "device = 'cpu'", "auto, torch"],
    ),
    "unknown model key": (
        GOOD.replace("n_layers = 4", "n_layers = 4\nwidth = 3"),
        ["'width'", "pos", "n_heads"],
    ),
    "model key of the grid": (
        GOOD.replace("n_layers = 4", "n_layers = 4\nd_model = 64"),
        ["model.d_model", "sizes"],
    ),
    "model value of the wrong type": (
        GOOD.replace("n_layers = 4", 'n_layers = "4"'),
        ["model.n_layers", "integer"],
    ),
    "bad backend": (
        GOOD.replace("n_layers = 4", 'n_layers = 4\nbackend = "cuda"'),
        ["backend", "auto, triton, torch"],
    ),
    "bad position encoding": (
        GOOD.replace("n_layers = 4", 'n_layers = 4\npos = "alibi"'),
        ["pos", "rope", "none"],
    ),
    "arch model key unknown": (
        GOOD.replace("neg_eigval = false", "neg_eigval = false\nmodel = { heads = 2 }"),
        ["arch[0].model", "'heads'", "n_heads"],
    ),
    "triton head dims past 256": (
        GOOD.replace("n_layers = 4", "n_layers = 4\nn_heads = 1").replace(
            "sizes = [20000]", "sizes = [4_000_000]"
        ),
        ["4000000", "head dims up to 256"],
    ),
}


def _check(text: str) -> None:
    """Every check `hxt sweep plan` runs: parsing, building each model config, sizing each model."""
    check_runs(expand(parse_sweep(text)))


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_configs_name_the_key_and_the_allowed_values(kind):
    text, needles = BAD[kind]
    with pytest.raises(ValueError) as info:
        _check(text)
    for needle in needles:
        assert needle in str(info.value), (kind, str(info.value))


@pytest.mark.parametrize(
    "kind",
    [
        "unknown top-level key",
        "unknown task",
        "unknown pattern letter",
        "unknown knob",
        "impossible value",
        "triton head dims past 256",
    ],
)
def test_cli_exits_2_and_writes_nothing(kind, tmp_path, capsys):
    from sweeps.cli import main

    text, needles = BAD[kind]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out"
    for command in (["sweep", "run", str(path), "--out", str(out)], ["sweep", "plan", str(path)]):
        with pytest.raises(SystemExit) as info:
            main(command)
        assert info.value.code == 2
        assert needles[0] in capsys.readouterr().err
    assert not out.exists()


def test_cli_exit_code_in_a_real_process(tmp_path):
    text, needles = BAD["unknown knob"]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.cli", "sweep", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert needles[0] in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "store", sorted((ROOT / "results").glob("*/hxt.sqlite")), ids=lambda p: p.parent.name
)
def test_committed_study_stores_resume_under_their_configs(store):
    """A change of a task's defaults or of the run config would silently start a study afresh. A
    study may have grown since its last slice, so its config's runs include the stored ones."""
    import sqlite3

    config = parse_sweep((ROOT / "sweeps" / "configs" / f"{store.parent.name}.toml").read_text())
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        stored = {row[0] for row in db.execute("SELECT run_id FROM runs")}
    finally:
        db.close()
    assert stored and stored <= {run.run_id for run in expand(config)}
