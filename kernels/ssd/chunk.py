"""Chunked SSD: Triton kernels, their autograd.Function, and the public `chunk_ssd`.

Forward (1 to 3 launches): `chunk_ssd_decay_kernel` writes every chunk's cumulated log decays (and sign
products, and dt in the same layout) where the walk is long; `chunk_ssd_fwd_h_pairs_kernel` (long walks,
two chunks a step) or `chunk_ssd_fwd_h_kernel` (short walks, forming the decays itself) walks the chunks
in order doing the state recurrence and stores each chunk's start state;
`chunk_ssd_fwd_o_kernel` computes every chunk's output in parallel, except on the shortest walks, where
the walk gives y itself. Backward (3 launches): `chunk_ssd_bwd_dh_kernel` walks the chunks in reverse
for the gradient of each chunk's end state; `chunk_ssd_bwd_dx_kernel` gives dx, d dt and per-chunk
partial sums of dA and dD; `chunk_ssd_bwd_dqk_kernel` dB and dC, owning all heads of a B/C group so
that the group sum happens in registers, and finishes the dx kernel's sums. The derivation is in
README.md.
"""

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.compiler import CompiledKernel

from kernels.ssd.naive import chunk_ssd_torch

BACKENDS = ("triton", "torch")
# Up to this many chunks the forward state walk forms the chunk decays itself (no decay kernel; past it
# the walk takes two chunks a step, chunk_ssd_fwd_h_pairs_kernel), and
# up to ONE_LAUNCH_MAX_CHUNKS (with all of K in one block) it gives y as well (no output kernel)
WALK_DECAY_MAX_CHUNKS = 8
ONE_LAUNCH_MAX_CHUNKS = 8


@triton.jit
def _op(t, BF16: tl.constexpr):
    """A tl.dot operand: bf16 when every raw input is bf16 (fp32 accumulate), fp32 otherwise."""
    if BF16:
        return t.to(tl.bfloat16)
    else:
        return t.to(tl.float32)


@triton.jit
def _decay_value(b_xa, NEG: tl.constexpr):
    """a = exp(x) or 2 exp(x) − 1 for x = dt·A."""
    if NEG:
        # a = 2 e^x − 1 loses its relative accuracy in fp32 as a → 0 (x → −ln 2), and log|a| needs
        # it; there write a = −2 e^x · expm1(y), y = −x − ln 2 (ln 2 split hi + lo, expm1 by series).
        b_y = (-b_xa - 0.693145751953125) - 1.428606820309417e-06
        b_em1 = b_y * (1.0 + b_y * (0.5 + b_y * (1.0 / 6.0 + b_y * (1.0 / 24.0 + b_y * (1.0 / 120.0)))))
        return tl.where(tl.abs(b_y) < 0.1, -2.0 * tl.exp(b_xa) * b_em1, 2.0 * tl.exp(b_xa) - 1.0)
    else:
        return tl.exp(b_xa)


@triton.jit
def _dlog_a(b_dt, b_A, NEG: tl.constexpr):
    """d log|a| / d(dt·A)."""
    if NEG:
        b_xa = b_dt * b_A
        b_a = _decay_value(b_xa, NEG)
        # 2 e^x / a, with a floored like |a| in the decay kernel so that the ratio to d log|a| (which
        # carries the same floored factor) is dL/da · 2 e^x, finite at a = 0
        return 2.0 * tl.exp(b_xa) / tl.where(b_a < 0, -1.0, 1.0) / tl.maximum(tl.abs(b_a), 1e-30)
    else:
        return tl.full(b_dt.shape, 1.0, tl.float32)


@triton.jit
def _load_decay(gam, sig, o_g, o_t, BT: tl.constexpr, NEG: tl.constexpr):
    """One chunk's Γ (cumulated log|a|) and σ (cumulated sign product), [BT] each, and their end values."""
    b_g = tl.load(gam + o_g + o_t)
    b_g_end = tl.load(gam + o_g + BT - 1)
    if NEG:
        b_sig = tl.load(sig + o_g + o_t)
        b_sig_end = tl.load(sig + o_g + BT - 1)
    else:
        b_sig = tl.full([BT], 1.0, tl.float32)
        b_sig_end = 1.0
    return b_g, b_sig, b_g_end, b_sig_end


@triton.jit
def _chunk_decay(b_dt, b_A, BT: tl.constexpr, NEG: tl.constexpr):
    """One chunk's Γ and σ [BT] from its dt [BT] (fp32; padded steps have dt = 0, so a = 1)."""
    b_xa = b_dt * b_A
    if NEG:
        b_a = _decay_value(b_xa, NEG)
        # |a| floored so that a zero decay keeps Γ finite
        b_g = tl.cumsum(tl.log(tl.maximum(tl.abs(b_a), 1e-30)), 0)
        b_sig = 1.0 - 2.0 * (tl.cumsum((b_a < 0).to(tl.int32), 0) % 2).to(tl.float32)
    else:
        b_g = tl.cumsum(b_xa, 0)
        b_sig = tl.full([BT], 1.0, tl.float32)
    return b_g, b_sig


@triton.jit
def _state_row(i_b, i_h, i_t, H, NT):
    """Index of chunk i_t's state of (batch i_b, head i_h) in the stack of chunk states (h, dh), in
    units of K·V: [B, NT, H], time-major, so that the states the walks' programs store at one step lie
    side by side (against [B, H, NT]: no measurable difference on an H100, 151 against 155 µs walk)."""
    return (i_b.to(tl.int64) * NT + i_t) * H + i_h


@triton.jit
def chunk_ssd_decay_kernel(
    dt,
    A,
    gam,
    sig,
    dtc,
    T,
    H,
    BT: tl.constexpr,
    NEG: tl.constexpr,
):
    """Γ, σ and dt (fp32) of one chunk into [B, H, NT·BT]; padded steps have dt = 0 (a = 1) and repeat
    the end. The copy of dt gives the kernels after it contiguous loads (dt [B, T, H] is H apart: in the
    forward walk's serial loop those loads cost 25 of 153 µs at (2, 8192, 16, 128) on an H100)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    NT = tl.cdiv(T, BT)
    i_b, i_h = i_bh // H, i_bh % H
    o_t = tl.arange(0, BT)
    m_t = (i_t * BT + o_t) < T
    b_dt = tl.load(dt + (i_b.to(tl.int64) * T + i_t * BT + o_t) * H + i_h, mask=m_t, other=0.0)
    b_g, b_sig = _chunk_decay(b_dt.to(tl.float32), tl.load(A + i_h).to(tl.float32), BT, NEG)
    o_g = (i_bh.to(tl.int64) * NT + i_t) * BT + o_t
    tl.store(gam + o_g, b_g)
    tl.store(dtc + o_g, b_dt.to(tl.float32))
    if NEG:
        tl.store(sig + o_g, b_sig)


@triton.jit
def chunk_ssd_fwd_h_kernel(
    x,
    dt,
    A,
    B,
    C,
    D,
    gam,
    sig,
    dtc,
    h0,
    h,
    ht,
    y,
    T,
    H,
    G,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    BF16: tl.constexpr,
    PREC: tl.constexpr,
    OUT: tl.constexpr,
    STORE_H: tl.constexpr,
    HAS_D: tl.constexpr,
):
    """The state walk over short sequences, one chunk a step, forming each chunk's Γ and σ itself (the
    first K/V-block stores them and dt) in place of the decay kernel; with OUT (one K-block holding all
    of K) it also gives each chunk's y
    from the state in hand, in place of the output kernel: the whole forward in one launch where the
    walk is short. STORE_H: store the chunk-start states (and Γ, σ) for the output kernel or the
    backward."""
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

    b_A = tl.load(A + i_h).to(tl.float32)
    b_S = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV], the carried state stays fp32
    if USE_H0:
        b_S += tl.load(h0 + o_bh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_t in range(NT):
        if STORE_H:
            tl.store(
                h + _state_row(i_b, i_h, i_t, H, NT) * K * V + o_kv,
                b_S.to(h.dtype.element_ty),
                mask=m_kv,
            )
        o_row = bos + i_t * BT + o_t  # [BT] absolute time index, int64
        m_t = (i_t * BT + o_t) < T
        b_x = tl.load(
            x + (o_row * H + i_h)[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
        )  # [BT, BV]
        b_bT = tl.load(
            B + (o_row * G + i_g)[None, :] * K + o_k[:, None], mask=m_k[:, None] & m_t[None, :], other=0.0
        )  # [BK, BT]
        o_g = (o_bh * NT + i_t) * BT
        b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
        b_g, b_sig = _chunk_decay(b_dt, b_A, BT, NEG)
        # the last element exactly (a sum of it and zeros), as the other kernels load it
        b_g_end = tl.sum(tl.where(o_t == BT - 1, b_g, 0.0), 0)
        b_sig_end = tl.sum(tl.where(o_t == BT - 1, b_sig, 0.0), 0)
        if STORE_H:
            if (i_k == 0) & (i_v == 0):
                tl.store(gam + o_g + o_t, b_g)
                tl.store(dtc + o_g + o_t, b_dt)
                if NEG:
                    tl.store(sig + o_g + o_t, b_sig)
        if OUT:
            # as the output kernel computes it from the stored state (same operand rounding)
            b_q = tl.load(
                C + (o_row * G + i_g)[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
            )  # [BT, BK]
            b_M = tl.where(o_t[:, None] >= o_t[None, :], tl.exp(b_g[:, None] - b_g[None, :]), 0.0)
            b_M *= b_sig[:, None] * (b_sig * b_dt)[None, :]  # decay j → i times dt_j
            b_s = tl.dot(_op(b_q, BF16), _op(b_bT, BF16), input_precision=PREC) * b_M  # [BT, BT]
            b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start
            b_y = b_lam[:, None] * tl.dot(_op(b_q, BF16), _op(b_S, BF16), input_precision=PREC)
            b_y += tl.dot(_op(b_s, BF16), _op(b_x, BF16), input_precision=PREC)
            if HAS_D:
                b_y += tl.load(D + i_h).to(tl.float32) * b_x.to(tl.float32)
            tl.store(
                y + (o_row * H + i_h)[:, None] * V + o_v[None, :],
                b_y.to(y.dtype.element_ty),
                mask=m_t[:, None] & m_v[None, :],
            )
        b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g) * b_dt  # decay to the chunk end, times dt
        b_S = b_sig_end * tl.exp(b_g_end) * b_S
        b_S = tl.dot(_op(b_bT, BF16), _op(b_x * b_w[:, None], BF16), b_S, input_precision=PREC)
    if STORE_FINAL:
        tl.store(ht + o_bh * K * V + o_kv, b_S, mask=m_kv)


@triton.jit
def _chunk_update(x, B, gam, sig, dtc, o_bh, i_t, NT, bos, i_h, i_g, o_t, o_k, o_v, m_k, m_v, T, H, G,
                  K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, NEG: tl.constexpr, BF16: tl.constexpr,
                  PREC: tl.constexpr):  # fmt: skip
    """What chunk i_t adds to the state, Bᵀ·(w ∘ x) with w the decay to its end times dt, and its end
    decay (sign included); a chunk at or past NT adds zero and decays by one."""
    o_row = bos + i_t * BT + o_t  # [BT] absolute time index, int64
    m_t = (i_t * BT + o_t) < T  # none past the last chunk (NT·BT ≥ T)
    b_x = tl.load(
        x + (o_row * H + i_h)[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
    )  # [BT, BV]
    b_bT = tl.load(
        B + (o_row * G + i_g)[None, :] * K + o_k[:, None], mask=m_k[:, None] & m_t[None, :], other=0.0
    )  # [BK, BT]
    # past the last chunk: the last chunk's decays read (in bounds) and discarded
    m_c = i_t < NT
    o_g = (o_bh * NT + tl.minimum(i_t, NT - 1)) * BT
    b_dt = tl.where(m_c, tl.load(dtc + o_g + o_t), 0.0)  # [BT]
    b_g = tl.load(gam + o_g + o_t)
    b_g_end = tl.where(m_c, tl.load(gam + o_g + BT - 1), 0.0)
    b_w = tl.exp(b_g_end - b_g) * b_dt
    b_a = tl.exp(b_g_end)
    if NEG:
        b_sig = tl.load(sig + o_g + o_t)
        b_sig_end = tl.where(m_c, tl.load(sig + o_g + BT - 1), 1.0)
        b_w *= b_sig_end * b_sig
        b_a *= b_sig_end
    b_d = tl.dot(_op(b_bT, BF16), _op(b_x * b_w[:, None], BF16), input_precision=PREC)  # [BK, BV]
    return b_d, b_a


@triton.jit
def chunk_ssd_fwd_h_pairs_kernel(
    x,
    B,
    gam,
    sig,
    dtc,
    h0,
    h,
    ht,
    T,
    H,
    G,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    BF16: tl.constexpr,
    PREC: tl.constexpr,
):
    """The state walk over long sequences (Γ, σ and dt from the decay kernel), two chunks a step: both
    chunks' contributions Bᵀ(w ∘ x) are products of loaded tiles alone, so they are formed before the
    state is touched, and the serial chain through the state is two multiply-adds a step. H100,
    (2, 8192, 16, 128): the step's cost stays about the same from one chunk to two (the walk in chunks
    of 128 took 73 µs against 138 in chunks of 64), while the states stay per chunk of BT."""
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

    b_S = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV], the carried state stays fp32
    if USE_H0:
        b_S += tl.load(h0 + o_bh * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_p in range(tl.cdiv(NT, 2)):
        i_t = 2 * i_p
        b_d0, b_a0 = _chunk_update(x, B, gam, sig, dtc, o_bh, i_t, NT, bos, i_h, i_g, o_t, o_k, o_v, m_k, m_v,
                                   T, H, G, K, V, BT, NEG, BF16, PREC)  # fmt: skip
        b_d1, b_a1 = _chunk_update(x, B, gam, sig, dtc, o_bh, i_t + 1, NT, bos, i_h, i_g, o_t, o_k, o_v, m_k,
                                   m_v, T, H, G, K, V, BT, NEG, BF16, PREC)  # fmt: skip
        tl.store(h + _state_row(i_b, i_h, i_t, H, NT) * K * V + o_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
        b_S = b_a0 * b_S + b_d0
        if i_t + 1 < NT:
            tl.store(
                h + _state_row(i_b, i_h, i_t + 1, H, NT) * K * V + o_kv,
                b_S.to(h.dtype.element_ty),
                mask=m_kv,
            )
        b_S = b_a1 * b_S + b_d1
    if STORE_FINAL:
        tl.store(ht + o_bh * K * V + o_kv, b_S, mask=m_kv)


@triton.jit
def chunk_ssd_fwd_o_kernel(
    x,
    dtc,
    B,
    C,
    D,
    gam,
    sig,
    h,
    y,
    T,
    H,
    G,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    HAS_D: tl.constexpr,
    BF16: tl.constexpr,
    PREC: tl.constexpr,
):
    """y of one chunk and V-block; K is walked in blocks of BK (both products reduce over K)."""
    i_tbh, i_v = tl.program_id(0), tl.program_id(1)
    NT = tl.cdiv(T, BT)
    i_bh, i_t = i_tbh // NT, i_tbh % NT
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)

    o_t = tl.arange(0, BT)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    o_row = i_b.to(tl.int64) * T + i_t * BT + o_t
    m_t = (i_t * BT + o_t) < T
    m_tv = m_t[:, None] & m_v[None, :]
    o_x = (o_row * H + i_h)[:, None] * V + o_v[None, :]
    o_c = i_bh.to(tl.int64) * NT + i_t

    # loads that do not depend on K first, so that they overlap the walk over K
    b_x = tl.load(x + o_x, mask=m_tv, other=0.0)  # [BT, BV]
    b_dt = tl.load(dtc + o_c * BT + o_t)  # [BT], zero past T
    b_g, b_sig, _, _ = _load_decay(gam, sig, o_c * BT, o_t, BT, NEG)
    b_qb = tl.zeros([BT, BT], dtype=tl.float32)  # C_i·B_j
    b_qh = tl.zeros([BT, BV], dtype=tl.float32)  # C_i through the chunk-start state
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        o_bc = (o_row * G + i_g)[:, None] * K + o_k[None, :]
        b_b = tl.load(B + o_bc, mask=m_t[:, None] & m_k[None, :], other=0.0)  # [BT, BK]
        b_q = tl.load(C + o_bc, mask=m_t[:, None] & m_k[None, :], other=0.0)  # [BT, BK]
        b_h = tl.load(
            h + _state_row(i_b, i_h, i_t, H, NT) * K * V + o_k[:, None] * V + o_v[None, :],
            mask=m_k[:, None] & m_v[None, :],
            other=0.0,
        )  # [BK, BV]
        b_qb += tl.dot(_op(b_q, BF16), tl.trans(_op(b_b, BF16)), input_precision=PREC)
        b_qh += tl.dot(_op(b_q, BF16), _op(b_h, BF16), input_precision=PREC)

    b_M = tl.where(o_t[:, None] >= o_t[None, :], tl.exp(b_g[:, None] - b_g[None, :]), 0.0)
    b_M *= b_sig[:, None] * (b_sig * b_dt)[None, :]  # decay j → i times dt_j
    b_y = (b_sig * tl.exp(b_g))[:, None] * b_qh
    b_y += tl.dot(_op(b_qb * b_M, BF16), _op(b_x, BF16), input_precision=PREC)
    if HAS_D:
        b_y += tl.load(D + i_h).to(tl.float32) * b_x.to(tl.float32)
    tl.store(y + o_x, b_y.to(y.dtype.element_ty), mask=m_tv)


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
    USE_H0: tl.constexpr,
    BF16: tl.constexpr,
    PREC: tl.constexpr,
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
        b_dS += tl.dot(b_qlT, _op(b_do, BF16), input_precision=PREC)
    if USE_H0:
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
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    HAS_D: tl.constexpr,
    BF16: tl.constexpr,
    PREC: tl.constexpr,
):
    """For one chunk, head and V-block: dx, this V-block's share of d dt, and the chunk's partial
    sums for dA and dD (red is [1 + HAS_D, H, NV, B, NT]). Every product with B, C, h or dS reduces
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
    b_A = tl.load(A + i_h).to(tl.float32)
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
        b_qb += tl.dot(_op(b_q, BF16), tl.trans(_op(b_b, BF16)), input_precision=PREC)
        b_bdS += tl.dot(_op(b_b, BF16), _op(b_dS, BF16), input_precision=PREC)
        b_qh += tl.dot(_op(b_q, BF16), _op(b_h, BF16), input_precision=PREC)
        b_hds += tl.sum(b_h.to(tl.float32) * b_dS.to(tl.float32), 0)

    b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start
    b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g)  # decay to the chunk end
    b_M = tl.where(m_causal, tl.exp(b_g[:, None] - b_g[None, :]), 0.0) * (b_sig[:, None] * b_sig[None, :])
    b_qbM = b_qb * b_M  # [BT, BT] (i, j)
    b_s = _op(b_qbM * b_dt[None, :], BF16)  # (C_i·k_j) M_ij
    b_dx = tl.dot(tl.trans(b_s), _op(b_do, BF16), input_precision=PREC)
    b_dx += (b_w * b_dt)[:, None] * b_bdS
    if HAS_D:
        b_dx += tl.load(D + i_h).to(tl.float32) * b_do.to(tl.float32)
    tl.store(dx + o_x, b_dx.to(dx.dtype.element_ty), mask=m_tv)
    b_xbdS = tl.sum(b_x.to(tl.float32) * b_bdS, 1)  # x_j·(dSᵀB_j)

    # d log|a_t|: only the terms whose decay spans step t, each carrying the factor a_t, so that
    # d log|a_t| stays accurate relative to a_t and dividing by a_t (NEG) loses nothing. Every term
    # is linear in this V-block's share, so V-blocks add up.
    b_u = b_qbM * tl.dot(_op(b_do, BF16), tl.trans(_op(b_x, BF16)), input_precision=PREC)  # r_ij / dt_j
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
    # each head's partials contiguous, for the reduction at the end of the dB/dC kernel
    o_red = ((i_h * NV + i_v) * NB + i_b).to(tl.int64) * NT + i_t
    tl.store(red + o_red, tl.sum(b_dxa * b_dt, 0))
    if HAS_D:
        b_xdy = tl.sum(tl.sum(b_x.to(tl.float32) * b_do.to(tl.float32), 1), 0)
        tl.store(red + H * NV * NB * NT + o_red, b_xdy)


@triton.jit
def _sum_decay_partial(red, dA, dD, i_s, H, L, RB: tl.constexpr):
    """dA[i_s] (i_s < H) or dD[i_s − H]: the sum of the dx kernel's L per-chunk partials, in a fixed order."""
    o_r = tl.arange(0, RB)
    b_acc = tl.zeros([RB], dtype=tl.float32)
    for i_r in range(0, L, RB):
        b_acc += tl.load(red + i_s.to(tl.int64) * L + i_r + o_r, mask=i_r + o_r < L, other=0.0)
    if i_s < H:
        tl.store(dA + i_s, tl.sum(b_acc, 0).to(dA.dtype.element_ty))
    else:
        tl.store(dD + i_s - H, tl.sum(b_acc, 0).to(dD.dtype.element_ty))


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
    PREC: tl.constexpr,
    RB: tl.constexpr,
):
    """dB and dC of one chunk, one K-block and one B/C group, its heads summed here. The launch runs
    after the dx kernel, so it also finishes that kernel's reductions: the first K-block sums the
    NVX V-block shares of d dt (when NVX > 1), and (1 + HAS_D)·H programs ahead of the chunks' sum
    dA and dD, one value each (first in the grid, so that they overlap the rest); no torch ops follow
    the backward kernels."""
    i_p, i_k = tl.program_id(0), tl.program_id(1)
    NT = tl.cdiv(T, BT)
    NR = (1 + HAS_D) * H
    if i_p < NR:
        if i_k == 0:
            _sum_decay_partial(red, dA, dD, i_p, H, NVX * NB * NT, RB)
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
                b_dp += tl.dot(_op(b_do, BF16), tl.trans(_op(b_x, BF16)), input_precision=PREC)
                b_dqs += tl.dot(_op(b_do, BF16), tl.trans(_op(b_h, BF16)), input_precision=PREC)
                b_dks += tl.dot(_op(b_x, BF16), tl.trans(_op(b_dS, BF16)), input_precision=PREC)
            b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start
            b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g)  # decay to the chunk end
            b_M = tl.where(m_causal, tl.exp(b_g[:, None] - b_g[None, :]), 0.0) * (
                b_sig[:, None] * b_sig[None, :]
            )
            b_ds = b_dp * b_M  # [BT, BT] (i, j)
            b_dC += b_lam[:, None] * b_dqs
            b_dC += tl.dot(_op(b_ds * b_dt[None, :], BF16), _op(b_b, BF16), input_precision=PREC)
            b_dk = tl.dot(tl.trans(_op(b_ds, BF16)), _op(b_q, BF16), input_precision=PREC)  # d k_j
            b_dB += b_dt[:, None] * (b_dk + b_w[:, None] * b_dks)
        tl.store(dB + o_bc, b_dB.to(dB.dtype.element_ty), mask=m_tk)
        tl.store(dC + o_bc, b_dC.to(dC.dtype.element_ty), mask=m_tk)


@dataclass(frozen=True)
class KernelConfig:
    BK: int  # K-block (a program's share of K, or the step of the o / dx kernels' walk over K)
    BV: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class LaunchConfig:
    BT: int  # chunk length
    h: KernelConfig  # chunk_ssd_fwd_h_kernel
    o: KernelConfig  # chunk_ssd_fwd_o_kernel
    dh: KernelConfig  # chunk_ssd_bwd_dh_kernel
    dx: KernelConfig  # chunk_ssd_bwd_dx_kernel
    dqk: KernelConfig  # chunk_ssd_bwd_dqk_kernel
    # the state walk giving y too (one forward launch), for short walks; None: never
    walk_o: KernelConfig | None = None


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    # plain Python: triton.cdiv goes through triton's constexpr-function wrapper (µs a call on the host)
    return -(-a // b)


@functools.lru_cache(maxsize=256)
def _launch_config(n_bh: int, dim_k: int, dim_v: int, bf16: bool) -> LaunchConfig:
    """Tiles, warps and pipeline stages per kernel, measured on an H100 (triton 3.6, bf16, 2026-11-27:
    `bench_ssd.py --sweep`, GPU µs per kernel at the four benchmark shapes; results in RESULTS.md).

    State kernels: 3 pipeline stages beat 2 everywhere (the next chunk's loads overlap the dot). The
    forward walk (two chunks a step past 8 chunks), from `--tail` (kernels of ae1ccad + the walk in pairs,
    2026-11-27): 64 × 32 tiles with 4 warps, 92 µs at (2, 8192, 16, 128) against 157 at 32 × 32, 94 at
    64 × 64, 138 at 64 × 64 / 8 warps (one chunk a step: 144); (8, 2048, 8, 64) 18.5 against 24.7 at
    32 × 32; (64, 512, 4, 64) (one chunk a step) 17.7 against 17.5 at 64 × 64 / 8 warps. The reverse
    walk: with few (batch, head) pairs 64 × 32 / 4 warps, with many 64 × 64 / 8 warps.
    Chunk-parallel kernels: 4 warps, V-blocks of 64 (8 warps cost 1.4-1.9×: fwd_o 139 against 202 µs,
    dx 499 against 573 at (2, 8192, 16, 128)). dB/dC kernel: 4 warps at K ≤ 64 (34 against 60 µs at
    (8, 2048, 8, 64)), 8 warps and 3 stages when it walks two V-blocks per head (234 against 288 µs).
    One-launch forward (the walk giving y, ≤ 8 chunks, K ≤ 64): 12.8 µs at (64, 256, 4, 32) against
    13.0 for walk + output kernel and 14.2 with the decay kernel; V-blocks of 32, 4 warps, 2 stages
    (12.0; 3 stages 12.8, 16 wide 21.9, 2 / 8 warps 16.3 / 25.5); at (64, 512, 4, 64) (8 chunks) 34.3
    against 42.3 for walk + output kernel, with V-blocks of 64 and 3 stages (32 wide 60.8, 8 warps
    109). The decay kernel stays where the walk is long: (8, 2048, 8, 64) 49.8 against 63.5 forward,
    (2, 8192, 16, 128) 293 against 317.
    fp32 inputs reuse the tiles (the interpreter ignores all of it). Shared memory, from compiling
    every kernel for sm_90 with triton's ptxas on the CPU: at most 80 KB for bf16 and 148 KB for fp32
    (K = 256) of Hopper's 227 KB.
    """
    BK, BV = _pow2(dim_k), _pow2(dim_v)
    BT = 64 if BK <= 128 else 32
    SK, SV = min(64, BK), min(64, BV)
    wide = 8 if SK * SV >= 4096 else 4
    h = KernelConfig(SK, min(32, SV), 4, 3)
    if n_bh * _cdiv(dim_k, SK) * _cdiv(dim_v, SV) >= 256:
        dh = KernelConfig(SK, SV, wide, 3)
    else:
        dh = KernelConfig(SK, min(32, SV), 4, 3)
    # output kernel: all of K at once (K = 128: 126 µs against 139 walking it in blocks of 64);
    # dx kernel: K walked in blocks of 64, 3 stages (380 against 389 all at once); past K = 128
    # (BT = 32) 8 warps
    warps = 4 if BK <= 128 else 8
    o = KernelConfig(BK, min(64, BV), warps, 2)
    dx = KernelConfig(min(64, BK), min(64, BV), warps, 3)
    if not bf16:  # fp32 tiles: 2 stages would need 193-322 KB of shared memory at K = V = 128
        dqk = KernelConfig(min(64, BK), min(64, BV), 8, 1)
    elif BK > 64 or BV > 64:
        dqk = KernelConfig(min(64, BK), min(64, BV), 8, 3)
    else:
        dqk = KernelConfig(BK, BV, 4, 1 if BK * BV <= 1024 else 2)
    # one-launch forward: all of K (≤ 64) in the walk
    walk_o = KernelConfig(BK, min(64, BV), 4, 2 if BK * BV <= 1024 else 3) if BK <= 64 else None
    return LaunchConfig(BT, h, o, dh, dx, dqk, walk_o)


def _bf16_operands(*tensors: torch.Tensor) -> bool:
    return all(t.dtype == torch.bfloat16 for t in tensors)


def _precision(bf16: bool) -> str:
    # fp32 inputs get fp32 products, as under the interpreter; bf16 operands ignore it
    return "tf32" if bf16 else "ieee"


def _spec(a):
    """What triton specializes a runtime argument on (or more): a tensor's dtype and 16-byte alignment;
    an int's being 1, a multiple of 16, and its width."""
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    if isinstance(a, int):
        return a == 1, a % 16 == 0, -(2**31) <= a < 2**31
    return type(a)


# (kernel, specialization, constexprs, warps, stages, device) → (compiled kernel, constexpr names in
# signature order); see _launch
_COMPILED = {}
_FAST_LAUNCH = os.environ.get("TRITON_INTERPRET") != "1"


def _launch(kernel, grid, args, num_warps=None, num_stages=None, **consts):
    """kernel[grid](*args, **consts), args being the kernel's leading runtime arguments in order and
    consts its constexprs. Triton's launcher binds and specializes every argument on each call: on the
    H100 host, under cProfile (which inflates Python calls), 48 of the 66 µs of one of our launches went
    to its Python side (binding, specializing, the cache key, device and stream) and 17.5 to the C
    launcher; launches are the largest part of the host time of a small training call. The compiled
    kernel that kernel[grid] returns is kept here under a key holding everything triton specializes on,
    and later calls with the same key launch it directly (its gain in wall time was not separately
    timed). Under the interpreter, or where a triton
    version returns no compiled kernel, every call goes through kernel[grid]."""
    global _FAST_LAUNCH
    options = {}
    if num_warps is not None:
        options["num_warps"] = num_warps
    if num_stages is not None:
        options["num_stages"] = num_stages
    if _FAST_LAUNCH:
        key = (kernel, tuple(map(_spec, args)), tuple(consts.items()), num_warps, num_stages, args[0].device)
        hit = _COMPILED.get(key)
        if hit is not None:
            compiled, names = hit
            # the compiled kernel's launcher takes a full 3-D grid (kernel[grid] pads it)
            return compiled[(*grid, 1, 1)[:3]](*args, *(consts[n] for n in names))
        compiled = kernel[grid](*args, **options, **consts)
        if isinstance(compiled, CompiledKernel):
            _COMPILED[key] = compiled, kernel.arg_names[len(args) :]
        else:
            _FAST_LAUNCH = False
        return compiled
    return kernel[grid](*args, **options, **consts)


def _setup(x, B, C, allow_neg_eigval):
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    bf16 = _bf16_operands(x, B, C)
    cfg = _launch_config(n_batch * num_heads, dim_k, dim_v, bf16)
    common = dict(K=dim_k, V=dim_v, BT=cfg.BT, NEG=allow_neg_eigval, BF16=bf16, PREC=_precision(bf16))
    return cfg, _cdiv(seq_len, cfg.BT), common


def chunk_ssd_fwd(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval, save_states=True):
    """y, the final state, and (save_states) what the backward reads: h, Γ and σ."""
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    n_bh = n_batch * num_heads
    cfg, NT, common = _setup(x, B, C, allow_neg_eigval)
    dev, f32 = x.device, torch.float32
    one_launch = cfg.walk_o is not None and NT <= ONE_LAUNCH_MAX_CHUNKS
    decay_in_walk = one_launch or NT <= WALK_DECAY_MAX_CHUNKS
    save_states = save_states or not one_launch  # the output kernel reads them
    if save_states:
        # Γ per chunk, and dt in the same layout (for contiguous loads)
        gam, dtc = torch.empty(2, n_batch, num_heads, NT * cfg.BT, device=dev, dtype=f32)
        sig = torch.empty_like(gam) if allow_neg_eigval else gam  # σ per chunk
        # chunk-start states in the operand dtype: the carried state itself stays fp32 in registers
        h = torch.empty(
            n_batch * num_heads * NT,
            dim_k,
            dim_v,
            device=dev,
            dtype=torch.bfloat16 if common["BF16"] else f32,
        )  # [B, NT, H] or [B, H, NT] (_state_row) stack of [K, V]
    else:
        gam = sig = dtc = h = None
    if not decay_in_walk:
        _launch(
            chunk_ssd_decay_kernel,
            (NT, n_bh),
            (dt, A, gam, sig, dtc, seq_len, num_heads),
            BT=cfg.BT,
            NEG=allow_neg_eigval,
        )
    y = torch.empty(x.shape, device=dev, dtype=x.dtype)
    ht = torch.empty(n_batch, num_heads, dim_k, dim_v, device=dev, dtype=f32) if output_final_state else None
    c = cfg.walk_o if one_launch else cfg.h
    grid = (n_bh, _cdiv(dim_k, c.BK), _cdiv(dim_v, c.BV))
    if not decay_in_walk:  # the long walk, two chunks a step
        _launch(
            chunk_ssd_fwd_h_pairs_kernel,
            grid,
            (
                x,
                B,
                gam,
                sig,
                dtc,
                x if initial_state is None else initial_state,
                h,
                x if ht is None else ht,
                seq_len,
                num_heads,
                n_groups,
            ),
            BK=c.BK,
            BV=c.BV,
            USE_H0=initial_state is not None,
            STORE_FINAL=output_final_state,
            num_warps=c.num_warps,
            num_stages=c.num_stages,
            **common,
        )
    else:
        _launch(
            chunk_ssd_fwd_h_kernel,
            grid,
            (
                x,
                dt,
                A,
                B,
                C,
                x if D is None else D,
                x if gam is None else gam,
                x if sig is None else sig,
                x if dtc is None else dtc,
                x if initial_state is None else initial_state,
                x if h is None else h,
                x if ht is None else ht,
                y,
                seq_len,
                num_heads,
                n_groups,
            ),
            BK=c.BK,
            BV=c.BV,
            USE_H0=initial_state is not None,
            STORE_FINAL=output_final_state,
            OUT=one_launch,
            STORE_H=save_states,
            HAS_D=D is not None,
            num_warps=c.num_warps,
            num_stages=c.num_stages,
            **common,
        )
    if not one_launch:
        c = cfg.o
        _launch(
            chunk_ssd_fwd_o_kernel,
            (NT * n_bh, _cdiv(dim_v, c.BV)),
            (
                x,
                dtc,
                B,
                C,
                x if D is None else D,
                gam,
                sig,
                h,
                y,
                seq_len,
                num_heads,
                n_groups,
            ),
            BK=c.BK,
            BV=c.BV,
            HAS_D=D is not None,
            num_warps=c.num_warps,
            num_stages=c.num_stages,
            **common,
        )
    return y, ht, h, gam, sig


def chunk_ssd_bwd(x, dt, A, B, C, D, initial_state, h, gam, sig, dy, dht, allow_neg_eigval):
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    n_bh = n_batch * num_heads
    cfg, NT, common = _setup(x, B, C, allow_neg_eigval)
    dev, f32 = x.device, torch.float32
    dh = torch.empty(h.shape, device=dev, dtype=h.dtype)  # gradients of the chunk-end states
    dh0 = (
        torch.empty(n_batch, num_heads, dim_k, dim_v, device=dev, dtype=f32)
        if initial_state is not None
        else None
    )
    c = cfg.dh
    _launch(
        chunk_ssd_bwd_dh_kernel,
        (n_bh, _cdiv(dim_k, c.BK), _cdiv(dim_v, c.BV)),
        (
            C,
            dy,
            gam,
            sig,
            dy if dht is None else dht,
            dh,
            dh if dh0 is None else dh0,
            seq_len,
            num_heads,
            n_groups,
        ),
        BK=c.BK,
        BV=c.BV,
        USE_DHT=dht is not None,
        USE_H0=initial_state is not None,
        num_warps=c.num_warps,
        num_stages=c.num_stages,
        **common,
    )
    c = cfg.dx
    NVX = _cdiv(dim_v, c.BV)
    dx = torch.empty(x.shape, device=dev, dtype=x.dtype)
    ddt = torch.empty(dt.shape, device=dev, dtype=dt.dtype)
    # with several V-blocks their fp32 shares of d dt, summed by the dB/dC kernel
    ddt_part = torch.empty(NVX, *dt.shape, device=dev, dtype=f32) if NVX > 1 else ddt
    red = torch.empty(1 + (D is not None), num_heads, NVX, n_batch, NT, device=dev, dtype=f32)  # dA, dD
    _launch(
        chunk_ssd_bwd_dx_kernel,
        (NT * n_bh, NVX),
        (
            x,
            dt,
            A,
            B,
            C,
            x if D is None else D,
            gam,
            sig,
            h,
            dh,
            dy,
            dx,
            ddt_part,
            red,
            seq_len,
            n_batch,
            num_heads,
            n_groups,
        ),
        BK=c.BK,
        BV=c.BV,
        HAS_D=D is not None,
        num_warps=c.num_warps,
        num_stages=c.num_stages,
        **common,
    )
    c = cfg.dqk
    dB = torch.empty(B.shape, device=dev, dtype=B.dtype)
    dC = torch.empty(C.shape, device=dev, dtype=C.dtype)
    dA = torch.empty(A.shape, device=dev, dtype=A.dtype)
    dD = torch.empty(D.shape, device=dev, dtype=D.dtype) if D is not None else None
    # one program per value of dA and dD ahead of the chunks' programs
    n_sums = num_heads * (1 + (D is not None))
    _launch(
        chunk_ssd_bwd_dqk_kernel,
        (n_sums + NT * n_batch * n_groups, _cdiv(dim_k, c.BK)),
        (
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
            dA if dD is None else dD,
            seq_len,
            n_batch,
            num_heads,
            n_groups,
        ),
        BK=c.BK,
        BV=c.BV,
        NV=_cdiv(dim_v, c.BV),
        NVX=NVX,
        HAS_D=D is not None,
        RB=512,
        num_warps=c.num_warps,
        num_stages=c.num_stages,
        **common,
    )
    dh0 = dh0.to(initial_state.dtype) if initial_state is not None else None
    return dx, ddt, dA, dB, dC, dD, dh0


class ChunkSSDFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval):
        y, ht, h, gam, sig = chunk_ssd_fwd(
            x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval
        )
        ctx.save_for_backward(x, dt, A, B, C, D, initial_state)
        # intermediates, neither inputs nor outputs: held on ctx (no saved-variable packing)
        ctx.states = h, gam, sig
        ctx.allow_neg_eigval = allow_neg_eigval
        return y, ht

    @staticmethod
    def backward(ctx, dy, dht):
        x, dt, A, B, C, D, initial_state = ctx.saved_tensors
        h, gam, sig = ctx.states
        grads = chunk_ssd_bwd(
            x,
            dt,
            A,
            B,
            C,
            D,
            initial_state,
            h,
            gam,
            sig,
            dy.contiguous(),
            None if dht is None else dht.contiguous(),
            ctx.allow_neg_eigval,
        )
        return (*grads, None, None)


def _check(x, dt, A, B, C, D, initial_state, backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
    if x.dim() != 4:
        raise ValueError(f"x must be [B, T, H, V], got shape {tuple(x.shape)}")
    n_batch, seq_len, num_heads, dim_v = x.shape
    if tuple(dt.shape) != (n_batch, seq_len, num_heads):
        raise ValueError(f"dt must be [B, T, H] = {(n_batch, seq_len, num_heads)}, got {tuple(dt.shape)}")
    if tuple(A.shape) != (num_heads,):
        raise ValueError(f"A must be [H] = {(num_heads,)}, got {tuple(A.shape)}")
    # plain tuples: a torch.Size compared with a tuple goes through torch's symbolic-shape code (µs)
    if B.dim() != 4 or tuple(B.shape[:2]) != (n_batch, seq_len) or tuple(B.shape) != tuple(C.shape):
        raise ValueError(
            f"B and C must both be [B, T, G, K] with B, T = {(n_batch, seq_len)}, "
            f"got {tuple(B.shape)} and {tuple(C.shape)}"
        )
    n_groups, dim_k = B.shape[2:]
    if num_heads % n_groups:
        raise ValueError(f"n_groups (B.shape[2] = {n_groups}) must divide H = {num_heads}")
    if D is not None and tuple(D.shape) != (num_heads,):
        raise ValueError(f"D must be [H] = {(num_heads,)} or None, got {tuple(D.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (n_batch, num_heads, dim_k, dim_v):
        raise ValueError(
            f"initial_state must be [B, H, K, V] = {(n_batch, num_heads, dim_k, dim_v)}, "
            f"got {tuple(initial_state.shape)}"
        )
    if backend == "triton" and x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got device "
            f"{x.device}; use backend='torch'"
        )
    if backend == "triton" and (dim_k > 256 or dim_v > 128):
        raise ValueError(
            f"the triton backend takes K (d_state) <= 256 and V (headdim) <= 128, "
            f"got K = {dim_k}, V = {dim_v}; use backend='torch'"
        )


def chunk_ssd(
    x: torch.Tensor,  # [B, T, H, V]
    dt: torch.Tensor,  # [B, T, H]
    A: torch.Tensor,  # [H]
    B: torch.Tensor,  # [B, T, G, K]
    C: torch.Tensor,  # [B, T, G, K]
    D: torch.Tensor | None = None,  # [H]
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    allow_neg_eigval: bool = False,
    backend: str = "triton",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mamba2 SSD: per head S_t = a_t S_{t-1} + dt_t B_t x_tᵀ, y_t = S_tᵀ C_t + D x_t.

    a_t = exp(dt_t A) or, with allow_neg_eigval, 2 exp(dt_t A) - 1 ∈ (-1, 1]. dt > 0 (softplus'ed),
    A < 0. Head h reads B/C group h // (H // G). Inputs may be bf16 or fp32 (mixed is fine); the
    state and all accumulation are fp32. Returns y [B, T, H, V] in x's dtype and the final state
    [B, H, K, V] in float32 (None unless output_final_state); gradients reach every input.
    backend="torch" runs the chunked algorithm in plain torch (autograd, any device).
    """
    _check(x, dt, A, B, C, D, initial_state, backend)
    if backend == "torch":
        return chunk_ssd_torch(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval)
    args = [t if t is None else t.contiguous() for t in (x, dt, A, B, C, D, initial_state)]
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    if not needs_grad:
        y, ht = chunk_ssd_fwd(*args, output_final_state, allow_neg_eigval, save_states=False)[:2]
        return y, ht
    return ChunkSSDFunction.apply(*args, output_final_state, allow_neg_eigval)
