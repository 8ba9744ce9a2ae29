"""Benchmark chunk_ssd (ours) against fla-core's chunk_simple_gla and the naive PyTorch loop (GPU).

    python benchmarks/bench_ssd.py [--impls ours,fla,naive] [--json PATH]

For each shape (B, T, H, P=V, N=K), bf16 inputs, n_groups = 1 for ours (Mamba2's default; fla has
no grouping, so it gets per-head q = C, k = dt·B, v = x, g = dt·A prepared outside the timed call;
ours also applies D): GPU kernel time per call (profiler sum of device activity), launches per call,
wall time per call (triton.testing.do_bench median; ours and fla timed in turn five times, the median
of each kept), the ratio to fla, and the bytes / FLOPs floor of
the chunked algorithm (H100 SXM: 3.35 TB/s, 989 TFLOP/s bf16 dense). fla autotunes on its first
call at each shape, which takes about a minute per shape; --impls leaves implementations out.
"""

import argparse
import dataclasses
import functools
import json
import statistics
import time

import torch
import triton

from kernels import _host
from kernels.ssd import chunk, chunk_ssd, naive_recurrent_ssd

SHAPES = [(64, 256, 4, 32, 32), (64, 512, 4, 64, 64), (8, 2048, 8, 64, 64), (2, 8192, 16, 128, 128)]
NAIVE_MAX_T = 2048
GROUPS = 1  # B/C groups of ours (--groups); Mamba2's default is one
WALL_ROUNDS = 5
HBM_BYTES_PER_S = 3.35e12
PEAK_FLOPS = 989e12


def make(shape, requires_grad, seed=0):
    n_batch, seq_len, num_heads, dim_v, dim_k = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(device="cuda", generator=g)
    x = torch.randn(n_batch, seq_len, num_heads, dim_v, **kw).bfloat16()
    dt = torch.nn.functional.softplus(torch.randn(n_batch, seq_len, num_heads, **kw) - 2.0).bfloat16()
    A = -torch.exp(torch.rand(num_heads, **kw) * 2.0)
    B = (torch.randn(n_batch, seq_len, GROUPS, dim_k, **kw) / dim_k**0.5).bfloat16()
    C = (torch.randn(n_batch, seq_len, GROUPS, dim_k, **kw) / dim_k**0.5).bfloat16()
    D = torch.randn(num_heads, **kw)
    ours = dict(x=x, dt=dt, A=A, B=B, C=C, D=D)
    fla = dict(
        q=C.repeat_interleave(num_heads // GROUPS, dim=2),
        k=(B.repeat_interleave(num_heads // GROUPS, dim=2).float() * dt.float()[..., None]).bfloat16(),
        v=x.clone(),
        g=dt.float() * A,
    )
    for t in [*ours.values(), *fla.values()]:
        t.requires_grad_(requires_grad)
    return ours, fla


def cuda_events(fn, reps):
    """The device activities (kernels, copies, memsets) of reps calls of fn, after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def gpu_time_and_launches(fn, reps=10):
    evs = cuda_events(fn, reps)
    total_us = sum(e.time_range.end - e.time_range.start for e in evs)
    return total_us / reps / 1e3, len(evs) / reps  # ms, launches


def wall_ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def floor_ms(shape, backward):
    n_batch, seq_len, num_heads, dim_v, dim_k = shape
    tokens = n_batch * seq_len
    bytes_fwd = 2 * (2 * tokens * num_heads * dim_v + tokens * num_heads + 2 * tokens * dim_k)
    flops_fwd = tokens * num_heads * (2 * 64 * (dim_k + dim_v) + 4 * dim_k * dim_v)
    # backward reads x, dt, B, C, dy and writes their gradients; about twice the forward's products
    bytes_total = bytes_fwd + (2 * bytes_fwd if backward else 0)
    flops_total = flops_fwd * (3 if backward else 1)
    return max(bytes_total / HBM_BYTES_PER_S, flops_total / PEAK_FLOPS) * 1e3


def callables(shape):
    ours, fla_in = make(shape, requires_grad=True)

    dy = torch.randn(
        ours["x"].shape,
        device="cuda",
        generator=torch.Generator(device="cuda").manual_seed(1),
        dtype=ours["x"].dtype,
    )
    ours_leaves = tuple(ours.values())
    fla_leaves = tuple(fla_in.values())

    def ours_fwd():
        with torch.no_grad():
            return chunk_ssd(**ours)

    def ours_fwd_bwd():
        y, _ = chunk_ssd(**ours)
        return torch.autograd.grad(y, ours_leaves, dy)

    def fla_fwd():
        from fla.ops.simple_gla import chunk_simple_gla

        with torch.no_grad():
            return chunk_simple_gla(**fla_in, scale=1.0)

    def fla_fwd_bwd():
        from fla.ops.simple_gla import chunk_simple_gla

        o, _ = chunk_simple_gla(**fla_in, scale=1.0)
        return torch.autograd.grad(o, fla_leaves, dy)

    # the loop costs the same per step, so at long T it runs on the first NAIVE_MAX_T steps and its
    # time is scaled by T / NAIVE_MAX_T (autograd through 8192 steps would not fit in memory)
    short = {k: v[:, :NAIVE_MAX_T] if v.dim() > 1 else v for k, v in ours.items()}
    dy_short = dy[:, :NAIVE_MAX_T]

    def naive_fwd():
        with torch.no_grad():
            return naive_recurrent_ssd(**short)

    def naive_fwd_bwd():
        y, _ = naive_recurrent_ssd(**short)
        return torch.autograd.grad(y, tuple(short.values()), dy_short)

    return dict(ours=(ours_fwd, ours_fwd_bwd), fla=(fla_fwd, fla_fwd_bwd), naive=(naive_fwd, naive_fwd_bwd))


def timed_once_ms(fn):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def main_bench(args):
    impls = args.impls.split(",")
    rows = []
    for shape in [SHAPES[int(i)] for i in args.shapes.split(",")]:
        fns = callables(shape)
        for mode, idx in (("fwd", 0), ("fwd+bwd", 1)):
            row = dict(shape=shape, mode=mode, floor_ms=floor_ms(shape, idx == 1))
            names = [n for n in ("ours", "fla") if n in impls]
            for name in names:
                gpu, launches = gpu_time_and_launches(fns[name][idx])
                row[name] = dict(gpu_ms=gpu, launches=launches)
            # wall time is mostly host time at the small shapes, which drifts on a shared host: the
            # implementations are timed in turn, WALL_ROUNDS times, and each keeps its median
            walls = {n: [] for n in names}
            for _ in range(WALL_ROUNDS):
                for name in names:
                    walls[name].append(wall_ms(fns[name][idx]))
            for name in names:
                row[name] |= dict(wall_ms=statistics.median(walls[name]), wall_rounds_ms=walls[name])
            if "naive" in impls:
                scale = max(1.0, shape[1] / NAIVE_MAX_T)
                row["naive"] = dict(wall_ms=timed_once_ms(fns["naive"][idx]) * scale, scaled_by=scale)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del fns
        torch.cuda.empty_cache()
    print()
    print(
        f"{'shape (B,T,H,P,N)':24} {'mode':8} {'impl':6} {'gpu ms':>8} {'wall ms':>9} {'launches':>8} "
        f"{'gpu/fla':>7} {'wall/fla':>8} {'paired':>6} {'naive/wall':>10} {'floor ms':>8}"
    )
    for r in rows:
        for name in ("ours", "fla"):
            if name not in r:
                continue
            m, f = r[name], r.get("fla")
            # wall/fla: ratio of the medians; paired: median of the ratios of the rounds (each round
            # times ours and fla back to back, so host drift between rounds cancels)
            paired = (
                statistics.median(a / b for a, b in zip(m["wall_rounds_ms"], f["wall_rounds_ms"])) if f else 0
            )
            ratios = (
                f"{m['gpu_ms'] / f['gpu_ms']:7.2f} {m['wall_ms'] / f['wall_ms']:8.2f} {paired:6.2f}"
                if f
                else f"{'-':>7} {'-':>8} {'-':>6}"
            )
            naive = f"{r['naive']['wall_ms'] / m['wall_ms']:10.0f}" if "naive" in r else f"{'-':>10}"
            print(
                f"{str(tuple(r['shape'])):24} {r['mode']:8} {name:6} {m['gpu_ms']:8.4f} "
                f"{m['wall_ms']:9.4f} {m['launches']:8.1f} {ratios} {naive} {r['floor_ms']:8.4f}"
            )
    return rows


def sweep_variants(shape):
    """Launch configurations to try at one shape: variant i takes option i of every kernel, so one
    profiled fwd+bwd per variant times every kernel under one of its options."""
    n_batch, seq_len, num_heads, dim_v, dim_k = shape
    BK, BV = max(16, triton.next_power_of_2(dim_k)), max(16, triton.next_power_of_2(dim_v))
    base = chunk._launch_config(n_batch * num_heads, dim_k, dim_v, True)
    kc = chunk.KernelConfig
    state = [
        (64, 64, 4, 2),
        (64, 32, 4, 3),
        (32, 32, 2, 2),
        (64, 64, 8, 3),
        (32, 64, 4, 2),
        (64, 32, 2, 2),
        (32, 32, 4, 3),
        (64, 16, 4, 2),
    ]
    o = [
        (0, 64, 4, 2),
        (0, 64, 8, 2),
        (0, 32, 4, 2),
        (0, 64, 4, 3),
        (0, 32, 2, 2),
        (0, 64, 8, 1),
        (0, 128, 8, 2),
        (0, 32, 4, 3),
    ]
    dx = [
        (0, 64, 8, 2),
        (0, 128, 8, 2),
        (0, 64, 4, 2),
        (0, 128, 8, 1),
        (0, 32, 4, 2),
        (0, 64, 8, 1),
        (0, 128, 4, 2),
        (0, 64, 8, 3),
    ]
    dqk = [
        (64, 64, 8, 2),
        (64, 64, 4, 2),
        (32, 64, 4, 2),
        (64, 32, 8, 1),
        (64, 64, 8, 3),
        (64, 64, 4, 3),
        (32, 32, 4, 2),
        (64, 64, 4, 1),
    ]
    out = [base]
    for i in range(len(state)):

        def fit(o):
            return kc(min(o[0], BK), min(o[1], BV), o[2], o[3])

        h, dh = fit(state[i]), fit(state[(i + 3) % len(state)])
        out.append(chunk.LaunchConfig(base.BT, h, fit(o[i]), dh, fit(dx[i]), fit(dqk[i])))
    return out


def tail_variants(shape):
    """Configurations around the default at one shape: the forward's launch structure (decay kernel,
    decays in the walk, the one-launch walk giving y), the one-launch walk's tiles, the output and dx
    kernels' K-block, stages and warps, the forward walk's tiles. Each is (label, LaunchConfig,
    {chunk module constant: value})."""
    n_batch, seq_len, num_heads, dim_v, dim_k = shape
    base = chunk._launch_config(n_batch * num_heads, dim_k, dim_v, True)
    kc, rep = chunk.KernelConfig, dataclasses.replace
    BK = max(16, triton.next_power_of_2(dim_k))
    BV = max(16, triton.next_power_of_2(dim_v))
    big = 1 << 20
    out = [
        ("default", base, {}),
        ("decay kernel", base, dict(WALK_DECAY_MAX_CHUNKS=0, ONE_LAUNCH_MAX_CHUNKS=0)),
        ("decay in walk", base, dict(WALK_DECAY_MAX_CHUNKS=big, ONE_LAUNCH_MAX_CHUNKS=0)),
    ]
    # the walk giving y at every length (all of K in one block), including where the default never
    # takes it (K > 64: fwd_hy is None there)
    fwd_hy = base.fwd_hy or kc(BK, min(32, BV), 4, 2)
    out.append(("one launch", rep(base, fwd_hy=fwd_hy), dict(ONE_LAUNCH_MAX_CHUNKS=big)))
    tiles = [(16, 4, 3), (64, 4, 3), (32, 2, 3), (32, 8, 3), (32, 4, 2)]
    if BK > 64:
        tiles = [(32, 8, 2), (16, 4, 2), (16, 8, 2), (32, 4, 3), (64, 8, 2), (64, 4, 2)]
    for w in tiles:
        out.append(
            (
                f"one launch {w}",
                rep(base, fwd_hy=kc(BK, min(w[0], BV), w[1], w[2])),
                dict(ONE_LAUNCH_MAX_CHUNKS=big),
            )
        )
    out += [
        ("o K 64", rep(base, fwd_o=rep(base.fwd_o, BK=min(64, BK))), {}),
        ("dx all of K", rep(base, bwd_dx=rep(base.bwd_dx, BK=BK)), {}),
        ("o 3 stages", rep(base, fwd_o=rep(base.fwd_o, num_stages=3)), {}),
        (
            "o/dx BV 32",
            rep(base, fwd_o=rep(base.fwd_o, BV=min(32, BV)), bwd_dx=rep(base.bwd_dx, BV=min(32, BV))),
            {},
        ),
    ]
    walks = [(32, 32, 4, 3), (32, 32, 4, 2), (64, 32, 4, 3), (64, 32, 4, 2), (32, 64, 4, 3), (64, 64, 4, 3)]
    walks += [(64, 64, 4, 2), (64, 64, 8, 3), (128, 32, 4, 3), (16, 32, 4, 3)]
    for h in walks:
        out.append((f"h {h}", rep(base, fwd_h=kc(min(h[0], BK), min(h[1], BV), *h[2:])), {}))
    return out


def main_tail(args):
    """GPU µs per kernel (forward + backward) under tail_variants, at the shapes of --shapes."""
    real_cfg = chunk._launch_config
    real = {k: getattr(chunk, k) for k in ("WALK_DECAY_MAX_CHUNKS", "ONE_LAUNCH_MAX_CHUNKS")}
    for i in args.shapes.split(","):
        shape = SHAPES[int(i)]
        fns = callables(shape)
        for label, cfg, consts in tail_variants(shape):
            if not label.startswith(tuple(args.variants.split(","))):
                continue
            chunk._launch_config = lambda *a, c=cfg: c
            for k, v in consts.items():
                setattr(chunk, k, v)
            # labels starting "fwd ": the inference forward alone (kernels per call of it, not of fwd+bwd)
            mode = 0 if label.startswith("fwd ") else 1
            try:
                times = kernel_times_us(fns["ours"][mode]) if not args.compile_only else fns["ours"][mode]()
                if args.compile_only:
                    fns["ours"][0]()
                fwd = gpu_time_and_launches(fns["ours"][0])[0] * 1e3 if not args.compile_only else 0.0
            except Exception as err:  # a configuration past the shared-memory limit fails to compile
                times, fwd = {"error": str(err)[:120]}, float("nan")
            finally:
                chunk._launch_config = real_cfg
                for k, v in real.items():
                    setattr(chunk, k, v)
            if args.compile_only:
                continue
            cells = " ".join(
                f"{k.replace('chunk_ssd_', '').replace('_kernel', '')} {v:6.1f}"
                for k, v in sorted(times.items())
                if not isinstance(v, str)
            )
            total = sum(v for v in times.values() if not isinstance(v, str))
            print(
                f"{str(shape):26} {label:20} fwd {fwd:6.1f} fwd+bwd {total:7.1f} | {cells} "
                f"{times.get('error', '')}",
                flush=True,
            )
        del fns


def host_us(fn, n=200):
    """Host time per call: n calls enqueued back to back, timed before the final synchronize."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def main_host(args):
    """Where the host time of a small call goes (shape 0): ours and fla through autograd, our two host
    functions called directly (no autograd), a trivial autograd.Function (the engine alone), a bare
    launch of one of our kernels, and a cProfile of the direct path."""
    import cProfile
    import pstats

    shape = SHAPES[0]
    fns = callables(shape)
    ours, _ = make(shape, requires_grad=False)
    x, dt, A, B, C, D = (ours[k] for k in ("x", "dt", "A", "B", "C", "D"))
    dy = torch.randn_like(x)

    def direct():
        _, _, h, gam, sig = chunk.chunk_ssd_fwd(x, dt, A, B, C, D, None, False, False)
        return chunk.chunk_ssd_bwd(x, dt, A, B, C, D, None, h, gam, sig, dy, None, False)

    saved = chunk.chunk_ssd_fwd(x, dt, A, B, C, D, None, False, False)[2:]

    def direct_bwd():
        return chunk.chunk_ssd_bwd(x, dt, A, B, C, D, None, *saved, dy, None, False)

    class Ident(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return g

    leaf = torch.zeros(4, device="cuda", requires_grad=True)
    g1 = torch.ones(4, device="cuda")

    def engine_only():
        return torch.autograd.grad(Ident.apply(leaf), (leaf,), g1)

    gam = torch.empty(shape[0], shape[2], shape[1], device="cuda")

    def one_launch():
        chunk._kernels()[0].chunk_ssd_decay_kernel[(4 * shape[0] * shape[2],)](
            dt, A, gam, gam, gam, shape[1], shape[2], shape[0], BT=64, NEG=False
        )

    leaves7 = [torch.zeros(4, device="cuda", requires_grad=True) for _ in range(7)]

    class Launches(torch.autograd.Function):
        """The engine around seven inputs, an allocation and one triton launch each way."""

        @staticmethod
        def forward(ctx, *ts):
            one_launch()
            ctx.save_for_backward(*ts)
            return torch.empty_like(ts[0])

        @staticmethod
        def backward(ctx, g):
            saved = ctx.saved_tensors
            one_launch()
            return (torch.empty_like(g), *(None for _ in saved[1:]))

    def engine_launches():
        return torch.autograd.grad(Launches.apply(*leaves7), (leaves7[0],), g1)

    grad_leaves = make(shape, requires_grad=True)[0]

    def ours_fwd_grad_mode():
        return chunk_ssd(**grad_leaves)[0]

    def fwd_bwd_slow_launch():
        _host._FAST_LAUNCH = False
        try:
            return fns["ours"][1]()
        finally:
            _host._FAST_LAUNCH = True

    cases = dict(
        ours_fwd=fns["ours"][0],
        ours_fwd_bwd=fns["ours"][1],
        ours_fwd_bwd_triton_launch=fwd_bwd_slow_launch,
        ours_fwd_grad_mode=ours_fwd_grad_mode,
        engine_launches=engine_launches,
        ours_direct_fwd_bwd=direct,
        ours_direct_bwd=direct_bwd,
        engine_only=engine_only,
        one_triton_launch=one_launch,
    )
    if "fla" in args.impls:
        cases |= dict(fla_fwd=fns["fla"][0], fla_fwd_bwd=fns["fla"][1])
    for name, fn in cases.items():
        print(f"host {name:22} {host_us(fn):8.1f} us/call   wall {wall_ms(fn) * 1e3:8.1f} us", flush=True)
    for idx in (0, 1):
        thread_timeline(SHAPES[idx], profile=False)
    thread_timeline(SHAPES[0], profile=False, free_in_backward=True)
    thread_timeline(SHAPES[0], profile=False, pause_s=1e-3)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        direct()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def thread_timeline(shape, n=100, profile=True, free_in_backward=False, pause_s=0.0):
    """Median µs of the pieces of one autograd fwd+bwd call: chunk_ssd up to the Function's forward,
    its body, the rest of chunk_ssd, from torch.autograd.grad to the backward's start (on autograd's
    device thread), the backward body, and from its end to grad's return; then a cProfile of the
    backward bodies on that thread."""
    import cProfile
    import pstats

    stamps = {}
    fn_cls = chunk.ChunkSSDFunction
    real_fwd, real_bwd = fn_cls.forward, fn_cls.backward
    real_host = chunk.chunk_ssd_fwd, chunk.chunk_ssd_bwd
    prof = cProfile.Profile()

    def fwd(*a):
        stamps["f0"] = time.perf_counter_ns()
        out = real_fwd(*a)
        stamps["f1"] = time.perf_counter_ns()
        return out

    def bwd(ctx, *g):
        stamps["b0"] = time.perf_counter_ns()
        if profile:
            prof.enable()
        out = real_bwd(ctx, *g)
        if profile:
            prof.disable()
        if free_in_backward:
            ctx.states = None
        stamps["b1"] = time.perf_counter_ns()
        return out

    def host_fwd(*a, **k):
        stamps["launch"] = stamps["alloc"] = 0
        t0 = time.perf_counter_ns()
        out = real_host[0](*a, **k)
        stamps["fwd_host"] = time.perf_counter_ns() - t0
        stamps["fwd_launch"], stamps["fwd_alloc"] = stamps["launch"], stamps["alloc"]
        return out

    def host_bwd(*a, **k):
        stamps["launch"] = stamps["alloc"] = 0
        t0 = time.perf_counter_ns()
        out = real_host[1](*a, **k)
        stamps["bwd_host"] = time.perf_counter_ns() - t0
        stamps["bwd_launch"], stamps["bwd_alloc"] = stamps["launch"], stamps["alloc"]
        return out

    real_launch = chunk.launch

    def timed_launch(*a, **k):
        t0 = time.perf_counter_ns()
        out = real_launch(*a, **k)
        stamps["launch"] += time.perf_counter_ns() - t0
        return out

    real_empty = torch.empty

    def timed_empty(*a, **k):
        t0 = time.perf_counter_ns()
        out = real_empty(*a, **k)
        stamps["alloc"] += time.perf_counter_ns() - t0
        return out

    ours, _ = make(shape, requires_grad=True)
    leaves = tuple(ours.values())
    dy = torch.randn_like(ours["x"])
    rows = []
    fn_cls.forward, fn_cls.backward = staticmethod(fwd), staticmethod(bwd)
    chunk.chunk_ssd_fwd, chunk.chunk_ssd_bwd = host_fwd, host_bwd
    chunk.launch = timed_launch
    torch.empty = timed_empty
    try:
        for i in range(n + 10):
            if pause_s:
                time.sleep(pause_s)
            t0 = time.perf_counter_ns()
            y, _ = chunk_ssd(**ours)
            t1 = time.perf_counter_ns()
            torch.autograd.grad(y, leaves, dy)
            t2 = time.perf_counter_ns()
            if i >= 10:
                rows.append(
                    dict(
                        enter_fwd=stamps["f0"] - t0,
                        fwd_body=stamps["f1"] - stamps["f0"],
                        leave_fwd=t1 - stamps["f1"],
                        hop_in=stamps["b0"] - t1,
                        bwd_body=stamps["b1"] - stamps["b0"],
                        hop_out=t2 - stamps["b1"],
                        total=t2 - t0,
                        fwd_host=stamps["fwd_host"],
                        fwd_launch=stamps["fwd_launch"],
                        fwd_alloc=stamps["fwd_alloc"],
                        bwd_launch=stamps["bwd_launch"],
                        bwd_alloc=stamps["bwd_alloc"],
                        bwd_host=stamps["bwd_host"],
                    )
                )
    finally:
        fn_cls.forward, fn_cls.backward = real_fwd, real_bwd
        chunk.chunk_ssd_fwd, chunk.chunk_ssd_bwd = real_host
        chunk.launch = real_launch
        torch.empty = real_empty
    torch.cuda.synchronize()
    med = {k: statistics.median(r[k] for r in rows) / 1e3 for k in rows[0]}
    label = ("cProfile in backward" if profile else "") + (
        " states freed in backward" if free_in_backward else ""
    )
    label += f" {pause_s * 1e3:g} ms pause before each call" if pause_s else ""
    print(f"timeline {shape} {label}: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()), flush=True)
    if profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def warm(args):
    """Compile (and, for fla, autotune) the implementations of --impls but the naive loop at the shapes of
    --shapes, both modes, nothing timed: fills triton's disk caches for a later timing process."""
    for shape in [SHAPES[int(i)] for i in args.shapes.split(",")]:
        fns = callables(shape)
        for name in ("ours", "fla"):
            if name in args.impls.split(","):
                fns[name][0]()
                fns[name][1]()
        torch.cuda.synchronize()
        print("warm", shape, flush=True)
        del fns


def kernel_times_us(fn, reps=10, all_names=False):
    times = {}
    for e in cuda_events(fn, reps):
        name = e.name if all_names or e.name.startswith("chunk_ssd") else "torch"
        times[name] = times.get(name, 0.0) + (e.time_range.end - e.time_range.start) / reps
    return times


def direct_fwd_bwd(x, dt, A, B, C, D, dy):
    """Our forward and backward host functions called directly (no autograd)."""
    _, _, h, gam, sig = chunk.chunk_ssd_fwd(x, dt, A, B, C, D, None, False, False)
    return chunk.chunk_ssd_bwd(x, dt, A, B, C, D, None, h, gam, sig, dy, None, False)


def main_launch_ab(args):
    """Wall time of ours (forward+backward) with _host.launch's cached launch on and off, in turns."""
    for i in args.shapes.split(","):
        shape = SHAPES[int(i)]
        fn = callables(shape)["ours"][1]
        walls = {True: [], False: []}
        for _ in range(WALL_ROUNDS):
            for fast in (True, False):
                _host._FAST_LAUNCH = fast
                walls[fast].append(wall_ms(fn))
        ours, _ = make(shape, requires_grad=False)
        direct = functools.partial(direct_fwd_bwd, *ours.values(), torch.randn_like(ours["x"]))
        hosts = {True: [], False: []}
        for _ in range(WALL_ROUNDS):
            for fast in (True, False):
                _host._FAST_LAUNCH = fast
                hosts[fast].append(host_us(direct))
        _host._FAST_LAUNCH = True
        on, off = (statistics.median(walls[f]) * 1e3 for f in (True, False))
        h_on, h_off = (statistics.median(hosts[f]) for f in (True, False))
        print(
            f"launch A/B {shape}: autograd fwd+bwd wall, cached {on:.1f} us, triton's {off:.1f} us; host of "
            f"the direct fwd+bwd (no autograd), cached {h_on:.1f} us, triton's {h_off:.1f} us; rounds "
            f"{walls} {hosts}",
            flush=True,
        )


def main_fla_kernels(args):
    """fla's GPU µs per kernel, forward (no grad) and forward+backward, at the shapes of --shapes."""
    for i in args.shapes.split(","):
        shape = SHAPES[int(i)]
        fns = callables(shape)
        for mode, idx in (("fwd", 0), ("fwd+bwd", 1)):
            times = kernel_times_us(fns["fla"][idx], all_names=True)
            cells = ", ".join(f"{k[:48]} {v:.1f}" for k, v in sorted(times.items(), key=lambda kv: -kv[1]))
            print(f"fla {shape} {mode}: total {sum(times.values()):.1f} | {cells}", flush=True)
        del fns


def main_sweep(args):
    """Per kernel and shape, the GPU time (µs) of every launch configuration of sweep_variants."""
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")]
    real = chunk._launch_config
    rows = []
    for shape in shapes:
        fns = callables(shape)
        for v, cfg in enumerate(sweep_variants(shape)):
            chunk._launch_config = lambda *a, c=cfg: c
            try:
                times = kernel_times_us(fns["ours"][1]) if not args.compile_only else fns["ours"][1]()
            except Exception as err:  # a configuration past the shared-memory limit fails to compile
                times = {"error": str(err)[:120]}
            finally:
                chunk._launch_config = real
            if args.compile_only:
                continue
            row = dict(shape=shape, variant=v, cfg=repr(cfg), times=times)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del fns
    for shape in shapes:
        print(f"shape {shape}")
        for kernel in ("decay", "fwd_h", "fwd_o", "bwd_dh", "bwd_dx", "bwd_dqk", "torch"):
            cells = []
            for r in rows:
                if r["shape"] == shape:
                    t = r["times"].get("torch" if kernel == "torch" else f"chunk_ssd_{kernel}_kernel")
                    cells.append("      -" if t is None else f"{t:7.1f}")
            print(f"  {kernel:8}" + "".join(cells))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="ours,fla,naive")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sweep", action="store_true", help="time launch configurations of ours")
    parser.add_argument("--shapes", default="0,1,2,3", help="indices into SHAPES")
    parser.add_argument("--compile-only", action="store_true", help="with --sweep/--tail: compile only")
    parser.add_argument("--tail", action="store_true", help="time the variants of tail_variants")
    parser.add_argument("--variants", default="", help="with --tail: only variants whose label starts so")
    parser.add_argument("--host", action="store_true", help="where the host time of a call goes")
    parser.add_argument("--launch-ab", action="store_true", help="ours with the cached launch on and off")
    parser.add_argument("--fla-kernels", action="store_true", help="fla's GPU time per kernel")
    parser.add_argument("--warm-only", action="store_true", help="compile (autotune) --impls at --shapes")
    parser.add_argument("--groups", type=int, default=1, help="B/C groups of ours (divides every H)")
    args = parser.parse_args()
    GROUPS = args.groups
    if args.sweep:
        main_sweep(args)
        raise SystemExit
    if args.tail:
        main_tail(args)
        raise SystemExit
    if "fla" in args.impls and not args.sweep:
        try:
            import fla.ops.common.chunk_o as fla_chunk_o
        except ImportError as err:
            raise SystemExit("fla-core is needed: pip install fla-core==0.6.0") from err
        fla_chunk_o.TRITON_ABOVE_3_7_1 = True  # fla 0.6.0 refuses its backward on triton 3.6 otherwise
    versions = f"torch {torch.__version__}, triton {triton.__version__}"
    if "fla" in args.impls:
        import fla

        versions += f", fla-core {fla.__version__}"
    print(f"device {torch.cuda.get_device_name()}, {versions}", flush=True)
    if args.warm_only:
        warm(args)
        raise SystemExit
    if args.host:
        main_host(args)
        raise SystemExit
    if args.fla_kernels:
        main_fla_kernels(args)
        raise SystemExit
    if args.launch_ab:
        main_launch_ab(args)
        raise SystemExit
    rows = main_bench(args)
    if args.json and rows:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
