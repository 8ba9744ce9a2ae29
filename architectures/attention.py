from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from architectures.config import ModelConfig


def rotary(x, base: float):
    """Rotate pairs (x[..., i], x[..., i + K/2]) by angle t * base^(-2i/K) (RoPE, rotate-half form)."""
    T, K = x.shape[1], x.shape[-1]
    inv_freq = base ** (-torch.arange(0, K, 2, device=x.device, dtype=torch.float32) / K)  # [K/2]
    angle = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv_freq)  # [T, K/2]
    cos = angle.cos()[None, :, None, :].to(x.dtype)  # [1, T, 1, K/2]
    sin = angle.sin()[None, :, None, :].to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Causal multi-head softmax attention with RoPE or no positional encoding."""

    letter = "A"

    @staticmethod
    def check_config(config: ModelConfig) -> None:
        if config.pos == "rope" and config.head_dim % 2:
            raise ValueError(f"pos='rope' needs an even head dim, got d_model/n_heads={config.head_dim}")

    @staticmethod
    def width_step(config: ModelConfig) -> int:
        """RoPE rotates pairs of head dims."""
        return 2 if config.pos == "rope" else 1

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.pos, self.rope_base = config.pos, config.rope_base
        self.qkv_proj = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.qkv_proj(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # [B, T, H, K]
        if self.pos == "rope":
            q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )  # [B, H, T, K]
        return self.out_proj(o.transpose(1, 2).reshape(B, T, -1))

    def init_weights(self, generator):
        """Nothing beyond the model's generic initialisation of linear layers."""

    def state_size(self, seq_len: int) -> int:
        """KV cache: keys and values of every past token, all heads."""
        return 2 * seq_len * self.n_heads * self.head_dim
