"""Runs: build the task and the models, train, evaluate; JSON dicts in, JSON dicts out.

`run(config)` trains one run; `run_pack(configs)` trains several that share a task and a training
spec in one process, as one stacked model (`sweeps.pack`), and gives every run the result it would
get alone (to float rounding). Neither raises: an exception becomes ``status="failed"`` with the
traceback as its error, and a non-finite loss or gradient norm becomes ``status="diverged"`` (with
the curve up to that step and no evaluation). Everything a run does follows from its config, so
on CPU the same config gives the same result in any process (one thread, deterministic algorithms).

Training data: a fresh batch every step, drawn with seed ``derive_seed(derive_seed(seed, "train"),
f"step:{i}")``; evaluation draws from ``derive_seed(seed, "eval")`` instead, so no example is
shared between the two except by chance. The model's initial weights come from
``derive_seed(seed, "init")``. Batches are padded on the right to a length bucket
(`bucket_length`) with an unsupervised tail, so that a few shapes serve every step; the models are
causal, so padding changes no supervised position.

Curriculum (``train.curriculum = "linear"``): for the first ``curriculum_fraction`` of the steps,
each curriculum knob (by default the task's evaluation axes) is drawn uniformly from
``[lo, lo + (hi - lo) * progress]`` with ``progress`` rising linearly from 0 to 1; afterwards from
the whole training range ``[lo, hi]``. Other knobs are always drawn from their training range.
Early stopping only counts steps after the ramp, so a run cannot stop having seen only easy
examples: it stops once the mean per-token training accuracy over the last ``early_stop_window``
steps reaches ``early_stop_acc``.

Schedule: linear warmup from 0 to `lr` over `warmup` steps, then cosine decay to
``lr * min_lr_ratio`` at the last step. AdamW (betas 0.9, 0.95; weight decay on matrices only),
gradients clipped to `grad_clip` in global norm (per run), bf16 autocast on CUDA, fp32 on CPU.

Steps on CUDA (``train.capture``, on by default): each training step (forward, backward, clip,
AdamW, divergence and early-stop tests) runs on the device with no host sync and is captured as a
CUDA graph per length bucket, then replayed; the host reads the curve back every ``log_every``
steps. Where capture fails the steps run eagerly; ``result["step_mode"]`` says which ran
("graph" or "eager"; always "eager" on CPU) and ``result["capture_error"]`` why capture failed.
"""

from __future__ import annotations

import math
import time
import traceback
from collections import deque

import numpy as np
import torch

from sweeps.grid import RunConfig, eval_bins
from sweeps.pack import Stack, sized_model
from synthetic_tasks import Batch, derive_seed, make_task

__all__ = [
    "run",
    "run_pack",
    "resolve_device",
    "lr_at",
    "curriculum_ranges",
    "bucket_length",
    "longest_length",
    "pad_batches",
]


def resolve_device(policy: str, assigned: str | None = None) -> str:
    """The torch device for a run: `assigned` (from the backend) unless the policy says cpu."""
    if policy == "cpu":
        return "cpu"
    if assigned is not None:
        return assigned
    if torch.cuda.is_available():
        return "cuda"
    if policy == "cuda":
        raise RuntimeError("device = 'cuda' but no CUDA device is visible to this worker")
    return "cpu"


def lr_at(step: int, lr: float, steps: int, warmup: int, min_lr_ratio: float) -> float:
    """Learning rate for optimiser step `step` (0-based): linear warmup, then cosine decay."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - 1 - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)


def curriculum_ranges(step: int, config: RunConfig) -> tuple[dict[str, tuple[int, int]], bool]:
    """Difficulty ranges for training step `step`, and whether the ramp is over."""
    ranges = dict(config.task.train_range)
    ramp = _ramp(config)
    if step >= ramp:
        return ranges, True
    progress = (step + 1) / ramp
    for knob in config.task.curriculum_knobs:
        lo, hi = ranges[knob]
        ranges[knob] = (lo, lo + int(round((hi - lo) * progress)))
    return ranges, False


def _ramp(config: RunConfig) -> int:
    train = config.train
    return int(train.curriculum_fraction * train.steps) if train.curriculum == "linear" else 0


def bucket_length(length: int, longest: int | None = None) -> int:
    """The padded length of a batch whose longest sequence has `length` tokens: a multiple of 16
    up to 64, then four buckets an octave (80, 96, 112, 128, 160, ...), so padding stays under a
    quarter of the tokens past 64 and a run sees few distinct shapes. `longest` (the longest
    sequence the training range gives, see `longest_length`) is a bucket of its own: batches at
    full difficulty, most of them once the curriculum is over, are not padded at all."""
    if longest is not None and length <= longest < _bucket(length):
        return longest
    return _bucket(length)


def _bucket(length: int) -> int:
    if length <= 64:
        return max(16, -(-length // 16) * 16)
    step = 2 ** (int(math.log2(length - 1)) - 2)
    return -(-length // step) * step


def longest_length(config: RunConfig, batch_size: int) -> int:
    """The longest sequence in a few batches drawn from the whole training range (seeds apart from
    every run's data): the length most batches have at full difficulty."""
    task = make_task(config.task.name, **config.task.params_dict)
    ranges = dict(config.task.train_range)
    return max(task.sample(derive_seed(i, "longest"), batch_size, **ranges).inputs.shape[1] for i in range(4))


def pad_batches(batches: list, length: int, pin: bool = False) -> torch.Tensor:
    """Task batches (one per run, each [B, T_k]) as one int32 tensor [3, K, B, length]: inputs,
    targets and loss mask, zero past each batch's own length (unsupervised); pinned if `pin`."""
    rows = max(b.inputs.shape[0] for b in batches)
    out = torch.zeros((3, len(batches), rows, length), dtype=torch.int32, pin_memory=pin)
    view = out.numpy()
    for k, batch in enumerate(batches):
        size, t = batch.inputs.shape
        view[0, k, :size, :t] = batch.inputs
        view[1, k, :size, :t] = batch.targets
        view[2, k, :size, :t] = batch.loss_mask
    return out


def run(config: RunConfig | dict, device: str | None = None, threads: int = 1) -> dict:
    """Train and evaluate one run (a RunConfig, or its JSON as a worker receives it). Never
    raises; see the module docstring for the result."""
    return run_pack([config], device, threads)[0]


def run_pack(configs: list[RunConfig | dict], device: str | None = None, threads: int = 1) -> list[dict]:
    """Train and evaluate runs that share a task, a training spec and a device policy in this one
    process (`sweeps.pack.form_packs` forms such lists); one result per run, as `run` gives it.
    Never raises: where the pack as a whole fails, every run in it is failed with the traceback."""
    start = time.time()
    results: list[dict] = [{"status": "failed", "error": None, "metrics": [], "evals": []} for _ in configs]
    try:
        configs = [RunConfig.from_json(c) if isinstance(c, dict) else c for c in configs]
        first = configs[0]
        for other in configs[1:]:
            if (other.task, other.train, other.device) != (first.task, first.train, first.device):
                raise ValueError("a pack's runs must share the task, the train spec and the device policy")
        device = resolve_device(first.device, device)
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
        # One thread per worker: deterministic on CPU, and no oversubscription when many runs share
        # a machine (GPU workers only sample data and launch kernels on the CPU).
        torch.set_num_threads(threads)
        for result in results:
            result["device"] = name
        _train_pack(configs, device, results)
    except Exception:
        error = traceback.format_exc()[-6000:]
        for result in results:
            result.update(status="failed", error=error, evals=[])
    for result in results:
        result["wall_seconds"] = round(time.time() - start, 3)
        result["pack_size"] = len(configs)
    return results


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


class _Curve:
    """The host's copy of one run's training curve, rebuilt from the device records."""

    def __init__(self, result: dict, window: int):
        self.result = result
        self.open = True
        self.loss_window: deque = deque(maxlen=window)
        self.acc_window: deque = deque(maxlen=window)
        self.last_acc = 0.0
        self.sums = [0.0, 0.0, 0]

    def step(self, step: int, loss: float, acc: float, lr: float, ramped: bool, log: bool) -> None:
        self.sums = [self.sums[0] + loss, self.sums[1] + acc, self.sums[2] + 1]
        self.loss_window.append(loss)
        self.last_acc = acc
        if ramped:
            self.acc_window.append(acc)
        if log:
            n = self.sums[2]
            self.result["metrics"].append(
                {"step": step + 1, "loss": self.sums[0] / n, "acc": self.sums[1] / n, "lr": lr}
            )
            self.sums = [0.0, 0.0, 0]

    def diverged(self, step: int, loss: float, acc: float, lr: float, state_size: int) -> None:
        what = "loss" if not math.isfinite(loss) else "gradient norm"
        self.result.update(
            status="diverged",
            error=f"non-finite {what} at step {step}",
            steps=step,
            final_loss=_finite_or_none(loss),
            train_acc=_finite_or_none(acc),
            state_size=state_size,
        )
        self.result["metrics"].append(
            {
                "step": step,
                "loss": _finite_or_none(loss) or 0.0,
                "acc": acc if math.isfinite(acc) else 0.0,
                "lr": lr,
            }
        )
        self.open = False

    def finish(self, steps: int, solved: bool) -> None:
        recent = list(self.acc_window) or [self.last_acc]
        self.result.update(
            steps=steps,
            final_loss=sum(self.loss_window) / len(self.loss_window),
            train_acc=sum(recent) / len(recent),
            solved_step=steps if solved else None,
        )
        self.open = False


def _train_pack(configs: list[RunConfig], device: str, results: list[dict]) -> None:
    cuda = device.startswith("cuda")
    if not cuda:
        torch.use_deterministic_algorithms(True)
    first = configs[0]
    train = first.train
    task = make_task(first.task.name, **first.task.params_dict)
    ramp = _ramp(first)
    capture = cuda and train.capture
    pool = torch.cuda.graph_pool_handle() if capture else None
    members: dict = {}
    for i, config in enumerate(configs):
        members.setdefault(sized_model(config), []).append(i)
    groups = [
        _Group(model_cfg, idx, configs, results, ramp, device, capture, pool)
        for model_cfg, idx in members.items()
    ]
    seeds = [derive_seed(c.seed, "train") for c in configs]
    longest = longest_length(first, train.batch_size)
    live = list(groups)
    for step in range(train.steps):
        ranges, _ = curriculum_ranges(step, first)
        for group in live:
            batches = [
                task.sample(derive_seed(seeds[i], f"step:{step}"), train.batch_size, **ranges)
                if curve.open
                else None
                for i, curve in zip(group.members, group.curves, strict=True)
            ]
            group.lengths[step] = [0 if b is None else b.inputs.shape[1] for b in batches]
            stand_in = _stand_in(next(b for b in batches if b is not None))
            length = bucket_length(int(group.lengths[step].max()), longest)
            padded = pad_batches([stand_in if b is None else b for b in batches], length, pin=cuda)
            group.stack.step(padded)
        if (step + 1) % train.log_every == 0 or step + 1 == train.steps:
            for group in live:
                group.read(step + 1, train, ramp)
            live = [g for g in live if any(c.open for c in g.curves)]
            if not live:
                break
    for group in groups:
        for curve in group.curves:
            if curve.open:
                curve.finish(train.steps, solved=False)
        for i in group.members:
            results[i]["step_mode"] = group.stack.mode
            if group.stack.capture_error:
                results[i]["capture_error"] = group.stack.capture_error
        rows = [k for k, i in enumerate(group.members) if results[i]["status"] != "diverged"]
        if not rows:
            continue
        evals, max_lens = evaluate(group.stack, task, [configs[group.members[k]] for k in rows], rows, device)
        for k, run_evals, max_len in zip(rows, evals, max_lens, strict=True):
            result = results[group.members[k]]
            result["state_size"] = group.stack.base.state_size(max_len)
            if not all(math.isfinite(row["loss"]) for row in run_evals):
                result.update(status="diverged", error="non-finite loss in evaluation")
                continue
            result.update(status="done", error=None, evals=run_evals)


class _Group:
    """The runs of a pack with one ModelConfig: their Stack and the host side of their curves."""

    def __init__(self, model_cfg, members, configs, results, ramp, device, capture, pool):
        train = configs[0].train
        self.members = members  # indices into the pack
        self.lrs = np.array(
            [[lr_at(s, configs[i].lr, train.steps, train.warmup, train.min_lr_ratio) for i in members]
             for s in range(train.steps)]
        )  # fmt: skip
        seeds = [configs[i].seed for i in members]
        self.stack = Stack(model_cfg, seeds, self.lrs, train, ramp, device, capture, pool)
        self.curves = [_Curve(results[i], train.early_stop_window) for i in members]
        self.lengths = np.zeros((train.steps, len(members)), dtype=np.int64)  # each run's batch length
        self.read_to = 0
        for i in members:
            results[i].update(self.stack.describe())

    def read(self, upto: int, train, ramp: int) -> None:
        """Bring the host curves up to step count `upto` (one device sync)."""
        lo = self.read_to
        records, diverged_at, solved_at = self.stack.read(lo, upto)
        self.read_to = upto
        for k, curve in enumerate(self.curves):
            for step in range(lo, upto):
                if not curve.open:
                    break
                loss, acc = (float(x) for x in records[step - lo, :, k])
                lr = float(self.lrs[step, k])
                if diverged_at[k] == step:
                    curve.diverged(
                        step, loss, acc, lr, self.stack.base.state_size(int(self.lengths[step, k]))
                    )
                    break
                solved = solved_at[k] == step + 1
                log = (step + 1) % train.log_every == 0 or solved or step + 1 == train.steps
                curve.step(step, loss, acc, lr, step >= ramp, log)
                if solved:
                    curve.finish(step + 1, solved=True)


def _stand_in(like: Batch) -> Batch:
    """The batch of a run that has stopped: one token a row, nothing supervised (no work on the
    host; its row of the stack is masked off on the device)."""
    zeros = np.zeros((like.inputs.shape[0], 1), dtype=np.int64)
    return Batch(zeros, zeros, zeros.astype(bool))


@torch.no_grad()
def evaluate(stack: Stack, task, configs: list[RunConfig], rows_of: list[int], device: str):
    """Accuracy and loss of stack rows `rows_of` (runs `configs`) on every bin of the evaluation
    range, along each evaluation axis; each run draws its own examples.

    Along one axis the other knobs are drawn from their training ranges. Rows follow the `evals`
    table; a "moved" slice is added where the task records `moved` per example. Returns, per run,
    its rows and the longest sequence it evaluated (for the state size).
    """
    first = configs[0]
    train = first.train
    chance = float(task.chance_accuracy)
    train_range = dict(first.task.train_range)
    eval_range = dict(first.task.eval_range)
    seeds = [derive_seed(c.seed, "eval") for c in configs]
    index = torch.tensor(rows_of, device=device)
    stack.base.eval()
    rows: list[list[dict]] = [[] for _ in configs]
    max_lens = [0] * len(configs)
    for knob in first.task.eval_axes:
        for value in eval_bins(train_range[knob], eval_range[knob], train.eval_bins):
            ranges = {**train_range, knob: value}
            totals: list[dict[str, np.ndarray]] = [{} for _ in configs]
            done, chunk = 0, 0
            while done < train.eval_examples_per_bin:
                size = min(train.eval_batch_size, train.eval_examples_per_bin - done)
                batches = [
                    task.sample(derive_seed(s, f"{knob}={value}:{chunk}"), size, **ranges) for s in seeds
                ]
                lengths = [b.inputs.shape[1] for b in batches]
                max_lens = [max(m, t) for m, t in zip(max_lens, lengths, strict=True)]
                padded = pad_batches(batches, bucket_length(max(lengths))).to(device)
                stats = stack.eval_stats(padded, index)  # [n, 3, size]
                for k, batch in enumerate(batches):
                    _accumulate(totals[k], stats[k], batch)
                done += size
                chunk += 1
            for k in range(len(configs)):
                rows[k] += _rows(totals[k], knob, value, train_range, chance)
    return rows, max_lens


def _accumulate(totals: dict, per_example: np.ndarray, batch) -> None:
    """Add one batch's per-example counts [3, size] (tokens, correct, summed loss) per slice."""
    slices = {"all": np.ones(per_example.shape[1], dtype=bool)}
    if "moved" in batch.meta:
        slices["moved"] = batch.meta["moved"].astype(bool)
    for name, keep in slices.items():
        stats = np.array(
            [
                keep.sum(),
                per_example[0, keep].sum(),
                per_example[1, keep].sum(),
                (per_example[1, keep] == per_example[0, keep]).sum(),
                per_example[2, keep].sum(),
            ],
            dtype=np.float64,
        )
        totals[name] = totals.get(name, 0) + stats


def _rows(totals: dict, knob: str, value: int, train_range: dict, chance: float) -> list[dict]:
    rows = []
    for name, (n, n_tokens, n_correct, n_seq, loss_sum) in totals.items():
        if n == 0 or n_tokens == 0:
            continue
        token_acc = n_correct / n_tokens
        rows.append(
            {
                "knob": knob,
                "value": int(value),
                "in_range": train_range[knob][0] <= value <= train_range[knob][1],
                "slice": name,
                "n": int(n),
                "n_tokens": int(n_tokens),
                "token_acc": float(token_acc),
                "seq_acc": float(n_seq / n),
                "scaled_acc": float((token_acc - chance) / (1 - chance)),
                "chance": chance,
                "loss": float(loss_sum / n_tokens),
            }
        )
    return rows
