"""Chunked SSD: Triton kernels, their autograd.Function, and the public `chunk_ssd`.

Forward: `chunk_ssd_fwd_h_kernel` walks the chunks in order and stores each chunk's start state
(programs over batch, head and [K, V] blocks); `chunk_ssd_fwd_o_kernel` then computes every chunk's
output in parallel. Backward mirrors it: `chunk_ssd_bwd_dh_kernel` walks the chunks in reverse for
the gradient of each chunk's end state, and `chunk_ssd_bwd_kernel` computes all input gradients chunk
by chunk in parallel (torch sums the K-side partials over V-blocks and over the heads of a group).
The derivation is in README.md.
"""

import os

import torch
import triton
import triton.language as tl

from kernels.ssd.naive import chunk_ssd_torch

BACKENDS = ("triton", "torch")

# The sequential state kernels split [K, V] into blocks of at most 64 × 64 until they have this many
# programs (blocks ≥ 16 wide); the chunk-parallel kernels have enough already.
MIN_PROGRAMS = 128


@triton.jit
def _chunk_decay(b_dt, b_A, NEG: tl.constexpr):
    """Per step of a chunk: cumulated log|a|, cumulated sign product, and d log|a| / d(dt·A)."""
    b_xa = b_dt * b_A
    if NEG:
        # a = 2 e^x − 1 loses its relative accuracy in fp32 as a → 0 (x → −ln 2), and log|a| needs
        # it; there write a = −2 e^x · expm1(y), y = −x − ln 2 (ln 2 split hi + lo, expm1 by series).
        b_y = (-b_xa - 0.693145751953125) - 1.428606820309417e-06
        b_em1 = b_y * (1.0 + b_y * (0.5 + b_y * (1.0 / 6.0 + b_y * (1.0 / 24.0 + b_y * (1.0 / 120.0)))))
        b_a = tl.where(tl.abs(b_y) < 0.1, -2.0 * tl.exp(b_xa) * b_em1, 2.0 * tl.exp(b_xa) - 1.0)
        b_l = tl.log(tl.maximum(tl.abs(b_a), 1e-30))
        b_sig = 1.0 - 2.0 * (tl.cumsum((b_a < 0).to(tl.int32), 0) % 2).to(tl.float32)
        # d log|a| / dx = 2 e^x / a, with a floored like |a| above so that the ratio to d log|a|
        # (which carries the same floored factor) is dL/da · 2 e^x, finite at a = 0.
        b_dldx = 2.0 * tl.exp(b_xa) / tl.where(b_a < 0, -1.0, 1.0) / tl.maximum(tl.abs(b_a), 1e-30)
    else:
        b_l = b_xa
        b_sig = tl.full(b_xa.shape, 1.0, tl.float32)
        b_dldx = tl.full(b_xa.shape, 1.0, tl.float32)
    return tl.cumsum(b_l, 0), b_sig, b_dldx


@triton.jit
def _chunk_end(b_g, b_sig, o_t, BT: tl.constexpr):
    # padded steps have dt = 0 (a = 1), so the chunk's last row holds its end values
    b_g_end = tl.sum(tl.where(o_t == BT - 1, b_g, 0.0), 0)
    b_sig_end = tl.sum(tl.where(o_t == BT - 1, b_sig, 0.0), 0)
    return b_g_end, b_sig_end


@triton.jit
def chunk_ssd_fwd_h_kernel(
    x, dt, A, B, h0, h, ht,
    T,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NEG: tl.constexpr, USE_H0: tl.constexpr, STORE_FINAL: tl.constexpr, PREC: tl.constexpr,
):
    i_bh, i_k, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T

    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]

    b_A = tl.load(A + i_h).to(tl.float32)
    b_S = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV]
    if USE_H0:
        b_S += tl.load(h0 + i_bh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_t in range(NT):
        tl.store(h + (i_bh.to(tl.int64) * NT + i_t) * K * V + o_kv, b_S, mask=m_kv)
        o_row = bos + i_t * BT + o_t  # [BT] absolute time index, int64
        m_t = (i_t * BT + o_t) < T
        b_x = tl.load(x + (o_row * H + i_h)[:, None] * V + o_v[None, :],
                      mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)  # [BT, BV]
        b_b = tl.load(B + (o_row * G + i_g)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)  # [BT, BK]
        b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
        b_g, b_sig, _ = _chunk_decay(b_dt, b_A, NEG)
        b_g_end, b_sig_end = _chunk_end(b_g, b_sig, o_t, BT)
        b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g) * b_dt  # decay to the chunk end, times dt
        b_S = b_sig_end * tl.exp(b_g_end) * b_S
        b_S += tl.dot(tl.trans(b_b * b_w[:, None]), b_x, input_precision=PREC)
    if STORE_FINAL:
        tl.store(ht + i_bh.to(tl.int64) * K * V + o_kv, b_S, mask=m_kv)


@triton.jit
def chunk_ssd_fwd_o_kernel(
    x, dt, A, B, C, D, h, y,
    T,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NEG: tl.constexpr, HAS_D: tl.constexpr, PREC: tl.constexpr,
):
    i_bh, i_t, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)

    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    o_row = i_b.to(tl.int64) * T + i_t * BT + o_t
    m_t = (i_t * BT + o_t) < T
    m_tv = m_t[:, None] & m_v[None, :]
    m_tk = m_t[:, None] & m_k[None, :]
    o_x = (o_row * H + i_h)[:, None] * V + o_v[None, :]
    o_bc = (o_row * G + i_g)[:, None] * K + o_k[None, :]

    b_A = tl.load(A + i_h).to(tl.float32)
    b_x = tl.load(x + o_x, mask=m_tv, other=0.0).to(tl.float32)  # [BT, BV]
    b_b = tl.load(B + o_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
    b_q = tl.load(C + o_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
    b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
    b_h = tl.load(h + (i_bh.to(tl.int64) * NT + i_t) * K * V + o_k[:, None] * V + o_v[None, :],
                  mask=m_k[:, None] & m_v[None, :], other=0.0)  # [BK, BV]

    b_g, b_sig, _ = _chunk_decay(b_dt, b_A, NEG)
    b_M = tl.where(o_t[:, None] >= o_t[None, :], tl.exp(b_g[:, None] - b_g[None, :]), 0.0)
    b_M *= b_sig[:, None] * (b_sig * b_dt)[None, :]  # decay j → i times dt_j
    b_s = tl.dot(b_q, tl.trans(b_b), input_precision=PREC) * b_M  # [BT, BT]
    b_y = (b_sig * tl.exp(b_g))[:, None] * tl.dot(b_q, b_h, input_precision=PREC)
    b_y += tl.dot(b_s, b_x, input_precision=PREC)
    if HAS_D:
        b_y += tl.load(D + i_h).to(tl.float32) * b_x
    tl.store(y + o_x, b_y.to(y.dtype.element_ty), mask=m_tv)


@triton.jit
def chunk_ssd_bwd_dh_kernel(
    dt, A, C, dy, dht, dh, dh0,
    T,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NEG: tl.constexpr, USE_DHT: tl.constexpr, USE_H0: tl.constexpr, PREC: tl.constexpr,
):
    i_bh, i_k, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T

    o_t = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]

    b_A = tl.load(A + i_h).to(tl.float32)
    b_dS = tl.zeros([BK, BV], dtype=tl.float32)  # gradient w.r.t. the state at the chunk end
    if USE_DHT:
        b_dS += tl.load(dht + i_bh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    for i_r in range(NT):
        i_t = NT - 1 - i_r
        tl.store(dh + (i_bh.to(tl.int64) * NT + i_t) * K * V + o_kv, b_dS, mask=m_kv)
        o_row = bos + i_t * BT + o_t
        m_t = (i_t * BT + o_t) < T
        b_do = tl.load(dy + (o_row * H + i_h)[:, None] * V + o_v[None, :],
                       mask=m_t[:, None] & m_v[None, :], other=0.0).to(tl.float32)  # [BT, BV]
        b_q = tl.load(C + (o_row * G + i_g)[:, None] * K + o_k[None, :],
                      mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)  # [BT, BK]
        b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
        b_g, b_sig, _ = _chunk_decay(b_dt, b_A, NEG)
        b_g_end, b_sig_end = _chunk_end(b_g, b_sig, o_t, BT)
        b_dS = b_sig_end * tl.exp(b_g_end) * b_dS
        b_dS += tl.dot(tl.trans(b_q * (b_sig * tl.exp(b_g))[:, None]), b_do, input_precision=PREC)
    if USE_H0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + o_kv, b_dS, mask=m_kv)


@triton.jit
def chunk_ssd_bwd_kernel(
    x, dt, A, B, C, D, h, dh, dy,
    dx, dq_part, dk_part, ddt_part, dA_part, dD_part,
    T,
    NB: tl.constexpr, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NEG: tl.constexpr, HAS_D: tl.constexpr, PREC: tl.constexpr,
):
    i_bh, i_t, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)

    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_causal = o_t[:, None] >= o_t[None, :]
    o_row = i_b.to(tl.int64) * T + i_t * BT + o_t
    m_t = (i_t * BT + o_t) < T
    m_tv = m_t[:, None] & m_v[None, :]
    m_tk = m_t[:, None] & m_k[None, :]
    m_kv = m_k[:, None] & m_v[None, :]
    o_x = (o_row * H + i_h)[:, None] * V + o_v[None, :]
    o_bc = (o_row * G + i_g)[:, None] * K + o_k[None, :]
    o_h = (i_bh.to(tl.int64) * NT + i_t) * K * V + o_k[:, None] * V + o_v[None, :]

    b_A = tl.load(A + i_h).to(tl.float32)
    b_x = tl.load(x + o_x, mask=m_tv, other=0.0).to(tl.float32)  # [BT, BV]
    b_do = tl.load(dy + o_x, mask=m_tv, other=0.0).to(tl.float32)  # [BT, BV]
    b_b = tl.load(B + o_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
    b_q = tl.load(C + o_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
    b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
    b_h = tl.load(h + o_h, mask=m_kv, other=0.0)  # chunk-start state, [BK, BV]
    b_dS = tl.load(dh + o_h, mask=m_kv, other=0.0)  # gradient of the chunk-end state, [BK, BV]

    b_g, b_sig, b_dldx = _chunk_decay(b_dt, b_A, NEG)
    b_g_end, b_sig_end = _chunk_end(b_g, b_sig, o_t, BT)
    b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start
    b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g)  # decay to the chunk end
    b_M = tl.where(m_causal, tl.exp(b_g[:, None] - b_g[None, :]), 0.0) * (b_sig[:, None] * b_sig[None, :])
    b_k = b_b * b_dt[:, None]

    b_s = tl.dot(b_q, tl.trans(b_k), input_precision=PREC) * b_M  # [BT, BT] (i, j)
    b_dp = tl.dot(b_do, tl.trans(b_x), input_precision=PREC)  # [BT, BT] (i, j)
    b_ds = b_dp * b_M
    b_dq_state = b_lam[:, None] * tl.dot(b_do, tl.trans(b_h), input_precision=PREC)  # [BT, BK]
    b_dq = b_dq_state + tl.dot(b_ds, b_k, input_precision=PREC)
    b_dk_state = b_w[:, None] * tl.dot(b_x, tl.trans(b_dS), input_precision=PREC)  # [BT, BK]
    b_dk = tl.dot(tl.trans(b_ds), b_q, input_precision=PREC) + b_dk_state
    b_dx = tl.dot(tl.trans(b_s), b_do, input_precision=PREC)
    b_dx += b_w[:, None] * tl.dot(b_k, b_dS, input_precision=PREC)
    o_s = (i_v.to(tl.int64) * NB * H + i_bh) * NT + i_t
    if HAS_D:
        b_dx += tl.load(D + i_h).to(tl.float32) * b_do
        tl.store(dD_part + o_s, tl.sum(tl.sum(b_do * b_x, 1), 0))
    tl.store(dx + o_x, b_dx.to(dx.dtype.element_ty), mask=m_tv)

    # d log|a_t|: only the terms whose decay spans step t, each carrying the factor a_t, so that
    # d log|a_t| stays accurate relative to a_t and dividing by a_t (NEG) loses nothing.
    b_r = b_s * b_dp
    b_span = tl.sum(tl.where(m_causal, tl.cumsum(b_r, 1) - b_r, 0.0), 0)  # Σ_{i ≥ t > j} r_ij
    b_alpha = tl.sum(b_q * b_dq_state, 1)  # through S_start, summed over i ≥ t
    b_beta = tl.sum(b_k * b_dk_state, 1)  # into S_end, summed over j < t
    b_dl = b_span + tl.sum(tl.where(m_causal, b_alpha[:, None], 0.0), 0)
    b_dl += tl.sum(tl.where(o_t[:, None] < o_t[None, :], b_beta[:, None], 0.0), 0)
    b_dl += b_sig_end * tl.exp(b_g_end) * tl.sum(tl.sum(b_dS * b_h, 1), 0)
    b_dxa = b_dl * b_dldx  # d/d(dt·A)
    tl.store(dA_part + o_s, tl.sum(b_dxa * b_dt, 0))

    # partial buffers are [NV, B, T, H, *]: this program's V-block slab starts at i_v·B·T·H
    o_p = i_v.to(tl.int64) * NB * T * H + o_row * H + i_h
    tl.store(ddt_part + o_p, tl.sum(b_b * b_dk, 1) + b_A * b_dxa, mask=m_t)
    tl.store(dq_part + o_p[:, None] * K + o_k[None, :], b_dq, mask=m_tk)
    tl.store(dk_part + o_p[:, None] * K + o_k[None, :], b_dk * b_dt[:, None], mask=m_tk)


def _tiles(dim_k: int, dim_v: int) -> tuple[int, int, int]:
    """(BT, BK, BV) of the chunk-parallel kernels: all of K in a tile, V in blocks of ≤ 64."""
    BK = max(16, triton.next_power_of_2(dim_k))
    return (64 if BK <= 128 else 32), BK, min(64, max(16, triton.next_power_of_2(dim_v)))


def _state_tiles(n_bh: int, dim_k: int, dim_v: int) -> tuple[int, int]:
    """(BK, BV) of the sequential state kernels: split [K, V] until there are MIN_PROGRAMS programs."""
    BK = min(64, max(16, triton.next_power_of_2(dim_k)))
    BV = min(64, max(16, triton.next_power_of_2(dim_v)))
    while n_bh * triton.cdiv(dim_k, BK) * triton.cdiv(dim_v, BV) < MIN_PROGRAMS and max(BK, BV) > 16:
        if BV >= BK:
            BV //= 2
        else:
            BK //= 2
    return BK, BV


def _precision(*tensors: torch.Tensor) -> str:
    # bf16 inputs: tf32 products (~5e-4) sit well under bf16's own rounding; fp32 inputs keep
    # fp32 accuracy through 3xTF32. The interpreter computes exact fp32 products either way.
    return "tf32x3" if any(t.dtype == torch.float32 for t in tensors) else "tf32"


def chunk_ssd_fwd(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval):
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    n_bh = n_batch * num_heads
    BT, BK, BV = _tiles(dim_k, dim_v)
    SK, SV = _state_tiles(n_bh, dim_k, dim_v)
    NT = triton.cdiv(seq_len, BT)
    prec = _precision(x, B, C)
    f32 = dict(device=x.device, dtype=torch.float32)
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    ht = torch.empty(n_batch, num_heads, dim_k, dim_v, **f32) if output_final_state else None
    h = torch.empty(n_batch, num_heads, NT, dim_k, dim_v, **f32)  # chunk-start states
    chunk_ssd_fwd_h_kernel[(n_bh, triton.cdiv(dim_k, SK), triton.cdiv(dim_v, SV))](
        x, dt, A, B, x if initial_state is None else initial_state, h, x if ht is None else ht, seq_len,
        H=num_heads, G=n_groups, K=dim_k, V=dim_v, BT=BT, BK=SK, BV=SV,
        NEG=allow_neg_eigval, USE_H0=initial_state is not None, STORE_FINAL=output_final_state,
        PREC=prec, num_warps=4, num_stages=2,
    )
    chunk_ssd_fwd_o_kernel[(n_bh, NT, triton.cdiv(dim_v, BV))](
        x, dt, A, B, C, x if D is None else D, h, y, seq_len,
        H=num_heads, G=n_groups, K=dim_k, V=dim_v, BT=BT, BK=BK, BV=BV,
        NEG=allow_neg_eigval, HAS_D=D is not None, PREC=prec, num_warps=4 if BK * BV <= 4096 else 8,
    )
    return y, ht, h


def chunk_ssd_bwd(x, dt, A, B, C, D, initial_state, h, dy, dht, allow_neg_eigval):
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    n_bh = n_batch * num_heads
    BT, BK, BV = _tiles(dim_k, dim_v)
    SK, SV = _state_tiles(n_bh, dim_k, dim_v)
    NT, NV = triton.cdiv(seq_len, BT), triton.cdiv(dim_v, BV)
    prec = _precision(x, B, C)
    f32 = dict(device=x.device, dtype=torch.float32)
    dh = torch.empty(n_batch, num_heads, NT, dim_k, dim_v, **f32)  # gradients of chunk-end states
    dh0 = torch.empty(n_batch, num_heads, dim_k, dim_v, **f32) if initial_state is not None else None
    chunk_ssd_bwd_dh_kernel[(n_bh, triton.cdiv(dim_k, SK), triton.cdiv(dim_v, SV))](
        dt, A, C, dy, dy if dht is None else dht, dh, dh if dh0 is None else dh0, seq_len,
        H=num_heads, G=n_groups, K=dim_k, V=dim_v, BT=BT, BK=SK, BV=SV,
        NEG=allow_neg_eigval, USE_DHT=dht is not None, USE_H0=initial_state is not None,
        PREC=prec, num_warps=4, num_stages=2,
    )
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    dq_part = torch.empty(NV, n_batch, seq_len, num_heads, dim_k, **f32)
    dk_part = torch.empty(NV, n_batch, seq_len, num_heads, dim_k, **f32)
    ddt_part = torch.empty(NV, n_batch, seq_len, num_heads, **f32)
    dA_part = torch.empty(NV, n_batch, num_heads, NT, **f32)
    dD_part = torch.empty(NV, n_batch, num_heads, NT, **f32) if D is not None else None
    chunk_ssd_bwd_kernel[(n_bh, NT, NV)](
        x, dt, A, B, C, x if D is None else D, h, dh, dy,
        dx, dq_part, dk_part, ddt_part, dA_part, dA_part if dD_part is None else dD_part, seq_len,
        NB=n_batch, H=num_heads, G=n_groups, K=dim_k, V=dim_v, BT=BT, BK=BK, BV=BV,
        NEG=allow_neg_eigval, HAS_D=D is not None, PREC=prec, num_warps=4 if BK <= 32 else 8,
    )

    def group_sum(part):  # [NV, B, T, H, K] -> [B, T, G, K]
        if NV == 1 and n_groups == num_heads:
            return part[0]
        return part.view(NV, n_batch, seq_len, n_groups, num_heads // n_groups, dim_k).sum((0, 4))

    dC = group_sum(dq_part).to(C.dtype)
    dB = group_sum(dk_part).to(B.dtype)
    ddt = (ddt_part[0] if NV == 1 else ddt_part.sum(0)).to(dt.dtype)
    dA = dA_part.sum((0, 1, 3)).to(A.dtype)
    dD = dD_part.sum((0, 1, 3)).to(D.dtype) if D is not None else None
    dh0 = dh0.to(initial_state.dtype) if initial_state is not None else None
    return dx, ddt, dA, dB, dC, dD, dh0


class ChunkSSDFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval):
        y, ht, h = chunk_ssd_fwd(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval)
        ctx.save_for_backward(x, dt, A, B, C, D, initial_state, h)
        ctx.allow_neg_eigval = allow_neg_eigval
        return y, ht

    @staticmethod
    def backward(ctx, dy, dht):
        x, dt, A, B, C, D, initial_state, h = ctx.saved_tensors
        grads = chunk_ssd_bwd(x, dt, A, B, C, D, initial_state, h, dy.contiguous(),
                              None if dht is None else dht.contiguous(), ctx.allow_neg_eigval)
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
    if B.dim() != 4 or B.shape[:2] != (n_batch, seq_len) or B.shape != C.shape:
        raise ValueError(f"B and C must both be [B, T, G, K] with B, T = {(n_batch, seq_len)}, "
                         f"got {tuple(B.shape)} and {tuple(C.shape)}")
    n_groups, dim_k = B.shape[2:]
    if num_heads % n_groups:
        raise ValueError(f"n_groups (B.shape[2] = {n_groups}) must divide H = {num_heads}")
    if D is not None and tuple(D.shape) != (num_heads,):
        raise ValueError(f"D must be [H] = {(num_heads,)} or None, got {tuple(D.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (n_batch, num_heads, dim_k, dim_v):
        raise ValueError(f"initial_state must be [B, H, K, V] = {(n_batch, num_heads, dim_k, dim_v)}, "
                         f"got {tuple(initial_state.shape)}")
    if backend == "triton" and x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got device "
                         f"{x.device}; use backend='torch'")
    if backend == "triton" and (dim_k > 256 or dim_v > 128):
        raise ValueError(f"the triton backend takes K (d_state) <= 256 and V (headdim) <= 128, "
                         f"got K = {dim_k}, V = {dim_v}; use backend='torch'")


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
        y, ht, _ = chunk_ssd_fwd(*args, output_final_state, allow_neg_eigval)
        return y, ht
    return ChunkSSDFunction.apply(*args, output_final_state, allow_neg_eigval)
