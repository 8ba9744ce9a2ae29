"""Gated DeltaNet in plain torch: the step-by-step recurrence (ground truth) and the chunked algorithm.

State convention: ``S`` is stored as ``[B, H, K, V]`` (key dim first). In that layout one step is

    h_t = exp(g_t) · (I − β_t k_t k_tᵀ) · h_{t−1} + β_t k_t v_tᵀ,      o_t = scale · h_tᵀ q_t,

which is the transpose of ``S_t = S_{t−1}·exp(g_t)·(I − β_t k_t k_tᵀ) + β_t v_t k_tᵀ`` with ``S`` as
``[V, K]``. See README.md for the chunked (WY/UT) form.
"""

import torch
import torch.nn.functional as F

L2NORM_EPS = 1e-6


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / sqrt(sum(x²) + 1e-6) over the last dim (the kernels use the same epsilon)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + L2NORM_EPS)


def check_inputs(q, k, v, g, beta, initial_state) -> tuple[int, int, int, int, int]:
    """Validate shapes; return (B, T, H, K, V)."""
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [B, T, H, K]; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    B, T, H, K = q.shape
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V]; got {tuple(v.shape)}")
    V = v.shape[-1]
    for name, x in (("g", g), ("beta", beta)):
        if x.shape != q.shape[:3]:
            raise ValueError(f"{name} must be [B, T, H] = [{B}, {T}, {H}]; got {tuple(x.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (B, H, K, V):
        raise ValueError(
            f"initial_state must be [B, H, K, V] = [{B}, {H}, {K}, {V}]; got {tuple(initial_state.shape)}"
        )
    return B, T, H, K, V


def _compute_dtype(*xs) -> torch.dtype:
    return torch.float64 if any(x is not None and x.dtype == torch.float64 for x in xs) else torch.float32


def naive_recurrent_gated_delta_rule(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [B, T, H]
    beta: torch.Tensor,  # [B, T, H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The recurrence one step at a time.

    Computes in float64 if any input is float64, else float32. Returns ``o`` in v's dtype and the
    final state ``[B, H, K, V]`` in the compute dtype (or None).
    """
    B, T, H, K, V = check_inputs(q, k, v, g, beta, initial_state)
    dt = _compute_dtype(q, k, v, g, beta, initial_state)
    q, k, v, g, beta = (x.to(dt) for x in (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    scale = K**-0.5 if scale is None else scale
    h = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dt)
    decay = g.exp()[..., None, None]  # [B, T, H, 1, 1]
    outs = []
    for t in range(T):
        k_t = k[:, t, :, None, :]  # [B, H, 1, K]
        h = h * decay[:, t]
        delta = beta[:, t, :, None, None] * (v[:, t, :, None, :] - k_t @ h)  # [B, H, 1, V]
        h = h + k_t.transpose(-1, -2) @ delta
        outs.append(scale * (q[:, t, :, None, :] @ h).squeeze(-2))
    o = torch.stack(outs, 1) if T > 0 else v.new_zeros(B, 0, H, V, dtype=dt)  # [B, T, H, V]
    return o.to(v.dtype), (h if output_final_state else None)


def _to_chunks(x: torch.Tensor, C: int) -> torch.Tensor:
    """[B, T, H, ...] -> [B, H, NT, C, ...], zero-padded at the end of T."""
    x = x.transpose(1, 2)
    pad = (-x.shape[2]) % C
    if pad:
        x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, pad))
    return x.reshape(x.shape[0], x.shape[1], -1, C, *x.shape[3:])


def naive_chunk_gated_delta_rule(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [B, T, H]
    beta: torch.Tensor,  # [B, T, H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The chunked (WY/UT) algorithm in plain torch; differentiable by autograd, runs anywhere.

    Same dtypes and return convention as ``naive_recurrent_gated_delta_rule``.
    """
    B, T, H, K, V = check_inputs(q, k, v, g, beta, initial_state)
    C = chunk_size
    dt = _compute_dtype(q, k, v, g, beta, initial_state)
    out_dtype = v.dtype
    q, k, v, g, beta = (x.to(dt) for x in (q, k, v, g, beta))
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    scale = K**-0.5 if scale is None else scale
    q, k, v = _to_chunks(q, C), _to_chunks(k, C), _to_chunks(v, C)  # [B, H, NT, C, K|V]
    g, beta = _to_chunks(g, C), _to_chunks(beta, C)  # [B, H, NT, C]
    NT = q.shape[2]

    G = g.cumsum(-1)  # [B, H, NT, C]; padded steps have g = 0 so G[-1] is the last real step
    o_c = torch.arange(C, device=q.device)
    causal = o_c[:, None] >= o_c[None, :]
    strict = o_c[:, None] > o_c[None, :]
    # Masking before exp keeps the (unused) upper triangle from overflowing.
    gamma = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf")))  # [.., C, C]
    A = (beta[..., :, None] * (k @ k.transpose(-1, -2)) * gamma).masked_fill(~strict, 0.0)
    eye = torch.eye(C, dtype=dt, device=q.device)
    w = torch.linalg.solve_triangular(
        eye + A, (beta * G.exp())[..., None] * k, upper=False, unitriangular=True
    )
    u = torch.linalg.solve_triangular(eye + A, beta[..., None] * v, upper=False, unitriangular=True)
    P = (q @ k.transpose(-1, -2)) * gamma  # [B, H, NT, C, C]
    qg = G.exp()[..., None] * q  # [B, H, NT, C, K]
    kd = (G[..., -1:] - G).exp()[..., None] * k  # [B, H, NT, C, K]
    end_decay = G[..., -1].exp()[..., None, None]  # [B, H, NT, 1, 1]

    h = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dt)
    outs = []
    for i_t in range(NT):
        delta = u[:, :, i_t] - w[:, :, i_t] @ h  # [B, H, C, V]
        outs.append(scale * (qg[:, :, i_t] @ h + P[:, :, i_t] @ delta))
        h = end_decay[:, :, i_t] * h + kd[:, :, i_t].transpose(-1, -2) @ delta
    if NT:
        o = torch.stack(outs, 2).reshape(B, H, NT * C, V)[:, :, :T].transpose(1, 2)
    else:
        o = v.new_zeros(B, 0, H, V)
    return o.to(out_dtype), (h if output_final_state else None)
