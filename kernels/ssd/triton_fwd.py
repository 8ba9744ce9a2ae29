"""Chunked SSD forward kernels (and the jit helpers the backward kernels share); chunk.py launches them.

The walks' programs are (batch × head, K-block, V-block) on grid axes (0, 1, 2), the chunk-parallel
kernels' (chunk × batch × head, V-block): batch × heads always on axis 0, whose limit is 2³¹ − 1.
"""

import triton
import triton.language as tl


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
    side by side."""
    return (i_b.to(tl.int64) * NT + i_t) * H + i_h


@triton.jit
def _ad_row(i_b, i_h, H, NB_A):
    """Offset of (batch i_b, head i_h)'s value in A and D, [NA, H] with NA = B / NB_A rows (one row
    shared by every batch, or one per group of NB_A batches: a vmapped A folded into the batch)."""
    return (i_b // NB_A) * H + i_h


@triton.jit
def _walk_chunk(x, dt, B, b_A, bos, i_t, i_h, i_g, o_t, o_k, o_v, m_k, m_v, T, H, G, K: tl.constexpr,
                V: tl.constexpr, BT: tl.constexpr, NEG: tl.constexpr):  # fmt: skip
    """Chunk i_t of the short walk: its rows (absolute time index, int64) and their mask, x [BT, BV],
    Bᵀ [BK, BT], dt (fp32), and its Γ and σ formed from them, with their last elements."""
    o_row = bos + i_t * BT + o_t
    m_t = (i_t * BT + o_t) < T
    b_x = tl.load(
        x + (o_row * H + i_h)[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0
    )  # [BT, BV]
    b_bT = tl.load(
        B + (o_row * G + i_g)[None, :] * K + o_k[:, None], mask=m_k[:, None] & m_t[None, :], other=0.0
    )  # [BK, BT]
    b_dt = tl.load(dt + o_row * H + i_h, mask=m_t, other=0.0).to(tl.float32)  # [BT]
    b_g, b_sig = _chunk_decay(b_dt, b_A, BT, NEG)
    # the last element exactly (a sum of it and zeros), as the other kernels load it
    b_g_end = tl.sum(tl.where(o_t == BT - 1, b_g, 0.0), 0)
    b_sig_end = tl.sum(tl.where(o_t == BT - 1, b_sig, 0.0), 0)
    return o_row, m_t, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end


@triton.jit
def _store_decays(gam, sig, dtc, o_g, o_t, b_g, b_sig, b_dt, NEG: tl.constexpr):
    """One chunk's Γ, σ and dt into their [B, H, NT·BT] stacks at o_g."""
    tl.store(gam + o_g + o_t, b_g)
    tl.store(dtc + o_g + o_t, b_dt)
    if NEG:
        tl.store(sig + o_g + o_t, b_sig)


@triton.jit
def _walk_step(b_S, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end, BF16: tl.constexpr,
               PRECISION: tl.constexpr):  # fmt: skip
    """The state at the chunk's end from the state at its start."""
    b_w = b_sig_end * b_sig * tl.exp(b_g_end - b_g) * b_dt  # decay to the chunk end, times dt
    b_S = b_sig_end * tl.exp(b_g_end) * b_S
    return tl.dot(_op(b_bT, BF16), _op(b_x * b_w[:, None], BF16), b_S, input_precision=PRECISION)


@triton.jit
def _walk_y(C, D, y, b_S, b_x, b_bT, b_dt, b_g, b_sig, o_row, m_t, i_ad, i_h, i_g, o_t, o_k, o_v, m_k, m_v,
            H, G, K: tl.constexpr, V: tl.constexpr, HAS_D: tl.constexpr, BF16: tl.constexpr,
            PRECISION: tl.constexpr):  # fmt: skip
    """y of one chunk from the state at its start, stored: as the output kernel computes it from the
    stored state (same operand rounding)."""
    b_q = tl.load(
        C + (o_row * G + i_g)[:, None] * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0
    )  # [BT, BK]
    b_M = tl.where(o_t[:, None] >= o_t[None, :], tl.exp(b_g[:, None] - b_g[None, :]), 0.0)
    b_M *= b_sig[:, None] * (b_sig * b_dt)[None, :]  # decay j → i times dt_j
    b_s = tl.dot(_op(b_q, BF16), _op(b_bT, BF16), input_precision=PRECISION) * b_M  # [BT, BT]
    b_lam = b_sig * tl.exp(b_g)  # decay from the chunk start
    b_y = b_lam[:, None] * tl.dot(_op(b_q, BF16), _op(b_S, BF16), input_precision=PRECISION)
    b_y += tl.dot(_op(b_s, BF16), _op(b_x, BF16), input_precision=PRECISION)
    if HAS_D:
        b_y += tl.load(D + i_ad).to(tl.float32) * b_x.to(tl.float32)
    tl.store(
        y + (o_row * H + i_h)[:, None] * V + o_v[None, :],
        b_y.to(y.dtype.element_ty),
        mask=m_t[:, None] & m_v[None, :],
    )


@triton.jit
def _walk_setup(h0, i_bh, i_k, i_v, H, G, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
                BV: tl.constexpr, USE_H0: tl.constexpr):  # fmt: skip
    """What every state walk's program starts from: its head's group, its K- and V-block offsets and
    masks, and the state (the initial state's block, or zeros; fp32)."""
    i_h = i_bh % H
    i_g = i_h // (H // G)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None] * V + o_v[None, :]
    b_S = tl.zeros([BK, BV], dtype=tl.float32)  # [BK, BV], the carried state stays fp32
    if USE_H0:
        b_S += tl.load(h0 + i_bh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    return i_g, o_k, o_v, m_k, m_v, m_kv, o_kv, b_S


@triton.jit
def chunk_ssd_decay_kernel(
    dt,
    A,
    gam,
    sig,
    dtc,
    T,
    H,
    NB_A,
    BT: tl.constexpr,
    NEG: tl.constexpr,
):
    """Γ, σ and dt (fp32) of one chunk into [B, H, NT·BT]; padded steps have dt = 0 (a = 1) and repeat
    the end. The copy of dt gives the kernels after it contiguous loads (dt [B, T, H] is H apart)."""
    NT = tl.cdiv(T, BT)
    i_p = tl.program_id(0)
    i_bh, i_t = i_p // NT, i_p % NT
    i_b, i_h = i_bh // H, i_bh % H
    o_t = tl.arange(0, BT)
    m_t = (i_t * BT + o_t) < T
    b_dt = tl.load(dt + (i_b.to(tl.int64) * T + i_t * BT + o_t) * H + i_h, mask=m_t, other=0.0)
    b_A = tl.load(A + _ad_row(i_b, i_h, H, NB_A)).to(tl.float32)
    b_g, b_sig = _chunk_decay(b_dt.to(tl.float32), b_A, BT, NEG)
    o_g = (i_bh.to(tl.int64) * NT + i_t) * BT
    _store_decays(gam, sig, dtc, o_g, o_t, b_g, b_sig, b_dt.to(tl.float32), NEG)


@triton.jit
def chunk_ssd_fwd_h_kernel(
    x,
    dt,
    A,
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
    NB_A,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    BF16: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The state walk over short sequences, one chunk a step, forming each chunk's Γ and σ itself in
    place of the decay kernel: stores each chunk's start state and (the first K/V-block) Γ, σ and dt
    for the output kernel and the backward."""
    i_bh, i_k, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T
    i_g, o_k, o_v, m_k, m_v, m_kv, o_kv, b_S = _walk_setup(h0, i_bh, i_k, i_v, H, G, K, V, BK, BV, USE_H0)
    o_t = tl.arange(0, BT)
    b_A = tl.load(A + _ad_row(i_b, i_h, H, NB_A)).to(tl.float32)
    for i_t in range(NT):
        tl.store(h + _state_row(i_b, i_h, i_t, H, NT) * K * V + o_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
        o_row, m_t, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end = _walk_chunk(
            x, dt, B, b_A, bos, i_t, i_h, i_g, o_t, o_k, o_v, m_k, m_v, T, H, G, K, V, BT, NEG
        )
        if (i_k == 0) & (i_v == 0):
            _store_decays(gam, sig, dtc, (i_bh.to(tl.int64) * NT + i_t) * BT, o_t, b_g, b_sig, b_dt, NEG)
        b_S = _walk_step(b_S, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end, BF16, PRECISION)
    if STORE_HT:
        tl.store(ht + i_bh.to(tl.int64) * K * V + o_kv, b_S, mask=m_kv)


@triton.jit
def chunk_ssd_fwd_hy_kernel(
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
    NB_A,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    HAS_D: tl.constexpr,
    BF16: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The whole forward of a short sequence in one launch, for training: the walk of
    `chunk_ssd_fwd_h_kernel` (all of K in one block) also gives each chunk's y from the state in hand,
    in place of the output kernel."""
    i_bh, i_v = tl.program_id(0), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T
    i_g, o_k, o_v, m_k, m_v, m_kv, o_kv, b_S = _walk_setup(h0, i_bh, 0, i_v, H, G, K, V, BK, BV, USE_H0)
    o_t = tl.arange(0, BT)
    i_ad = _ad_row(i_b, i_h, H, NB_A)
    b_A = tl.load(A + i_ad).to(tl.float32)
    for i_t in range(NT):
        tl.store(h + _state_row(i_b, i_h, i_t, H, NT) * K * V + o_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
        o_row, m_t, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end = _walk_chunk(
            x, dt, B, b_A, bos, i_t, i_h, i_g, o_t, o_k, o_v, m_k, m_v, T, H, G, K, V, BT, NEG
        )
        if i_v == 0:
            _store_decays(gam, sig, dtc, (i_bh.to(tl.int64) * NT + i_t) * BT, o_t, b_g, b_sig, b_dt, NEG)
        _walk_y(C, D, y, b_S, b_x, b_bT, b_dt, b_g, b_sig, o_row, m_t, i_ad, i_h, i_g, o_t, o_k, o_v, m_k,
                m_v, H, G, K, V, HAS_D, BF16, PRECISION)  # fmt: skip
        b_S = _walk_step(b_S, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end, BF16, PRECISION)
    if STORE_HT:
        tl.store(ht + i_bh.to(tl.int64) * K * V + o_kv, b_S, mask=m_kv)


@triton.jit
def chunk_ssd_fwd_y_kernel(
    x,
    dt,
    A,
    B,
    C,
    D,
    h0,
    ht,
    y,
    T,
    H,
    G,
    NB_A,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    NEG: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    HAS_D: tl.constexpr,
    BF16: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The one-launch forward of `chunk_ssd_fwd_hy_kernel` for inference: y (and the final state)
    only, nothing kept for a backward."""
    i_bh, i_v = tl.program_id(0), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    NT = tl.cdiv(T, BT)
    bos = i_b.to(tl.int64) * T
    i_g, o_k, o_v, m_k, m_v, m_kv, o_kv, b_S = _walk_setup(h0, i_bh, 0, i_v, H, G, K, V, BK, BV, USE_H0)
    o_t = tl.arange(0, BT)
    i_ad = _ad_row(i_b, i_h, H, NB_A)
    b_A = tl.load(A + i_ad).to(tl.float32)
    for i_t in range(NT):
        o_row, m_t, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end = _walk_chunk(
            x, dt, B, b_A, bos, i_t, i_h, i_g, o_t, o_k, o_v, m_k, m_v, T, H, G, K, V, BT, NEG
        )
        _walk_y(C, D, y, b_S, b_x, b_bT, b_dt, b_g, b_sig, o_row, m_t, i_ad, i_h, i_g, o_t, o_k, o_v, m_k,
                m_v, H, G, K, V, HAS_D, BF16, PRECISION)  # fmt: skip
        b_S = _walk_step(b_S, b_x, b_bT, b_dt, b_g, b_sig, b_g_end, b_sig_end, BF16, PRECISION)
    if STORE_HT:
        tl.store(ht + i_bh.to(tl.int64) * K * V + o_kv, b_S, mask=m_kv)


@triton.jit
def _chunk_update(x, B, gam, sig, dtc, o_bh, i_t, NT, bos, i_h, i_g, o_t, o_k, o_v, m_k, m_v, T, H, G,
                  K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, NEG: tl.constexpr, BF16: tl.constexpr,
                  PRECISION: tl.constexpr):  # fmt: skip
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
    b_d = tl.dot(_op(b_bT, BF16), _op(b_x * b_w[:, None], BF16), input_precision=PRECISION)  # [BK, BV]
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
    STORE_HT: tl.constexpr,
    BF16: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """The state walk over long sequences (Γ, σ and dt from the decay kernel), two chunks a step: both
    chunks' contributions Bᵀ(w ∘ x) are products of loaded tiles alone, so they are formed before the
    state is touched, and the serial chain through the state is two multiply-adds a step (a step costs
    about the same for one chunk or two), while the states stay per chunk of BT."""
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
                                   T, H, G, K, V, BT, NEG, BF16, PRECISION)  # fmt: skip
        b_d1, b_a1 = _chunk_update(x, B, gam, sig, dtc, o_bh, i_t + 1, NT, bos, i_h, i_g, o_t, o_k, o_v, m_k,
                                   m_v, T, H, G, K, V, BT, NEG, BF16, PRECISION)  # fmt: skip
        tl.store(h + _state_row(i_b, i_h, i_t, H, NT) * K * V + o_kv, b_S.to(h.dtype.element_ty), mask=m_kv)
        b_S = b_a0 * b_S + b_d0
        if i_t + 1 < NT:
            tl.store(
                h + _state_row(i_b, i_h, i_t + 1, H, NT) * K * V + o_kv,
                b_S.to(h.dtype.element_ty),
                mask=m_kv,
            )
        b_S = b_a1 * b_S + b_d1
    if STORE_HT:
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
        b_qb += tl.dot(_op(b_q, BF16), tl.trans(_op(b_b, BF16)), input_precision=PRECISION)
        b_qh += tl.dot(_op(b_q, BF16), _op(b_h, BF16), input_precision=PRECISION)

    b_M = tl.where(o_t[:, None] >= o_t[None, :], tl.exp(b_g[:, None] - b_g[None, :]), 0.0)
    b_M *= b_sig[:, None] * (b_sig * b_dt)[None, :]  # decay j → i times dt_j
    b_y = (b_sig * tl.exp(b_g))[:, None] * b_qh
    b_y += tl.dot(_op(b_qb * b_M, BF16), _op(b_x, BF16), input_precision=PRECISION)
    if HAS_D:
        b_y += tl.load(D + _ad_row(i_b, i_h, H, NB_A)).to(tl.float32) * b_x.to(tl.float32)
    tl.store(y + o_x, b_y.to(y.dtype.element_ty), mask=m_tv)
