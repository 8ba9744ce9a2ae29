"""Gated DeltaNet backward kernels; chunk.py launches them (README.md has the algebra)."""

import triton
import triton.language as tl

from kernels.gated_delta_rule.triton_fwd import (
    _c,
    _decay_matrix,
    _l2norm,
    _ld,
    _ld_s,
    _load_G,
    _load_gb,
    _pid_chunk,
    _pid_chunk_v,
    _pid_v,
    _round,
    _st,
    _st_s,
)


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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    """The part of dδ inside the chunk, scale (q kᵀ ⊙ Γ)ᵀ do: no state involved, so chunk-parallel."""
    i_bh, i_t, i_v = _pid_chunk_v(T, BT, (V + BV - 1) // BV)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_ddl.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    m_t = i_t * BT + tl.arange(0, BT) < T
    b_q, _ = _l2norm(_ld(d_q, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)
    b_G, _ = _load_G(g, bos + i_t * BT * H, m_t, H, BT)
    if i_v == 0:  # q̂ = scale e^G q for the reverse sweep, whose loop then only loads
        _st(d_qg, i_b, i_t * BT, i_h, 0, b_q * (tl.exp(b_G) * scale)[:, None], DT, EMU)
    # Pᵀ directly: k qᵀ ⊙ Γᵀ
    b_Pt = tl.dot(_c(b_k, DT, EMU), tl.trans(_c(b_q, DT, EMU)), input_precision=PRECISION)
    b_Pt = b_Pt * tl.trans(_decay_matrix(b_G, BT, False)) * scale
    b_do = _c(_ld(d_do, i_b, i_t * BT, i_h, i_v * BV, BT, BV), DT, EMU)
    b_dd = tl.dot(_c(b_Pt, DT, EMU), b_do, input_precision=PRECISION)
    _st(d_ddl, i_b, i_t * BT, i_h, i_v * BV, b_dd, DT, EMU)


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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    USE_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_bh, i_v = _pid_v((V + BV - 1) // BV)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_w.dtype
    NT = tl.cdiv(T, BT)
    c0 = i_v * BV
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_dh += d_dht.load([i_b, i_h, 0, c0]).reshape(BK, BV)
    for i_s in range(NT):
        i_t = NT - 1 - i_s
        b_dhc = _round(b_dh, DT, EMU)
        _st_s(d_dh, i_bh, i_t, c0, b_dhc, DT, EMU)
        b_Gl = tl.load(gl + i_bh.to(tl.int64) * NT + i_t)
        b_w = _c(_ld(d_w, i_b, i_t * BT, i_h, 0, BT, BK), DT, EMU)
        b_do = _c(_ld(d_do, i_b, i_t * BT, i_h, c0, BT, BV), DT, EMU)
        # dδ = scale Pᵀ do (from ddl) + k̃ dh_C: δ feeds the outputs and the next state
        b_dd = _ld(d_ddl, i_b, i_t * BT, i_h, c0, BT, BV).to(tl.float32)
        b_kd = _c(_ld(d_kt, i_b, i_t * BT, i_h, 0, BT, BK), DT, EMU)
        b_dd += tl.dot(b_kd, _c(b_dhc, DT, EMU), input_precision=PRECISION)  # [BT, BV]
        b_ddc = _round(b_dd, DT, EMU)
        _st(d_dd, i_b, i_t * BT, i_h, c0, b_ddc, DT, EMU)
        b_qg = _c(_ld(d_qg, i_b, i_t * BT, i_h, 0, BT, BK), DT, EMU)
        b_dh = b_dh * tl.exp(b_Gl) + tl.dot(tl.trans(b_qg), b_do, input_precision=PRECISION)
        b_dh -= tl.dot(tl.trans(b_w), _c(b_ddc, DT, EMU), input_precision=PRECISION)
    if STORE_DH0:
        d_dh0.store([i_b, i_h, 0, c0], b_dh.reshape(1, 1, BK, BV))


# The chunk-parallel gradient is split in two kernels, each with two or three [BT, K] / [BT, BT]
# accumulators, so that two programs share an SM (README.md).
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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_bh, i_t = _pid_chunk(T, BT)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_dlt.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    r0 = bos + i_t * BT * H
    o_c = tl.arange(0, BT)
    m_t = i_t * BT + o_c < T
    b_G, b_Gl, b_beta = _load_gb(g, beta, r0, m_t, H, BT)
    b_Tt = _c(tl.trans(_ld_s(d_Ai, i_bh, i_t, 0, BT, BT)), DT, EMU)

    b_Xa = tl.zeros([BT, BK], dtype=tl.float32)  # dY h0ᵀ, dY = Tᵀ dδ  (= −dX)
    b_dYd = tl.zeros([BT, BT], dtype=tl.float32)  # dY δᵀ  (= −dA on the strict lower part)
    b_dbeta = tl.zeros([BT], dtype=tl.float32)  # Σ_v dY ⊙ v
    for i_v in range(tl.cdiv(V, BV)):
        c0 = i_v * BV
        b_dd = _c(_ld(d_dd, i_b, i_t * BT, i_h, c0, BT, BV), DT, EMU)
        b_dY = tl.dot(b_Tt, b_dd, input_precision=PRECISION)  # [BT, BV]
        _st(d_dv, i_b, i_t * BT, i_h, c0, b_dY * b_beta[:, None], d_dv.dtype, EMU)
        b_v = _ld(d_v, i_b, i_t * BT, i_h, c0, BT, BV).to(tl.float32)
        b_dbeta += tl.sum(b_dY * b_v, 1)
        b_dYc = _c(b_dY, DT, EMU)
        b_h = _c(_ld_s(d_hs, i_bh, i_t, c0, BK, BV), DT, EMU)  # [BK, BV] state at chunk start
        b_d = _c(_ld(d_dlt, i_b, i_t * BT, i_h, c0, BT, BV), DT, EMU)
        b_Xa += tl.dot(b_dYc, tl.trans(b_h), input_precision=PRECISION)
        b_dYd += tl.dot(b_dYc, tl.trans(b_d), input_precision=PRECISION)

    m_strict = o_c[:, None] > o_c[None, :]
    b_eG = tl.exp(b_G)
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)  # only now: registers
    b_kc = _c(b_k, DT, EMU)
    b_Skk = tl.dot(b_kc, tl.trans(b_kc), input_precision=PRECISION)
    b_dAg = tl.where(m_strict, -b_dYd, 0.0) * _decay_matrix(b_G, BT, True)  # dA ⊙ Γ
    b_B = b_dAg * b_beta[:, None]  # gradient of kkᵀ through A
    b_D = b_B * b_Skk  # dA ⊙ A
    b_sX = tl.sum(b_Xa * b_k, 1)
    b_dbeta += tl.sum(b_dAg * b_Skk, 1) - b_eG * b_sX
    b_dk = tl.dot(_c(b_B + tl.trans(b_B), DT, EMU), b_kc, input_precision=PRECISION)
    b_dk -= b_Xa * (b_beta * b_eG)[:, None]
    # dg: the terms in e^{G_i} and the pairwise D_ij e^{G_i − G_j} (see bwd_qk, which adds the rest)
    b_R = tl.cumsum(b_D, 1) - b_D  # R_is = Σ_{j<s} D_ij
    b_dg = tl.sum(tl.where(o_c[:, None] >= o_c[None, :], (-b_sX * b_beta * b_eG)[:, None] + b_R, 0.0), 0)
    d_dkp.store([i_b, i_t * BT, i_h, 0], b_dk.reshape(1, BT, 1, BK))
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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_bh, i_t = _pid_chunk(T, BT)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_dlt.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    r0 = bos + i_t * BT * H
    o_c = tl.arange(0, BT)
    m_t = i_t * BT + o_c < T
    b_G, b_Gl = _load_G(g, r0, m_t, H, BT)

    b_Qa = tl.zeros([BT, BK], dtype=tl.float32)  # do h0ᵀ
    b_Ka = tl.zeros([BT, BK], dtype=tl.float32)  # δ dh_Cᵀ
    b_dP = tl.zeros([BT, BT], dtype=tl.float32)  # do δᵀ
    b_hdh = tl.zeros([BK], dtype=tl.float32)  # Σ_v h0 ⊙ dh_C, per key
    for i_v in range(tl.cdiv(V, BV)):
        c0 = i_v * BV
        b_do = _c(_ld(d_do, i_b, i_t * BT, i_h, c0, BT, BV), DT, EMU)
        b_d = _c(_ld(d_dlt, i_b, i_t * BT, i_h, c0, BT, BV), DT, EMU)
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
    b_k, b_rk = _l2norm(_ld(d_k, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)
    b_r = tl.sum(b_Ka * b_k, 1) * b_ekd  # Σ_v δ ⊙ (k̃ dh_C): decay inside k̃
    b_dk = d_dkp.load([i_b, i_t * BT, i_h, 0]).reshape(BT, BK) + b_Ka * b_ekd[:, None]
    b_q, b_rq = _l2norm(_ld(d_q, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)
    b_dGp = tl.sum(b_Qa * b_q, 1) * scale * b_eG  # terms in e^{G_i}
    b_dGp += tl.where(o_c == BT - 1, tl.sum(b_hdh, 0) * tl.exp(b_Gl), 0.0)
    b_dq = b_Qa * (b_eG * scale)[:, None]
    b_dS = b_dP * _decay_matrix(b_G, BT, False) * scale  # gradient of qkᵀ through P
    b_qc, b_kc = _c(b_q, DT, EMU), _c(b_k, DT, EMU)
    b_dq += tl.dot(_c(b_dS, DT, EMU), b_kc, input_precision=PRECISION)
    if USE_L2NORM:
        b_dq = (b_dq - b_q * tl.sum(b_q * b_dq, 1)[:, None]) * b_rq[:, None]
    _st(d_dq, i_b, i_t * BT, i_h, 0, b_dq, d_dq.dtype, EMU)
    b_dk += tl.dot(_c(tl.trans(b_dS), DT, EMU), b_qc, input_precision=PRECISION)
    if USE_L2NORM:
        b_dk = (b_dk - b_k * tl.sum(b_k * b_dk, 1)[:, None]) * b_rk[:, None]
    _st(d_dk, i_b, i_t * BT, i_h, 0, b_dk, d_dk.dtype, EMU)

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
