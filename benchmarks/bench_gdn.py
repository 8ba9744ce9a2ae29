"""Gated DeltaNet: our Triton kernels vs fla-core's chunk_gated_delta_rule vs a naive PyTorch loop.

    python benchmarks/bench_gdn.py [--out DIR] [--shapes 0,1,2,3] [--variants 0,3] [--no-naive]

bf16 q, k, v, β; fp32 g; L2 norm of q, k inside the op (as the testbed's GDN layer uses it); no
initial state. Per shape and mode (forward in training mode; forward + backward):
  gpu_us    sum of the device time of every kernel of one call (torch profiler, mean of N calls)
  launches  kernels (and memsets/copies) per call
  wall_us   triton.testing.do_bench median per call: host overhead shows up here
and the floor: max(FLOPs / measured bf16 matmul rate, bytes / measured copy bandwidth).
Needs a CUDA GPU; fla is optional (its columns are left empty without it).
"""

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import torch
import triton
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import kernels.gated_delta_rule.chunk as gdn_chunk  # noqa: E402
from kernels.gated_delta_rule import chunk_gated_delta_rule, naive_recurrent_gated_delta_rule  # noqa: E402

# Launch-config variants of ours: chunk size C and, per kernel of LaunchConfig, overrides of its
# KernelConfig fields. Each kernel's time is read separately from the profile, so one variant tries
# settings of several kernels at once.
KERNELS = ("prep", "fwd_h", "fwd_o", "dd_local", "bwd_dh", "bwd_wy", "bwd_qk")
VARIANTS = [
    dict(C=64, bwd_wy=dict(BV=32), bwd_qk=dict(BV=32)),
    dict(C=64, bwd_qk=dict(num_warps=8)),
    dict(C=64, bwd_wy=dict(num_warps=8), bwd_qk=dict(num_warps=8)),
    dict(C=64, **{k: dict(BK=32) for k in KERNELS}),  # narrow key tiles (K = 32 only)
    dict(C=64, **{k: dict(BV=32) for k in ("prep", "fwd_h", "fwd_o", "dd_local", "bwd_dh")}),  # narrow values
    dict(C=64, wide=False),  # no tile widened: 16- and 32-wide bf16 tiles where K, V are 16 or 32
]
SHAPES = [(64, 256, 4, 32, 32), (64, 512, 4, 64, 64), (8, 2048, 8, 64, 64), (2, 8192, 16, 128, 128)]


def load_fla():
    try:
        import fla.ops.common.chunk_o as fla_chunk_o
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_gdn
    except ImportError:
        return None
    # fla 0.6.0 refuses its GDN backward on Hopper with triton < 3.7.1 (its issue #640); lift the
    # guard to time it. Correctness is judged against our float64 reference, never against fla.
    fla_chunk_o.TRITON_ABOVE_3_7_1 = True
    return fla_gdn


def make_inputs(B, T, H, K, V, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    kw = dict(device="cuda", generator=gen)
    bf = torch.bfloat16
    return dict(
        q=torch.randn(B, T, H, K, **kw).to(bf),
        k=torch.randn(B, T, H, K, **kw).to(bf),
        v=torch.randn(B, T, H, V, **kw).to(bf),
        g=torch.nn.functional.logsigmoid(torch.randn(B, T, H, **kw) + 3.0),
        beta=(2.0 * torch.rand(B, T, H, **kw)).to(bf),
    )


def make_call(fn, inputs, backward):
    leaves = {n: x.clone().requires_grad_(True) for n, x in inputs.items()}
    do = torch.randn_like(inputs["v"])

    def call():
        if backward:
            for x in leaves.values():
                x.grad = None
        o, _ = fn(**leaves)
        if backward:
            o.backward(do)

    return call


def profile_gpu(call, iters):
    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            call()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    per_kernel = {}
    for e in events:
        per_kernel[e.name] = per_kernel.get(e.name, 0.0) + e.time_range.elapsed_us() / iters
    return sum(per_kernel.values()), len(events) / iters, per_kernel


def wall_us(call, slow):
    if slow:  # the naive loop: a few host-timed calls
        times = []
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            call()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return 1e6 * sorted(times)[1]
    return 1e3 * triton.testing.do_bench(call, warmup=50, rep=300, return_mode="median")


def ceilings():
    x = torch.empty(2**28, device="cuda")
    y = torch.empty_like(x)
    bw = 2 * x.numel() * 4 / (1e-3 * triton.testing.do_bench(lambda: y.copy_(x), return_mode="median"))
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    flops = 2 * 8192**3 / (1e-3 * triton.testing.do_bench(lambda: a @ a, return_mode="median"))
    return bw, flops


def floor_us(B, T, H, K, V, backward, bw, rate, C=64):
    # Forward FLOPs per token and head of the chunked algorithm (causal halves of the C×C products,
    # C²/3 for the triangular inverse); the backward is counted as twice the forward.
    fwd_flops = 4 * C * K + 3 * C * V + 6 * K * V + C * C / 3
    flops = B * T * H * fwd_flops * (3 if backward else 1)
    fwd_bytes = 2 * K * 2 + 2 * V + 4 + 2 + 2 * V  # q, k, v, g, β in; o out
    bwd_bytes = (2 * K * 2 + 2 * V + 4 + 2 + 2 * V) + (2 * K * 2 + 2 * V + 4 + 2)  # + do in; grads out
    nbytes = B * T * H * (fwd_bytes + (bwd_bytes if backward else 0))
    return 1e6 * max(flops / rate, nbytes / bw), 1e6 * flops / rate, 1e6 * nbytes / bw


def time_variant(i_s, i_v):
    """fwd+bwd GPU time of ours with VARIANTS[i_v] at SHAPES[i_s], per kernel, and the largest relative
    difference of o and dq, dk, dv from the default configuration's (a wrong config shows up there)."""
    inputs = make_inputs(*SHAPES[i_s])
    over = dict(VARIANTS[i_v])
    C = over.pop("C")
    base = gdn_chunk._launch_config
    wide = over.pop("wide", True)

    def cfg(BH, K, V, half, BT):
        c = base.__wrapped__(BH, K, V, half, BT, wide)
        return dataclasses.replace(c, **{k: dataclasses.replace(getattr(c, k), **o) for k, o in over.items()})

    def outputs(chunk_size):
        leaves = {n: x.clone().requires_grad_(True) for n, x in inputs.items()}
        o, _ = chunk_gated_delta_rule(**leaves, use_qk_l2norm_in_kernel=True, chunk_size=chunk_size)
        o.backward(torch.ones_like(o))
        return [o.float()] + [leaves[n].grad.float() for n in ("q", "k", "v")]

    reference = outputs(None)
    gdn_chunk._launch_config = cfg
    try:
        diff = max(((a - b).norm() / b.norm()).item() for a, b in zip(outputs(C), reference))
        gpu, _, per_kernel = profile_gpu(
            make_call(lambda **kw: chunk_gated_delta_rule(**kw, use_qk_l2norm_in_kernel=True, chunk_size=C),
                      inputs, True),
            20,
        )  # fmt: skip
    finally:
        gdn_chunk._launch_config = base
    short = {n.replace("chunk_gated_delta_rule_", "")[:14]: round(t, 1) for n, t in per_kernel.items()}
    return dict(gpu_us=round(gpu, 1), rel_diff_vs_default=diff, kernels=short)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--shapes", default="0,1,2,3")
    ap.add_argument("--variants", default="", help="shape indices at which to time config variants of ours")
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--no-fla", action="store_true")
    ap.add_argument("--warm-only", action="store_true", help="compile and autotune (fills the disk caches)")
    ap.add_argument("--one-variant", default="", help="SHAPE,VARIANT: time one variant, print one JSON line")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.one_variant:
        print(json.dumps(time_variant(*map(int, args.one_variant.split(",")))), flush=True)
        return
    fla_gdn = None if args.no_fla else load_fla()
    if args.warm_only:
        for i_s in map(int, args.shapes.split(",")):
            inputs = make_inputs(*SHAPES[i_s])
            for backward in (False, True):
                make_call(
                    lambda **kw: chunk_gated_delta_rule(**kw, use_qk_l2norm_in_kernel=True), inputs, backward
                )()
                if fla_gdn is not None:
                    make_call(lambda **kw: fla_gdn(**kw, use_qk_l2norm_in_kernel=True), inputs, backward)()
            torch.cuda.synchronize()
            print("warm", SHAPES[i_s], flush=True)
        return
    bw, rate = ceilings()
    info = dict(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        copy_GBps=bw / 1e9,
        bf16_matmul_TFLOPs=rate / 1e12,
    )
    print(json.dumps(info), flush=True)

    impls = {
        "ours": lambda **kw: chunk_gated_delta_rule(**kw, use_qk_l2norm_in_kernel=True),
        "naive": lambda **kw: naive_recurrent_gated_delta_rule(**kw, use_qk_l2norm_in_kernel=True),
    }
    if fla_gdn is not None:
        impls["fla"] = lambda **kw: fla_gdn(**kw, use_qk_l2norm_in_kernel=True)
    rows, breakdown = [], {}
    for i_s in map(int, args.shapes.split(",")):
        B, T, H, K, V = SHAPES[i_s]
        inputs = make_inputs(B, T, H, K, V)
        for backward in (False, True):
            mode = "fwd+bwd" if backward else "fwd"
            fl, fl_flops, fl_bytes = floor_us(B, T, H, K, V, backward, bw, rate)
            for name, fn in impls.items():
                if name == "naive" and (args.no_naive or (backward and B * H * K * V * T * 12 > 20e9)):
                    continue
                t0 = time.time()
                call = make_call(fn, inputs, backward)
                gpu, launches, per_kernel = profile_gpu(call, 1 if name == "naive" else 20)
                wall = wall_us(call, slow=name == "naive")
                row = dict(
                    shape=SHAPES[i_s],
                    mode=mode,
                    impl=name,
                    gpu_us=gpu,
                    wall_us=wall,
                    launches=launches,
                    floor_us=fl,
                    floor_flops_us=fl_flops,
                    floor_bytes_us=fl_bytes,
                )
                rows.append(row)
                if name != "naive":
                    breakdown[f"{SHAPES[i_s]} {mode} {name}"] = per_kernel
                if name == "ours":
                    print(
                        {
                            n.replace("chunk_gated_delta_rule_", "")[:12]: round(t, 1)
                            for n, t in per_kernel.items()
                        }
                    )
                print(json.dumps(row), f"({time.time() - t0:.1f}s)", flush=True)
        del inputs
        torch.cuda.empty_cache()
    if args.variants:  # launch-config variants of ours, fwd+bwd, per-kernel times
        for i_s in map(int, args.variants.split(",")):
            for i_v, variant in enumerate(VARIANTS):
                # One process per variant: a config that faults poisons its CUDA context, not ours.
                key = f"{SHAPES[i_s]} fwd+bwd ours {variant}"
                cmd = [sys.executable, os.path.abspath(__file__), "--one-variant", f"{i_s},{i_v}"]
                try:
                    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
                except subprocess.TimeoutExpired:
                    print(json.dumps(dict(variant=key, error="timed out after 180 s")), flush=True)
                    continue
                try:
                    res = json.loads(done.stdout.strip().splitlines()[-1])
                except (json.JSONDecodeError, IndexError):
                    res = dict(error=" | ".join(done.stderr.strip().splitlines()[-2:])[:300])
                if "kernels" in res:
                    breakdown[key] = res["kernels"]
                print(json.dumps(dict(variant=key) | res), flush=True)
    with open(os.path.join(args.out, "bench_gdn.json"), "w") as f:
        json.dump(dict(info=info, rows=rows, breakdown=breakdown), f, indent=1)

    print(
        f"\n{info['device']}  torch {info['torch']}  triton {info['triton']}  "
        f"copy {info['copy_GBps']:.0f} GB/s  bf16 mm {info['bf16_matmul_TFLOPs']:.0f} TFLOP/s"
    )
    print(
        f"{'shape (B,T,H,K,V)':24} {'mode':8} {'impl':6} {'gpu_us':>9} {'wall_us':>9} {'launch':>7} "
        f"{'gpu/fla':>8} {'wall/fla':>8} {'floor_us':>9}"
    )
    fla_rows = {(str(r["shape"]), r["mode"]): r for r in rows if r["impl"] == "fla"}
    for r in rows:
        f = fla_rows.get((str(r["shape"]), r["mode"]))
        rg = f"{r['gpu_us'] / f['gpu_us']:.2f}" if f else "-"
        rw = f"{r['wall_us'] / f['wall_us']:.2f}" if f else "-"
        print(
            f"{str(tuple(r['shape'])):24} {r['mode']:8} {r['impl']:6} {r['gpu_us']:9.1f} {r['wall_us']:9.1f} "
            f"{r['launches']:7.0f} {rg:>8} {rw:>8} {r['floor_us']:9.1f}"
        )
    assert all(math.isfinite(r["gpu_us"]) for r in rows)


if __name__ == "__main__":
    main()
