"""Chunked SSD: Triton kernels, their autograd.Function, and the public `chunk_ssd`."""

import torch

from kernels.ssd.naive import chunk_ssd_torch

BACKENDS = ("triton", "torch")


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
    A < 0. Head h reads B/C group h // (H // G). Returns y [B, T, H, V] in x's dtype and the final
    state [B, H, K, V] in float32 (None unless output_final_state).
    """
    _check(x, dt, A, B, C, D, initial_state, backend)
    if backend == "torch":
        return chunk_ssd_torch(x, dt, A, B, C, D, initial_state, output_final_state, allow_neg_eigval)
    raise ValueError("backend='triton' lands in the next commit; use backend='torch'")
