import json
import subprocess
import sys
from pathlib import Path

from sweeps.config import parse_sweep
from sweeps.grid import canonical_json, eval_bins, expand, run_id, strip_id

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
    assert len({r["run_id"] for r in runs}) == len(runs)
    keys = {(r["task"], r["arch"], r["target_params"], r["lr"], r["seed"]) for r in runs}
    assert len(keys) == len(runs)
    assert all(r["run_id"] == run_id(strip_id(r)) for r in runs)
    assert all(json.loads(canonical_json(strip_id(r))) == strip_id(r) for r in runs)


def test_ids_are_stable_across_processes():
    here = [r["run_id"] for r in expand(parse_sweep(TEXT))]
    code = (
        "import json, sys; from sweeps.config import parse_sweep; from sweeps.grid import expand; "
        "print(json.dumps([r['run_id'] for r in expand(parse_sweep(sys.stdin.read()))]))"
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
    run = strip_id(expand(parse_sweep(TEXT))[0])
    base = run_id(run)
    seen = {base}
    for path, value in _leaves(run):
        changed = json.loads(json.dumps(run))
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = _changed(value)
        new = run_id(changed)
        assert new not in seen, path
        seen.add(new)
    assert len(seen) > 30


def test_eval_bins_cover_both_ranges_with_their_ends():
    assert eval_bins((3, 5), (4, 8), 8) == [3, 4, 5, 6, 7, 8]
    bins = eval_bins((3, 40), (40, 256), 8)
    assert bins[0] == 3 and bins[-1] == 256 and bins == sorted(set(bins)) and 40 in bins
