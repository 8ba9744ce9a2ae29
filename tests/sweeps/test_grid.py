import json
import subprocess
import sys
from pathlib import Path

from sweeps.config import parse_sweep
from sweeps.grid import RunConfig, canonical_json, check_runs, eval_bins, expand

ROOT = Path(__file__).resolve().parents[2]

TEXT = """
name = "g"
patterns = ["A", "G"]
sizes = [20000, 40000]
lrs = [1e-3, 3e-3]
seeds = [0, 1, 2]
[model]
n_layers = 2
[[task]]
name = "parity"
[[task]]
name = "even_pairs"
train = { length = [3, 12] }
"""


def test_expansion_is_the_full_product_with_distinct_ids():
    runs = expand(parse_sweep(TEXT))
    assert len(runs) == 2 * 2 * 2 * 2 * 3
    assert len({r.run_id for r in runs}) == len(runs)
    keys = {(r.task.name, r.arch, r.target_params, r.lr, r.seed) for r in runs}
    assert len(keys) == len(runs)


def test_run_configs_round_trip_through_json_with_their_ids():
    for run in expand(parse_sweep(TEXT)):
        wire = json.loads(canonical_json({"run_id": run.run_id, **run.to_json()}))
        back = RunConfig.from_json(wire)
        assert back == run and back.run_id == run.run_id == wire["run_id"]
        assert back.model.pattern == run.arch and back.model.n_layers == 2 and back.model.vocab_size > 1


def test_model_table_maps_onto_model_config_and_arch_tables_override_it():
    text = TEXT.replace("[model]\nn_layers = 2", '[model]\nn_layers = 2\npos = "none"\nrope_base = 500.0')
    text += '[[arch]]\nname = "A-rope"\npattern = "A"\nmodel = { pos = "rope", init_std = 0.01 }\n'
    runs = expand(parse_sweep(text))
    by_arch = {r.arch: r.model for r in runs}
    assert by_arch["A"].pos == "none" and by_arch["A"].rope_base == 500.0
    assert by_arch["A-rope"].pos == "rope" and by_arch["A-rope"].init_std == 0.01
    sized = check_runs(runs)
    assert sized["A-rope", 20000].pos == "rope" and sized["A", 40000].d_model > sized["A", 20000].d_model


def test_ids_are_stable_across_processes():
    here = [r.run_id for r in expand(parse_sweep(TEXT))]
    code = (
        "import json, sys; from sweeps.config import parse_sweep; from sweeps.grid import expand; "
        "print(json.dumps([r.run_id for r in expand(parse_sweep(sys.stdin.read()))]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=TEXT,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(proc.stdout) == here


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _leaves(value, (*path, i))
    else:
        yield path, obj


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return f"{value}x"


def test_id_changes_when_any_field_changes():
    """Every leaf of the run config is part of its identity (one that builds when changed)."""
    run = expand(parse_sweep(TEXT))[0].to_json()
    seen = {RunConfig.from_json(run).run_id}
    for path, value in _leaves(run):
        changed = json.loads(json.dumps(run))
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = _changed(value)
        try:
            new = RunConfig.from_json(changed).run_id
        except (ValueError, KeyError, TypeError):
            continue  # e.g. a pattern letter that does not exist
        assert new not in seen, path
        seen.add(new)
    assert len(seen) > 40


def test_eval_bins_cover_both_ranges_with_their_ends():
    assert eval_bins((3, 5), (4, 8), 8) == [3, 4, 5, 6, 7, 8]
    bins = eval_bins((3, 40), (40, 256), 8)
    assert bins[0] == 3 and bins[-1] == 256 and bins == sorted(set(bins)) and 40 in bins


def test_optional_model_fields_stay_out_of_the_id_until_set():
    """Adding an optional ModelConfig field must keep earlier runs' ids; setting it must change them."""
    run = expand(parse_sweep(TEXT))[0]
    assert "mamba_dt_min" not in run.to_json()["model"]
    assert RunConfig.from_json(run.to_json()).run_id == run.run_id
    set_ = expand(parse_sweep(TEXT.replace("n_layers = 2", "n_layers = 2\nmamba_dt_min = 0.3")))[0]
    assert set_.to_json()["model"]["mamba_dt_min"] == 0.3
    assert set_.run_id != run.run_id and RunConfig.from_json(set_.to_json()) == set_
