"""One run: build the task and the model, train, evaluate; a JSON dict in, a JSON dict out.

`run(config)` never raises: an exception becomes ``status="failed"`` with the traceback as its
error, and a non-finite loss or gradient norm becomes ``status="diverged"`` (with the curve up to
that step and no evaluation). Everything a run does follows from its config, so on CPU the same
config gives the same result in any process (one thread, deterministic algorithms).

Training data: a fresh batch every step, drawn with seed ``derive_seed(derive_seed(seed, "train"),
f"step:{i}")``; evaluation draws from ``derive_seed(seed, "eval")`` instead, so no example is
shared between the two except by chance. The model's initial weights come from
``derive_seed(seed, "init")``.

Curriculum (``train.curriculum = "linear"``): for the first ``curriculum_fraction`` of the steps,
each curriculum knob (by default the task's evaluation axes) is drawn uniformly from
``[lo, lo + (hi - lo) * progress]`` with ``progress`` rising linearly from 0 to 1; afterwards from
the whole training range ``[lo, hi]``. Other knobs are always drawn from their training range.
Early stopping only counts steps after the ramp, so a run cannot stop having seen only easy
examples: it stops once the mean per-token training accuracy over the last ``early_stop_window``
steps reaches ``early_stop_acc``.

Schedule: linear warmup from 0 to `lr` over `warmup` steps, then cosine decay to
``lr * min_lr_ratio`` at the last step. AdamW (betas 0.9, 0.95; weight decay on matrices only),
gradients clipped to `grad_clip` in global norm, bf16 autocast on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import math
import time
import traceback
from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from architectures import LanguageModel
from sweeps.grid import RunConfig, eval_bins
from synthetic_tasks import derive_seed, make_task

__all__ = ["run", "resolve_device", "lr_at", "curriculum_ranges"]


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
    train = config.train
    ranges = dict(config.task.train_range)
    ramp = int(train.curriculum_fraction * train.steps) if train.curriculum == "linear" else 0
    if step >= ramp:
        return ranges, True
    progress = (step + 1) / ramp
    for knob in config.task.curriculum_knobs:
        lo, hi = ranges[knob]
        ranges[knob] = (lo, lo + int(round((hi - lo) * progress)))
    return ranges, False


def run(config: RunConfig | dict, device: str | None = None, threads: int = 1) -> dict:
    """Train and evaluate one run (a RunConfig, or its JSON as a worker receives it). Never
    raises; see the module docstring for the result."""
    start = time.time()
    result: dict = {"status": "failed", "error": None, "metrics": [], "evals": []}
    try:
        if isinstance(config, dict):
            config = RunConfig.from_json(config)
        device = resolve_device(config.device, device)
        result["device"] = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
        # One thread per worker: deterministic on CPU, and no oversubscription when many runs share
        # a machine (GPU workers only sample data and launch kernels on the CPU).
        torch.set_num_threads(threads)
        _train_and_eval(config, device, result)
    except Exception:
        result["status"] = "failed"
        result["error"] = traceback.format_exc()[-6000:]
        result["evals"] = []
    result["wall_seconds"] = round(time.time() - start, 3)
    return result


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _build(config: RunConfig, device: str):
    model_cfg = config.model_config()
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "init"))
    return LanguageModel(model_cfg, generator=generator).to(device), model_cfg


def _optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def _tensors(batch, device: str):
    inputs = torch.from_numpy(batch.inputs).to(device, non_blocking=True)  # [B, T]
    targets = torch.from_numpy(batch.targets).to(device, non_blocking=True)  # [B, T]
    mask = torch.from_numpy(batch.loss_mask).to(device, non_blocking=True)  # [B, T]
    return inputs, targets, mask


def _train_and_eval(config: RunConfig, device: str, result: dict) -> None:
    cuda = device.startswith("cuda")
    if not cuda:
        torch.use_deterministic_algorithms(True)
    task = make_task(config.task.name, **config.task.params_dict)
    model, model_cfg = _build(config, device)
    result.update(
        n_params=model.num_params(include_embedding=False),
        n_params_total=model.num_params(include_embedding=True),
        d_model=model_cfg.d_model,
        n_layers=model_cfg.n_layers,
    )
    train = config.train
    optimizer = _optimizer(model, config)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    train_seed = derive_seed(config.seed, "train")
    window = deque(maxlen=train.early_stop_window)
    loss_window = deque(maxlen=train.early_stop_window)
    interval_loss, interval_acc, interval_n = 0.0, 0.0, 0
    step = 0
    model.train()
    for step in range(train.steps):
        ranges, ramped = curriculum_ranges(step, config)
        batch = task.sample(derive_seed(train_seed, f"step:{step}"), train.batch_size, **ranges)
        inputs, targets, mask = _tensors(batch, device)
        lr = lr_at(step, config.lr, train.steps, train.warmup, train.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            logits = model(inputs)  # [B, T, V]
        picked = logits[mask].float()  # [N, V]
        gold = targets[mask]  # [N]
        loss = F.cross_entropy(picked, gold)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        acc = (picked.argmax(-1) == gold).float().mean()
        loss_value, acc_value, norm_value = torch.stack([loss.detach(), acc, grad_norm]).tolist()
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            result.update(
                status="diverged",
                error=f"non-finite {what} at step {step}",
                steps=step,
                final_loss=_finite_or_none(loss_value),
                train_acc=_finite_or_none(acc_value),
            )
            result["metrics"].append(
                {
                    "step": step,
                    "loss": _finite_or_none(loss_value) or 0.0,
                    "acc": acc_value if math.isfinite(acc_value) else 0.0,
                    "lr": lr,
                }
            )
            result["state_size"] = model.state_size(batch.inputs.shape[1])
            return
        optimizer.step()
        interval_loss += loss_value
        interval_acc += acc_value
        interval_n += 1
        loss_window.append(loss_value)
        if ramped:
            window.append(acc_value)
        solved = len(window) == window.maxlen and sum(window) / len(window) >= train.early_stop_acc
        if (step + 1) % train.log_every == 0 or solved or step + 1 == train.steps:
            result["metrics"].append(
                {
                    "step": step + 1,
                    "loss": interval_loss / interval_n,
                    "acc": interval_acc / interval_n,
                    "lr": lr,
                }
            )
            interval_loss, interval_acc, interval_n = 0.0, 0.0, 0
        if solved:
            result["solved_step"] = step + 1
            break
    recent = list(window) or [acc_value]
    result.update(
        steps=step + 1,
        final_loss=sum(loss_window) / len(loss_window),
        train_acc=sum(recent) / len(recent),
    )
    result.setdefault("solved_step", None)
    evals, max_len = evaluate(model, task, config, device)
    result["state_size"] = model.state_size(max_len)
    if not all(math.isfinite(row["loss"]) for row in evals):
        result.update(status="diverged", error="non-finite loss in evaluation")
        return
    result["evals"] = evals
    result["status"] = "done"


@torch.no_grad()
def evaluate(model, task, config: RunConfig, device: str) -> tuple[list[dict], int]:
    """Accuracy and loss on every bin of the evaluation range, along each evaluation axis.

    Along one axis the other knobs are drawn from their training ranges. Rows follow the `evals`
    table; a "moved" slice is added where the task records `moved` per example. Also returns the
    longest sequence evaluated (for the state size).
    """
    train = config.train
    cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)
    eval_seed = derive_seed(config.seed, "eval")
    chance = float(task.chance_accuracy)
    train_range = dict(config.task.train_range)
    eval_range = dict(config.task.eval_range)
    model.eval()
    rows, max_len = [], 0
    for knob in config.task.eval_axes:
        for value in eval_bins(train_range[knob], eval_range[knob], train.eval_bins):
            ranges = {**train_range, knob: value}
            totals: dict[str, np.ndarray] = {}
            done, chunk = 0, 0
            while done < train.eval_examples_per_bin:
                size = min(train.eval_batch_size, train.eval_examples_per_bin - done)
                batch = task.sample(derive_seed(eval_seed, f"{knob}={value}:{chunk}"), size, **ranges)
                max_len = max(max_len, batch.inputs.shape[1])
                inputs, targets, mask = _tensors(batch, device)
                with autocast:
                    logits = model(inputs)  # [B, T, V]
                losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")  # [B, T]
                correct = (logits.argmax(-1) == targets) & mask  # [B, T]
                per_example = np.stack(
                    [
                        mask.sum(1).cpu().numpy(),
                        correct.sum(1).cpu().numpy(),
                        (losses * mask).sum(1).double().cpu().numpy(),
                    ]
                )  # [3, B]
                slices = {"all": np.ones(size, dtype=bool)}
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
                done += size
                chunk += 1
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
    return rows, max_len
