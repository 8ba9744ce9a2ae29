"""Gated DeltaNet chunked kernels: Triton forward and backward, the autograd.Function, the public op.

Six launches per training step (README.md has the algebra):
  fwd_prep      (parallel over chunks)     T = (I + A)⁻¹, w = T(βe^G k), u = T(βv)
  fwd_h         (sequential over chunks)   δ = u − w h and the state h; saves h per chunk and δ
  fwd_o         (parallel)                 o = scale((q e^G) h + (q kᵀ ⊙ Γ) δ)
  bwd_dd_local  (parallel)                 scale (q kᵀ ⊙ Γ)ᵀ do
  bwd_dh        (sequential, reversed)     dδ, dh at each chunk end, dh0
  bwd           (parallel over chunks)     dq, dk, dv, dg, dβ from h, δ, dδ, dh
The state is carried and accumulated in fp32; dot operands and saved intermediates are in the inputs'
precision (bf16 under autocast, fp32 for fp32 inputs).
"""

import functools
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

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


# Memory access goes through tensor descriptors (TMA on Hopper): one per (batch, head) slice of a
# [B, T, H, D] tensor, shape [T, D] with row stride H·D, so a partial last chunk reads zeros and its
# stores are clipped. Pointer tiles instead cost two registers per element and made every kernel
# spill (ptxas, sm_90: 255 registers; with descriptors 65–122 and no spills).


@triton.jit
def chunk_gated_delta_rule_fwd_prep_kernel(
    k,
    v,
    g,
    beta,
    Ai,
    w,
    u,
    kt,
    gl,
    T,
    H,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    LOG_C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    DT = w.dtype.element_ty  # operand dtype of every dot: the inputs' (bf16) or fp32
    NT = tl.cdiv(T, C)
    bos = i_b.to(tl.int64) * T * H + i_h  # row of (b, t = 0, h) in [B·T·H]
    o_c = tl.arange(0, C)
    m_t = i_t * C + o_c < T
    d_k = tl.make_tensor_descriptor(k + bos * K, [T, K], [H * K, 1], [C, BK])
    d_w = tl.make_tensor_descriptor(w + bos * K, [T, K], [H * K, 1], [C, BK])
    d_v = tl.make_tensor_descriptor(v + bos * V, [T, V], [H * V, 1], [C, BV])
    d_u = tl.make_tensor_descriptor(u + bos * V, [T, V], [H * V, 1], [C, BV])
    d_kt = tl.make_tensor_descriptor(kt + bos * K, [T, K], [H * K, 1], [C, BK])
    b_k, _ = _l2norm(d_k.load([i_t * C, 0]), USE_L2NORM)
    b_G, b_Gl, b_beta = _load_gb(g, beta, bos + i_t * C * H, m_t, H, C)
    # What the sweeps need besides w and u, made here so that their sequential loops only load:
    # k̃ = e^{G_C − G} k and G_C per chunk.
    d_kt.store([i_t * C, 0], _round(b_k * tl.exp(b_Gl - b_G)[:, None], DT, EMU))
    tl.store(gl + i_bh.to(tl.int64) * NT + i_t, b_Gl)
    b_kc = _c(b_k, DT, EMU)
    b_A = tl.dot(b_kc, tl.trans(b_kc), input_precision=PRECISION) * b_beta[:, None]
    b_A = b_A * _decay_matrix(b_G, C, True)  # [C, C] strictly lower
    # (I + A)⁻¹ by doubling: invert 1×1 diagonal blocks (trivially I), then merge pairs of blocks,
    # [[X, 0], [L, Y]]⁻¹ = [[X⁻¹, 0], [−Y⁻¹ L X⁻¹, Y⁻¹]], i.e. T ← T − T L T with L the coupling part.
    # Exact algebra with no growing powers of A, so it stays stable for β up to 2. Kept in fp32.
    b_T = (o_c[:, None] == o_c[None, :]).to(tl.float32)
    for lv in tl.static_range(LOG_C):
        m_l = (
            ((o_c[:, None] >> (lv + 1)) == (o_c[None, :] >> (lv + 1)))
            & (((o_c[:, None] >> lv) & 1) == 1)
            & (((o_c[None, :] >> lv) & 1) == 0)
        )
        b_L = tl.where(m_l, b_A, 0.0)
        if lv == 0:
            b_T = b_T - b_L
        else:
            b_TL = tl.dot(b_T, b_L, input_precision=PRECISION)
            b_T = b_T - tl.dot(b_TL, b_T, input_precision=PRECISION)
    d_A = tl.make_tensor_descriptor(Ai + (i_bh.to(tl.int64) * NT + i_t) * (C * C), [C, C], [C, 1], [C, C])
    d_A.store([0, 0], b_T)
    b_Tc = _c(b_T, DT, EMU)
    b_w = tl.dot(b_Tc, _c(b_k * (b_beta * tl.exp(b_G))[:, None], DT, EMU), input_precision=PRECISION)
    d_w.store([i_t * C, 0], _round(b_w, DT, EMU))
    for i_v in range(tl.cdiv(V, BV)):
        b_v = d_v.load([i_t * C, i_v * BV]).to(tl.float32)
        b_u = tl.dot(b_Tc, _c(b_v * b_beta[:, None], DT, EMU), input_precision=PRECISION)
        d_u.store([i_t * C, i_v * BV], _round(b_u, DT, EMU))


@triton.jit
def chunk_gated_delta_rule_fwd_h_kernel(
    kt,
    w,
    u,
    gl,
    h0,
    hs,
    dlt,
    ht,
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
    DT = w.dtype.element_ty
    NT = tl.cdiv(T, C)
    bh = i_bh.to(tl.int64)
    bos = i_b.to(tl.int64) * T * H + i_h
    d_kt = tl.make_tensor_descriptor(kt + bos * K, [T, K], [H * K, 1], [C, BK])
    d_w = tl.make_tensor_descriptor(w + bos * K, [T, K], [H * K, 1], [C, BK])
    d_u = tl.make_tensor_descriptor(u + bos * V, [T, V], [H * V, 1], [C, BV])
    d_d = tl.make_tensor_descriptor(dlt + bos * V, [T, V], [H * V, 1], [C, BV])
    d_hs = tl.make_tensor_descriptor(hs + bh * (NT * BK * V), [NT * BK, V], [V, 1], [BK, BV])
    b_h = tl.zeros([BK, BV], dtype=tl.float32)  # the state stays fp32 in registers
    if USE_H0:
        d_h0 = tl.make_tensor_descriptor(h0 + bh * (K * V), [K, V], [V, 1], [BK, BV])
        b_h += d_h0.load([0, i_v * BV]).to(tl.float32)
    for i_t in range(NT):
        d_hs.store([i_t * BK, i_v * BV], _round(b_h, DT, EMU))
        b_Gl = tl.load(gl + bh * NT + i_t)
        b_w = _c(d_w.load([i_t * C, 0]), DT, EMU)
        b_d = d_u.load([i_t * C, i_v * BV]).to(tl.float32)
        b_d -= tl.dot(b_w, _c(b_h, DT, EMU), input_precision=PRECISION)  # δ = u − w h   [C, BV]
        b_dc = _round(b_d, DT, EMU)
        d_d.store([i_t * C, i_v * BV], b_dc)
        b_kd = _c(d_kt.load([i_t * C, 0]), DT, EMU)
        b_h = b_h * tl.exp(b_Gl) + tl.dot(tl.trans(b_kd), _c(b_dc, DT, EMU), input_precision=PRECISION)
    if STORE_HT:
        d_ht = tl.make_tensor_descriptor(ht + bh * (K * V), [K, V], [V, 1], [BK, BV])
        d_ht.store([0, i_v * BV], b_h)


@triton.jit
def chunk_gated_delta_rule_fwd_o_kernel(
    q,
    k,
    g,
    hs,
    dlt,
    o,
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
    DT = dlt.dtype.element_ty
    NT = tl.cdiv(T, C)
    bos = i_b.to(tl.int64) * T * H + i_h
    m_t = i_t * C + tl.arange(0, C) < T
    d_q = tl.make_tensor_descriptor(q + bos * K, [T, K], [H * K, 1], [C, BK])
    d_k = tl.make_tensor_descriptor(k + bos * K, [T, K], [H * K, 1], [C, BK])
    d_d = tl.make_tensor_descriptor(dlt + bos * V, [T, V], [H * V, 1], [C, BV])
    d_o = tl.make_tensor_descriptor(o + bos * V, [T, V], [H * V, 1], [C, BV])
    d_h = tl.make_tensor_descriptor(hs + (i_bh.to(tl.int64) * NT + i_t) * (BK * V), [BK, V], [V, 1], [BK, BV])
    b_q, _ = _l2norm(d_q.load([i_t * C, 0]), USE_L2NORM)
    b_k, _ = _l2norm(d_k.load([i_t * C, 0]), USE_L2NORM)
    b_G, _ = _load_G(g, bos + i_t * C * H, m_t, H, C)
    b_P = tl.dot(_c(b_q, DT, EMU), tl.trans(_c(b_k, DT, EMU)), input_precision=PRECISION)
    b_P = b_P * _decay_matrix(b_G, C, False) * scale
    b_h = _c(d_h.load([0, i_v * BV]), DT, EMU)
    b_d = _c(d_d.load([i_t * C, i_v * BV]), DT, EMU)
    b_o = tl.dot(_c(b_q * (tl.exp(b_G) * scale)[:, None], DT, EMU), b_h, input_precision=PRECISION)
    b_o += tl.dot(_c(b_P, DT, EMU), b_d, input_precision=PRECISION)
    d_o.store([i_t * C, i_v * BV], _round(b_o, o.dtype.element_ty, EMU))


@triton.jit
def chunk_gated_delta_rule_bwd_dd_local_kernel(
    q,
    k,
    g,
    do,
    ddl,
    qg,
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
    DT = ddl.dtype.element_ty
    bos = i_b.to(tl.int64) * T * H + i_h
    m_t = i_t * C + tl.arange(0, C) < T
    d_q = tl.make_tensor_descriptor(q + bos * K, [T, K], [H * K, 1], [C, BK])
    d_k = tl.make_tensor_descriptor(k + bos * K, [T, K], [H * K, 1], [C, BK])
    d_do = tl.make_tensor_descriptor(do + bos * V, [T, V], [H * V, 1], [C, BV])
    d_ddl = tl.make_tensor_descriptor(ddl + bos * V, [T, V], [H * V, 1], [C, BV])
    b_q, _ = _l2norm(d_q.load([i_t * C, 0]), USE_L2NORM)
    b_k, _ = _l2norm(d_k.load([i_t * C, 0]), USE_L2NORM)
    b_G, _ = _load_G(g, bos + i_t * C * H, m_t, H, C)
    if i_v == 0:  # q̂ = scale e^G q for the reverse sweep, whose loop then only loads
        d_qg = tl.make_tensor_descriptor(qg + bos * K, [T, K], [H * K, 1], [C, BK])
        d_qg.store([i_t * C, 0], _round(b_q * (tl.exp(b_G) * scale)[:, None], DT, EMU))
    # Pᵀ directly: k qᵀ ⊙ Γᵀ
    b_Pt = tl.dot(_c(b_k, DT, EMU), tl.trans(_c(b_q, DT, EMU)), input_precision=PRECISION)
    b_Pt = b_Pt * tl.trans(_decay_matrix(b_G, C, False)) * scale
    b_do = _c(d_do.load([i_t * C, i_v * BV]), DT, EMU)
    b_dd = tl.dot(_c(b_Pt, DT, EMU), b_do, input_precision=PRECISION)
    d_ddl.store([i_t * C, i_v * BV], _round(b_dd, DT, EMU))


@triton.jit
def chunk_gated_delta_rule_bwd_dh_kernel(
    qg,
    kt,
    w,
    gl,
    do,
    ddl,
    dht,
    dh,
    dd,
    dh0,
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
    DT = w.dtype.element_ty
    NT = tl.cdiv(T, C)
    bh = i_bh.to(tl.int64)
    bos = i_b.to(tl.int64) * T * H + i_h
    d_qg = tl.make_tensor_descriptor(qg + bos * K, [T, K], [H * K, 1], [C, BK])
    d_kt = tl.make_tensor_descriptor(kt + bos * K, [T, K], [H * K, 1], [C, BK])
    d_w = tl.make_tensor_descriptor(w + bos * K, [T, K], [H * K, 1], [C, BK])
    d_do = tl.make_tensor_descriptor(do + bos * V, [T, V], [H * V, 1], [C, BV])
    d_ddl = tl.make_tensor_descriptor(ddl + bos * V, [T, V], [H * V, 1], [C, BV])
    d_dd = tl.make_tensor_descriptor(dd + bos * V, [T, V], [H * V, 1], [C, BV])
    d_dh = tl.make_tensor_descriptor(dh + bh * (NT * BK * V), [NT * BK, V], [V, 1], [BK, BV])
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        d_dht = tl.make_tensor_descriptor(dht + bh * (K * V), [K, V], [V, 1], [BK, BV])
        b_dh += d_dht.load([0, i_v * BV]).to(tl.float32)
    for i_s in range(NT):
        i_t = NT - 1 - i_s
        b_dhc = _round(b_dh, DT, EMU)
        d_dh.store([i_t * BK, i_v * BV], b_dhc)
        b_Gl = tl.load(gl + bh * NT + i_t)
        b_w = _c(d_w.load([i_t * C, 0]), DT, EMU)
        b_do = _c(d_do.load([i_t * C, i_v * BV]), DT, EMU)
        # dδ = scale Pᵀ do (from ddl) + k̃ dh_C: δ feeds the outputs and the next state
        b_dd = d_ddl.load([i_t * C, i_v * BV]).to(tl.float32)
        b_kd = _c(d_kt.load([i_t * C, 0]), DT, EMU)
        b_dd += tl.dot(b_kd, _c(b_dhc, DT, EMU), input_precision=PRECISION)  # [C, BV]
        b_ddc = _round(b_dd, DT, EMU)
        d_dd.store([i_t * C, i_v * BV], b_ddc)
        b_qg = _c(d_qg.load([i_t * C, 0]), DT, EMU)
        b_dh = b_dh * tl.exp(b_Gl) + tl.dot(tl.trans(b_qg), b_do, input_precision=PRECISION)
        b_dh -= tl.dot(tl.trans(b_w), _c(b_ddc, DT, EMU), input_precision=PRECISION)
    if STORE_DH0:
        d_dh0 = tl.make_tensor_descriptor(dh0 + bh * (K * V), [K, V], [V, 1], [BK, BV])
        d_dh0.store([0, i_v * BV], b_dh)


@triton.jit
def chunk_gated_delta_rule_bwd_kernel(
    q,
    k,
    v,
    g,
    beta,
    Ai,
    hs,
    dlt,
    do,
    dh,
    dd,
    dq,
    dk,
    dv,
    dg,
    dbeta,
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
    DT = dlt.dtype.element_ty
    NT = tl.cdiv(T, C)
    bh = i_bh.to(tl.int64)
    bos = i_b.to(tl.int64) * T * H + i_h
    r0 = bos + i_t * C * H
    o_c = tl.arange(0, C)
    m_t = i_t * C + o_c < T
    d_q = tl.make_tensor_descriptor(q + bos * K, [T, K], [H * K, 1], [C, BK])
    d_k = tl.make_tensor_descriptor(k + bos * K, [T, K], [H * K, 1], [C, BK])
    d_dq = tl.make_tensor_descriptor(dq + bos * K, [T, K], [H * K, 1], [C, BK])
    d_dk = tl.make_tensor_descriptor(dk + bos * K, [T, K], [H * K, 1], [C, BK])
    d_v = tl.make_tensor_descriptor(v + bos * V, [T, V], [H * V, 1], [C, BV])
    d_do = tl.make_tensor_descriptor(do + bos * V, [T, V], [H * V, 1], [C, BV])
    d_d = tl.make_tensor_descriptor(dlt + bos * V, [T, V], [H * V, 1], [C, BV])
    d_dd = tl.make_tensor_descriptor(dd + bos * V, [T, V], [H * V, 1], [C, BV])
    d_dv = tl.make_tensor_descriptor(dv + bos * V, [T, V], [H * V, 1], [C, BV])
    d_h = tl.make_tensor_descriptor(hs + (bh * NT + i_t) * (BK * V), [BK, V], [V, 1], [BK, BV])
    d_dh = tl.make_tensor_descriptor(dh + (bh * NT + i_t) * (BK * V), [BK, V], [V, 1], [BK, BV])
    d_A = tl.make_tensor_descriptor(Ai + (bh * NT + i_t) * (C * C), [C, C], [C, 1], [C, C])
    b_q, b_rq = _l2norm(d_q.load([i_t * C, 0]), USE_L2NORM)
    b_k, b_rk = _l2norm(d_k.load([i_t * C, 0]), USE_L2NORM)
    b_G, b_Gl, b_beta = _load_gb(g, beta, r0, m_t, H, C)
    b_Tt = _c(tl.trans(d_A.load([0, 0])), DT, EMU)

    # Sums over V of products with the state, kept as [C, K] / [C, C] tiles; everything else follows
    # after the loop (README.md, "Backward").
    b_Qa = tl.zeros([C, BK], dtype=tl.float32)  # do h0ᵀ
    b_Ka = tl.zeros([C, BK], dtype=tl.float32)  # δ dh_Cᵀ
    b_Xa = tl.zeros([C, BK], dtype=tl.float32)  # dY h0ᵀ, dY = Tᵀ dδ  (= −dX)
    b_dP = tl.zeros([C, C], dtype=tl.float32)  # do δᵀ
    b_dYd = tl.zeros([C, C], dtype=tl.float32)  # dY δᵀ  (= −dA on the strict lower part)
    b_dbeta = tl.zeros([C], dtype=tl.float32)  # Σ_v dY ⊙ v
    b_hdh = tl.zeros([BK], dtype=tl.float32)  # Σ_v h0 ⊙ dh_C, per key
    for i_v in range(tl.cdiv(V, BV)):
        b_do = _c(d_do.load([i_t * C, i_v * BV]), DT, EMU)
        b_d = _c(d_d.load([i_t * C, i_v * BV]), DT, EMU)
        b_dd = _c(d_dd.load([i_t * C, i_v * BV]), DT, EMU)
        b_h = _c(d_h.load([0, i_v * BV]), DT, EMU)  # [BK, BV] state at chunk start
        b_dhe = _c(d_dh.load([0, i_v * BV]), DT, EMU)  # [BK, BV] gradient at chunk end
        b_dY = tl.dot(b_Tt, b_dd, input_precision=PRECISION)  # [C, BV]
        d_dv.store([i_t * C, i_v * BV], _round(b_dY * b_beta[:, None], dv.dtype.element_ty, EMU))
        b_v = d_v.load([i_t * C, i_v * BV]).to(tl.float32)
        b_dbeta += tl.sum(b_dY * b_v, 1)
        b_hdh += tl.sum(b_h.to(tl.float32) * b_dhe.to(tl.float32), 1)
        b_dYc = _c(b_dY, DT, EMU)
        b_Qa += tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION)
        b_Ka += tl.dot(b_d, tl.trans(b_dhe), input_precision=PRECISION)
        b_Xa += tl.dot(b_dYc, tl.trans(b_h), input_precision=PRECISION)
        b_dP += tl.dot(b_do, tl.trans(b_d), input_precision=PRECISION)
        b_dYd += tl.dot(b_dYc, tl.trans(b_d), input_precision=PRECISION)

    m_strict = o_c[:, None] > o_c[None, :]
    b_eG = tl.exp(b_G)
    b_ekd = tl.exp(b_Gl - b_G)
    b_gam = _decay_matrix(b_G, C, False)
    b_qc, b_kc = _c(b_q, DT, EMU), _c(b_k, DT, EMU)
    b_Skk = tl.dot(b_kc, tl.trans(b_kc), input_precision=PRECISION)
    b_P = tl.dot(b_qc, tl.trans(b_kc), input_precision=PRECISION) * b_gam
    b_dAg = tl.where(m_strict, -b_dYd, 0.0) * b_gam  # dA ⊙ Γ
    b_B = b_dAg * b_beta[:, None]  # gradient of kkᵀ through A
    b_D2 = b_B * b_Skk  # dA ⊙ A
    b_dS = b_dP * b_gam * scale  # gradient of qkᵀ through P
    b_D1 = b_dP * b_P * scale  # dP ⊙ P
    b_sq = tl.sum(b_Qa * b_q, 1)
    b_sX = tl.sum(b_Xa * b_k, 1)
    b_r = tl.sum(b_Ka * b_k, 1) * b_ekd  # Σ_v δ ⊙ (k̃ dh_C): decay inside k̃
    b_dbeta += tl.sum(b_dAg * b_Skk, 1) - b_eG * b_sX
    b_dq = b_Qa * (b_eG * scale)[:, None] + tl.dot(_c(b_dS, DT, EMU), b_kc, input_precision=PRECISION)
    b_dk = b_Ka * b_ekd[:, None] - b_Xa * (b_beta * b_eG)[:, None]
    b_dk += tl.dot(_c(tl.trans(b_dS), DT, EMU), b_qc, input_precision=PRECISION)
    b_dk += tl.dot(_c(b_B + tl.trans(b_B), DT, EMU), b_kc, input_precision=PRECISION)

    # dg_s = Σ_{i≥s} ∂L/∂G_i, formed without differences of large terms so that it stays accurate
    # when decays are strong: a pairwise term D_ij e^{G_i − G_j} (j < i) depends on g_s for j < s ≤ i,
    # and the k̃ term e^{G_C − G_j} on g_s for s > j.
    b_dGp = (b_sq * scale - b_sX * b_beta) * b_eG  # terms in e^{G_i}
    b_dGp += tl.where(o_c == C - 1, tl.sum(b_hdh, 0) * tl.exp(b_Gl), 0.0)
    b_D = tl.where(m_strict, b_D1, 0.0) + b_D2  # the diagonal carries no decay
    b_R = tl.cumsum(b_D, 1) - b_D  # R_is = Σ_{j<s} D_ij
    b_dg = tl.sum(tl.where(o_c[:, None] >= o_c[None, :], b_dGp[:, None] + b_R, b_r[:, None]), 0)

    if USE_L2NORM:
        b_dq = (b_dq - b_q * tl.sum(b_q * b_dq, 1)[:, None]) * b_rq[:, None]
        b_dk = (b_dk - b_k * tl.sum(b_k * b_dk, 1)[:, None]) * b_rk[:, None]
    d_dq.store([i_t * C, 0], _round(b_dq, dq.dtype.element_ty, EMU))
    d_dk.store([i_t * C, 0], _round(b_dk, dk.dtype.element_ty, EMU))
    o_th = r0 + o_c * H
    tl.store(dg + o_th, _round(b_dg, dg.dtype.element_ty, EMU), mask=m_t)
    tl.store(dbeta + o_th, _round(b_dbeta, dbeta.dtype.element_ty, EMU), mask=m_t)


def _width(x: int, half: bool) -> int:
    """A tile width for descriptors of half-precision tensors. On an H100 with triton 3.6, bf16 tiles
    32 columns wide in any kernel, and 16 wide in the key dimension, faulted with illegal memory
    accesses (64 and 128 ran everywhere, 16 in the value blocks of the sweeps and of the gradient
    kernel); such widths become 64 there — the descriptors zero-fill and clip the extra columns."""
    return 64 if half and x == 32 else x


@functools.cache
def _launch_config(BH: int, K: int, V: int, half: bool) -> dict:
    """Block sizes and warps per kernel (read, never mutate). The sequential sweeps are parallel only
    over B·H and V blocks: BV shrinks until the grid covers the GPU's SMs about twice. These are the
    settings of the H100 numbers in benchmarks/RESULTS.md, chosen from ptxas register and spill counts
    for sm_90 (the gradient kernel: 16-wide V blocks, 8 warps, 3 stages — the only setting without
    spills at K = 64); per-kernel timing of alternatives is `bench_gdn.py --variants`."""
    BK = max(64 if half else 16, triton.next_power_of_2(K))
    BV_max = max(64 if half else 16, min(triton.next_power_of_2(V), 64 if BK <= 128 else 32))
    BV_seq = BV_max
    while BV_seq > 16 and BH * triton.cdiv(V, BV_seq) < 256:
        BV_seq //= 2
    cfg = dict(
        BK=BK, BV_prep=BV_max, BV_seq=BV_seq, BV_o=BV_max, BV_bwd=16 if half else min(BV_max, 32),
        warps_prep=4, warps_seq=4, warps_o=4, warps_bwd=8 if BK > 32 else 4, stages_seq=3,
        stages_bwd=3 if half else 2,
    )  # fmt: skip
    return {n: _width(x, half) if n.startswith("BV") else x for n, x in cfg.items()}


def _aligned(x: torch.Tensor) -> torch.Tensor:
    """Contiguous, with a 16-byte aligned start, as tensor descriptors (TMA) require."""
    x = x.contiguous()
    return x if x.data_ptr() % 16 == 0 else x.clone()


def _tma_scratch(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, device="cuda", dtype=torch.int8)


def _set_tma_allocator() -> None:
    """Descriptors made inside a kernel need a little global scratch memory per program; Triton asks
    for it through an allocator held in a context variable, here torch's (so CUDA-graph capture
    works). Set before every launch: autograd runs the backward in another thread, another context."""
    if not INTERPRET:
        triton.set_allocator(_tma_scratch)


def _dot_dtype(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.dtype:
    """Operand dtype of the dots and of the saved intermediates: half precision if any of q, k, v
    comes in it (as autocast hands them over), else fp32."""
    for x in (q, k, v):
        if x.dtype in (torch.bfloat16, torch.float16):
            return x.dtype
    return torch.float32


def _precision(dt: torch.dtype) -> str:
    # fp32 dots stay exact fp32 for fp32 inputs; with half-precision operands only the (I + A)⁻¹
    # products see fp32 operands, and tf32 carries more mantissa than the inputs do.
    return "ieee" if INTERPRET or dt == torch.float32 else "tf32"


def chunk_gated_delta_rule_fwd(q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, C):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, C)
    dt = _dot_dtype(q, k, v)
    cfg = _launch_config(B * H, K, V, dt != torch.float32)
    _set_tma_allocator()
    prec = _precision(dt)
    dev = q.device
    Ai = torch.empty(B * H, NT, C, C, device=dev, dtype=torch.float32)
    w = torch.empty(B, T, H, K, device=dev, dtype=dt)
    kt = torch.empty(B, T, H, K, device=dev, dtype=dt)
    gl = torch.empty(B * H, NT, device=dev, dtype=torch.float32)
    u = torch.empty(B, T, H, V, device=dev, dtype=dt)
    dlt = torch.empty(B, T, H, V, device=dev, dtype=dt)
    hs = torch.empty(B * H, NT, cfg["BK"], V, device=dev, dtype=dt)  # rows past K stay zero
    o = torch.empty_like(v)
    ht = torch.empty(B, H, K, V, device=dev, dtype=torch.float32) if output_final_state else None
    common = dict(H=H, K=K, V=V, C=C, BK=cfg["BK"], USE_L2NORM=use_l2norm, PRECISION=prec, EMU=INTERPRET)
    chunk_gated_delta_rule_fwd_prep_kernel[(NT, B * H)](
        k, v, g, beta, Ai, w, u, kt, gl, T, LOG_C=C.bit_length() - 1, BV=cfg["BV_prep"], **common,
        num_warps=cfg["warps_prep"],
    )  # fmt: skip
    chunk_gated_delta_rule_fwd_h_kernel[(triton.cdiv(V, cfg["BV_seq"]), B * H)](
        kt, w, u, gl, initial_state, hs, dlt, ht, T, BV=cfg["BV_seq"], USE_H0=initial_state is not None,
        STORE_HT=output_final_state, **common, num_warps=cfg["warps_seq"], num_stages=cfg["stages_seq"],
    )  # fmt: skip
    chunk_gated_delta_rule_fwd_o_kernel[(triton.cdiv(V, cfg["BV_o"]), NT, B * H)](
        q, k, g, hs, dlt, o, scale, T, BV=cfg["BV_o"], **common, num_warps=cfg["warps_o"],
    )  # fmt: skip
    return o, ht, (Ai, w, kt, gl, hs, dlt)


def chunk_gated_delta_rule_bwd(q, k, v, g, beta, saved, do, dht, scale, use_h0, use_l2norm, C):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, C)
    Ai, w, kt, gl, hs, dlt = saved
    dt = w.dtype
    cfg = _launch_config(B * H, K, V, dt != torch.float32)
    _set_tma_allocator()
    dev = q.device
    common = dict(
        H=H, K=K, V=V, C=C, BK=cfg["BK"], USE_L2NORM=use_l2norm, PRECISION=_precision(dt), EMU=INTERPRET
    )
    ddl = torch.empty(B, T, H, V, device=dev, dtype=dt)
    qg = torch.empty(B, T, H, K, device=dev, dtype=dt)
    dd = torch.empty(B, T, H, V, device=dev, dtype=dt)
    dh = torch.empty(B * H, NT, cfg["BK"], V, device=dev, dtype=dt)
    dh0 = torch.empty(B, H, K, V, device=dev, dtype=torch.float32) if use_h0 else None
    chunk_gated_delta_rule_bwd_dd_local_kernel[(triton.cdiv(V, cfg["BV_o"]), NT, B * H)](
        q, k, g, do, ddl, qg, scale, T, BV=cfg["BV_o"], **common, num_warps=cfg["warps_o"],
    )  # fmt: skip
    chunk_gated_delta_rule_bwd_dh_kernel[(triton.cdiv(V, cfg["BV_seq"]), B * H)](
        qg, kt, w, gl, do, ddl, dht, dh, dd, dh0, T, BV=cfg["BV_seq"], USE_DHT=dht is not None,
        STORE_DH0=use_h0, **common, num_warps=cfg["warps_seq"], num_stages=cfg["stages_seq"],
    )  # fmt: skip
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dg, dbeta = torch.empty_like(g), torch.empty_like(beta)
    chunk_gated_delta_rule_bwd_kernel[(NT, B * H)](
        q, k, v, g, beta, Ai, hs, dlt, do, dh, dd, dq, dk, dv, dg, dbeta, scale, T, BV=cfg["BV_bwd"],
        **common, num_warps=cfg["warps_bwd"], num_stages=cfg["stages_bwd"],
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
