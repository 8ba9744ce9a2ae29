"""GDN's per-chunk (I + A)⁻¹, four ways, inside a kernel shaped like the forward's prep step (load k, g, β;
form A; invert; store T in bf16 and w = T(β e^G k)), to choose the formulation for kernels/gated_delta_rule.

    python benchmarks/bench_gdn_inverse.py [--shapes 0,1,2,3]

  library       chunk.py's _unit_lower_inverse (16×16 diagonal blocks by doubling with batched 16×16
                products, then C×C merges)
  doubling      merges only, from 1×1 blocks: log2(C) rounds of two C×C products
  substitution  16×16 diagonal blocks row by row (forward substitution), then the C×C merges
  identity   no inverse (T = I): the cost of everything else
GPU time per call: triton.testing.do_bench median; the error of T against a float64 inverse (bf16
storage: ~3e-3 expected). Needs a CUDA GPU (or TRITON_INTERPRET=1 for a check at one small shape).
"""

import argparse
import json
import os
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels.gated_delta_rule.triton_fwd import (  # noqa: E402
    _decay_matrix,
    _ld,
    _load_gb,
    _merge_rounds,
    _unit_lower_inverse,
)

SHAPES = [(64, 256, 4, 32), (64, 512, 4, 64), (8, 2048, 8, 64), (2, 8192, 16, 128)]
MODES = ("library", "doubling", "substitution", "identity")


@triton.jit
def _inverse_substitution(b_A, C: tl.constexpr, PRECISION: tl.constexpr):
    """The 16×16 diagonal blocks row by row (row i = e_i − Σ_{j<i} A_ij row j), then the merges."""
    NB: tl.constexpr = C // 16
    o_b = tl.arange(0, NB)
    o_i = tl.arange(0, 16)
    m_blk = o_b[:, None, None, None] == o_b[None, None, :, None]
    b_D = tl.sum(tl.where(m_blk, tl.reshape(b_A, (NB, 16, NB, 16)), 0.0), 2)  # [NB, 16, 16]
    r_i = o_i[None, :, None]
    c_i = o_i[None, None, :]
    b_T = tl.where(r_i == c_i, 1.0, tl.zeros([NB, 16, 16], dtype=tl.float32))
    for i in tl.static_range(1, 16):
        b_a = tl.sum(tl.where(r_i == i, b_D, 0.0), 1)  # [NB, 16]
        b_row = tl.sum(b_a[:, :, None] * b_T, 1)
        b_T = tl.where(r_i == i, tl.where(c_i == i, 1.0, 0.0) - b_row[:, None, :], b_T)
    b_T = tl.reshape(tl.where(m_blk, tl.expand_dims(b_T, 2), 0.0), (C, C))
    return _merge_rounds(b_T, b_A, C, 4, PRECISION)


@triton.jit
def inverse_probe_kernel(
    d_k, g, beta, d_Ai, d_w, T, H, C: tl.constexpr, BK: tl.constexpr, MODE: tl.constexpr, EMU: tl.constexpr
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T * H + i_h
    o_c = tl.arange(0, C)
    m_t = i_t * C + o_c < T
    b_k = _ld(d_k, i_b, i_t * C, i_h, 0, C, BK)
    b_G, _, b_beta = _load_gb(g, beta, bos + i_t * C * H, m_t, H, C)
    if EMU:  # the interpreter cannot multiply bf16 tiles
        b_k = b_k.to(tl.float32)
    b_A = tl.dot(b_k, tl.trans(b_k)) * b_beta[:, None] * _decay_matrix(b_G, C, True)
    if MODE == "library":
        b_T = _unit_lower_inverse(b_A, C, "tf32")
    elif MODE == "doubling":
        b_T = tl.where(o_c[:, None] == o_c[None, :], 1.0, 0.0)
        b_T = b_T - tl.where(
            ((o_c[:, None] >> 1) == (o_c[None, :] >> 1)) & (o_c[:, None] > o_c[None, :]), b_A, 0.0
        )
        b_T = _merge_rounds(b_T, b_A, C, 1, "tf32")
    elif MODE == "substitution":
        b_T = _inverse_substitution(b_A, C, "tf32")
    else:
        b_T = tl.where(o_c[:, None] == o_c[None, :], 1.0, 0.0) + b_A * 0.0
    d_Ai.store([i_bh, i_t, 0, 0], b_T.to(tl.bfloat16).reshape(1, 1, C, C))
    b_x = (b_k.to(tl.float32) * (b_beta * tl.exp(b_G))[:, None]).to(b_k.dtype)
    b_w = tl.dot(b_T.to(b_k.dtype), b_x)
    d_w.store([i_b, i_t * C, i_h, 0], b_w.to(tl.bfloat16).reshape(1, C, 1, BK))


def run(B, T, H, K, mode, dev):
    C = 64
    NT = triton.cdiv(T, C)
    gen = torch.Generator(device=dev).manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev, generator=gen), dim=-1).bfloat16()
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, H, device=dev, generator=gen) + 3.0)
    beta = (2.0 * torch.rand(B, T, H, device=dev, generator=gen)).bfloat16()
    Ai = torch.empty(B * H, NT, C, C, device=dev, dtype=torch.bfloat16)
    w = torch.empty_like(k)
    BK = max(64, triton.next_power_of_2(K))

    def call():
        inverse_probe_kernel[(NT, B * H)](
            TensorDescriptor.from_tensor(k, [1, C, 1, BK]), g, beta,
            TensorDescriptor.from_tensor(Ai, [1, 1, C, C]), TensorDescriptor.from_tensor(w, [1, C, 1, BK]),
            T, H, C, BK, mode, dev == "cpu", num_warps=4,
        )  # fmt: skip

    call()
    # float64 check on the first chunk of the first (batch, head)
    kc = k[0, :C, 0].double()
    G = g[0, :C, 0].double().cumsum(0)
    A = (kc @ kc.T) * beta[0, :C, 0].double()[:, None] * torch.exp(G[:, None] - G[None, :]).tril(-1)
    ref = torch.linalg.inv(torch.eye(C, dtype=torch.float64, device=dev) + A)
    err = ((Ai[0, 0].double() - ref).norm() / ref.norm()).item()
    us = 1e3 * triton.testing.do_bench(call, return_mode="median") if dev == "cuda" else float("nan")
    return round(us, 1), err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="0,1,2,3")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for i_s in map(int, args.shapes.split(",")):
        shape = SHAPES[i_s] if dev == "cuda" else (1, 64, 1, 32)
        res = {}
        for mode in MODES:
            try:
                res[mode] = run(*shape, mode, dev)
            except Exception as e:  # a failing formulation is reported, the others still run
                res[mode] = f"error: {str(e).splitlines()[0][:160]}"
        print(json.dumps(dict(shape=shape, us_and_rel_err=res)), flush=True)


if __name__ == "__main__":
    main()
