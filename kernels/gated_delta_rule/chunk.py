"""Gated DeltaNet chunked kernels: Triton forward and backward, the autograd.Function, the public op.

Seven launches per training step (README.md has the algebra):
  fwd_prep      (parallel over chunks)     T = (I + A)⁻¹, w = T(βe^G k), u = T(βv)
  fwd_h         (sequential over chunks)   δ = u − w h and the state h; saves h per chunk and δ
  fwd_o         (parallel)                 o = scale((q e^G) h + (q kᵀ ⊙ Γ) δ)
  bwd_dd_local  (parallel)                 scale (q kᵀ ⊙ Γ)ᵀ do
  bwd_dh        (sequential, reversed)     dδ, dh at each chunk end, dh0
  bwd_wy        (parallel over chunks)     dv, dβ and the A-path parts of dk, dg (through dY = Tᵀ dδ)
  bwd_qk        (parallel over chunks)     dq, dk, dg from h, δ, dh and bwd_wy's parts
The state is carried and accumulated in fp32; dot operands and saved intermediates are in the inputs'
precision (bf16 under autocast, fp32 for fp32 inputs).
"""

import functools
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.gated_delta_rule.naive import check_inputs, naive_chunk_gated_delta_rule

BACKENDS = ("triton", "torch")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _round(x, DT: tl.constexpr, EMU: tl.constexpr):
    """x in dtype DT, rounded to nearest even as the GPU's casts do (the interpreter's truncate, a
    bias that would pile up in the saved bf16 intermediates)."""
    if EMU:
        if DT == tl.bfloat16:
            b = x.to(tl.float32).to(tl.uint32, bitcast=True)
            b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
            x = b.to(tl.float32, bitcast=True)
    return x.to(DT)


@triton.jit
def _c(x, DT: tl.constexpr, EMU: tl.constexpr):
    """x rounded to the dot operand dtype DT. The interpreter cannot multiply bf16 tiles, so with EMU
    the rounded values are handed to the dot in fp32: the same numbers the GPU multiplies."""
    y = _round(x, DT, EMU)
    if EMU:
        y = y.to(tl.float32)
    return y


@triton.jit
def _l2norm(b_x, USE_L2NORM: tl.constexpr):
    """Rows of a [C, BK] tile in fp32, optionally L2-normalised; also 1/norm per row."""
    b_x = b_x.to(tl.float32)
    if USE_L2NORM:
        b_r = tl.rsqrt(tl.sum(b_x * b_x, 1) + 1e-6)
        b_x = b_x * b_r[:, None]
    else:
        b_r = tl.full([b_x.shape[0]], 1.0, tl.float32)
    return b_x, b_r


@triton.jit
def _load_G(g, r0, m_t, H, C: tl.constexpr):
    """Cumulative log decay G of one chunk (r0: its first row) and its last value (padded steps: g = 0)."""
    b_G = tl.cumsum(tl.load(g + r0 + tl.arange(0, C) * H, mask=m_t, other=0.0).to(tl.float32), 0)
    b_Gl = tl.sum(tl.where(tl.arange(0, C) == C - 1, b_G, 0.0), 0)
    return b_G, b_Gl


@triton.jit
def _load_gb(g, beta, r0, m_t, H, C: tl.constexpr):
    """G, its last value, and β (padded steps: β = 0)."""
    b_G, b_Gl = _load_G(g, r0, m_t, H, C)
    b_beta = tl.load(beta + r0 + tl.arange(0, C) * H, mask=m_t, other=0.0).to(tl.float32)
    return b_G, b_Gl, b_beta


@triton.jit
def _decay_matrix(b_G, C: tl.constexpr, STRICT: tl.constexpr):
    """Γ_ij = exp(G_i − G_j) on the causal (or strictly causal) part, 0 above; never overflows."""
    o_c = tl.arange(0, C)
    if STRICT:
        m = o_c[:, None] > o_c[None, :]
    else:
        m = o_c[:, None] >= o_c[None, :]
    return tl.exp(tl.where(m, b_G[:, None] - b_G[None, :], float("-inf")))


# Memory access goes through tensor descriptors made on the host (TMA on Hopper): 4-D over
# [B, T, H, D] with blocks [1, C, 1, BD], so a partial last chunk reads zeros and its stores are clipped,
# and no per-element address lives in registers. Descriptors made inside the kernel cost each program
# a global-memory write and fence before its first load (≈25 % of a memory-bound chunk kernel on the
# H100, benchmarks/bench_tile_access.py); pointer tiles made every kernel spill.


@triton.jit
def _ld(d, i_b, r0, i_h, c0, R: tl.constexpr, W: tl.constexpr):
    """The [R, W] tile at time r0, column c0 of the (batch i_b, head i_h) slice of a [B, T, H, D] tensor."""
    return d.load([i_b, r0, i_h, c0]).reshape(R, W)


@triton.jit
def _st(d, i_b, r0, i_h, c0, x, DT: tl.constexpr, EMU: tl.constexpr):
    d.store([i_b, r0, i_h, c0], _round(x, DT, EMU).reshape(1, x.shape[0], 1, x.shape[1]))


@triton.jit
def _ld_s(d, i_bh, i_t, c0, R: tl.constexpr, W: tl.constexpr):
    """The [R, W] tile of chunk i_t of a [BH, NT, R, D] stack (states, T per chunk)."""
    return d.load([i_bh, i_t, 0, c0]).reshape(R, W)


@triton.jit
def _st_s(d, i_bh, i_t, c0, x, DT: tl.constexpr, EMU: tl.constexpr):
    d.store([i_bh, i_t, 0, c0], _round(x, DT, EMU).reshape(1, 1, x.shape[0], x.shape[1]))


@triton.jit
def _merge_rounds(b_T, b_A, C: tl.constexpr, LV0: tl.constexpr, PRECISION: tl.constexpr):
    """Given T with the inverses of the 2^LV0-sized diagonal blocks of I + A, merge sibling blocks
    until T = (I + A)⁻¹: [[X, 0], [L, Y]]⁻¹ = [[X⁻¹, 0], [−Y⁻¹ L X⁻¹, Y⁻¹]], i.e. T ← T − T L T with L
    the part of A coupling the siblings."""
    o_c = tl.arange(0, C)
    for lv in tl.static_range(LV0, C.bit_length() - 1):
        m_l = (
            ((o_c[:, None] >> (lv + 1)) == (o_c[None, :] >> (lv + 1)))
            & (((o_c[:, None] >> lv) & 1) == 1)
            & (((o_c[None, :] >> lv) & 1) == 0)
        )
        b_TL = tl.dot(b_T, tl.where(m_l, b_A, 0.0), input_precision=PRECISION)
        b_T = b_T - tl.dot(b_TL, b_T, input_precision=PRECISION)
    return b_T


@triton.jit
def _unit_lower_inverse(b_A, C: tl.constexpr, PRECISION: tl.constexpr):
    """(I + A)⁻¹ for a strictly lower [C, C] fp32 tile, by doubling: the 16×16 diagonal blocks all at
    once with batched 16×16 products (pairs, then 4, 8, 16), then sibling blocks of the whole tile
    (two rounds of two C×C products for C = 64). Exact algebra with no growing powers of A, so it
    stays stable for β up to 2. This order took half the time of doubling on the whole tile, and a
    third of row-by-row substitution in the blocks (H100, benchmarks/bench_gdn_inverse.py)."""
    NB: tl.constexpr = C // 16
    o_b = tl.arange(0, NB)
    o_i = tl.arange(0, 16)
    m_blk = o_b[:, None, None, None] == o_b[None, None, :, None]  # [NB, 1, NB, 1]
    b_D = tl.sum(tl.where(m_blk, tl.reshape(b_A, (NB, 16, NB, 16)), 0.0), 2)  # [NB, 16, 16] diagonal blocks
    r_i = o_i[None, :, None]
    c_i = o_i[None, None, :]
    m_0 = ((r_i >> 1) == (c_i >> 1)) & ((r_i & 1) == 1) & ((c_i & 1) == 0)
    b_T = tl.where(r_i == c_i, 1.0, 0.0) - tl.where(m_0, b_D, 0.0)  # 2×2 blocks: [[1, 0], [−a, 1]]
    for lv in tl.static_range(1, 4):
        m_l = ((r_i >> (lv + 1)) == (c_i >> (lv + 1))) & (((r_i >> lv) & 1) == 1) & (((c_i >> lv) & 1) == 0)
        b_TL = tl.dot(b_T, tl.where(m_l, b_D, 0.0), input_precision=PRECISION)
        b_T = b_T - tl.dot(b_TL, b_T, input_precision=PRECISION)
    b_T = tl.reshape(tl.where(m_blk, tl.expand_dims(b_T, 2), 0.0), (C, C))  # block diagonal
    return _merge_rounds(b_T, b_A, C, 4, PRECISION)


@triton.jit
def chunk_gated_delta_rule_fwd_prep_kernel(
    d_k,
    d_v,
    g,
    beta,
    d_Ai,
    d_w,
    d_u,
    d_kt,
    gl,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_w.dtype  # operand dtype of every dot: the inputs' (bf16) or fp32
    NT = tl.cdiv(T, C)
    bos = i_b.to(tl.int64) * T * H + i_h  # row of (b, t = 0, h) in [B·T·H]
    m_t = i_t * C + tl.arange(0, C) < T
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)
    b_G, b_Gl, b_beta = _load_gb(g, beta, bos + i_t * C * H, m_t, H, C)
    # What the sweeps need besides w and u, made here so that their sequential loops only load:
    # k̃ = e^{G_C − G} k and G_C per chunk.
    _st(d_kt, i_b, i_t * C, i_h, 0, b_k * tl.exp(b_Gl - b_G)[:, None], DT, EMU)
    tl.store(gl + i_bh.to(tl.int64) * NT + i_t, b_Gl)
    b_kc = _c(b_k, DT, EMU)
    b_A = tl.dot(b_kc, tl.trans(b_kc), input_precision=PRECISION) * b_beta[:, None]
    b_A = b_A * _decay_matrix(b_G, C, True)  # [C, C] strictly lower
    b_T = _unit_lower_inverse(b_A, C, PRECISION)
    _st_s(d_Ai, i_bh, i_t, 0, b_T, DT, EMU)  # the backward multiplies by it in DT anyway
    b_Tc = _c(b_T, DT, EMU)
    b_w = tl.dot(b_Tc, _c(b_k * (b_beta * tl.exp(b_G))[:, None], DT, EMU), input_precision=PRECISION)
    _st(d_w, i_b, i_t * C, i_h, 0, b_w, DT, EMU)
    for i_v in range(tl.cdiv(V, BV)):
        b_v = _ld(d_v, i_b, i_t * C, i_h, i_v * BV, C, BV).to(tl.float32)
        b_u = tl.dot(b_Tc, _c(b_v * b_beta[:, None], DT, EMU), input_precision=PRECISION)
        _st(d_u, i_b, i_t * C, i_h, i_v * BV, b_u, DT, EMU)


@triton.jit
def chunk_gated_delta_rule_fwd_h_kernel(
    d_kt,
    d_w,
    d_u,
    gl,
    d_h0,
    d_hs,
    d_dlt,
    d_ht,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_w.dtype
    NT = tl.cdiv(T, C)
    c0 = i_v * BV
    b_h = tl.zeros([BK, BV], dtype=tl.float32)  # the state stays fp32 in registers
    if USE_H0:
        b_h += d_h0.load([i_b, i_h, 0, c0]).reshape(BK, BV)
    for i_t in range(NT):
        _st_s(d_hs, i_bh, i_t, c0, b_h, DT, EMU)
        b_Gl = tl.load(gl + i_bh.to(tl.int64) * NT + i_t)
        b_w = _c(_ld(d_w, i_b, i_t * C, i_h, 0, C, BK), DT, EMU)
        b_d = _ld(d_u, i_b, i_t * C, i_h, c0, C, BV).to(tl.float32)
        b_d -= tl.dot(b_w, _c(b_h, DT, EMU), input_precision=PRECISION)  # δ = u − w h   [C, BV]
        b_dc = _round(b_d, DT, EMU)
        _st(d_dlt, i_b, i_t * C, i_h, c0, b_dc, DT, EMU)
        b_kd = _c(_ld(d_kt, i_b, i_t * C, i_h, 0, C, BK), DT, EMU)
        b_h = b_h * tl.exp(b_Gl) + tl.dot(tl.trans(b_kd), _c(b_dc, DT, EMU), input_precision=PRECISION)
    if STORE_HT:
        d_ht.store([i_b, i_h, 0, c0], b_h.reshape(1, 1, BK, BV))


@triton.jit
def chunk_gated_delta_rule_fwd_o_kernel(
    d_q,
    d_k,
    g,
    d_hs,
    d_dlt,
    d_o,
    scale,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_dlt.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    m_t = i_t * C + tl.arange(0, C) < T
    b_q, _ = _l2norm(_ld(d_q, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)
    b_G, _ = _load_G(g, bos + i_t * C * H, m_t, H, C)
    b_P = tl.dot(_c(b_q, DT, EMU), tl.trans(_c(b_k, DT, EMU)), input_precision=PRECISION)
    b_P = b_P * _decay_matrix(b_G, C, False) * scale
    b_h = _c(_ld_s(d_hs, i_bh, i_t, i_v * BV, BK, BV), DT, EMU)
    b_d = _c(_ld(d_dlt, i_b, i_t * C, i_h, i_v * BV, C, BV), DT, EMU)
    b_o = tl.dot(_c(b_q * (tl.exp(b_G) * scale)[:, None], DT, EMU), b_h, input_precision=PRECISION)
    b_o += tl.dot(_c(b_P, DT, EMU), b_d, input_precision=PRECISION)
    _st(d_o, i_b, i_t * C, i_h, i_v * BV, b_o, d_o.dtype, EMU)


@triton.jit
def chunk_gated_delta_rule_bwd_dd_local_kernel(
    d_q,
    d_k,
    g,
    d_do,
    d_ddl,
    d_qg,
    scale,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    """The part of dδ inside the chunk, scale (q kᵀ ⊙ Γ)ᵀ do: no state involved, so chunk-parallel."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_ddl.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    m_t = i_t * C + tl.arange(0, C) < T
    b_q, _ = _l2norm(_ld(d_q, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)
    b_G, _ = _load_G(g, bos + i_t * C * H, m_t, H, C)
    if i_v == 0:  # q̂ = scale e^G q for the reverse sweep, whose loop then only loads
        _st(d_qg, i_b, i_t * C, i_h, 0, b_q * (tl.exp(b_G) * scale)[:, None], DT, EMU)
    # Pᵀ directly: k qᵀ ⊙ Γᵀ
    b_Pt = tl.dot(_c(b_k, DT, EMU), tl.trans(_c(b_q, DT, EMU)), input_precision=PRECISION)
    b_Pt = b_Pt * tl.trans(_decay_matrix(b_G, C, False)) * scale
    b_do = _c(_ld(d_do, i_b, i_t * C, i_h, i_v * BV, C, BV), DT, EMU)
    b_dd = tl.dot(_c(b_Pt, DT, EMU), b_do, input_precision=PRECISION)
    _st(d_ddl, i_b, i_t * C, i_h, i_v * BV, b_dd, DT, EMU)


@triton.jit
def chunk_gated_delta_rule_bwd_dh_kernel(
    d_qg,
    d_kt,
    d_w,
    gl,
    d_do,
    d_ddl,
    d_dht,
    d_dh,
    d_dd,
    d_dh0,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    USE_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_w.dtype
    NT = tl.cdiv(T, C)
    c0 = i_v * BV
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += d_dht.load([i_b, i_h, 0, c0]).reshape(BK, BV)
    for i_s in range(NT):
        i_t = NT - 1 - i_s
        b_dhc = _round(b_dh, DT, EMU)
        _st_s(d_dh, i_bh, i_t, c0, b_dhc, DT, EMU)
        b_Gl = tl.load(gl + i_bh.to(tl.int64) * NT + i_t)
        b_w = _c(_ld(d_w, i_b, i_t * C, i_h, 0, C, BK), DT, EMU)
        b_do = _c(_ld(d_do, i_b, i_t * C, i_h, c0, C, BV), DT, EMU)
        # dδ = scale Pᵀ do (from ddl) + k̃ dh_C: δ feeds the outputs and the next state
        b_dd = _ld(d_ddl, i_b, i_t * C, i_h, c0, C, BV).to(tl.float32)
        b_kd = _c(_ld(d_kt, i_b, i_t * C, i_h, 0, C, BK), DT, EMU)
        b_dd += tl.dot(b_kd, _c(b_dhc, DT, EMU), input_precision=PRECISION)  # [C, BV]
        b_ddc = _round(b_dd, DT, EMU)
        _st(d_dd, i_b, i_t * C, i_h, c0, b_ddc, DT, EMU)
        b_qg = _c(_ld(d_qg, i_b, i_t * C, i_h, 0, C, BK), DT, EMU)
        b_dh = b_dh * tl.exp(b_Gl) + tl.dot(tl.trans(b_qg), b_do, input_precision=PRECISION)
        b_dh -= tl.dot(tl.trans(b_w), _c(b_ddc, DT, EMU), input_precision=PRECISION)
    if STORE_DH0:
        d_dh0.store([i_b, i_h, 0, c0], b_dh.reshape(1, 1, BK, BV))


# The chunk-parallel gradient is split in two kernels, each with two or three [C, K] / [C, C]
# accumulators (one kernel with all five needed 8 warps and 247 registers: one program per SM).
# bwd_wy walks V for what goes through T (dY = Tᵀ dδ): dv, dβ and the A-path parts of dk and dg;
# bwd_qk walks V for the state products and finishes dq, dk, dg.


@triton.jit
def chunk_gated_delta_rule_bwd_wy_kernel(
    d_k,
    d_v,
    g,
    beta,
    d_Ai,
    d_hs,
    d_dlt,
    d_dd,
    d_dv,
    d_dkp,
    dgp,
    dbeta,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_dlt.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    r0 = bos + i_t * C * H
    o_c = tl.arange(0, C)
    m_t = i_t * C + o_c < T
    b_G, b_Gl, b_beta = _load_gb(g, beta, r0, m_t, H, C)
    b_Tt = _c(tl.trans(_ld_s(d_Ai, i_bh, i_t, 0, C, C)), DT, EMU)

    b_Xa = tl.zeros([C, BK], dtype=tl.float32)  # dY h0ᵀ, dY = Tᵀ dδ  (= −dX)
    b_dYd = tl.zeros([C, C], dtype=tl.float32)  # dY δᵀ  (= −dA on the strict lower part)
    b_dbeta = tl.zeros([C], dtype=tl.float32)  # Σ_v dY ⊙ v
    for i_v in range(tl.cdiv(V, BV)):
        c0 = i_v * BV
        b_dd = _c(_ld(d_dd, i_b, i_t * C, i_h, c0, C, BV), DT, EMU)
        b_dY = tl.dot(b_Tt, b_dd, input_precision=PRECISION)  # [C, BV]
        _st(d_dv, i_b, i_t * C, i_h, c0, b_dY * b_beta[:, None], d_dv.dtype, EMU)
        b_v = _ld(d_v, i_b, i_t * C, i_h, c0, C, BV).to(tl.float32)
        b_dbeta += tl.sum(b_dY * b_v, 1)
        b_dYc = _c(b_dY, DT, EMU)
        b_h = _c(_ld_s(d_hs, i_bh, i_t, c0, BK, BV), DT, EMU)  # [BK, BV] state at chunk start
        b_d = _c(_ld(d_dlt, i_b, i_t * C, i_h, c0, C, BV), DT, EMU)
        b_Xa += tl.dot(b_dYc, tl.trans(b_h), input_precision=PRECISION)
        b_dYd += tl.dot(b_dYc, tl.trans(b_d), input_precision=PRECISION)

    m_strict = o_c[:, None] > o_c[None, :]
    b_eG = tl.exp(b_G)
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)  # only now: registers
    b_kc = _c(b_k, DT, EMU)
    b_Skk = tl.dot(b_kc, tl.trans(b_kc), input_precision=PRECISION)
    b_dAg = tl.where(m_strict, -b_dYd, 0.0) * _decay_matrix(b_G, C, True)  # dA ⊙ Γ
    b_B = b_dAg * b_beta[:, None]  # gradient of kkᵀ through A
    b_D = b_B * b_Skk  # dA ⊙ A
    b_sX = tl.sum(b_Xa * b_k, 1)
    b_dbeta += tl.sum(b_dAg * b_Skk, 1) - b_eG * b_sX
    b_dk = tl.dot(_c(b_B + tl.trans(b_B), DT, EMU), b_kc, input_precision=PRECISION)
    b_dk -= b_Xa * (b_beta * b_eG)[:, None]
    # dg: the terms in e^{G_i} and the pairwise D_ij e^{G_i − G_j} (see bwd_qk, which adds the rest)
    b_R = tl.cumsum(b_D, 1) - b_D  # R_is = Σ_{j<s} D_ij
    b_dg = tl.sum(tl.where(o_c[:, None] >= o_c[None, :], (-b_sX * b_beta * b_eG)[:, None] + b_R, 0.0), 0)
    d_dkp.store([i_b, i_t * C, i_h, 0], b_dk.reshape(1, C, 1, BK))
    o_th = r0 + o_c * H
    tl.store(dgp + o_th, b_dg, mask=m_t)
    tl.store(dbeta + o_th, _round(b_dbeta, dbeta.dtype.element_ty, EMU), mask=m_t)


@triton.jit
def chunk_gated_delta_rule_bwd_qk_kernel(
    d_q,
    d_k,
    g,
    d_hs,
    d_dlt,
    d_do,
    d_dh,
    d_dkp,
    dgp,
    d_dq,
    d_dk,
    dg,
    scale,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_dlt.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    r0 = bos + i_t * C * H
    o_c = tl.arange(0, C)
    m_t = i_t * C + o_c < T
    b_G, b_Gl = _load_G(g, r0, m_t, H, C)

    b_Qa = tl.zeros([C, BK], dtype=tl.float32)  # do h0ᵀ
    b_Ka = tl.zeros([C, BK], dtype=tl.float32)  # δ dh_Cᵀ
    b_dP = tl.zeros([C, C], dtype=tl.float32)  # do δᵀ
    b_hdh = tl.zeros([BK], dtype=tl.float32)  # Σ_v h0 ⊙ dh_C, per key
    for i_v in range(tl.cdiv(V, BV)):
        c0 = i_v * BV
        b_do = _c(_ld(d_do, i_b, i_t * C, i_h, c0, C, BV), DT, EMU)
        b_d = _c(_ld(d_dlt, i_b, i_t * C, i_h, c0, C, BV), DT, EMU)
        b_h = _c(_ld_s(d_hs, i_bh, i_t, c0, BK, BV), DT, EMU)  # [BK, BV] state at chunk start
        b_dhe = _c(_ld_s(d_dh, i_bh, i_t, c0, BK, BV), DT, EMU)  # [BK, BV] gradient at chunk end
        b_hdh += tl.sum(b_h.to(tl.float32) * b_dhe.to(tl.float32), 1)
        b_Qa += tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION)
        b_Ka += tl.dot(b_d, tl.trans(b_dhe), input_precision=PRECISION)
        b_dP += tl.dot(b_do, tl.trans(b_d), input_precision=PRECISION)

    # q and k are loaded only now, and each accumulator is used up as early as possible: the
    # epilogue sets the register peak.
    b_eG = tl.exp(b_G)
    b_ekd = tl.exp(b_Gl - b_G)
    b_k, b_rk = _l2norm(_ld(d_k, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)
    b_r = tl.sum(b_Ka * b_k, 1) * b_ekd  # Σ_v δ ⊙ (k̃ dh_C): decay inside k̃
    b_dk = d_dkp.load([i_b, i_t * C, i_h, 0]).reshape(C, BK) + b_Ka * b_ekd[:, None]
    b_q, b_rq = _l2norm(_ld(d_q, i_b, i_t * C, i_h, 0, C, BK), USE_L2NORM)
    b_dGp = tl.sum(b_Qa * b_q, 1) * scale * b_eG  # terms in e^{G_i}
    b_dGp += tl.where(o_c == C - 1, tl.sum(b_hdh, 0) * tl.exp(b_Gl), 0.0)
    b_dq = b_Qa * (b_eG * scale)[:, None]
    b_dS = b_dP * _decay_matrix(b_G, C, False) * scale  # gradient of qkᵀ through P
    b_qc, b_kc = _c(b_q, DT, EMU), _c(b_k, DT, EMU)
    b_dq += tl.dot(_c(b_dS, DT, EMU), b_kc, input_precision=PRECISION)
    if USE_L2NORM:
        b_dq = (b_dq - b_q * tl.sum(b_q * b_dq, 1)[:, None]) * b_rq[:, None]
    _st(d_dq, i_b, i_t * C, i_h, 0, b_dq, d_dq.dtype, EMU)
    b_dk += tl.dot(_c(tl.trans(b_dS), DT, EMU), b_qc, input_precision=PRECISION)
    if USE_L2NORM:
        b_dk = (b_dk - b_k * tl.sum(b_k * b_dk, 1)[:, None]) * b_rk[:, None]
    _st(d_dk, i_b, i_t * C, i_h, 0, b_dk, d_dk.dtype, EMU)

    # dg_s = Σ_{i≥s} ∂L/∂G_i, formed without differences of large terms so that it stays accurate
    # when decays are strong: a pairwise term D_ij e^{G_i − G_j} (j < i) depends on g_s for j < s ≤ i,
    # and the k̃ term e^{G_C − G_j} on g_s for s > j.
    b_D = tl.dot(b_qc, tl.trans(b_kc), input_precision=PRECISION) * b_dS  # dP ⊙ P
    b_D = tl.where(o_c[:, None] > o_c[None, :], b_D, 0.0)
    b_R = tl.cumsum(b_D, 1) - b_D  # R_is = Σ_{j<s} D_ij
    b_dg = tl.sum(tl.where(o_c[:, None] >= o_c[None, :], b_dGp[:, None] + b_R, b_r[:, None]), 0)
    o_th = r0 + o_c * H
    b_dg += tl.load(dgp + o_th, mask=m_t, other=0.0)
    tl.store(dg + o_th, _round(b_dg, dg.dtype.element_ty, EMU), mask=m_t)


def _width(x: int, half: bool, key: bool) -> int:
    """A tile width for half-precision tiles. On an H100 with triton 3.6, bf16 tiles 32 columns wide,
    and 16 wide in the key dimension or in the chunk-parallel forward kernels, faulted with illegal
    memory accesses when the kernels made their descriptors themselves (64 and 128 ran everywhere, 16
    in the value blocks of the sweeps and of the gradient kernels); such widths become 64 — the
    descriptors zero-fill and clip the extra columns."""
    return 64 if half and (x == 32 or (key and x == 16)) else x


@functools.cache
def _launch_config(BH: int, K: int, V: int, half: bool, wide: bool = True) -> dict:
    """Block sizes and warps per kernel (read, never mutate); `wide=False` skips the widening of narrow
    half-precision tiles (`_width`). The sequential sweeps are parallel only over B·H and V blocks: BV
    shrinks until the grid covers the GPU's SMs about twice; the reverse sweep at K = 128 has two
    pipeline stages, so that two programs fit an SM's shared memory (the forward sweep was slower so).
    The gradient kernels walk V in 16-wide blocks with 4 warps (two programs per SM; 8 warps for bwd_qk
    at K = 128, whose registers would spill). H100 timings of these choices and the alternatives:
    `bench_gdn.py --variants`, benchmarks/RESULTS.md."""
    BK = max(16, triton.next_power_of_2(K))
    BV_max = max(16, min(triton.next_power_of_2(V), 64 if BK <= 128 else 32))
    BV_seq = BV_max
    while BV_seq > 16 and BH * triton.cdiv(V, BV_seq) < 256:
        BV_seq //= 2
    cfg = dict(
        BK=BK, BV_prep=BV_max, BV_seq=BV_seq, BV_o=BV_max, BV_bwd=16 if half else min(BV_max, 32),
        warps_prep=4, warps_seq=4, warps_o=4, warps_wy=4 if half or BK <= 32 else 8,
        warps_qk=(4 if BK <= 64 else 8) if half else (4 if BK <= 32 else 8), stages_fwd_h=3,
        stages_bwd_dh=3 if BK <= 64 else 2,
        stages_bwd=3 if half else 2,
    )  # fmt: skip
    if not wide:
        return cfg
    key = ("BK", "BV_prep", "BV_o")  # 16 wide faulted here
    return {n: _width(x, half, n in key) if n.startswith("B") else x for n, x in cfg.items()}


def _aligned(x: torch.Tensor) -> torch.Tensor:
    """Contiguous, with a 16-byte aligned start, as tensor descriptors (TMA) require."""
    x = x.contiguous()
    return x if x.data_ptr() % 16 == 0 else x.clone()


def _td(x: torch.Tensor, C: int, W: int) -> TensorDescriptor:
    """Host-side descriptor of a [B, T, H, D] tensor in [C, W] tiles of one batch and head."""
    return TensorDescriptor.from_tensor(x, [1, C, 1, W])


def _sd(x: torch.Tensor | None, R: int, W: int) -> TensorDescriptor | None:
    """Host-side descriptor of a stack of matrices [N1, N2, R', D] (states per chunk, T per chunk, or
    [B, H, K, V] states) in [R, W] tiles; None stays None."""
    return None if x is None else TensorDescriptor.from_tensor(x, [1, 1, R, W])


def _dot_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.dtype:
    """Operand dtype of the dots and of the saved intermediates: half precision if any of q, k, v
    comes in it (as autocast hands them over), else fp32."""
    for x in (q, k, v):
        if x.dtype in (torch.bfloat16, torch.float16):
            return x.dtype
    return torch.float32


def _precision(dt: torch.dtype) -> str:
    # fp32 dots stay exact fp32 for fp32 inputs; with half-precision operands only the (I + A)⁻¹
    # merges see fp32 operands, and tf32 carries more mantissa than the inputs do.
    return "ieee" if INTERPRET or dt == torch.float32 else "tf32"


def chunk_gated_delta_rule_fwd(q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, C):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, C)
    dt = _dot_dtype(q, k, v)
    cfg = _launch_config(B * H, K, V, dt != torch.float32)
    BK, BVp, BVs, BVo = cfg["BK"], cfg["BV_prep"], cfg["BV_seq"], cfg["BV_o"]
    dev = q.device
    Ai = torch.empty(B * H, NT, C, C, device=dev, dtype=dt)
    w = torch.empty(B, T, H, K, device=dev, dtype=dt)
    kt = torch.empty(B, T, H, K, device=dev, dtype=dt)
    gl = torch.empty(B * H, NT, device=dev, dtype=torch.float32)
    u = torch.empty(B, T, H, V, device=dev, dtype=dt)
    dlt = torch.empty(B, T, H, V, device=dev, dtype=dt)
    hs = torch.empty(B * H, NT, K, V, device=dev, dtype=dt)  # tiles past K: zero-filled, clipped
    o = torch.empty_like(v)
    ht = torch.empty(B, H, K, V, device=dev, dtype=torch.float32) if output_final_state else None
    common = dict(H=H, K=K, V=V, C=C, BK=BK, USE_L2NORM=use_l2norm, PRECISION=_precision(dt), EMU=INTERPRET)
    chunk_gated_delta_rule_fwd_prep_kernel[(NT, B * H)](
        _td(k, C, BK), _td(v, C, BVp), g, beta, _sd(Ai, C, C), _td(w, C, BK),
        _td(u, C, BVp), _td(kt, C, BK), gl, T, BV=BVp, **common, num_warps=cfg["warps_prep"],
    )  # fmt: skip
    chunk_gated_delta_rule_fwd_h_kernel[(triton.cdiv(V, BVs), B * H)](
        _td(kt, C, BK), _td(w, C, BK), _td(u, C, BVs), gl,
        _sd(initial_state, BK, BVs), _sd(hs, BK, BVs), _td(dlt, C, BVs),
        _sd(ht, BK, BVs), T, BV=BVs, USE_H0=initial_state is not None, STORE_HT=output_final_state,
        **common, num_warps=cfg["warps_seq"], num_stages=cfg["stages_fwd_h"],
    )  # fmt: skip
    chunk_gated_delta_rule_fwd_o_kernel[(triton.cdiv(V, BVo), NT, B * H)](
        _td(q, C, BK), _td(k, C, BK), g, _sd(hs, BK, BVo), _td(dlt, C, BVo),
        _td(o, C, BVo), scale, T, BV=BVo, **common, num_warps=cfg["warps_o"],
    )  # fmt: skip
    return o, ht, (Ai, w, kt, gl, hs, dlt)


def chunk_gated_delta_rule_bwd(q, k, v, g, beta, saved, do, dht, scale, use_h0, use_l2norm, C):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, C)
    Ai, w, kt, gl, hs, dlt = saved
    dt = w.dtype
    cfg = _launch_config(B * H, K, V, dt != torch.float32)
    BK, BVs, BVo, BVb = cfg["BK"], cfg["BV_seq"], cfg["BV_o"], cfg["BV_bwd"]
    dev = q.device
    common = dict(H=H, K=K, V=V, C=C, BK=BK, USE_L2NORM=use_l2norm, PRECISION=_precision(dt), EMU=INTERPRET)
    ddl = torch.empty(B, T, H, V, device=dev, dtype=dt)
    qg = torch.empty(B, T, H, K, device=dev, dtype=dt)
    dd = torch.empty(B, T, H, V, device=dev, dtype=dt)
    dh = torch.empty(B * H, NT, K, V, device=dev, dtype=dt)
    dh0 = torch.empty(B, H, K, V, device=dev, dtype=torch.float32) if use_h0 else None
    chunk_gated_delta_rule_bwd_dd_local_kernel[(triton.cdiv(V, BVo), NT, B * H)](
        _td(q, C, BK), _td(k, C, BK), g, _td(do, C, BVo), _td(ddl, C, BVo),
        _td(qg, C, BK), scale, T, BV=BVo, **common, num_warps=cfg["warps_o"],
    )  # fmt: skip
    chunk_gated_delta_rule_bwd_dh_kernel[(triton.cdiv(V, BVs), B * H)](
        _td(qg, C, BK), _td(kt, C, BK), _td(w, C, BK), gl, _td(do, C, BVs),
        _td(ddl, C, BVs), _sd(dht, BK, BVs), _sd(dh, BK, BVs), _td(dd, C, BVs),
        _sd(dh0, BK, BVs), T, BV=BVs, USE_DHT=dht is not None, STORE_DH0=use_h0, **common,
        num_warps=cfg["warps_seq"], num_stages=cfg["stages_bwd_dh"],
    )  # fmt: skip
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dg, dbeta = torch.empty_like(g), torch.empty_like(beta)
    dkp = torch.empty(B, T, H, K, device=dev, dtype=torch.float32)  # the A-path part of dk
    dgp = torch.empty(B, T, H, device=dev, dtype=torch.float32)
    d_hs, d_dlt = _sd(hs, BK, BVb), _td(dlt, C, BVb)
    d_k, d_dkp = _td(k, C, BK), _td(dkp, C, BK)
    chunk_gated_delta_rule_bwd_wy_kernel[(NT, B * H)](
        d_k, _td(v, C, BVb), g, beta, _sd(Ai, C, C), d_hs, d_dlt, _td(dd, C, BVb),
        _td(dv, C, BVb), d_dkp, dgp, dbeta, T, BV=BVb, **common, num_warps=cfg["warps_wy"],
        num_stages=cfg["stages_bwd"],
    )  # fmt: skip
    chunk_gated_delta_rule_bwd_qk_kernel[(NT, B * H)](
        _td(q, C, BK), d_k, g, d_hs, d_dlt, _td(do, C, BVb), _sd(dh, BK, BVb), d_dkp,
        dgp, _td(dq, C, BK), _td(dk, C, BK), dg, scale, T, BV=BVb, **common,
        num_warps=cfg["warps_qk"], num_stages=cfg["stages_bwd"],
    )  # fmt: skip
    return dq, dk, dv, dg, dbeta, dh0


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, C):
        o, ht, saved = chunk_gated_delta_rule_fwd(
            q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, C
        )
        ctx.save_for_backward(q, k, v, g, beta, *saved)
        ctx.scale, ctx.use_h0, ctx.use_l2norm, ctx.C = scale, initial_state is not None, use_l2norm, C
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, beta, *saved = ctx.saved_tensors
        dq, dk, dv, dg, dbeta, dh0 = chunk_gated_delta_rule_bwd(
            q, k, v, g, beta, saved, do.contiguous(), None if dht is None else dht.contiguous(),
            ctx.scale, ctx.use_h0, ctx.use_l2norm, ctx.C,
        )  # fmt: skip
        return dq, dk, dv, dg, dbeta, None, dh0, None, None, None


def chunk_gated_delta_rule(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [B, T, H]
    beta: torch.Tensor,  # [B, T, H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    backend: str = "triton",
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over a sequence.

    Returns ``o`` ``[B, T, H, V]`` in v's dtype and, if ``output_final_state``, the final state
    ``[B, H, K, V]`` in float32 (float64 on the torch backend with float64 inputs), else None.
    ``g`` is the log decay (≤ 0), ``beta`` in (0, 2). ``chunk_size`` (a power of two ≥ 16) defaults
    to 64 for bf16 inputs with K ≤ 128, else 32 for K ≤ 64 and 16 above. Inputs of mixed dtypes are
    accepted and cast inside.
    """
    B, T, H, K, V = check_inputs(q, k, v, g, beta, initial_state)
    # 64 rows feed Hopper's warpgroup MMA with half-precision operands; past K = 128, and with fp32
    # operands (no tensor cores, twice the bytes), smaller chunks keep tiles in registers and shared memory.
    half = _dot_dtype(q, k, v) != torch.float32
    C = chunk_size if chunk_size is not None else (64 if half and K <= 128 else 32 if K <= 64 else 16)
    if C < 16 or C & (C - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16; got {chunk_size}")
    if backend == "torch":
        o, ht = naive_chunk_gated_delta_rule(
            q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, C
        )
        return o, (ht.float() if ht is not None and ht.dtype != torch.float64 else ht)
    if backend != "triton":
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if K > 256 or V > 256:
        raise ValueError(f"the triton backend supports K, V <= 256; got K={K}, V={V}")
    scale = K**-0.5 if scale is None else float(scale)
    Kp, Vp = -(-K // 8) * 8, -(-V // 8) * 8
    if (Kp, Vp) != (K, V):
        # Tensor descriptors need rows of a multiple of 16 bytes: zero columns change no product
        # (nor the L2 norms) and are cut off the results.
        pk, pv = (0, Kp - K), (0, Vp - V)
        h0 = None if initial_state is None else F.pad(initial_state, (*pv, *pk))
        o, ht = chunk_gated_delta_rule(
            F.pad(q, pk), F.pad(k, pk), F.pad(v, pv), g, beta, scale, h0, output_final_state,
            use_qk_l2norm_in_kernel, backend, C,
        )  # fmt: skip
        return o[..., :V], (None if ht is None else ht[:, :, :K, :V])
    q, k, v, g, beta = (_aligned(x) for x in (q, k, v, g, beta))
    initial_state = None if initial_state is None else _aligned(initial_state)
    return ChunkGatedDeltaRuleFunction.apply(
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, C
    )
