"""Chunked SSD: Triton kernels, their autograd.Function, and the public `chunk_ssd`.

One program owns one (batch, head, V-block) and walks the chunks in order (forward) or in reverse
(backward), carrying the [K, BV] state in registers: one launch forward, one launch backward (plus
torch sums over V-blocks and heads of a group for the K-side gradients). The derivation is in
README.md.
"""

import torch
import triton
import triton.language as tl

from kernels.ssd.naive import chunk_ssd_torch

BACKENDS = ("triton", "torch")


# Launch knobs (module constants so that benchmarks/bench_ssd.py can compare alternatives).
NUM_STAGES = 2
MIN_PROGRAMS = 128  # split V into blocks until (V-blocks × B × H) reaches this, BV ≥ 16
BF16_DOTS = "tf32"  # dot precision for bf16 inputs: "tf32" (fp32 operands) or "bf16" (bf16 operands)


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        return tl.dot(a, b, input_precision=PREC)


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
def chunk_ssd_fwd_kernel(
    x, dt, A, B, C, D, h0, y, ht, h,
    T,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NEG: tl.constexpr, HAS_D: tl.constexpr, USE_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
    STORE_H: tl.constexpr, PREC: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T

    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_causal = o_t[:, None] >= o_t[None, :]
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]

    b_A = tl.load(A + i_h).to(tl.float32)
    b_D = 0.0
    if HAS_D:
        b_D = tl.load(D + i_h).to(tl.float32)
    b_S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_S += tl.load(h0 + i_bh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)

    for i_t in range(NT):
        if STORE_H:
            tl.store(h + (i_bh.to(tl.int64) * NT + i_t) * K * V + o_kv, b_S, mask=m_kv)
        o_row = bos + i_t * BT + o_t  # [BT] absolute time index, int64
        m_t = (i_t * BT + o_t) < T
        p_x = x + (o_row * H + i_h)[:, None] * V + o_v[None, :]
        p_bc = (o_row * G + i_g)[:, None] * K + o_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        m_tk = m_t[:, None] & m_k[None, :]
        b_x = tl.load(p_x, mask=m_tv, other=0.0).to(tl.float32)  # [BT, BV]
        b_b = tl.load(B + p_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
        b_q = tl.load(C + p_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
        b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]

        b_g, b_sig, b_dldx = _chunk_decay(b_dt, b_A, NEG)
        # padded steps have dt = 0 (a = 1), so the last row holds the chunk-end values
        b_g_end = tl.sum(tl.where(o_t == BT - 1, b_g, 0.0), 0)
        b_sig_end = tl.sum(tl.where(o_t == BT - 1, b_sig, 0.0), 0)
        b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start, [BT]
        b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g)  # decay to the chunk end, [BT]
        b_M = tl.where(m_causal, tl.exp(b_g[:, None] - b_g[None, :]), 0.0) * (b_sig[:, None] * b_sig[None, :])
        b_k = b_b * b_dt[:, None]
        b_s = _dot(b_q, tl.trans(b_k), PREC) * b_M  # [BT, BT]
        b_y = b_lam[:, None] * _dot(b_q, b_S, PREC)
        b_y += _dot(b_s, b_x, PREC)
        if HAS_D:
            b_y += b_D * b_x
        tl.store(y + (o_row * H + i_h)[:, None] * V + o_v[None, :], b_y.to(y.dtype.element_ty), mask=m_tv)
        b_S = b_sig_end * tl.exp(b_g_end) * b_S
        b_S += _dot(tl.trans(b_k * b_w[:, None]), b_x, PREC)

    if STORE_FINAL:
        tl.store(ht + i_bh.to(tl.int64) * K * V + o_kv, b_S, mask=m_kv)


@triton.jit
def chunk_ssd_bwd_kernel(
    x, dt, A, B, C, D, h, dy, dht,
    dx, dq_part, dk_part, ddt_part, dA_part, dD_part, dh0,
    T,
    NB: tl.constexpr, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    NEG: tl.constexpr, HAS_D: tl.constexpr, USE_H0: tl.constexpr, USE_DHT: tl.constexpr,
    PREC: tl.constexpr,
):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // (H // G)
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T
    # partial buffers are [NV, B, T, H, *]: this program's V-block slab starts at i_v·B·T·H
    o_part = i_v.to(tl.int64) * NB * T * H

    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_causal = o_t[:, None] >= o_t[None, :]
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]

    b_A = tl.load(A + i_h).to(tl.float32)
    b_D = 0.0
    if HAS_D:
        b_D = tl.load(D + i_h).to(tl.float32)
    b_dS = tl.zeros([BK, BV], dtype=tl.float32)  # gradient w.r.t. the state at the chunk end
    if USE_DHT:
        b_dS += tl.load(dht + i_bh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    b_dA = tl.zeros([BT], dtype=tl.float32)
    b_dD = tl.zeros([BT], dtype=tl.float32)

    for i_r in range(NT):
        i_t = NT - 1 - i_r
        o_row = bos + i_t * BT + o_t
        m_t = (i_t * BT + o_t) < T
        o_x = (o_row * H + i_h)[:, None] * V + o_v[None, :]
        p_bc = (o_row * G + i_g)[:, None] * K + o_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        m_tk = m_t[:, None] & m_k[None, :]
        b_x = tl.load(x + o_x, mask=m_tv, other=0.0).to(tl.float32)  # [BT, BV]
        b_do = tl.load(dy + o_x, mask=m_tv, other=0.0).to(tl.float32)  # [BT, BV]
        b_b = tl.load(B + p_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
        b_q = tl.load(C + p_bc, mask=m_tk, other=0.0).to(tl.float32)  # [BT, BK]
        b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
        b_h = tl.load(h + (i_bh.to(tl.int64) * NT + i_t) * K * V + o_kv, mask=m_kv, other=0.0)  # [BK, BV]

        b_g, b_sig, b_dldx = _chunk_decay(b_dt, b_A, NEG)
        # padded steps have dt = 0 (a = 1), so the last row holds the chunk-end values
        b_g_end = tl.sum(tl.where(o_t == BT - 1, b_g, 0.0), 0)
        b_sig_end = tl.sum(tl.where(o_t == BT - 1, b_sig, 0.0), 0)
        b_lam = b_sig * tl.exp(b_g)
        b_lam_end = b_sig_end * tl.exp(b_g_end)
        b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g)
        b_M = tl.where(m_causal, tl.exp(b_g[:, None] - b_g[None, :]), 0.0) * (b_sig[:, None] * b_sig[None, :])
        b_k = b_b * b_dt[:, None]

        b_s = _dot(b_q, tl.trans(b_k), PREC) * b_M  # [BT, BT] (i, j)
        b_dp = _dot(b_do, tl.trans(b_x), PREC)  # [BT, BT] (i, j)
        b_ds = b_dp * b_M
        b_dq_state = b_lam[:, None] * _dot(b_do, tl.trans(b_h), PREC)  # [BT, BK]
        b_dq = b_dq_state + _dot(b_ds, b_k, PREC)
        b_dk_state = b_w[:, None] * _dot(b_x, tl.trans(b_dS), PREC)  # [BT, BK]
        b_dk = _dot(tl.trans(b_ds), b_q, PREC) + b_dk_state
        b_dx = _dot(tl.trans(b_s), b_do, PREC)
        b_dx += b_w[:, None] * _dot(b_k, b_dS, PREC)
        if HAS_D:
            b_dx += b_D * b_do
            b_dD += tl.sum(b_do * b_x, 1)
        tl.store(dx + o_x, b_dx.to(dx.dtype.element_ty), mask=m_tv)

        # d log|a_t|: only the terms whose decay spans step t, each carrying the factor a_t, so that
        # d log|a_t| stays accurate relative to a_t and dividing by a_t (NEG) loses nothing.
        b_r = b_s * b_dp
        b_span = tl.sum(tl.where(m_causal, tl.cumsum(b_r, 1) - b_r, 0.0), 0)  # Σ_{i ≥ t > j} r_ij
        b_alpha = tl.sum(b_q * b_dq_state, 1)  # through S_start, summed over i ≥ t
        b_beta = tl.sum(b_k * b_dk_state, 1)  # into S_end, summed over j < t
        b_dl = b_span + tl.sum(tl.where(m_causal, b_alpha[:, None], 0.0), 0)
        b_dl += tl.sum(tl.where(o_t[:, None] < o_t[None, :], b_beta[:, None], 0.0), 0)
        b_dl += b_lam_end * tl.sum(tl.sum(b_dS * b_h, 1), 0)
        b_dxa = b_dl * b_dldx  # d/d(dt·A)
        b_ddt = tl.sum(b_b * b_dk, 1) + b_A * b_dxa
        b_dA += b_dxa * b_dt

        o_p = o_part + o_row * H + i_h
        tl.store(ddt_part + o_p, b_ddt, mask=m_t)
        tl.store(dq_part + o_p[:, None] * K + o_k[None, :], b_dq, mask=m_tk)
        tl.store(dk_part + o_p[:, None] * K + o_k[None, :], b_dk * b_dt[:, None], mask=m_tk)

        b_dS = b_lam_end * b_dS + _dot(tl.trans(b_q * b_lam[:, None]), b_do, PREC)

    o_s = i_v.to(tl.int64) * NB * H + i_bh
    tl.store(dA_part + o_s, tl.sum(b_dA, 0))
    if HAS_D:
        tl.store(dD_part + o_s, tl.sum(b_dD, 0))
    if USE_H0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + o_kv, b_dS, mask=m_kv)


def _launch_config(n_bh: int, dim_k: int, dim_v: int) -> tuple[int, int, int, int]:
    """(BT, BK, BV, num_warps): split V until there are enough programs to fill a GPU."""
    BK = max(16, triton.next_power_of_2(dim_k))
    BT = 64 if BK <= 128 else 32
    BV = min(64, max(16, triton.next_power_of_2(dim_v)))
    while BV > 16 and n_bh * triton.cdiv(dim_v, BV) < MIN_PROGRAMS:
        BV //= 2
    num_warps = 4 if BK * BV <= 64 * 64 else 8
    return BT, BK, BV, num_warps


def _precision(*tensors: torch.Tensor) -> str:
    # bf16 inputs: tf32 products (~5e-4) sit well under bf16's own rounding; fp32 inputs keep
    # fp32 accuracy through 3xTF32. The interpreter computes exact fp32 products either way.
    return "tf32x3" if any(t.dtype == torch.float32 for t in tensors) else BF16_DOTS


def chunk_ssd_fwd(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval, store_h):
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    BT, BK, BV, num_warps = _launch_config(n_batch * num_heads, dim_k, dim_v)
    NT = triton.cdiv(seq_len, BT)
    f32 = dict(device=x.device, dtype=torch.float32)
    y = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    ht = torch.empty(n_batch, num_heads, dim_k, dim_v, **f32) if output_final_state else None
    h = torch.empty(n_batch, num_heads, NT, dim_k, dim_v, **f32) if store_h else None
    grid = (triton.cdiv(dim_v, BV), n_batch * num_heads)
    chunk_ssd_fwd_kernel[grid](
        x, dt, A, B, C, x if D is None else D, x if initial_state is None else initial_state, y,
        x if ht is None else ht, x if h is None else h, seq_len,
        H=num_heads, G=n_groups, K=dim_k, V=dim_v, BT=BT, BK=BK, BV=BV,
        NEG=allow_neg_eigval, HAS_D=D is not None, USE_H0=initial_state is not None,
        STORE_FINAL=output_final_state, STORE_H=store_h, PREC=_precision(x, B, C),
        num_warps=num_warps, num_stages=NUM_STAGES,
    )
    return y, ht, h


def chunk_ssd_bwd(x, dt, A, B, C, D, initial_state, h, dy, dht, allow_neg_eigval):
    n_batch, seq_len, num_heads, dim_v = x.shape
    n_groups, dim_k = B.shape[2:]
    BT, BK, BV, num_warps = _launch_config(n_batch * num_heads, dim_k, dim_v)
    NV = triton.cdiv(dim_v, BV)
    f32 = dict(device=x.device, dtype=torch.float32)
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    dq_part = torch.empty(NV, n_batch, seq_len, num_heads, dim_k, **f32)
    dk_part = torch.empty(NV, n_batch, seq_len, num_heads, dim_k, **f32)
    ddt_part = torch.empty(NV, n_batch, seq_len, num_heads, **f32)
    dA_part = torch.empty(NV, n_batch, num_heads, **f32)
    dD_part = torch.empty(NV, n_batch, num_heads, **f32) if D is not None else None
    dh0 = torch.empty(n_batch, num_heads, dim_k, dim_v, **f32) if initial_state is not None else None
    chunk_ssd_bwd_kernel[(NV, n_batch * num_heads)](
        x, dt, A, B, C, x if D is None else D, h, dy, dy if dht is None else dht,
        dx, dq_part, dk_part, ddt_part, dA_part, dA_part if dD_part is None else dD_part,
        dA_part if dh0 is None else dh0, seq_len,
        NB=n_batch, H=num_heads, G=n_groups, K=dim_k, V=dim_v, BT=BT, BK=BK, BV=BV,
        NEG=allow_neg_eigval, HAS_D=D is not None, USE_H0=initial_state is not None,
        USE_DHT=dht is not None, PREC=_precision(x, B, C),
        num_warps=num_warps, num_stages=NUM_STAGES,
    )

    def group_sum(part):  # [NV, B, T, H, K] -> [B, T, G, K]
        if NV == 1 and n_groups == num_heads:
            return part[0]
        return part.view(NV, n_batch, seq_len, n_groups, num_heads // n_groups, dim_k).sum((0, 4))

    dC = group_sum(dq_part).to(C.dtype)
    dB = group_sum(dk_part).to(B.dtype)
    ddt = (ddt_part[0] if NV == 1 else ddt_part.sum(0)).to(dt.dtype)
    dA = dA_part.sum((0, 1)).to(A.dtype)
    dD = dD_part.sum((0, 1)).to(D.dtype) if D is not None else None
    dh0 = dh0.to(initial_state.dtype) if initial_state is not None else None
    return dx, ddt, dA, dB, dC, dD, dh0


class ChunkSSDFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval):
        y, ht, h = chunk_ssd_fwd(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval,
                                 store_h=True)
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
        y, ht, _ = chunk_ssd_fwd(*args, output_final_state, allow_neg_eigval, store_h=False)
        return y, ht
    return ChunkSSDFunction.apply(*args, output_final_state, allow_neg_eigval)
