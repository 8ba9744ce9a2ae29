from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from architectures.conv import ShortConv
from architectures.decay import init_A_log, init_dt_bias
from architectures.dispatch import kernel_backend
from architectures.norm import GatedRMSNorm
from kernels.gated_delta_rule import chunk_gated_delta_rule

if TYPE_CHECKING:
    from architectures.config import ModelConfig

MAX_TRITON_HEAD_DIM = 256  # the Triton kernels' key and value head dims


class GatedDeltaNet(nn.Module):
    """The Gated DeltaNet layer (Yang, Kautz & Hatamizadeh 2024), as used in Olmo Hybrid.

    q, k, v: projections, short causal conv, SiLU; q and k L2-normalised. Per head and step,
    beta = sigmoid(W_b x) (x2 with allow_neg_eigval, so the transition's eigenvalue 1 - beta reaches
    -1) and log decay g = -exp(A_log) * softplus(W_a x + dt_bias). The kernel's output goes through
    an RMSNorm gated by a projection of x, then the output projection.
    """

    letter = "G"

    @staticmethod
    def check_config(config: ModelConfig) -> None:
        if config.gdn_head_v_dim != config.gdn_expand_v * config.head_dim:
            raise ValueError(
                f"gdn_expand_v={config.gdn_expand_v} times head dim {config.head_dim} must be an integer"
            )
        if config.uses_triton() and max(config.head_dim, config.gdn_head_v_dim) > MAX_TRITON_HEAD_DIM:
            raise ValueError(
                f"backend={config.backend!r} may run the Triton kernels, which take Gated DeltaNet head dims "
                f"up to {MAX_TRITON_HEAD_DIM}, got key {config.head_dim} and value {config.gdn_head_v_dim}: "
                f"raise n_heads={config.n_heads}, lower gdn_expand_v or set backend = 'torch'"
            )

    @staticmethod
    def width_step(config: ModelConfig) -> int:
        """Head dims that make gdn_expand_v * head_dim whole."""
        return Fraction(config.gdn_expand_v).limit_denominator(1000).denominator

    def __init__(self, config: ModelConfig):
        super().__init__()
        H, K, V = config.n_heads, config.head_dim, config.gdn_head_v_dim
        self.n_heads, self.head_k_dim, self.head_v_dim = H, K, V
        self.allow_neg_eigval, self.backend = config.allow_neg_eigval, config.backend
        # One matmul for q, k, v, the output gate and the per-head beta and decay inputs.
        self.split = [2 * H * K + H * V, H * V, H, H]
        self.in_proj = nn.Linear(config.d_model, sum(self.split), bias=False)
        self.conv = ShortConv(2 * H * K + H * V, config.conv_size, bias=False)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(V, config.norm_eps, norm_before_gate=True)
        self.out_proj = nn.Linear(H * V, config.d_model, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        H, K, V = self.n_heads, self.head_k_dim, self.head_v_dim
        qkv, gate, a, b = self.in_proj(x).split(self.split, dim=-1)
        q, k, v = F.silu(self.conv(qkv)).split([H * K, H * K, H * V], dim=-1)
        beta = b.float().sigmoid()  # [B, T, H]
        if self.allow_neg_eigval:
            beta = 2 * beta
        g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias.float())  # [B, T, H]
        o, _ = chunk_gated_delta_rule(
            q.reshape(B, T, H, K),
            k.reshape(B, T, H, K),
            v.reshape(B, T, H, V),
            g,
            beta,
            use_qk_l2norm_in_kernel=True,
            backend=kernel_backend(self.backend, x),
        )  # [B, T, H, V]
        o = self.norm(o, gate.reshape(B, T, H, V))
        return self.out_proj(o.reshape(B, T, H * V))

    def init_weights(self, generator):
        self.conv.init_weights(generator)
        with torch.no_grad():
            self.A_log.copy_(init_A_log(self.n_heads, generator, 0.0, 16.0))
            self.dt_bias.copy_(init_dt_bias(self.n_heads, generator))

    def state_size(self, seq_len: int) -> int:
        """The K x V state of every head plus the conv buffer; independent of seq_len."""
        return self.n_heads * self.head_k_dim * self.head_v_dim + self.conv.state_size()
