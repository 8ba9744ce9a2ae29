import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from architectures import LanguageModel
from sweeps.config import parse_sweep
from sweeps.grid import expand
from sweeps.pack import Stack, _features, _fit, _FoldIntoBatch, estimate_gpu_seconds, form_packs
from sweeps.train import bucket_length, pad_batches, run, run_pack
from synthetic_tasks import derive_seed, make_task
from tests.sweeps.cli_helpers import sweep_toml


def _runs(pattern="G", lrs=(1e-3, 3e-3), seeds=(0, 1), steps=45, size=3000, noneg=False, device="cpu",
          stop=0.6, batch=16):  # fmt: skip
    arch = ({"name": f"{pattern}-noneg", "pattern": pattern, "neg_eigval": False},) if noneg else ()
    text = sweep_toml(
        name="pack", sizes=[size], lrs=list(lrs), seeds=list(seeds), device=device, patterns=[pattern],
        arch=arch, model={"n_layers": 1, "n_heads": 2},
        train={"batch_size": batch, "steps": steps, "warmup": 10, "log_every": 10, "early_stop_acc": stop,
               "early_stop_window": 5, "eval_examples_per_bin": 24, "eval_batch_size": 16, "eval_bins": 2},
        task={"name": "parity", "train": {"length": [2, 12]}, "eval": {"length": [2, 20]}},
    )  # fmt: skip
    return expand(parse_sweep(text))


def _same_result(solo: dict, packed: dict, tol: float = 1e-5) -> None:
    assert packed["status"] == solo["status"], (solo["error"], packed["error"])
    for key in ("steps", "solved_step", "n_params", "d_model", "state_size"):
        assert packed.get(key) == solo.get(key), key
    for key in ("final_loss", "train_acc"):
        if solo[key] is None:
            assert packed[key] is None, key
        else:
            assert packed[key] == pytest.approx(solo[key], abs=tol), key
    assert [m["step"] for m in packed["metrics"]] == [m["step"] for m in solo["metrics"]]
    for a, b in zip(solo["metrics"], packed["metrics"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=tol) and b["acc"] == pytest.approx(a["acc"], abs=tol)
        assert b["lr"] == a["lr"]
    assert [(e["knob"], e["value"], e["slice"], e["n"]) for e in packed["evals"]] == [
        (e["knob"], e["value"], e["slice"], e["n"]) for e in solo["evals"]
    ]
    for a, b in zip(solo["evals"], packed["evals"], strict=True):
        for key in ("token_acc", "seq_acc", "loss"):
            assert b[key] == pytest.approx(a[key], abs=tol), key


@pytest.mark.slow
@pytest.mark.parametrize("pattern, noneg", [("A", False), ("G", True), ("M", False)])
def test_packed_runs_give_their_solo_results(pattern, noneg):
    # 2 learning rates x 2 seeds (x 2 model configs for G: with and without negative eigenvalues)
    # in one pack, which early stopping ends at different steps: stopped runs ride along, masked.
    runs = _runs(pattern, noneg=noneg)
    packed = run_pack(runs)
    solo = [run(r) for r in runs]
    stops = [r["steps"] for r in solo]
    assert min(stops) < max(stops) and any(r["solved_step"] for r in solo), stops
    for a, b in zip(solo, packed, strict=True):
        _same_result(a, b)
        assert b["pack_size"] == len(runs) and b["step_mode"] == "eager"


@pytest.mark.slow
def test_a_diverging_run_leaves_its_pack_mates_as_they_are_alone():
    runs = _runs("G", lrs=(1e-3, 1e30), seeds=(0,), steps=30, noneg=True)
    packed = run_pack(runs)
    for config, result in zip(runs, packed, strict=True):
        alone = run(config)
        _same_result(alone, result)
        if config.lr > 1:
            assert result["status"] == "diverged" and not result["evals"]
            assert result["error"] == alone["error"] and "non-finite" in result["error"]
            # recorded at the step it diverged, and no step after it
            assert result["metrics"][-1]["step"] == result["steps"] < 30
        else:
            assert result["status"] == "done"


def _stack(config, seeds, steps=3):
    train = config.train
    lrs = np.full((train.steps, len(seeds)), 1e-2)
    return Stack(config.model_config(), seeds, lrs, train, ramp=0, device="cpu")


@pytest.mark.parametrize("pattern", ["A", "G", "M"])
def test_padding_changes_no_loss_and_no_gradient(pattern):
    config = _runs(pattern, seeds=(0,), lrs=(1e-3,))[0]
    task = make_task("parity")
    batches = [task.sample(seed, 8, length=(2, 12)) for seed in (0, 1)]
    longest = max(b.inputs.shape[1] for b in batches)
    stack = _stack(config, [3, 4])
    tight = stack.loss_and_grad(pad_batches(batches, longest))
    padded = stack.loss_and_grad(pad_batches(batches, bucket_length(longest) + 16))
    for a, b in zip(tight, padded, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # and row k is the plain model of its seed, its loss the mean over supervised positions
    for k, (seed, batch) in enumerate(zip((3, 4), batches, strict=True)):
        generator = torch.Generator().manual_seed(derive_seed(seed, "init"))
        model = LanguageModel(config.model_config(), generator=generator)
        mask = torch.from_numpy(batch.loss_mask)
        logits = model(torch.from_numpy(batch.inputs))[mask]
        expected = F.cross_entropy(logits, torch.from_numpy(batch.targets)[mask])
        assert padded[0][k].item() == pytest.approx(expected.item(), rel=1e-6)


def test_vmapped_convs_with_a_bias_fold_into_one_grouped_conv_under_bf16_autocast():
    # torch's own batching rule leaves the bias in fp32 there, and conv1d refuses it
    n, batch, channels, length, width = 3, 2, 6, 9, 4
    x = torch.randn(n, batch, channels, length, requires_grad=True)
    weight = torch.randn(n, channels, 1, width, requires_grad=True)
    bias = torch.randn(n, channels, requires_grad=True)
    conv = lambda x, w, b: F.conv1d(x, w, b, 1, width - 1, 1, channels)  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16), _FoldIntoBatch():
        folded = torch.vmap(conv)(x.bfloat16(), weight, bias)
    each = torch.stack([conv(x[i], weight[i], bias[i]) for i in range(n)])
    assert folded.dtype == torch.bfloat16 and torch.allclose(folded.float(), each, rtol=3e-2, atol=3e-2)
    with _FoldIntoBatch():
        folded = torch.vmap(conv)(x, weight, bias)
    assert torch.allclose(folded, each, atol=1e-6)
    grads = torch.autograd.grad(folded.square().sum(), (x, weight, bias))
    for a, b in zip(grads, torch.autograd.grad(each.square().sum(), (x, weight, bias)), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_bucket_lengths_cover_every_length_with_little_padding():
    buckets = [bucket_length(t) for t in range(1, 2049)]
    assert all(b >= t for t, b in zip(range(1, 2049), buckets))
    assert all(b - t < 16 or (b - t) / b <= 0.25 for t, b in zip(range(1, 2049), buckets))
    assert len(set(buckets[:64])) == 4 and len(set(buckets)) < 40
    # the training range's longest sequence is a bucket of its own, below it the buckets hold
    assert [bucket_length(t, longest=41) for t in (10, 33, 41, 42)] == [16, 41, 41, 48]


def test_a_stopped_row_stays_frozen_on_a_stand_in_batch():
    config = _runs("A", seeds=(0,), lrs=(1e-3,))[0]
    task = make_task("parity")
    stack = _stack(config, [0, 1])
    stack.active[1] = False  # as after its early stop
    before = stack.flat.detach().clone()
    real = task.sample(0, 8, length=(2, 12))
    empty = type(real)(real.inputs[:, :1] * 0, real.targets[:, :1] * 0, real.loss_mask[:, :1] & False)
    stack.step(pad_batches([real, empty], bucket_length(real.inputs.shape[1])))
    assert (stack.flat[0] != before[0]).any()
    assert torch.equal(stack.flat[1], before[1]) and not stack.m[1].any() and not stack.v[1].any()
    assert stack.diverged_at.tolist() == [-1, -1] and stack.active.tolist() == [True, False]


def test_form_packs_groups_runs_of_one_shape():
    runs = _runs("G", noneg=True)  # G and G-noneg: the same shapes
    assert [len(p) for p in form_packs(runs, 1)] == [1] * len(runs)
    assert [p[0] for p in form_packs(runs, 1)] == runs
    (pack,) = form_packs(runs, 8)
    assert sorted(r.run_id for r in pack) == sorted(r.run_id for r in runs)
    arches = [r.arch for r in pack]
    assert arches == sorted(arches, key=arches.index)  # each model's runs side by side
    sizes = [len(p) for p in form_packs(runs, 3)]
    assert sum(sizes) == len(runs) and max(sizes) <= 3 and max(sizes) - min(sizes) <= 1
    mixed = _runs("A", seeds=(0,)) + _runs("G", seeds=(0,)) + _runs("G", seeds=(0,), size=6000)
    packs = form_packs(mixed, 16)
    assert len(packs) == 3
    for pack in packs:
        assert len({(r.arch, r.target_params) for r in pack}) == 1
    with pytest.raises(ValueError, match="--pack"):
        form_packs(runs, 0)


def test_run_pack_refuses_runs_of_different_tasks_or_training():
    a = _runs("A", seeds=(0,), lrs=(1e-3,))[0]
    b = _runs("A", seeds=(0,), lrs=(1e-3,), steps=30)[0]
    results = run_pack([a, b])
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert "share the task" in results[0]["error"]
    assert math.isfinite(results[0]["wall_seconds"])


def test_the_step_time_fit_recovers_known_coefficients():
    truth = np.array([2e-4, 3e-10, 4e-13])  # latency a layer, elementwise, matmul
    rows = []
    for layers, d, params in [(2, 64, 100_000), (4, 128, 800_000), (4, 256, 3_000_000)]:
        for tokens in (1e4, 1e5, 1e6):
            seconds = float(_features(layers, d, params, tokens) @ truth)
            rows.append({"n_layers": layers, "d_model": d, "n_params": params, "tokens": tokens,
                         "step_seconds": seconds})  # fmt: skip
    assert np.allclose(_fit(rows), truth, rtol=1e-6)


def _table(latency: float, per_token_param: float) -> dict:
    coef = np.array([latency, 0.0, per_token_param])
    rows = [
        {"pattern": p, "mode": mode, "n_layers": layers, "d_model": d, "n_params": params, "tokens": tokens,
         "step_seconds": float(_features(layers, d, params, tokens) @ (coef * [scale, 1, 1]))}
        for p in "AGM"
        for mode, scale in (("graph", 1.0), ("eager", 5.0))
        for layers, d, params in [(1, 16, 3000), (2, 64, 100_000)]
        for tokens in (1e3, 1e5)
    ]  # fmt: skip
    return {"device": "a test card", "startup_seconds": 10.0, "rows": rows}


def test_the_gpu_estimate_follows_the_table_and_packing_lowers_it():
    runs = _runs("G", noneg=True, steps=100)  # 8 runs of one shape
    table = _table(latency=1e-3, per_token_param=1e-12)
    alone, packed = estimate_gpu_seconds(runs, 1, table), estimate_gpu_seconds(runs, 8, table)
    assert (alone.packs, packed.packs) == (8, 1)
    assert packed.seconds < alone.seconds and packed.overhead_seconds < alone.overhead_seconds
    # latency-bound here: one pack of two stacks pays two latencies a step, eight packs pay eight
    assert alone.train_seconds / packed.train_seconds == pytest.approx(4, rel=0.05)
    assert alone.device == "a test card" and "GPU-hours" in str(alone)
    assert packed.longest_pack_seconds == pytest.approx(packed.seconds)  # one pack
    assert alone.longest_pack_seconds == pytest.approx(alone.seconds / 8, rel=0.05)  # eight alike
    slower = estimate_gpu_seconds(runs, 8, _table(latency=2e-3, per_token_param=1e-12))
    assert slower.train_seconds == pytest.approx(2 * packed.train_seconds, rel=0.05)
    with pytest.raises(ValueError, match="no rows for mixer 'G'"):
        estimate_gpu_seconds(runs, 8, {**table, "rows": [r for r in table["rows"] if r["pattern"] != "G"]})


@pytest.mark.slow
def test_the_pack_executor_returns_every_run_through_the_driver(tmp_path):
    from sweeps.pack import PackExecutor
    from sweeps.progress import make_progress
    from sweeps.runner import drive
    from sweeps.store import Store

    runs = _runs("A", steps=20)
    jobs = {r.run_id: {"run_id": r.run_id, **r.to_json()} for r in runs}
    meta = {"name": "pack", "config_toml": "", "created_at": "now", "git_commit": "", "hxt_version": "0",
            "shared": "{}"}  # fmt: skip
    summary = drive(tmp_path, meta, runs, jobs, 1, lambda n: PackExecutor(1, cap=3), make_progress("none"))
    assert summary.counts == {"done": len(runs)}
    with Store.read_only(tmp_path) as store:
        stored = {row["run_id"]: row for row in store.runs()}
    for config, result in zip(runs, run_pack(runs), strict=True):
        assert stored[config.run_id]["final_loss"] == pytest.approx(result["final_loss"], abs=1e-5)


# On the GPU: bf16 autocast and the Triton kernels, so results agree to bf16 noise, not bit for bit
# (batches of 64, so that a few near-tie predictions flipping stay inside the tolerance).
BF16 = 3e-2


@pytest.mark.gpu
@pytest.mark.parametrize("pattern", ["A", "G", "M"])
def test_captured_steps_train_as_eager_steps_do(pattern):
    (config,) = _runs(
        pattern, seeds=(0,), lrs=(3e-3,), steps=80, size=20_000, device="cuda", stop=2.0, batch=64
    )
    graph = run(config)
    eager = run(replace(config, train=replace(config.train, capture=False)))
    assert graph["step_mode"] == "graph", graph.get("capture_error") or graph["error"]
    assert eager["step_mode"] == "eager"
    _same_result(eager, graph, tol=BF16)


@pytest.mark.gpu
def test_packed_runs_on_the_gpu_give_their_solo_results():
    runs = _runs("G", steps=80, size=20_000, noneg=True, device="cuda", stop=2.0, batch=64)
    packed = run_pack(runs)
    assert {r["step_mode"] for r in packed} == {"graph"}, packed[0].get("capture_error") or packed[0]["error"]
    for config, result in zip(runs, packed, strict=True):
        _same_result(run(config), result, tol=BF16)


@pytest.mark.gpu
@pytest.mark.parametrize("pattern", ["A", "G", "M"])
def test_a_diverging_run_in_a_gpu_pack_leaves_its_pack_mates_as_they_are_alone(pattern):
    runs = _runs(
        pattern, lrs=(1e-3, 1e30), seeds=(0, 1), steps=60, size=20_000, device="cuda", stop=2.0, batch=64
    )
    packed = run_pack(runs)
    for config, result in zip(runs, packed, strict=True):
        if config.lr > 1:
            assert result["status"] == "diverged" and result["metrics"][-1]["step"] == result["steps"] < 60
        else:
            _same_result(run(config), result, tol=BF16)


def test_a_pack_that_would_not_finish_by_the_deadline_is_handed_back_unstarted():
    import time

    from sweeps.pack import PackExecutor

    runs = _runs("A", steps=3000)  # 4 runs of one shape: one pack
    estimate = estimate_gpu_seconds(runs, 4).seconds
    assert estimate > 1.0  # at least the table's worker start-up
    late = PackExecutor(1, cap=4, deadline=time.monotonic() + 0.5 * estimate)
    early = PackExecutor(1, cap=4, deadline=time.monotonic() + 1e6)
    try:
        for executor in (late, early):
            for r in runs:
                executor.submit({"run_id": r.run_id, **r.to_json()})
        handed_back = late.wait(timeout=0.1)
        assert sorted(rid for rid, _ in handed_back) == sorted(r.run_id for r in runs)
        assert all(result["status"] == "pending" for _, result in handed_back)
        assert not late.packs and not late.queue  # nothing went to a worker
        early._dispatch()
        assert list(early.packs.values()) == [[r.run_id for r in runs]]  # the pack fits: it starts
    finally:
        late.close()
        early.close()
