"""Packing: runs of one model shape trained together in one process, as one stacked model.

A *pack* is a list of runs that share a task, a training spec, a device policy and the shape of
every parameter: seeds, learning rates, and architecture variants that differ only in what the
forward does (G and G-noneg, A with and without RoPE). `form_packs` forms them, `sweeps.train.run_pack`
trains one, `PackExecutor` hands whole packs to worker processes.

Inside a pack, the runs with one ModelConfig form a `Stack`. Its K runs' weights are the rows of one
fp32 tensor [K, P]; the forward is the unchanged `LanguageModel`, called through
`torch.func.functional_call` under `torch.vmap`, so every matmul is batched over K, and the
recurrent kernels (through their vmap rules), attention and the short convs (`_FoldedAttention`,
`_FoldedConv`) see K folded into their batch or channels. Every row has its own AdamW state,
gradient clip, learning rate, early stop and divergence, all kept on the device: a training step is
a fixed sequence of kernels with no host sync, which on CUDA is captured once per length bucket as
a CUDA graph and then replayed.

Isolation: nothing mixes rows. Gradients are taken of the sum of the K losses (so row k's gradient
is run k's alone), the gradient norm and the clip are per row, and a row whose loss or gradient
norm is not finite is switched off before its update is applied: its weights, moments and results
stay as they were at the step before, and its pack-mates never see a NaN.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from architectures import LanguageModel
from architectures.config import ModelConfig
from sweeps.config import TrainSpec
from synthetic_tasks import derive_seed

__all__ = ["Stack", "PackExecutor", "form_packs", "sized_model", "train_pack", "estimate_gpu_seconds"]

BETAS, EPS = (0.9, 0.95), 1e-8  # AdamW, as torch.optim.AdamW(betas=(0.9, 0.95), eps=1e-8)


class _FoldedAttention(torch.autograd.Function):
    """Causal SDPA whose vmap rule folds the vmapped dim into the batch: one attention call for the
    whole stack (torch's CPU attention has no batching rule, and falls back to a loop)."""

    @staticmethod
    def forward(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, do):
        with torch.enable_grad():
            q, k, v = (t.detach().requires_grad_() for t in ctx.saved_tensors)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return torch.autograd.grad(o, (q, k, v), do)

    @staticmethod
    def vmap(info, in_dims, q, k, v):
        n = info.batch_size

        def fold(x, dim):  # [n, B, H, T, K] -> [n * B, H, T, K]
            x = x.movedim(dim, 0) if dim is not None else x.expand(n, *x.shape)
            return x.reshape(-1, *x.shape[2:])

        o = F.scaled_dot_product_attention(fold(q, in_dims[0]), fold(k, in_dims[1]), fold(v, in_dims[2]),
                                           is_causal=True)  # fmt: skip
        return o.unflatten(0, (n, -1)), 0


class _FoldedConv(torch.autograd.Function):
    """conv1d whose vmap rule folds the vmapped dim into the channels, as n times the groups: one
    grouped conv for the whole stack. (torch's own batching rule for a conv with a bias, under bf16
    autocast, leaves the bias in fp32 and the conv refuses it.)"""

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        return F.conv1d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*(t for t in inputs[:3] if t is not None))
        ctx.has_bias, ctx.args = inputs[2] is not None, inputs[3:]

    @staticmethod
    def backward(ctx, dy):
        with torch.enable_grad():
            saved = [t.detach().requires_grad_() for t in ctx.saved_tensors]
            x, weight, bias = saved[0], saved[1], saved[2] if ctx.has_bias else None
            y = F.conv1d(x, weight, bias, *ctx.args)
        grads = torch.autograd.grad(y, saved, dy)
        return grads[0], grads[1], grads[2] if ctx.has_bias else None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
        n = info.batch_size

        def rows(t, dim):  # the vmapped dim first
            return t.movedim(dim, 0) if dim is not None else t.expand(n, *t.shape)

        x, weight = rows(x, in_dims[0]), rows(weight, in_dims[1])  # [n, B, C, T], [n, O, C / groups, W]
        batch, channels, length = x.shape[1:]
        x = x.transpose(0, 1).reshape(batch, n * channels, length)
        weight = weight.reshape(-1, *weight.shape[2:])
        bias = None if bias is None else rows(bias, in_dims[2]).reshape(-1)
        y = F.conv1d(x, weight, bias, stride, padding, dilation, n * groups)  # [B, n * O, T']
        return y.unflatten(1, (n, -1)).transpose(0, 1), 0


def _batched(*args) -> bool:
    return any(isinstance(a, torch.Tensor) and torch._C._functorch.is_batchedtensor(a) for a in args)


class _FoldIntoBatch(TorchFunctionMode):
    """Routes the models' vmapped causal attention and conv1d calls through the folding Functions."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and len(args) == 3 and kwargs == {"is_causal": True}:
            if _batched(*args):
                return _FoldedAttention.apply(*args)
        elif func is F.conv1d and len(args) == 7 and not kwargs and _batched(*args[:3]):
            return _FoldedConv.apply(*args)
        return func(*args, **kwargs)


class Stack:
    """K runs of one ModelConfig as one stacked model, with their optimiser and bookkeeping.

    `lrs` [steps, K] is every run's learning rate at every step; `ramp` the first step whose
    accuracy counts towards early stopping. Device state, per run k: `active` (still training),
    `diverged_at` (the step whose loss or gradient norm was not finite, or -1), `solved_at` (the
    step count at which the early-stop window was reached, or -1), and `records` [steps, 2, K]
    (loss and accuracy of every step taken). `step(batch)` takes one step on a padded batch
    [3, K, B, T] (inputs, targets, loss mask); `mode` says whether steps run as CUDA graphs.
    """

    def __init__(
        self,
        config: ModelConfig,
        seeds: list[int],
        lrs: np.ndarray,
        train: TrainSpec,
        ramp: int,
        device: str,
        capture: bool = False,
        pool=None,
    ):
        models = [
            LanguageModel(config, generator=torch.Generator().manual_seed(derive_seed(seed, "init")))
            for seed in seeds
        ]
        named = list(models[0].named_parameters())  # a tied matrix once
        self.names = [name for name, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in models])
        decay = torch.cat([torch.full((p.numel(),), float(p.dim() >= 2)) for _, p in named])
        self.base = models[0].to(device)  # the module functional_call runs; its own weights go unused
        self.K, self.device, self.cuda = len(seeds), device, device.startswith("cuda")
        self.flat = flat.to(device).requires_grad_()  # [K, P]
        self.decay = (decay * train.weight_decay).to(device)  # [P]
        self.m = torch.zeros_like(self.flat, requires_grad=False)
        self.v = torch.zeros_like(self.flat, requires_grad=False)
        self.lrs = torch.tensor(lrs, dtype=torch.float32, device=device)  # [steps, K]
        self.grad_clip, self.early_stop_acc, self.ramp = train.grad_clip, train.early_stop_acc, ramp
        self.step_t = torch.zeros(1, dtype=torch.long, device=device)
        self.active = torch.ones(self.K, dtype=torch.bool, device=device)
        self.diverged_at = torch.full((self.K,), -1, dtype=torch.long, device=device)
        self.solved_at = torch.full((self.K,), -1, dtype=torch.long, device=device)
        self.window = torch.zeros(train.early_stop_window, self.K, device=device)
        self.window_n = torch.zeros(1, dtype=torch.long, device=device)
        self.records = torch.zeros(train.steps, 2, self.K, device=device)
        # Caching casts across calls would keep tensors alive outside a captured graph's pool.
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda, cache_enabled=False)
        self.mode = "graph" if capture and self.cuda else "eager"
        self.capture_error: str | None = None
        self.pool = pool
        self.buffers: dict[int, torch.Tensor] = {}  # bucket length -> the step's input [3, K, B, T]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.warm: set[int] = set()  # bucket lengths that ran once eagerly (a graph's warm-up)

    def logits(self, flat: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Every row's logits [n, B, T, V] for its own inputs [n, B, T], from weights rows [n, P]."""
        n = flat.shape[0]
        views = flat.split(self.sizes, dim=1)
        if n == 1:  # a run alone: no vmap
            params = {name: v.view(s) for name, v, s in zip(self.names, views, self.shapes, strict=True)}
            return functional_call(self.base, params, (inputs[0],)).unsqueeze(0)
        params = {name: v.view(n, *s) for name, v, s in zip(self.names, views, self.shapes, strict=True)}
        with _FoldIntoBatch():
            return torch.vmap(self._call)(params, inputs)

    def _call(self, params, inputs):
        return functional_call(self.base, params, (inputs,))

    def _losses(self, batch: torch.Tensor, flat: torch.Tensor):
        """Per-token losses, correctness and the mask of a padded batch [3, n, B, T]."""
        inputs, targets, mask = batch[0].long(), batch[1].long(), batch[2].bool()
        with self.autocast:
            logits = self.logits(flat, inputs)  # [n, B, T, V]
        losses = F.cross_entropy(logits.float().flatten(0, 2), targets.flatten(), reduction="none")
        correct = (logits.argmax(-1) == targets) & mask  # [n, B, T]
        return losses.view_as(targets), correct, mask

    def loss_and_grad(self, batch: torch.Tensor):
        """Every row's mean loss and accuracy over supervised positions [K] and its gradient [K, P]
        on a padded batch [3, K, B, T] on the device."""
        losses, correct, mask = self._losses(batch, self.flat)
        count = mask.sum((1, 2)).clamp(min=1)  # [K]; a run with no batch (stopped) gets an empty mask
        loss = torch.where(mask, losses, 0.0).sum((1, 2)) / count
        acc = correct.sum((1, 2)) / count
        (grad,) = torch.autograd.grad(loss.sum(), self.flat)  # row k: run k's gradient alone
        return loss.detach(), acc, grad

    def _step(self, batch: torch.Tensor) -> None:
        """One training step of every row, as device work only (no host sync: capturable)."""
        loss, acc, grad = self.loss_and_grad(batch)
        with torch.no_grad():
            self._update(grad, loss, acc)

    def _update(self, grad: torch.Tensor, loss: torch.Tensor, acc: torch.Tensor) -> None:
        b1, b2 = BETAS
        step = self.step_t
        norm = grad.norm(dim=1)  # [K]
        finite = torch.isfinite(loss) & torch.isfinite(norm)
        live = self.active & finite
        self.diverged_at.copy_(torch.where(self.active & ~finite, step, self.diverged_at))
        keep = live[:, None]
        clip = (self.grad_clip / (norm + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_, per run
        grad = torch.where(keep, grad * clip[:, None], 0.0)  # where, not a product: NaN * 0 is NaN
        lr = self.lrs.index_select(0, step)[0][:, None]  # [K, 1]
        t = step.float() + 1
        m = torch.lerp(self.m, grad, 1 - b1)
        v = torch.addcmul(self.v * b2, grad, grad, value=1 - b2)
        denom = v.sqrt() / (1 - b2**t).sqrt() + EPS
        weights = self.flat.detach()
        new = weights * (1 - lr * self.decay) - (lr / (1 - b1**t)) * m / denom
        weights.copy_(torch.where(keep, new, weights))
        self.m.copy_(torch.where(keep, m, self.m))
        self.v.copy_(torch.where(keep, v, self.v))
        # The early-stop window: the last early_stop_window accuracies after the ramp.
        ramped = step >= self.ramp
        slot = self.window_n % self.window.shape[0]
        self.window.index_copy_(0, slot, torch.where(ramped, acc, self.window.index_select(0, slot)[0])[None])
        self.window_n.add_(ramped.long())
        full = self.window_n >= self.window.shape[0]
        solved = live & full & (self.window.mean(0) >= self.early_stop_acc)
        self.solved_at.copy_(torch.where(solved, step + 1, self.solved_at))
        self.records.index_copy_(0, step, torch.stack([loss, acc])[None])
        self.active.copy_(live & ~solved)
        step.add_(1)

    def step(self, batch: torch.Tensor) -> None:
        """Train every row one step on `batch` [3, K, B, T] (host memory, pinned on CUDA).

        In graph mode the first step at a bucket length runs eagerly (the warm-up), the next
        captures a graph that this and every later step at that length replays. A capture that
        fails turns the stack eager for good; `capture_error` says why.
        """
        length = batch.shape[-1]
        if length not in self.buffers:
            self.buffers[length] = torch.empty(batch.shape, dtype=batch.dtype, device=self.device)
        buffer = self.buffers[length]
        buffer.copy_(batch, non_blocking=True)
        if length in self.graphs:
            self.graphs[length].replay()
        elif self.mode == "graph" and length in self.warm:
            self._capture(length)
        elif self.mode == "graph":
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._step(buffer)
            torch.cuda.current_stream().wait_stream(side)
            self.warm.add(length)
        else:
            self._step(buffer)

    def _capture(self, length: int) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                self._step(self.buffers[length])
        except Exception as error:  # noqa: BLE001 - any failure falls back to eager steps
            self.mode, self.capture_error = "eager", f"{type(error).__name__}: {error}"[:500]
            self.graphs.clear()
            torch.cuda.synchronize()
            self._step(self.buffers[length])
            return
        self.graphs[length] = graph
        graph.replay()

    def read(self, lo: int, hi: int) -> tuple[np.ndarray, list[int], list[int]]:
        """Records of steps lo..hi-1 [hi - lo, 2, K], diverged_at and solved_at (one host sync)."""
        out = torch.cat([self.records[lo:hi].flatten(), self.diverged_at.float(), self.solved_at.float()])
        out = out.cpu().numpy()
        n = (hi - lo) * 2 * self.K
        return (
            out[:n].reshape(hi - lo, 2, self.K),
            [int(x) for x in out[n : n + self.K]],
            [int(x) for x in out[n + self.K :]],
        )

    @torch.no_grad()
    def eval_stats(self, batch: torch.Tensor, rows: torch.Tensor, budget: int = 2**28) -> np.ndarray:
        """Per example of stack rows `rows` [n]: supervised tokens, correct tokens and summed loss
        [n, 3, b], for their padded batch [3, n, b, T] on the device; in chunks of rows of at most
        `budget` logits."""
        n, b, T = batch.shape[1:]
        chunk = max(1, budget // max(1, b * T * self.base.config.vocab_size))
        flat = self.flat.detach().index_select(0, rows)
        out = []
        for lo in range(0, n, chunk):
            part = batch[:, lo : lo + chunk]
            losses, correct, mask = self._losses(part, flat[lo : lo + chunk])
            out.append(
                torch.stack(
                    [
                        mask.sum(2).double(),
                        correct.sum(2).double(),
                        torch.where(mask, losses, 0.0).sum(2).double(),
                    ],
                    dim=1,
                )
            )
        return torch.cat(out).cpu().numpy()

    def describe(self) -> dict:
        return {
            "n_params": self.base.num_params(include_embedding=False),
            "n_params_total": self.base.num_params(include_embedding=True),
            "d_model": self.base.config.d_model,
            "n_layers": self.base.config.n_layers,
        }


@lru_cache(maxsize=4096)
def _sized(model: ModelConfig, target_params: int) -> ModelConfig:
    from architectures import size_for

    return size_for(model, target_params)


def sized_model(run) -> ModelConfig:
    """`run.model_config()`, computed once per (template, target) in this process: sizing builds
    models on the meta device, which is slow next to everything else packing does."""
    return _sized(run.model, run.target_params)


def form_packs(runs: list, cap: int) -> list[list]:
    """Split runs (RunConfigs) into packs of at most `cap` that can train as one process.

    Runs pack together when they share the task, the training spec, the device policy, the hxt
    version and the shape of every parameter of their sized models. Within such a class, runs with
    the same model sit next to each other and the class is cut into the fewest packs of at most
    `cap`, of near-equal sizes. Classes come in the order of their first run; `cap = 1` gives one
    run a pack, in the runs' order.
    """
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"--pack must be a positive integer, got {cap!r}")
    classes: dict[tuple, list] = {}
    for run in runs:
        model = sized_model(run)
        group = (run.task, run.train, run.device, run.hxt_version, _param_shapes(model))
        classes.setdefault(group, []).append((model, run))
    packs = []
    for members in classes.values():
        order: dict[ModelConfig, int] = {}
        for model, _ in members:
            order.setdefault(model, len(order))
        members = sorted(members, key=lambda pair: order[pair[0]])  # stable: the grid's order within
        n = math.ceil(len(members) / cap)
        bounds = [round(i * len(members) / n) for i in range(n + 1)]
        packs += [[run for _, run in members[a:b]] for a, b in zip(bounds, bounds[1:])]
    return packs


@lru_cache(maxsize=4096)
def _param_shapes(config: ModelConfig) -> tuple:
    with torch.device("meta"):
        model = LanguageModel(config)
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def train_pack(job: dict, device: str | None = None, threads: int = 1) -> dict:
    """A worker's entry for one pack: `job["runs"]` (run JSON dicts, with their run ids) in,
    ``{"results": [result per run]}`` out (`sweeps.train.run_pack`, imported in the worker)."""
    from sweeps.train import run_pack

    configs = [{k: v for k, v in run.items() if k != "run_id"} for run in job["runs"]]
    return {"results": run_pack(configs, device=device, threads=threads)}


class PackExecutor:
    """An executor (submit / wait / close / capacity, as `sweeps.backends`) that trains runs in
    packs: it holds the runs the driver submits, forms packs of at most `cap` with `form_packs`, and
    hands each pack to one worker of a `LocalExecutor` pool (`slots_per_gpu` packs share a GPU).
    Every run's result comes back under its own id; a worker that dies fails every run of its pack.

    Wiring (``hxt sweep run --pack K``, in `sweeps.runner.run_sweep`'s `executor`): for K > 1 and
    the local backend, return ``PackExecutor(workers, gpus, slots, cap=K)`` instead of the
    LocalExecutor, with `workers` the number of pack workers (default
    ``backends.default_workers(config.device, slots)``, slots defaulting to
    `DEFAULT_SLOTS_PER_GPU` below) and `gpus` as for the LocalExecutor; K = 1 keeps the
    LocalExecutor (one run a worker, as before). `capacity` is `backlog` packs' worth of runs a
    worker, so that the driver always submits enough runs for full packs.

    `deadline` (a `time.monotonic()` time, ``hxt sweep run --time-limit``): a pack starts only if
    `estimate_gpu_seconds` of it fits the time left; otherwise its runs come back from `wait`
    unstarted, with status "pending".
    """

    DEFAULT_SLOTS_PER_GPU = 2

    def __init__(self, workers: int, gpus: int = 0, slots_per_gpu: int = DEFAULT_SLOTS_PER_GPU,
                 cap: int = 16, backlog: int = 2, deadline: float | None = None):  # fmt: skip
        from sweeps.backends import LocalExecutor

        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"--pack must be a positive integer, got {cap!r}")
        self.pool = LocalExecutor(workers, gpus, slots_per_gpu, run_fn=train_pack)
        self.cap = cap
        self.capacity = workers * cap * backlog
        self.queue: dict[str, tuple[dict, object]] = {}  # run id -> (job dict, RunConfig)
        self.packs: dict[str, list[str]] = {}  # pack id -> its run ids, for packs in a worker
        self.deadline = deadline
        self.held: list[str] = []  # runs of packs that would not fit before the deadline

    def describe(self) -> str:
        return f"{self.pool.describe()}, packs of up to {self.cap} runs"

    def submit(self, run: dict) -> None:
        from sweeps.grid import RunConfig

        self.queue[run["run_id"]] = (run, RunConfig.from_json(run))

    def _dispatch(self) -> None:
        while self.queue and len(self.packs) < self.pool.capacity:
            ids_of = {id(config): rid for rid, (_, config) in self.queue.items()}
            pack = form_packs([config for _, config in self.queue.values()], self.cap)[0]
            ids = [ids_of[id(config)] for config in pack]
            if self.deadline is not None:
                try:
                    seconds = estimate_gpu_seconds(pack, self.cap).seconds
                except ValueError:  # a mixer the throughput table has no rows for: no estimate
                    seconds = 0.0
                if seconds > self.deadline - time.monotonic():
                    self.held += ids
                    for rid in ids:
                        del self.queue[rid]
                    continue
            pack_id = "pack:" + ",".join(ids)
            self.pool.submit({"run_id": pack_id, "runs": [self.queue.pop(rid)[0] for rid in ids]})
            self.packs[pack_id] = ids

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        self._dispatch()
        out = [(rid, {"status": "pending", "error": "held back: its pack would not finish by the deadline"})
               for rid in self.held]  # fmt: skip
        self.held = []
        for pack_id, result in self.pool.wait(timeout):
            ids = self.packs.pop(pack_id)
            if "results" in result:
                out += list(zip(ids, result["results"], strict=True))
            else:  # the worker died, or the pack failed outside run_pack
                out += [(rid, dict(result)) for rid in ids]
        self._dispatch()
        return out

    def close(self) -> None:
        self.pool.close()


# The measured throughput table `estimate_gpu_seconds` reads (benchmarks/bench_models.py --table).
THROUGHPUT_TABLE = Path(__file__).with_name("throughput.json")


@dataclass(frozen=True)
class GpuEstimate:
    """GPU time of a sweep on the table's device, its packs trained one after another (an upper
    bound: early stopping only shortens it)."""

    seconds: float
    train_seconds: float
    eval_seconds: float
    overhead_seconds: float  # worker start-up, graph capture
    packs: int
    device: str
    longest_pack_seconds: float = 0.0  # a --time-limit below it starts no pack of this length

    def __str__(self) -> str:
        return (
            f"about {self.seconds / 3600:.2f} GPU-hours on {self.device} ({self.packs} packs: training "
            f"{self.train_seconds / 3600:.2f} h, evaluation {self.eval_seconds / 3600:.2f} h, start-up and "
            f"capture {self.overhead_seconds / 3600:.2f} h; "
            f"the longest pack {self.longest_pack_seconds:.0f} s; early stopping only shortens it)"
        )


def load_throughput(path: Path = THROUGHPUT_TABLE) -> dict:
    with open(path) as f:
        return json.load(f)


def _fit(rows: list[dict]) -> np.ndarray:
    """Non-negative coefficients of the step-time model for one mixer letter: seconds per step =
    c0 * layers + c1 * tokens * layers * d_model + c2 * tokens * params (launch latency, memory-
    bound elementwise work, matmuls)."""
    from scipy.optimize import nnls

    features = np.array([_features(r["n_layers"], r["d_model"], r["n_params"], r["tokens"]) for r in rows])
    seconds = np.array([r["step_seconds"] for r in rows])
    # Relative error counts, not absolute: scale each row by its own time.
    coef, _ = nnls(features / seconds[:, None], np.ones(len(rows)))
    return coef


def _features(layers: int, d_model: int, params: int, tokens: float) -> np.ndarray:
    return np.array([layers, tokens * layers * d_model, tokens * params], dtype=np.float64)


def _step_seconds(fits: dict, model: ModelConfig, params: int, tokens: float) -> float:
    """Captured step time of a stack: its layers' letters weighted by their share of the depth."""
    letters = model.layer_pattern
    total = 0.0
    for letter in set(letters):
        if letter not in fits:
            raise ValueError(f"the throughput table has no rows for mixer {letter!r}; known: {sorted(fits)}")
        share = letters.count(letter) / len(letters)
        total += share * float(_features(model.n_layers, model.d_model, params, tokens) @ fits[letter])
    return total


def _lengths(run) -> tuple[float, int, list[int]]:
    """The mean padded training length over the run's steps (its curriculum included), the number
    of training length buckets, and the padded length of every evaluation bin's batches."""
    from sweeps.grid import eval_bins
    from sweeps.train import bucket_length, curriculum_ranges, longest_length
    from synthetic_tasks import make_task

    task = make_task(run.task.name, **run.task.params_dict)
    train = run.train
    points = sorted({int(s) for s in np.linspace(0, train.steps - 1, 33)})
    longest = longest_length(run, train.batch_size)
    lengths = []
    for step in points:
        ranges, _ = curriculum_ranges(step, run)
        batch = task.sample(derive_seed(step, "estimate"), train.batch_size, **ranges)
        lengths.append(bucket_length(batch.inputs.shape[1], longest))
    train_range, eval_range = dict(run.task.train_range), dict(run.task.eval_range)
    evals = []
    for knob in run.task.eval_axes:
        for value in eval_bins(train_range[knob], eval_range[knob], train.eval_bins):
            size = min(train.eval_batch_size, train.eval_examples_per_bin)
            batch = task.sample(derive_seed(value, "estimate"), size, **{**train_range, knob: value})
            evals.append(bucket_length(batch.inputs.shape[1]))
    return float(np.mean(lengths)), len(set(lengths)), evals


def estimate_gpu_seconds(runs: list, pack: int, table: dict | None = None) -> GpuEstimate:
    """The GPU time of `runs` (RunConfigs) trained in packs of at most `pack`, from the measured
    throughput table (THROUGHPUT_TABLE, or `table`).

    Each stack of a pack steps at the captured step time that the table's fit gives for its
    mixers, width, depth, parameters and tokens a step (rows x batch x the mean padded length over
    the curriculum); evaluation is an eager forward (a third of an eager step) per evaluation batch;
    each pack pays a worker start-up, and an eager warm-up and a capture per training length bucket.
    Raises ValueError where the table has no rows for a mixer of the sweep.

    Wiring (``hxt sweep plan``): print ``estimate_gpu_seconds(runs, pack)`` after `check_runs`, with
    `pack` the ``--pack`` the sweep would run with (1: one run a process, eager rates apply when
    the sweep sets ``train.capture = false``).
    """
    from architectures import count_params

    table = table or load_throughput()
    fits = {
        mode: {
            letter: _fit([r for r in table["rows"] if r["pattern"] == letter and r["mode"] == mode])
            for letter in {
                r["pattern"] for r in table["rows"] if len(r["pattern"]) == 1 and r["mode"] == mode
            }
        }
        for mode in ("graph", "eager")
    }
    lengths: dict[tuple, tuple[float, int, list[int]]] = {}
    params: dict[ModelConfig, int] = {}
    train_s = eval_s = overhead_s = longest = 0.0
    packs = form_packs(runs, pack)
    for members in packs:
        before = train_s + eval_s + overhead_s
        first = members[0]
        train = first.train
        if (first.task, train) not in lengths:
            lengths[first.task, train] = _lengths(first)
        mean_len, n_buckets, eval_lens = lengths[first.task, train]
        overhead_s += table["startup_seconds"]
        stacks: dict[ModelConfig, int] = {}
        for run in members:
            model = sized_model(run)
            stacks[model] = stacks.get(model, 0) + 1
            if model not in params:
                params[model] = count_params(model)
        for model, k in stacks.items():
            tokens = k * train.batch_size * mean_len
            mode = "graph" if train.capture else "eager"
            train_s += _step_seconds(fits[mode], model, params[model], tokens) * train.steps
            eager = _step_seconds(fits["eager"], model, params[model], tokens)
            overhead_s += 2 * n_buckets * eager if train.capture else 0.0
            size = min(train.eval_batch_size, train.eval_examples_per_bin)
            per_bin = -(-train.eval_examples_per_bin // train.eval_batch_size)
            for length in eval_lens:
                eval_s += per_bin * _step_seconds(fits["eager"], model, params[model], k * size * length) / 3
        longest = max(longest, train_s + eval_s + overhead_s - before)
    return GpuEstimate(
        seconds=train_s + eval_s + overhead_s,
        train_seconds=train_s,
        eval_seconds=eval_s,
        overhead_seconds=overhead_s,
        packs=len(packs),
        device=table["device"],
        longest_pack_seconds=longest,
    )
