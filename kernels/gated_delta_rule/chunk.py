"""Gated DeltaNet chunked kernels: Triton forward and backward, the autograd.Function, the public op.

Four launches per training step (README.md has the algebra):
  fwd_kkt_inv  (parallel over chunks)   T = (I + A)⁻¹ per chunk, A = strict_lower(β kkᵀ ⊙ Γ)
  fwd          (sequential over chunks) δ = T(βv) − T(βe^G k) h, o, and the state h; saves h, δ
  bwd_dh       (sequential, reversed)   dh: gradient of the state at each chunk end, and dh0
  bwd          (parallel over chunks)   dq, dk, dv, dg, dβ from h, δ, dh
State and accumulation are fp32 throughout; the state is [K, V] per head.
"""

import functools
import os

import torch
import triton
import triton.language as tl

from kernels.gated_delta_rule.naive import check_inputs, naive_chunk_gated_delta_rule

BACKENDS = ("triton", "torch")
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _load_qk(p_base, m_t, H, K: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, USE_L2NORM: tl.constexpr):
    """A [C, BK] chunk of q or k (p_base: its first row) in fp32, optionally L2-normalised; also
    returns 1/norm per row."""
    o_k = tl.arange(0, BK)
    p = p_base + tl.arange(0, C)[:, None] * (H * K) + o_k[None, :]
    b_x = tl.load(p, mask=m_t[:, None] & (o_k[None, :] < K), other=0.0).to(tl.float32)
    if USE_L2NORM:
        b_r = tl.rsqrt(tl.sum(b_x * b_x, 1) + 1e-6)
        b_x = b_x * b_r[:, None]
    else:
        b_r = tl.full([C], 1.0, tl.float32)
    return b_x, b_r


@triton.jit
def _load_gb(g, beta, r0, m_t, H, C: tl.constexpr):
    """Gates of one chunk (r0: its first row): cumulative log decay G, its last value, and β
    (padded steps: g = 0, β = 0)."""
    o_c = tl.arange(0, C) * H
    b_g = tl.load(g + r0 + o_c, mask=m_t, other=0.0).to(tl.float32)
    b_beta = tl.load(beta + r0 + o_c, mask=m_t, other=0.0).to(tl.float32)
    b_G = tl.cumsum(b_g, 0)
    b_Gl = tl.sum(tl.where(tl.arange(0, C) == C - 1, b_G, 0.0), 0)
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


@triton.jit
def chunk_gated_delta_rule_fwd_kkt_inv_kernel(
    k,
    g,
    beta,
    Ai,
    T,
    H,
    K: tl.constexpr,
    C: tl.constexpr,
    LOG_C: tl.constexpr,
    BK: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    o_c = tl.arange(0, C)
    o_t = i_t * C + o_c
    m_t = o_t < T
    r0 = (i_b.to(tl.int64) * T + i_t * C) * H + i_h  # row of the chunk's first step in [B·T·H]
    b_k, _ = _load_qk(k + r0 * K, m_t, H, K, C, BK, USE_L2NORM)
    b_G, _, b_beta = _load_gb(g, beta, r0, m_t, H, C)
    b_A = tl.dot(b_k, tl.trans(b_k), input_precision=PRECISION) * b_beta[:, None]
    b_A = b_A * _decay_matrix(b_G, C, True)  # [C, C] strictly lower
    # (I + A)⁻¹ by doubling: invert 1×1 diagonal blocks (trivially I), then merge pairs of blocks,
    # [[X, 0], [L, Y]]⁻¹ = [[X⁻¹, 0], [−Y⁻¹ L X⁻¹, Y⁻¹]], i.e. T ← T − T L T with L the coupling part.
    # Exact algebra with no growing powers of A, so it stays stable for β up to 2.
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
    p_A = Ai + (i_bh.to(tl.int64) * NT + i_t) * (C * C) + o_c[:, None] * C + o_c[None, :]
    tl.store(p_A, b_T)


@triton.jit
def chunk_gated_delta_rule_fwd_kernel(
    q,
    k,
    v,
    g,
    beta,
    Ai,
    h0,
    o,
    ht,
    hs,
    dlt,
    scale,
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
    SAVE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    bh = i_bh.to(tl.int64)
    bos = i_b.to(tl.int64) * T
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    o_kv = o_k[:, None] * V + o_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + bh * (K * V) + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_t in range(NT):
        o_t = i_t * C + o_c
        m_t = o_t < T
        r0 = (bos + i_t * C) * H + i_h
        b_q, _ = _load_qk(q + r0 * K, m_t, H, K, C, BK, USE_L2NORM)
        b_k, _ = _load_qk(k + r0 * K, m_t, H, K, C, BK, USE_L2NORM)
        b_G, b_Gl, b_beta = _load_gb(g, beta, r0, m_t, H, C)
        m_tv = m_t[:, None] & (o_v[None, :] < V)
        o_cv = o_c[:, None] * (H * V) + o_v[None, :]
        p_v = v + r0 * V + o_cv
        b_v = tl.load(p_v, mask=m_tv, other=0.0).to(tl.float32)
        b_T = tl.load(Ai + (bh * NT + i_t) * (C * C) + o_c[:, None] * C + o_c[None, :])
        b_eG = tl.exp(b_G)
        b_w = tl.dot(b_T, b_k * (b_beta * b_eG)[:, None], input_precision=PRECISION)  # [C, BK]
        b_u = tl.dot(b_T, b_v * b_beta[:, None], input_precision=PRECISION)  # [C, BV]
        b_d = b_u - tl.dot(b_w, b_h, input_precision=PRECISION)  # [C, BV]
        if SAVE:
            tl.store(hs + (bh * NT + i_t) * (K * V) + o_kv, b_h, mask=m_kv)
            p_d = dlt + (bh * NT + i_t) * (C * V) + o_c[:, None] * V + o_v[None, :]
            tl.store(p_d, b_d, mask=o_v[None, :] < V)
        b_P = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * _decay_matrix(b_G, C, False)
        b_o = tl.dot(b_q * b_eG[:, None], b_h, input_precision=PRECISION)
        b_o = (b_o + tl.dot(b_P, b_d, input_precision=PRECISION)) * scale
        p_o = o + r0 * V + o_cv
        tl.store(p_o, b_o.to(o.dtype.element_ty), mask=m_tv)
        b_kd = b_k * tl.exp(b_Gl - b_G)[:, None]
        b_h = b_h * tl.exp(b_Gl) + tl.dot(tl.trans(b_kd), b_d, input_precision=PRECISION)
    if STORE_HT:
        tl.store(ht + bh * (K * V) + o_kv, b_h, mask=m_kv)


@triton.jit
def chunk_gated_delta_rule_bwd_dh_kernel(
    q,
    k,
    g,
    beta,
    Ai,
    do,
    dht,
    dh,
    dh0,
    scale,
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
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    bh = i_bh.to(tl.int64)
    bos = i_b.to(tl.int64) * T
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_kv = (o_k[:, None] < K) & (o_v[None, :] < V)
    o_kv = o_k[:, None] * V + o_v[None, :]
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + bh * (K * V) + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_s in range(NT):
        i_t = NT - 1 - i_s
        o_t = i_t * C + o_c
        m_t = o_t < T
        tl.store(dh + (bh * NT + i_t) * (K * V) + o_kv, b_dh, mask=m_kv)
        r0 = (bos + i_t * C) * H + i_h
        b_q, _ = _load_qk(q + r0 * K, m_t, H, K, C, BK, USE_L2NORM)
        b_k, _ = _load_qk(k + r0 * K, m_t, H, K, C, BK, USE_L2NORM)
        b_G, b_Gl, b_beta = _load_gb(g, beta, r0, m_t, H, C)
        p_do = do + r0 * V + o_c[:, None] * (H * V) + o_v[None, :]
        b_do = tl.load(p_do, mask=m_t[:, None] & (o_v[None, :] < V), other=0.0).to(tl.float32)
        b_T = tl.load(Ai + (bh * NT + i_t) * (C * C) + o_c[:, None] * C + o_c[None, :])
        b_eG = tl.exp(b_G)
        b_w = tl.dot(b_T, b_k * (b_beta * b_eG)[:, None], input_precision=PRECISION)  # [C, BK]
        b_P = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * _decay_matrix(b_G, C, False)
        b_kd = b_k * tl.exp(b_Gl - b_G)[:, None]
        # dδ: δ feeds the chunk's outputs through P and the next state through k̃ = e^{G_C − G} k.
        b_dd = tl.dot(tl.trans(b_P), b_do, input_precision=PRECISION) * scale
        b_dd += tl.dot(b_kd, b_dh, input_precision=PRECISION)  # [C, BV]
        b_dh = b_dh * tl.exp(b_Gl) + tl.dot(
            tl.trans(b_q * (b_eG * scale)[:, None]), b_do, input_precision=PRECISION
        )
        b_dh -= tl.dot(tl.trans(b_w), b_dd, input_precision=PRECISION)
    if STORE_DH0:
        tl.store(dh0 + bh * (K * V) + o_kv, b_dh, mask=m_kv)


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
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, C)
    bh = i_bh.to(tl.int64)
    r0 = (i_b.to(tl.int64) * T + i_t * C) * H + i_h
    o_c = tl.arange(0, C)
    o_k = tl.arange(0, BK)
    m_t = i_t * C + o_c < T
    m_k = o_k < K
    b_q, b_rq = _load_qk(q + r0 * K, m_t, H, K, C, BK, USE_L2NORM)
    b_k, b_rk = _load_qk(k + r0 * K, m_t, H, K, C, BK, USE_L2NORM)
    b_G, b_Gl, b_beta = _load_gb(g, beta, r0, m_t, H, C)
    b_T = tl.load(Ai + (bh * NT + i_t) * (C * C) + o_c[:, None] * C + o_c[None, :])
    b_eG = tl.exp(b_G)
    b_ekd = tl.exp(b_Gl - b_G)
    # Tiles live across the V loop are kept few (q, k, T, P and four accumulators): registers bound
    # this kernel, so Γ, qkᵀ and k̃ are recomputed where needed rather than held.
    b_P = tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) * _decay_matrix(b_G, C, False)

    b_dP = tl.zeros([C, C], dtype=tl.float32)  # Σ_v do δᵀ
    b_dT = tl.zeros([C, C], dtype=tl.float32)  # gradient of T = (I + A)⁻¹
    b_dq = tl.zeros([C, BK], dtype=tl.float32)  # Σ_v do h0ᵀ
    b_dk = tl.zeros([C, BK], dtype=tl.float32)
    b_dbeta = tl.zeros([C], dtype=tl.float32)
    b_sqh = tl.zeros([C], dtype=tl.float32)  # Σ_v do ⊙ (q h0): decay of the inter-chunk output
    b_skh = tl.zeros([C], dtype=tl.float32)  # Σ_v dvb ⊙ (k h0): decay inside w
    b_r = tl.zeros([C], dtype=tl.float32)  # Σ_v δ ⊙ (k̃ dh): decay inside k̃
    b_hdh = tl.zeros([1], dtype=tl.float32)  # Σ h0 ⊙ dh
    p_hs = hs + (bh * NT + i_t) * (K * V)
    p_dh = dh + (bh * NT + i_t) * (K * V)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_tv = m_t[:, None] & m_v[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        o_kv = o_k[:, None] * V + o_v[None, :]
        o_tv = r0 * V + o_c[:, None] * (H * V) + o_v[None, :]
        b_v = tl.load(v + o_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_do = tl.load(do + o_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_d = tl.load(
            dlt + (bh * NT + i_t) * (C * V) + o_c[:, None] * V + o_v[None, :], mask=m_v[None, :], other=0.0
        )
        b_h = tl.load(p_hs + o_kv, mask=m_kv, other=0.0)  # [BK, BV] state at chunk start
        b_dhe = tl.load(p_dh + o_kv, mask=m_kv, other=0.0)  # [BK, BV] gradient at chunk end
        b_kdh = tl.dot(b_k * b_ekd[:, None], b_dhe, input_precision=PRECISION)  # [C, BV]
        b_dd = tl.dot(tl.trans(b_P), b_do, input_precision=PRECISION) * scale + b_kdh
        b_dvb = tl.dot(tl.trans(b_T), b_dd, input_precision=PRECISION)  # [C, BV]
        tl.store(dv + o_tv, (b_dvb * b_beta[:, None]).to(dv.dtype.element_ty), mask=m_tv)
        b_kh = tl.dot(b_k, b_h, input_precision=PRECISION)  # [C, BV]
        b_qh = tl.dot(b_q, b_h, input_precision=PRECISION)  # [C, BV]
        b_x = b_v - b_eG[:, None] * b_kh  # (βv − βe^G k h0) / β
        b_dbeta += tl.sum(b_dvb * b_x, 1)
        b_skh += tl.sum(b_dvb * b_kh, 1)
        b_sqh += tl.sum(b_do * b_qh, 1)
        b_r += tl.sum(b_d * b_kdh, 1)
        b_hdh += tl.sum(tl.sum(b_h * b_dhe, 1), 0)
        b_dP += tl.dot(b_do, tl.trans(b_d), input_precision=PRECISION)
        b_dT += tl.dot(b_dd, tl.trans(b_x * b_beta[:, None]), input_precision=PRECISION)
        b_dq += tl.dot(b_do, tl.trans(b_h), input_precision=PRECISION)
        b_dk += tl.dot(b_d * b_ekd[:, None], tl.trans(b_dhe), input_precision=PRECISION)
        b_dk -= tl.dot(b_dvb * (b_beta * b_eG)[:, None], tl.trans(b_h), input_precision=PRECISION)

    m_strict = o_c[:, None] > o_c[None, :]
    b_dA = tl.dot(
        tl.dot(tl.trans(b_T), b_dT, input_precision=PRECISION), tl.trans(b_T), input_precision=PRECISION
    )
    b_dA = tl.where(m_strict, -b_dA, 0.0)
    b_gam = _decay_matrix(b_G, C, False)
    b_Skk = tl.dot(b_k, tl.trans(b_k), input_precision=PRECISION)
    b_dAg = b_dA * b_gam
    b_B = b_dAg * b_beta[:, None]  # gradient of kkᵀ through A
    b_D2 = b_B * b_Skk  # dA ⊙ A
    b_dbeta += tl.sum(b_dAg * b_Skk, 1)
    b_dS = b_dP * b_gam * scale  # gradient of qkᵀ through P
    b_D1 = b_dP * b_P * scale  # dP ⊙ P
    b_dq = b_dq * (b_eG * scale)[:, None] + tl.dot(b_dS, b_k, input_precision=PRECISION)
    b_dk += tl.dot(tl.trans(b_dS), b_q, input_precision=PRECISION)
    b_dk += tl.dot(b_B, b_k, input_precision=PRECISION) + tl.dot(
        tl.trans(b_B), b_k, input_precision=PRECISION
    )

    # dg_s = Σ_{i≥s} ∂L/∂G_i, formed without differences of large terms so that it stays accurate
    # when decays are strong: a pairwise term D_ij e^{G_i − G_j} (j < i) depends on g_s for j < s ≤ i,
    # and the k̃ term e^{G_C − G_j} on g_s for s > j.
    b_dGp = b_sqh * b_eG * scale - b_skh * b_beta * b_eG  # terms in e^{G_i}
    b_dGp += tl.where(o_c == C - 1, tl.sum(b_hdh, 0) * tl.exp(b_Gl), 0.0)
    b_D = tl.where(m_strict, b_D1, 0.0) + b_D2  # the diagonal carries no decay
    b_R = tl.cumsum(b_D, 1) - b_D  # R_is = Σ_{j<s} D_ij
    b_dg = tl.sum(tl.where(o_c[:, None] >= o_c[None, :], b_dGp[:, None] + b_R, b_r[:, None]), 0)

    if USE_L2NORM:
        b_dq = (b_dq - b_q * tl.sum(b_q * b_dq, 1)[:, None]) * b_rq[:, None]
        b_dk = (b_dk - b_k * tl.sum(b_k * b_dk, 1)[:, None]) * b_rk[:, None]
    m_tk = m_t[:, None] & m_k[None, :]
    o_tk = r0 * K + o_c[:, None] * (H * K) + o_k[None, :]
    tl.store(dq + o_tk, b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + o_tk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
    o_th = r0 + o_c * H
    tl.store(dg + o_th, b_dg.to(dg.dtype.element_ty), mask=m_t)
    tl.store(dbeta + o_th, b_dbeta.to(dbeta.dtype.element_ty), mask=m_t)


@functools.cache
def _launch_config(K: int, V: int) -> dict:
    """Block sizes and warps per kernel (read, never mutate). The sweeps split V across programs for
    parallelism. Measured on an H100 (benchmarks/RESULTS.md): 4 warps with BV = 64 beat 8 warps with
    BV = 32 at K = V = 32 and 64 (fwd 155 µs vs 325 µs at B=64, T=512, H=4)."""
    BK = max(16, triton.next_power_of_2(K))
    big = BK > 64
    BV = min(max(16, triton.next_power_of_2(V)), 16 if BK > 128 else 32 if big else 64)
    warps = 8 if big else 4
    # The backward kernel's loop over V blocks is software-pipelined; three stages overflow the
    # 227 KB of shared memory at K = 64, V = 128 in fp32 (seen on an H200 in a 20 M-parameter model:
    # 240 KB needed), two stages fit every K, V ≤ 256 (≤ 192 KB, compiled for sm_90 with triton 3.6).
    return dict(BK=BK, BV_sweep=BV, BV_bwd=BV, warps_inv=4, warps_sweep=warps, warps_bwd=warps, stages_bwd=2)


def _precision(*xs: torch.Tensor) -> str:
    # fp32 inputs get fp32 dots; otherwise tf32 (more mantissa than the bf16 inputs carry).
    return "ieee" if INTERPRET or all(x.dtype == torch.float32 for x in xs) else "tf32"


def chunk_gated_delta_rule_fwd(
    q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, C, save
):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, C)
    cfg = _launch_config(K, V)
    prec = _precision(q, k, v)
    dev = q.device
    Ai = torch.empty(B * H, NT, C, C, device=dev, dtype=torch.float32)
    o = torch.empty_like(v)
    ht = torch.empty(B, H, K, V, device=dev, dtype=torch.float32) if output_final_state else None
    hs = torch.empty(B * H, NT, K, V, device=dev, dtype=torch.float32) if save else None
    dlt = torch.empty(B * H, NT * C, V, device=dev, dtype=torch.float32) if save else None
    chunk_gated_delta_rule_fwd_kkt_inv_kernel[(NT, B * H)](
        k, g, beta, Ai, T, H=H, K=K, C=C, LOG_C=C.bit_length() - 1, BK=cfg["BK"],
        USE_L2NORM=use_l2norm, PRECISION=prec, num_warps=cfg["warps_inv"],
    )  # fmt: skip
    chunk_gated_delta_rule_fwd_kernel[(triton.cdiv(V, cfg["BV_sweep"]), B * H)](
        q, k, v, g, beta, Ai, initial_state, o, ht, hs, dlt, scale, T, H=H, K=K, V=V, C=C,
        BK=cfg["BK"], BV=cfg["BV_sweep"], USE_L2NORM=use_l2norm, USE_H0=initial_state is not None,
        STORE_HT=output_final_state, SAVE=save, PRECISION=prec, num_warps=cfg["warps_sweep"],
    )  # fmt: skip
    return o, ht, Ai, hs, dlt


def chunk_gated_delta_rule_bwd(q, k, v, g, beta, Ai, hs, dlt, do, dht, scale, use_h0, use_l2norm, C):
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, C)
    cfg = _launch_config(K, V)
    prec = _precision(q, k, v)
    dh = torch.empty(B * H, NT, K, V, device=q.device, dtype=torch.float32)
    dh0 = torch.empty(B, H, K, V, device=q.device, dtype=torch.float32) if use_h0 else None
    chunk_gated_delta_rule_bwd_dh_kernel[(triton.cdiv(V, cfg["BV_sweep"]), B * H)](
        q, k, g, beta, Ai, do, dht, dh, dh0, scale, T, H=H, K=K, V=V, C=C, BK=cfg["BK"],
        BV=cfg["BV_sweep"], USE_L2NORM=use_l2norm, USE_DHT=dht is not None, STORE_DH0=use_h0,
        PRECISION=prec, num_warps=cfg["warps_sweep"],
    )  # fmt: skip
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dg, dbeta = torch.empty_like(g), torch.empty_like(beta)
    chunk_gated_delta_rule_bwd_kernel[(NT, B * H)](
        q, k, v, g, beta, Ai, hs, dlt, do, dh, dq, dk, dv, dg, dbeta, scale, T, H=H, K=K, V=V, C=C,
        BK=cfg["BK"], BV=cfg["BV_bwd"], USE_L2NORM=use_l2norm, PRECISION=prec,
        num_warps=cfg["warps_bwd"], num_stages=cfg["stages_bwd"],
    )  # fmt: skip
    return dq, dk, dv, dg, dbeta, dh0


class ChunkGatedDeltaRuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, C):
        save = torch.is_grad_enabled() or any(ctx.needs_input_grad)
        o, ht, Ai, hs, dlt = chunk_gated_delta_rule_fwd(
            q, k, v, g, beta, scale, initial_state, output_final_state, use_l2norm, C, save
        )
        ctx.save_for_backward(q, k, v, g, beta, Ai, hs, dlt)
        ctx.scale, ctx.use_h0, ctx.use_l2norm, ctx.C = scale, initial_state is not None, use_l2norm, C
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, beta, Ai, hs, dlt = ctx.saved_tensors
        dq, dk, dv, dg, dbeta, dh0 = chunk_gated_delta_rule_bwd(
            q, k, v, g, beta, Ai, hs, dlt, do.contiguous(), None if dht is None else dht.contiguous(),
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
    to 64, 32 for K > 64, 16 for K > 128. Inputs of mixed dtypes are accepted and cast inside.
    """
    B, T, H, K, V = check_inputs(q, k, v, g, beta, initial_state)
    # Smaller chunks for wider keys keep the tiles within registers and shared memory.
    C = chunk_size if chunk_size is not None else (64 if K <= 64 else 32 if K <= 128 else 16)
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
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    return ChunkGatedDeltaRuleFunction.apply(
        q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel, C
    )
