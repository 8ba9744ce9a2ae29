"""Benchmark chunk_ssd (ours) against fla-core's chunk_simple_gla and the naive PyTorch loop (GPU).

    python benchmarks/bench_ssd.py [--explore] [--json PATH]

For each shape (B, T, H, P=V, N=K), bf16 inputs, n_groups = 1 for ours (Mamba2's default; fla has
no grouping, so it gets per-head q = C, k = dt·B, v = x, g = dt·A prepared outside the timed call;
ours also applies D): GPU kernel time per call (profiler sum of device activity), launches per call,
wall time per call (triton.testing.do_bench median), the ratio to fla, and the bytes / FLOPs floor of
the chunked algorithm (H100 SXM: 3.35 TB/s, 989 TFLOP/s bf16 dense).
--explore instead compares launch variants of ours (dot precision, pipelining stages, V split) and
their bf16 accuracy against the float64 recurrence.
"""

import argparse
import json
import time

import torch
import triton

import kernels.ssd.chunk as ssd_chunk
from kernels.ssd import chunk_ssd, naive_recurrent_ssd

SHAPES = [(64, 256, 4, 32, 32), (64, 512, 4, 64, 64), (8, 2048, 8, 64, 64), (2, 8192, 16, 128, 128)]
NAIVE_MAX_T = 2048
HBM_BYTES_PER_S = 3.35e12
PEAK_FLOPS = 989e12


def make(shape, requires_grad, seed=0):
    n_batch, seq_len, num_heads, dim_v, dim_k = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(device="cuda", generator=g)
    x = torch.randn(n_batch, seq_len, num_heads, dim_v, **kw).bfloat16()
    dt = torch.nn.functional.softplus(torch.randn(n_batch, seq_len, num_heads, **kw) - 2.0).bfloat16()
    A = -torch.exp(torch.rand(num_heads, **kw) * 2.0)
    B = (torch.randn(n_batch, seq_len, 1, dim_k, **kw) / dim_k**0.5).bfloat16()
    C = (torch.randn(n_batch, seq_len, 1, dim_k, **kw) / dim_k**0.5).bfloat16()
    D = torch.randn(num_heads, **kw)
    ours = dict(x=x, dt=dt, A=A, B=B, C=C, D=D)
    fla = dict(
        q=C.expand(-1, -1, num_heads, -1).contiguous(),
        k=(B.float() * dt.float()[..., None]).bfloat16(),
        v=x.clone(),
        g=dt.float() * A,
    )
    for t in [*ours.values(), *fla.values()]:
        t.requires_grad_(requires_grad)
    return ours, fla


def gpu_time_and_launches(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    evs = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(e.time_range.end - e.time_range.start for e in evs)
    return total_us / reps / 1e3, len(evs) / reps  # ms, launches


def wall_ms(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


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
    from fla.ops.simple_gla import chunk_simple_gla

    y, _ = chunk_ssd(**ours)
    dy = torch.randn_like(y)
    ours_leaves = tuple(ours.values())
    fla_leaves = tuple(fla_in.values())

    def ours_fwd():
        with torch.no_grad():
            return chunk_ssd(**ours)

    def ours_fwd_bwd():
        y, _ = chunk_ssd(**ours)
        return torch.autograd.grad(y, ours_leaves, dy)

    def fla_fwd():
        with torch.no_grad():
            return chunk_simple_gla(**fla_in, scale=1.0)

    def fla_fwd_bwd():
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
    rows = []
    for shape in SHAPES:
        fns = callables(shape)
        for mode, idx in (("fwd", 0), ("fwd+bwd", 1)):
            row = dict(shape=shape, mode=mode, floor_ms=floor_ms(shape, idx == 1))
            for name in ("ours", "fla"):
                gpu, launches = gpu_time_and_launches(fns[name][idx])
                row[name] = dict(gpu_ms=gpu, launches=launches, wall_ms=wall_ms(fns[name][idx]))
            scale = max(1.0, shape[1] / NAIVE_MAX_T)
            row["naive"] = dict(wall_ms=timed_once_ms(fns["naive"][idx]) * scale, scaled_by=scale)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del fns
        torch.cuda.empty_cache()
    print()
    hdr = (f"{'shape (B,T,H,P,N)':24} {'mode':8} {'ours gpu':>9} {'fla gpu':>9} {'ratio':>6} "
           f"{'ours wall':>9} {'fla wall':>9} {'ratio':>6} {'launch o/f':>10} {'naive':>9} {'×naive':>7} "
           f"{'floor':>7}")
    print(hdr)
    for r in rows:
        o, f = r["ours"], r["fla"]
        print(f"{str(tuple(r['shape'])):24} {r['mode']:8} {o['gpu_ms']:9.4f} {f['gpu_ms']:9.4f} "
              f"{o['gpu_ms'] / f['gpu_ms']:6.2f} {o['wall_ms']:9.4f} {f['wall_ms']:9.4f} "
              f"{o['wall_ms'] / f['wall_ms']:6.2f} {o['launches']:4.0f}/{f['launches']:<5.0f} "
              f"{r['naive']['wall_ms']:9.1f} {r['naive']['wall_ms'] / o['wall_ms']:7.0f} "
              f"{r['floor_ms']:7.4f}")
    return rows


def accuracy(shape, neg):
    """bf16 relative RMS of y, final state and gradients against the float64 recurrence."""
    ours, _ = make(shape, requires_grad=True, seed=1)
    ref_in = {k: v.detach().double().requires_grad_(True) for k, v in ours.items()}
    y, s = chunk_ssd(**ours, output_final_state=True, allow_neg_eigval=neg)
    y0, s0 = naive_recurrent_ssd(**ref_in, output_final_state=True, allow_neg_eigval=neg)
    dy = torch.randn_like(y)
    ds = torch.randn_like(s)
    g = torch.autograd.grad((y.float() * dy.float()).sum() + (s * ds).sum(), tuple(ours.values()))
    g0 = torch.autograd.grad((y0 * dy.double()).sum() + (s0 * ds.double()).sum(), tuple(ref_in.values()))

    def rel(a, b):
        return ((a.double() - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()

    out = {"y": rel(y, y0), "state": rel(s, s0)}
    out |= {f"d{k}": rel(a, b) for k, a, b in zip(ours, g, g0)}
    return out


def main_explore(args):
    base_config = ssd_chunk._launch_config
    variants = [
        dict(name="tf32 ns2", BF16_DOTS="tf32", NUM_STAGES=2, MIN_PROGRAMS=128),
        dict(name="bf16 ns2", BF16_DOTS="bf16", NUM_STAGES=2, MIN_PROGRAMS=128),
        dict(name="tf32 ns3", BF16_DOTS="tf32", NUM_STAGES=3, MIN_PROGRAMS=128),
        dict(name="tf32 ns2 mp256", BF16_DOTS="tf32", NUM_STAGES=2, MIN_PROGRAMS=256),
        dict(name="tf32 ns2 mp64", BF16_DOTS="tf32", NUM_STAGES=2, MIN_PROGRAMS=64),
        dict(name="bf16 ns3 mp256", BF16_DOTS="bf16", NUM_STAGES=3, MIN_PROGRAMS=256),
    ]
    for v in variants:
        for key in ("BF16_DOTS", "NUM_STAGES", "MIN_PROGRAMS"):
            setattr(ssd_chunk, key, v[key])
        warps = v.get("warps")
        ssd_chunk._launch_config = (base_config if warps is None else
                                    (lambda *a, w=warps: (*base_config(*a)[:3], w)))
        for shape in SHAPES:
            fns = callables(shape)
            t_f, _ = gpu_time_and_launches(fns["ours"][0], reps=5)
            t_fb, _ = gpu_time_and_launches(fns["ours"][1], reps=5)
            print(f"{v['name']:16} {str(shape):26} fwd {t_f:8.4f} ms  fwd+bwd {t_fb:8.4f} ms", flush=True)
        if v["name"] in ("tf32 ns2", "bf16 ns2"):
            for neg in (False, True):
                acc = accuracy((2, 512, 4, 64, 64), neg)
                errs = " ".join(f"{k} {e:.1e}" for k, e in acc.items())
                print(f"{v['name']:16} accuracy neg={neg}: {errs}")
    ssd_chunk._launch_config = base_config


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explore", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        import fla.ops.common.chunk_o as fla_chunk_o

        fla_chunk_o.TRITON_ABOVE_3_7_1 = True  # fla 0.6.0 refuses its backward on triton 3.6 otherwise
    except ImportError as err:
        raise SystemExit("fla-core is needed: pip install fla-core==0.6.0") from err
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    rows = main_explore(args) if args.explore else main_bench(args)
    if args.json and rows:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
