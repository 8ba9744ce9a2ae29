"""Chunked SSD backward kernels; chunk.py launches them (README.md has the derivation)."""

import triton
import triton.language as tl

from kernels.ssd.triton_fwd import _ad_row, _dlog_a, _load_decay, _op, _state_row


@triton.jit
def chunk_ssd_bwd_dh_kernel(
    C,
    dy,
    gam,
    sig,
    dht,
    dh,
    dh0,
    T,
    H,
    G,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    USE_DHT: tl.constexpr,
    STORE_DH0: tl.constexpr,
    BF16: tl.constexpr,
    PRECISION: tl.constexpr,
):
    i_bh, i_k, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T
    o_bh = i_bh.to(tl.int64)

    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]

    b_dS = tl.zeros([BK, BV], dtype=tl.float32)  # gradient w.r.t. the state at the chunk end
    if USE_DHT:
        b_dS += tl.load(dht + o_bh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_r in range(NT):
        i_t = NT - 1 - i_r
        tl.store(
            dh + _state_row(i_b, i_h, i_t, H, NT) * K * V + o_kv,
            b_dS.to(dh.dtype.element_ty),
            mask=m_kv,
        )
        o_row = bos + i_t * BT + o_t
        m_t = (i_t * BT + o_t) < T
        b_do = tl.load(
            dy + (o_row * H + i_h)[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
        )  # [BT, BV]
        b_qT = tl.load(
            C + (o_row * G + i_g)[None, :] * K + o_k[:, None], mask=m_k[:, None] & m_t[None, :], other=0.0
        )  # [BK, BT]
        b_g, b_sig, b_g_end, b_sig_end = _load_decay(gam, sig, (o_bh * NT + i_t) * BT, o_t, BT, NEG)
        b_dS = b_sig_end * tl.exp(b_g_end) * b_dS
        b_qlT = _op(b_qT * (b_sig * tl.exp(b_g))[None, :], BF16)
        b_dS += tl.dot(b_qlT, _op(b_do, BF16), input_precision=PRECISION)
    if STORE_DH0:
        tl.store(dh0 + o_bh * K * V + o_kv, b_dS, mask=m_kv)


@triton.jit
def chunk_ssd_bwd_dx_kernel(
    x,
    dt,
    A,
    B,
    C,
    D,
    gam,
    sig,
    h,
    dh,
    dy,
    dx,
    ddt,
    red,
    T,
    NB,
    H,
    G,
    NB_A,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    HAS_D: tl.constexpr,
    BF16: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """For one chunk, head and V-block: dx, this V-block's share of d dt, and the chunk's partial
    sums for dA and dD (red is [1 + HAS_D, H, B, NV, NT]). Every product with B, C, h or dS reduces
    over K, so K is walked in blocks of BK."""
    i_tbh, i_v = tl.program_id(0), tl.program_id(1)
    NT = tl.cdiv(T, BT)
    NV = tl.num_programs(1)
    i_bh, i_t = i_tbh // NT, i_tbh % NT
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)

    o_t = tl.arange(0, BT)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_causal = o_t[:, None] >= o_t[None, :]
    o_row = i_b.to(tl.int64) * T + i_t * BT + o_t
    m_t = (i_t * BT + o_t) < T
    m_tv = m_t[:, None] & m_v[None, :]
    o_x = (o_row * H + i_h)[:, None] * V + o_v[None, :]
    o_c = i_bh.to(tl.int64) * NT + i_t

    b_x = tl.load(x + o_x, mask=m_tv, other=0.0)  # [BT, BV]
    b_do = tl.load(dy + o_x, mask=m_tv, other=0.0)  # [BT, BV]
    b_qb = tl.zeros([BT, BT], dtype=tl.float32)  # C_i·B_j
    b_bdS = tl.zeros([BT, BV], dtype=tl.float32)  # dSᵀB_j, dS the gradient of the chunk-end state
    b_qh = tl.zeros([BT, BV], dtype=tl.float32)  # S₀ᵀC_i, S₀ the chunk-start state
    b_hds = tl.zeros([BV], dtype=tl.float32)  # ⟨S₀, dS⟩ per column
    i_ad = _ad_row(i_b, i_h, H, NB_A)
    b_A = tl.load(A + i_ad).to(tl.float32)
    b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
    b_g, b_sig, b_g_end, b_sig_end = _load_decay(gam, sig, o_c * BT, o_t, BT, NEG)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        o_bc = (o_row * G + i_g)[:, None] * K + o_k[None, :]
        o_h = _state_row(i_b, i_h, i_t, H, NT) * K * V + o_k[:, None] * V + o_v[None, :]
        b_b = tl.load(B + o_bc, mask=m_tk, other=0.0)  # [BT, BK]
        b_q = tl.load(C + o_bc, mask=m_tk, other=0.0)  # [BT, BK]
        b_h = tl.load(h + o_h, mask=m_kv, other=0.0)  # [BK, BV]
        b_dS = tl.load(dh + o_h, mask=m_kv, other=0.0)  # [BK, BV]
        b_qb += tl.dot(_op(b_q, BF16), tl.trans(_op(b_b, BF16)), input_precision=PRECISION)
        b_bdS += tl.dot(_op(b_b, BF16), _op(b_dS, BF16), input_precision=PRECISION)
        b_qh += tl.dot(_op(b_q, BF16), _op(b_h, BF16), input_precision=PRECISION)
        b_hds += tl.sum(b_h.to(tl.float32) * b_dS.to(tl.float32), 0)

    b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start
    b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g)  # decay to the chunk end
    b_M = tl.where(m_causal, tl.exp(b_g[:, None] - b_g[None, :]), 0.0) * (b_sig[:, None] * b_sig[None, :])
    b_qbM = b_qb * b_M  # [BT, BT] (i, j)
    b_s = _op(b_qbM * b_dt[None, :], BF16)  # (C_i·k_j) M_ij
    b_dx = tl.dot(tl.trans(b_s), _op(b_do, BF16), input_precision=PRECISION)
    b_dx += (b_w * b_dt)[:, None] * b_bdS
    if HAS_D:
        b_dx += tl.load(D + i_ad).to(tl.float32) * b_do.to(tl.float32)
    tl.store(dx + o_x, b_dx.to(dx.dtype.element_ty), mask=m_tv)
    b_xbdS = tl.sum(b_x.to(tl.float32) * b_bdS, 1)  # x_j·(dSᵀB_j)

    # d log|a_t|: only the terms whose decay spans step t, each carrying the factor a_t, so that
    # d log|a_t| stays accurate relative to a_t and dividing by a_t (NEG) loses nothing. Every term
    # is linear in this V-block's share, so V-blocks add up.
    b_u = b_qbM * tl.dot(_op(b_do, BF16), tl.trans(_op(b_x, BF16)), input_precision=PRECISION)  # r_ij / dt_j
    # d dt = B·dk + A·d(dt·A), dk the gradient of k = dt·B: B_j·dk_j = Σ_i u_ij + w_j x_j·(dSᵀB_j)
    b_ddt = tl.sum(b_u, 0) + b_w * b_xbdS
    b_r = b_u * b_dt[None, :]
    b_dl = tl.sum(tl.where(m_causal, tl.cumsum(b_r, 1) - b_r, 0.0), 0)  # Σ_{i ≥ t > j} r_ij
    b_alpha = b_lam * tl.sum(b_do.to(tl.float32) * b_qh, 1)  # through S_start
    b_dl += tl.cumsum(b_alpha, 0, reverse=True)  # summed over i ≥ t
    b_beta = b_w * b_dt * b_xbdS  # into S_end, summed over j < t
    b_dl += tl.sum(tl.where(o_t[:, None] < o_t[None, :], b_beta[:, None], 0.0), 0)
    b_dl += b_sig_end * tl.exp(b_g_end) * tl.sum(b_hds, 0)
    b_dxa = b_dl * _dlog_a(b_dt, b_A, NEG)  # d/d(dt·A)
    b_ddt += b_A * b_dxa
    tl.store(ddt + i_v * NB * T * H + o_row * H + i_h, b_ddt.to(ddt.dtype.element_ty), mask=m_t)
    # the partials of each value of dA and dD contiguous, for the sums in the dB/dC kernel
    o_red = ((i_h * NB + i_b) * NV + i_v).to(tl.int64) * NT + i_t
    tl.store(red + o_red, tl.sum(b_dxa * b_dt, 0))
    if HAS_D:
        b_xdy = tl.sum(tl.sum(b_x.to(tl.float32) * b_do.to(tl.float32), 1), 0)
        tl.store(red + H * NV * NB * NT + o_red, b_xdy)


@triton.jit
def _sum_decay_partial(red, dA, dD, i_s, H, NA, L, RB: tl.constexpr):
    """One value of dA or dD ([NA, H] each): the sum of the dx kernel's L per-chunk partials, in a fixed
    order. i_s enumerates (dA or dD, head, row of A) and its partials are red[i_s·L : (i_s + 1)·L]."""
    o_r = tl.arange(0, RB)
    b_acc = tl.zeros([RB], dtype=tl.float32)
    for i_r in range(0, L, RB):
        b_acc += tl.load(red + i_s.to(tl.int64) * L + i_r + o_r, mask=i_r + o_r < L, other=0.0)
    i_hr = i_s % (H * NA)
    o_ad = (i_hr % NA) * H + i_hr // NA
    if i_s < H * NA:
        tl.store(dA + o_ad, tl.sum(b_acc, 0).to(dA.dtype.element_ty))
    else:
        tl.store(dD + o_ad, tl.sum(b_acc, 0).to(dD.dtype.element_ty))


@triton.jit
def chunk_ssd_bwd_dqk_kernel(
    x,
    dt,
    B,
    C,
    gam,
    sig,
    h,
    dh,
    dy,
    dB,
    dC,
    ddt_part,
    ddt,
    red,
    dA,
    dD,
    T,
    NB,
    H,
    G,
    NB_A,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NV: tl.constexpr,
    NVX: tl.constexpr,
    NEG: tl.constexpr,
    HAS_D: tl.constexpr,
    BF16: tl.constexpr,
    PRECISION: tl.constexpr,
    RB: tl.constexpr,
):
    """dB and dC of one chunk, one K-block and one B/C group, its heads summed here. The launch runs
    after the dx kernel, so it also finishes that kernel's reductions: the first K-block sums the
    NVX V-block shares of d dt (when NVX > 1), and (1 + HAS_D)·H·NA programs ahead of the chunks' sum
    dA and dD, one value each (first in the grid, so that they overlap the rest); no torch ops follow
    the backward kernels."""
    i_p, i_k = tl.program_id(0), tl.program_id(1)
    NT = tl.cdiv(T, BT)
    NA = NB // NB_A
    NR = (1 + HAS_D) * H * NA
    if i_p < NR:
        if i_k == 0:
            _sum_decay_partial(red, dA, dD, i_p, H, NA, NVX * NB_A * NT, RB)
    else:
        i_tbg = i_p - NR
        i_bg, i_t = i_tbg // NT, i_tbg % NT
        i_b, i_g = i_bg // G, i_bg % G
        HPG = H // G

        o_t = tl.arange(0, BT)
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_causal = o_t[:, None] >= o_t[None, :]
        o_row = i_b.to(tl.int64) * T + i_t * BT + o_t
        m_t = (i_t * BT + o_t) < T
        m_tk = m_t[:, None] & m_k[None, :]
        o_bc = (o_row * G + i_g)[:, None] * K + o_k[None, :]

        b_b = tl.load(B + o_bc, mask=m_tk, other=0.0)  # [BT, BK]
        b_q = tl.load(C + o_bc, mask=m_tk, other=0.0)  # [BT, BK]
        b_dB = tl.zeros([BT, BK], dtype=tl.float32)
        b_dC = tl.zeros([BT, BK], dtype=tl.float32)
        for i_j in range(HPG):
            i_h = i_g * HPG + i_j
            o_c = (i_b * H + i_h).to(tl.int64) * NT + i_t
            if NVX > 1:
                if i_k == 0:
                    b_ddt = tl.zeros([BT], dtype=tl.float32)
                    for i_s in tl.static_range(NVX):
                        b_ddt += tl.load(ddt_part + i_s * NB * T * H + o_row * H + i_h, mask=m_t, other=0.0)
                    tl.store(ddt + o_row * H + i_h, b_ddt.to(ddt.dtype.element_ty), mask=m_t)
            b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
            b_g, b_sig, b_g_end, b_sig_end = _load_decay(gam, sig, o_c * BT, o_t, BT, NEG)
            b_dp = tl.zeros([BT, BT], dtype=tl.float32)  # dy_i·x_j
            b_dqs = tl.zeros([BT, BK], dtype=tl.float32)  # dy_i through the chunk-start state
            b_dks = tl.zeros([BT, BK], dtype=tl.float32)  # x_j into the chunk-end state
            for i_v in tl.static_range(NV):
                o_v = i_v * BV + tl.arange(0, BV)
                m_v = o_v < V
                o_x = (o_row * H + i_h)[:, None] * V + o_v[None, :]
                m_kv = m_k[:, None] & m_v[None, :]
                b_x = tl.load(x + o_x, mask=m_t[:, None] & m_v[None, :], other=0.0)  # [BT, BV]
                b_do = tl.load(dy + o_x, mask=m_t[:, None] & m_v[None, :], other=0.0)  # [BT, BV]
                o_kv = _state_row(i_b, i_h, i_t, H, NT) * K * V + o_k[:, None] * V + o_v[None, :]
                b_h = tl.load(h + o_kv, mask=m_kv, other=0.0)  # chunk-start state, [BK, BV]
                b_dS = tl.load(dh + o_kv, mask=m_kv, other=0.0)  # gradient of the chunk-end state
                b_dp += tl.dot(_op(b_do, BF16), tl.trans(_op(b_x, BF16)), input_precision=PRECISION)
                b_dqs += tl.dot(_op(b_do, BF16), tl.trans(_op(b_h, BF16)), input_precision=PRECISION)
                b_dks += tl.dot(_op(b_x, BF16), tl.trans(_op(b_dS, BF16)), input_precision=PRECISION)
            b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start
            b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g)  # decay to the chunk end
            b_M = tl.where(m_causal, tl.exp(b_g[:, None] - b_g[None, :]), 0.0) * (
                b_sig[:, None] * b_sig[None, :]
            )
            b_ds = b_dp * b_M  # [BT, BT] (i, j)
            b_dC += b_lam[:, None] * b_dqs
            b_dC += tl.dot(_op(b_ds * b_dt[None, :], BF16), _op(b_b, BF16), input_precision=PRECISION)
            b_dk = tl.dot(tl.trans(_op(b_ds, BF16)), _op(b_q, BF16), input_precision=PRECISION)  # d k_j
            b_dB += b_dt[:, None] * (b_dk + b_w[:, None] * b_dks)
        tl.store(dB + o_bc, b_dB.to(dB.dtype.element_ty), mask=m_tk)
        tl.store(dC + o_bc, b_dC.to(dC.dtype.element_ty), mask=m_tk)
