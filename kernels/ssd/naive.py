"""Mamba2's state-space dual (SSD) in plain torch: the recurrence step by step, and the chunked form.

Per head h (group g = h // (H // G) supplies B and C), with x_t = dt_t · A_h:

    a_t = exp(x_t)                      standard, a_t ∈ (0, 1]
    a_t = 2 · exp(x_t) − 1              allow_neg_eigval, a_t ∈ (−1, 1]
    S_t = a_t · S_{t−1} + dt_t · B_t x_tᵀ     # [K, V]
    y_t = S_tᵀ C_t + D · x_t                  # [V]

dt scales the input as in Mamba2's `ssd_combined` (the layer passes dt already softplus'ed).
"""

import math

import torch


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _decay(dtA: torch.Tensor, allow_neg_eigval: bool) -> torch.Tensor:
    return 2.0 * torch.exp(dtA) - 1.0 if allow_neg_eigval else torch.exp(dtA)


def _expand_groups(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    # [B, T, G, K] -> [B, T, H, K]; head h reads group h // (H // G), as in Mamba2.
    return t.repeat_interleave(num_heads // t.shape[2], dim=2)


def naive_recurrent_ssd(
    x: torch.Tensor,  # [B, T, H, V]
    dt: torch.Tensor,  # [B, T, H]
    A: torch.Tensor,  # [H]
    B: torch.Tensor,  # [B, T, G, K]
    C: torch.Tensor,  # [B, T, G, K]
    D: torch.Tensor | None = None,  # [H]
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence one step at a time, in the widest dtype of the inputs (at least float32).

    Returns y [B, T, H, V] in x's dtype and, if asked, the final state [B, H, K, V] in the compute dtype.
    """
    dtype = _compute_dtype(x, dt, A, B, C, D, initial_state)
    n_batch, seq_len, num_heads, dim_v = x.shape
    dim_k = B.shape[-1]
    xs, dts, As = x.to(dtype), dt.to(dtype), A.to(dtype)
    Bh, Ch = _expand_groups(B.to(dtype), num_heads), _expand_groups(C.to(dtype), num_heads)
    S = x.new_zeros(n_batch, num_heads, dim_k, dim_v, dtype=dtype)
    if initial_state is not None:
        S = S + initial_state.to(dtype)
    ys = []
    for t in range(seq_len):
        a = _decay(dts[:, t] * As, allow_neg_eigval)  # [B, H]
        kt = Bh[:, t] * dts[:, t, :, None]  # [B, H, K]
        S = a[..., None, None] * S + kt[..., :, None] * xs[:, t, :, None, :]
        ys.append(torch.einsum("bhkv,bhk->bhv", S, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else xs.new_zeros(n_batch, 0, num_heads, dim_v)
    if D is not None:
        y = y + D.to(dtype)[:, None] * xs
    return y.to(x.dtype), (S if output_final_state else None)


def _log_decay(dtA: torch.Tensor, allow_neg_eigval: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log|a_t| and sign(a_t) (None when every a_t > 0).

    |a_t| is floored at the dtype's smallest normal so that an exact zero decay keeps the cumulative
    logs finite (a difference of two -inf would be NaN); the floor changes the decay by < 1e-37.
    """
    if not allow_neg_eigval:
        return dtA, None
    a = 2.0 * torch.exp(dtA) - 1.0
    log_abs = torch.log(a.abs().clamp_min(torch.finfo(a.dtype).tiny))
    sign = torch.where(a < 0, -1.0, 1.0).to(a.dtype).detach()
    return log_abs, sign


def naive_chunk_ssd(
    x: torch.Tensor,  # [B, T, H, V]
    dt: torch.Tensor,  # [B, T, H]
    A: torch.Tensor,  # [H]
    B: torch.Tensor,  # [B, T, G, K]
    C: torch.Tensor,  # [B, T, G, K]
    D: torch.Tensor | None = None,  # [H]
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    allow_neg_eigval: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chunked SSD algorithm (README.md): quadratic form inside a chunk, state passing across.

    Differentiable through autograd; computes in the widest input dtype (at least float32).
    Signed decays are handled in sign-tracked log form: the decay from step j to i within a chunk is
    σ_i σ_j exp(Γ_i − Γ_j) with Γ the cumulative log|a| and σ the cumulative sign product.
    """
    dtype = _compute_dtype(x, dt, A, B, C, D, initial_state)
    n_batch, seq_len, num_heads, dim_v = x.shape
    dim_k = B.shape[-1]
    BT = chunk_size
    NT = max(1, math.ceil(seq_len / BT))
    pad = NT * BT - seq_len

    def chunks(t: torch.Tensor) -> torch.Tensor:
        # [B, T, H, ...] -> [B, H, NT, BT, ...]; padded steps have dt = 0 (a = 1, no input).
        t = torch.nn.functional.pad(t.to(dtype), (0, 0) * (t.dim() - 2) + (0, pad))
        t = t.reshape(n_batch, NT, BT, *t.shape[2:])
        return t.movedim(3, 1)

    xc = chunks(x)  # [B, H, NT, BT, V]
    dtc = chunks(dt[..., None])[..., 0]  # [B, H, NT, BT]
    Bc = chunks(_expand_groups(B, num_heads))  # [B, H, NT, BT, K]
    Cc = chunks(_expand_groups(C, num_heads))  # [B, H, NT, BT, K]
    log_a, sign = _log_decay(dtc * A.to(dtype)[None, :, None, None], allow_neg_eigval)
    gam = log_a.cumsum(-1)  # [B, H, NT, BT]
    sigma = torch.ones_like(gam) if sign is None else torch.cumprod(sign, -1)

    causal = torch.ones(BT, BT, dtype=torch.bool, device=x.device).tril()
    seg = (gam[..., :, None] - gam[..., None, :]).masked_fill(~causal, -math.inf)
    M = torch.exp(seg) * sigma[..., :, None] * sigma[..., None, :]  # [B, H, NT, BT, BT]
    kc = Bc * dtc[..., None]  # [B, H, NT, BT, K]
    y = (Cc @ kc.transpose(-1, -2) * M) @ xc  # [B, H, NT, BT, V]

    lam = sigma * torch.exp(gam)  # decay from the chunk start, [B, H, NT, BT]
    w = sigma[..., -1:] * sigma * torch.exp(gam[..., -1:] - gam)  # decay to the chunk end
    S = x.new_zeros(n_batch, num_heads, dim_k, dim_v, dtype=dtype)
    if initial_state is not None:
        S = S + initial_state.to(dtype)
    inter = []
    for c in range(NT):
        inter.append(lam[:, :, c, :, None] * (Cc[:, :, c] @ S))
        S = (
            lam[:, :, c, -1, None, None] * S
            + (kc[:, :, c] * w[:, :, c, :, None]).transpose(-1, -2) @ xc[:, :, c]
        )
    y = y + torch.stack(inter, dim=2)
    y = y.movedim(1, 3).reshape(n_batch, NT * BT, num_heads, dim_v)[:, :seq_len]
    if D is not None:
        y = y + D.to(dtype)[:, None] * x.to(dtype)
    return y.to(x.dtype), (S if output_final_state else None)
