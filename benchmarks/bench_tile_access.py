"""How a chunk-parallel kernel reaches memory, and what it costs: one kernel shaped like GDN's output
step (o = (q kᵀ ⊙ M) δ + q h per chunk and head) written four ways.

    python benchmarks/bench_tile_access.py [--shapes 0,1,2,3]

  desc_kernel   tensor descriptors made inside the kernel (tl.make_tensor_descriptor, TMA)
  desc_host     tensor descriptors made on the host (4-D, [B, T, H, D]) and passed in
  block_ptr     tl.make_block_ptr on the (batch, head) slice
  pointer       plain pointer arithmetic with 32-bit offsets inside the slice
GPU time per call: triton.testing.do_bench median (L2 flushed between calls). Needs a CUDA GPU.
"""

import argparse
import json

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

SHAPES = [(64, 256, 4, 32, 32), (64, 512, 4, 64, 64), (8, 2048, 8, 64, 64), (2, 8192, 16, 128, 128)]


@triton.jit
def _finish(b_q, b_k, b_h, b_d, C: tl.constexpr):
    o_c = tl.arange(0, C)
    b_P = tl.dot(b_q, tl.trans(b_k))
    b_P = tl.where(o_c[:, None] >= o_c[None, :], b_P, 0.0).to(b_q.dtype)
    return tl.dot(b_q, b_h) + tl.dot(b_P, b_d)


@triton.jit
def desc_kernel_kernel(q, k, hs, dlt, o, T, H, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    bos = i_b.to(tl.int64) * T * H + i_h
    d_q = tl.make_tensor_descriptor(q + bos * K, [T, K], [H * K, 1], [C, K])
    d_k = tl.make_tensor_descriptor(k + bos * K, [T, K], [H * K, 1], [C, K])
    d_d = tl.make_tensor_descriptor(dlt + bos * V, [T, V], [H * V, 1], [C, V])
    d_o = tl.make_tensor_descriptor(o + bos * V, [T, V], [H * V, 1], [C, V])
    d_h = tl.make_tensor_descriptor(hs + (i_bh.to(tl.int64) * NT + i_t) * (K * V), [K, V], [V, 1], [K, V])
    b_o = _finish(d_q.load([i_t * C, 0]), d_k.load([i_t * C, 0]), d_h.load([0, 0]), d_d.load([i_t * C, 0]), C)
    d_o.store([i_t * C, 0], b_o.to(o.dtype.element_ty))


@triton.jit
def desc_host_kernel(d_q, d_k, d_h, d_d, d_o, T, H, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    b_q = d_q.load([i_b, i_t * C, i_h, 0]).reshape(C, K)
    b_k = d_k.load([i_b, i_t * C, i_h, 0]).reshape(C, K)
    b_d = d_d.load([i_b, i_t * C, i_h, 0]).reshape(C, V)
    b_h = d_h.load([i_bh, i_t, 0, 0]).reshape(K, V)
    b_o = _finish(b_q, b_k, b_h, b_d, C)
    d_o.store([i_b, i_t * C, i_h, 0], b_o.to(d_o.dtype).reshape(1, C, 1, V))


@triton.jit
def _program_slice(T, H, C: tl.constexpr):
    """This program's chunk i_t and (batch, head) i_bh, the chunk count NT, and bos, the first row of
    its (batch, head) slice of a [B, T, H, ·] tensor."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    bos = (i_b * T * H + i_h).to(tl.int64)
    return i_t, i_bh, NT, bos


@triton.jit
def block_ptr_kernel(q, k, hs, dlt, o, T, H, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr):
    i_t, i_bh, NT, bos = _program_slice(T, H, C)
    p_q = tl.make_block_ptr(q + bos * K, (T, K), (H * K, 1), (i_t * C, 0), (C, K), (1, 0))
    p_k = tl.make_block_ptr(k + bos * K, (T, K), (H * K, 1), (i_t * C, 0), (C, K), (1, 0))
    p_d = tl.make_block_ptr(dlt + bos * V, (T, V), (H * V, 1), (i_t * C, 0), (C, V), (1, 0))
    p_o = tl.make_block_ptr(o + bos * V, (T, V), (H * V, 1), (i_t * C, 0), (C, V), (1, 0))
    hs = hs + (i_bh * NT + i_t).to(tl.int64) * K * V
    p_h = tl.make_block_ptr(hs, (K, V), (V, 1), (0, 0), (K, V), (1, 0))
    b_o = _finish(
        tl.load(p_q, boundary_check=(0, 1)),
        tl.load(p_k, boundary_check=(0, 1)),
        tl.load(p_h, boundary_check=(0, 1)),
        tl.load(p_d, boundary_check=(0, 1)),
        C,
    )
    tl.store(p_o, b_o.to(o.dtype.element_ty), boundary_check=(0, 1))


@triton.jit
def pointer_kernel(q, k, hs, dlt, o, T, H, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr):
    i_t, i_bh, NT, bos = _program_slice(T, H, C)
    q, k = q + bos * K, k + bos * K
    dlt, o = dlt + bos * V, o + bos * V
    hs = hs + (i_bh * NT + i_t).to(tl.int64) * K * V
    r = i_t * C + tl.arange(0, C)
    m = (r < T)[:, None]
    o_k, o_v = tl.arange(0, K), tl.arange(0, V)
    b_q = tl.load(q + r[:, None] * (H * K) + o_k[None, :], mask=m, other=0.0)
    b_k = tl.load(k + r[:, None] * (H * K) + o_k[None, :], mask=m, other=0.0)
    b_d = tl.load(dlt + r[:, None] * (H * V) + o_v[None, :], mask=m, other=0.0)
    b_h = tl.load(hs + o_k[:, None] * V + o_v[None, :])
    b_o = _finish(b_q, b_k, b_h, b_d, C)
    tl.store(o + r[:, None] * (H * V) + o_v[None, :], b_o.to(o.dtype.element_ty), mask=m)


def time_shape(B, T, H, K, V, C=64):
    NT = triton.cdiv(T, C)
    bf = torch.bfloat16
    q = torch.randn(B, T, H, K, device="cuda", dtype=bf)
    k = torch.randn(B, T, H, K, device="cuda", dtype=bf)
    d = torch.randn(B, T, H, V, device="cuda", dtype=bf)
    hs = torch.randn(B * H, NT, K, V, device="cuda", dtype=bf) * 0.1
    outs, res = {}, {}
    grid = (NT, B * H)
    calls = {
        "desc_kernel": lambda o: desc_kernel_kernel[grid](q, k, hs, d, o, T, H, K, V, C),
        "desc_host": lambda o: desc_host_kernel[grid](
            TensorDescriptor.from_tensor(q, [1, C, 1, K]),
            TensorDescriptor.from_tensor(k, [1, C, 1, K]),
            TensorDescriptor.from_tensor(hs, [1, 1, K, V]),
            TensorDescriptor.from_tensor(d, [1, C, 1, V]),
            TensorDescriptor.from_tensor(o, [1, C, 1, V]),
            T,
            H,
            K,
            V,
            C,
        ),  # fmt: skip
        "block_ptr": lambda o: block_ptr_kernel[grid](q, k, hs, d, o, T, H, K, V, C),
        "pointer": lambda o: pointer_kernel[grid](q, k, hs, d, o, T, H, K, V, C),
    }
    for name, call in calls.items():
        o = torch.empty_like(d)
        try:
            call(o)
            torch.cuda.synchronize()
            outs[name] = o
            ms = triton.testing.do_bench(lambda c=call, x=o: c(x), return_mode="median")
            res[name] = round(1e3 * ms, 1)
        except Exception as e:  # a faulting variant (block pointers are gone from triton 3.9) is reported
            res[name] = f"error: {str(e).splitlines()[0][:120]}"
    ref = next(iter(outs.values()))
    diffs = {n: ((x.float() - ref.float()).norm() / ref.float().norm()).item() for n, x in outs.items()}
    return res, diffs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="0,1,2,3")
    args = ap.parse_args()
    triton.set_allocator(lambda size, align, stream: torch.empty(size, device="cuda", dtype=torch.int8))
    for i_s in map(int, args.shapes.split(",")):
        res, diffs = time_shape(*SHAPES[i_s])
        print(json.dumps(dict(shape=SHAPES[i_s], us=res, rel_diff=diffs)), flush=True)


if __name__ == "__main__":
    main()
