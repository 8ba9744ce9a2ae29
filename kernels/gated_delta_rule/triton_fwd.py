"""Gated DeltaNet forward kernels (and the jit helpers the backward kernels share); chunk.py launches them.

Memory access goes through tensor descriptors made on the host (TMA on Hopper): 4-D over [B, T, H, D]
with blocks [1, BT, 1, BD], so a partial last chunk reads zeros and its stores are clipped, and no
per-element address lives in registers (README.md: why not in-kernel descriptors or pointer tiles).
Every kernel's programs are on grid axis 0: batch × heads (× chunks × V-blocks), see `_pid_chunk`.
"""

import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401  (chunk.py builds them)


@triton.jit
def _pid_chunk(T, BT: tl.constexpr):
    """(i_bh, i_t) of a program of a (B·H·NT,) grid, a (batch, head)'s chunks side by side."""
    NT = tl.cdiv(T, BT)
    i_p = tl.program_id(0)
    return i_p // NT, i_p % NT


@triton.jit
def _pid_chunk_v(T, BT: tl.constexpr, NV: tl.constexpr):
    """(i_bh, i_t, i_v) of a program of a (B·H·NT·NV,) grid, a chunk's V-blocks side by side."""
    NT = tl.cdiv(T, BT)
    i_p = tl.program_id(0)
    i_c = i_p // NV
    return i_c // NT, i_c % NT, i_p % NV


@triton.jit
def _pid_v(NV: tl.constexpr):
    """(i_bh, i_v) of a program of a (B·H·NV,) grid (the sequential sweeps)."""
    i_p = tl.program_id(0)
    return i_p // NV, i_p % NV


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
    """Rows of a [BT, BK] tile in fp32, optionally L2-normalised; also 1/norm per row."""
    b_x = b_x.to(tl.float32)
    if USE_L2NORM:
        b_r = tl.rsqrt(tl.sum(b_x * b_x, 1) + 1e-6)
        b_x = b_x * b_r[:, None]
    else:
        b_r = tl.full([b_x.shape[0]], 1.0, tl.float32)
    return b_x, b_r


@triton.jit
def _load_G(g, r0, m_t, H, BT: tl.constexpr):
    """Cumulative log decay G of one chunk (r0: its first row) and its last value (padded steps: g = 0)."""
    b_G = tl.cumsum(tl.load(g + r0 + tl.arange(0, BT) * H, mask=m_t, other=0.0).to(tl.float32), 0)
    b_Gl = tl.sum(tl.where(tl.arange(0, BT) == BT - 1, b_G, 0.0), 0)
    return b_G, b_Gl


@triton.jit
def _load_gb(g, beta, r0, m_t, H, BT: tl.constexpr):
    """G, its last value, and β (padded steps: β = 0)."""
    b_G, b_Gl = _load_G(g, r0, m_t, H, BT)
    b_beta = tl.load(beta + r0 + tl.arange(0, BT) * H, mask=m_t, other=0.0).to(tl.float32)
    return b_G, b_Gl, b_beta


@triton.jit
def _decay_matrix(b_G, BT: tl.constexpr, STRICT: tl.constexpr):
    """Γ_ij = exp(G_i − G_j) on the causal (or strictly causal) part, 0 above; never overflows."""
    o_c = tl.arange(0, BT)
    if STRICT:
        m = o_c[:, None] > o_c[None, :]
    else:
        m = o_c[:, None] >= o_c[None, :]
    return tl.exp(tl.where(m, b_G[:, None] - b_G[None, :], float("-inf")))


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
def _merge_rounds(b_T, b_A, BT: tl.constexpr, LV0: tl.constexpr, PRECISION: tl.constexpr):
    """Given T with the inverses of the 2^LV0-sized diagonal blocks of I + A, merge sibling blocks
    until T = (I + A)⁻¹: [[X, 0], [L, Y]]⁻¹ = [[X⁻¹, 0], [−Y⁻¹ L X⁻¹, Y⁻¹]], i.e. T ← T − T L T with L
    the part of A coupling the siblings."""
    o_c = tl.arange(0, BT)
    for lv in tl.static_range(LV0, BT.bit_length() - 1):
        m_l = (
            ((o_c[:, None] >> (lv + 1)) == (o_c[None, :] >> (lv + 1)))
            & (((o_c[:, None] >> lv) & 1) == 1)
            & (((o_c[None, :] >> lv) & 1) == 0)
        )
        b_TL = tl.dot(b_T, tl.where(m_l, b_A, 0.0), input_precision=PRECISION)
        b_T = b_T - tl.dot(b_TL, b_T, input_precision=PRECISION)
    return b_T


@triton.jit
def _unit_lower_inverse(b_A, BT: tl.constexpr, PRECISION: tl.constexpr):
    """(I + A)⁻¹ for a strictly lower [BT, BT] fp32 tile, by doubling: the 16×16 diagonal blocks all at
    once with batched 16×16 products (pairs, then 4, 8, 16), then sibling blocks of the whole tile
    (two rounds of two BT×BT products for BT = 64). Exact algebra with no growing powers of A, so it
    stays stable for β up to 2; README.md says why this order of blocks."""
    NB: tl.constexpr = BT // 16
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
    b_T = tl.reshape(tl.where(m_blk, tl.expand_dims(b_T, 2), 0.0), (BT, BT))  # block diagonal
    return _merge_rounds(b_T, b_A, BT, 4, PRECISION)


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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_bh, i_t = _pid_chunk(T, BT)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_w.dtype  # operand dtype of every dot: the inputs' (bf16) or fp32
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T * H + i_h  # row of (b, t = 0, h) in [B·T·H]
    m_t = i_t * BT + tl.arange(0, BT) < T
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)
    b_G, b_Gl, b_beta = _load_gb(g, beta, bos + i_t * BT * H, m_t, H, BT)
    # What the sweeps need besides w and u, made here so that their sequential loops only load:
    # k̃ = e^{G_C − G} k and G_C per chunk.
    _st(d_kt, i_b, i_t * BT, i_h, 0, b_k * tl.exp(b_Gl - b_G)[:, None], DT, EMU)
    tl.store(gl + i_bh.to(tl.int64) * NT + i_t, b_Gl)
    b_kc = _c(b_k, DT, EMU)
    b_A = tl.dot(b_kc, tl.trans(b_kc), input_precision=PRECISION) * b_beta[:, None]
    b_A = b_A * _decay_matrix(b_G, BT, True)  # [BT, BT] strictly lower
    b_T = _unit_lower_inverse(b_A, BT, PRECISION)
    _st_s(d_Ai, i_bh, i_t, 0, b_T, DT, EMU)  # the backward multiplies by it in DT anyway
    b_Tc = _c(b_T, DT, EMU)
    b_w = tl.dot(b_Tc, _c(b_k * (b_beta * tl.exp(b_G))[:, None], DT, EMU), input_precision=PRECISION)
    _st(d_w, i_b, i_t * BT, i_h, 0, b_w, DT, EMU)
    for i_v in range(tl.cdiv(V, BV)):
        b_v = _ld(d_v, i_b, i_t * BT, i_h, i_v * BV, BT, BV).to(tl.float32)
        b_u = tl.dot(b_Tc, _c(b_v * b_beta[:, None], DT, EMU), input_precision=PRECISION)
        _st(d_u, i_b, i_t * BT, i_h, i_v * BV, b_u, DT, EMU)


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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_bh, i_v = _pid_v((V + BV - 1) // BV)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_w.dtype
    NT = tl.cdiv(T, BT)
    c0 = i_v * BV
    b_h = tl.zeros([BK, BV], dtype=tl.float32)  # the state stays fp32 in registers
    if USE_H0:
        b_h += d_h0.load([i_b, i_h, 0, c0]).reshape(BK, BV)
    for i_t in range(NT):
        _st_s(d_hs, i_bh, i_t, c0, b_h, DT, EMU)
        b_Gl = tl.load(gl + i_bh.to(tl.int64) * NT + i_t)
        b_w = _c(_ld(d_w, i_b, i_t * BT, i_h, 0, BT, BK), DT, EMU)
        b_d = _ld(d_u, i_b, i_t * BT, i_h, c0, BT, BV).to(tl.float32)
        b_d -= tl.dot(b_w, _c(b_h, DT, EMU), input_precision=PRECISION)  # δ = u − w h   [BT, BV]
        b_dc = _round(b_d, DT, EMU)
        _st(d_dlt, i_b, i_t * BT, i_h, c0, b_dc, DT, EMU)
        b_kd = _c(_ld(d_kt, i_b, i_t * BT, i_h, 0, BT, BK), DT, EMU)
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
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    USE_L2NORM: tl.constexpr,
    PRECISION: tl.constexpr,
    EMU: tl.constexpr,
):
    i_bh, i_t, i_v = _pid_chunk_v(T, BT, (V + BV - 1) // BV)
    i_b, i_h = i_bh // H, i_bh % H
    DT = d_dlt.dtype
    bos = i_b.to(tl.int64) * T * H + i_h
    m_t = i_t * BT + tl.arange(0, BT) < T
    b_q, _ = _l2norm(_ld(d_q, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)
    b_k, _ = _l2norm(_ld(d_k, i_b, i_t * BT, i_h, 0, BT, BK), USE_L2NORM)
    b_G, _ = _load_G(g, bos + i_t * BT * H, m_t, H, BT)
    b_P = tl.dot(_c(b_q, DT, EMU), tl.trans(_c(b_k, DT, EMU)), input_precision=PRECISION)
    b_P = b_P * _decay_matrix(b_G, BT, False) * scale
    b_h = _c(_ld_s(d_hs, i_bh, i_t, i_v * BV, BK, BV), DT, EMU)
    b_d = _c(_ld(d_dlt, i_b, i_t * BT, i_h, i_v * BV, BT, BV), DT, EMU)
    b_o = tl.dot(_c(b_q * (tl.exp(b_G) * scale)[:, None], DT, EMU), b_h, input_precision=PRECISION)
    b_o += tl.dot(_c(b_P, DT, EMU), b_d, input_precision=PRECISION)
    _st(d_o, i_b, i_t * BT, i_h, i_v * BV, b_o, d_o.dtype, EMU)
