from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from architectures.conv import ShortConv
from architectures.decay import init_A_log, init_dt_bias
from architectures.dispatch import kernel_backend
from architectures.norm import GatedRMSNorm
from kernels.ssd import chunk_ssd

if TYPE_CHECKING:
    from architectures.config import ModelConfig

MAX_TRITON_STATE, MAX_TRITON_HEAD_DIM = 256, 128  # the Triton kernels' K (state N) and V (head dim P)
# The Mamba2 paper's initial decay: A ~ U[1, 16] and softplus(dt_bias) log-uniform in [1e-3, 0.1]
# (ModelConfig's mamba_A_* and mamba_dt_* fields replace them).
PAPER_A, PAPER_DT = (1.0, 16.0), (1e-3, 0.1)


def init_ranges(config: ModelConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """The (A, dt) initial ranges of a config: its mamba_* fields where set, else the paper's."""
    a = (config.mamba_A_min or PAPER_A[0], config.mamba_A_max or PAPER_A[1])
    dt = (config.mamba_dt_min or PAPER_DT[0], config.mamba_dt_max or PAPER_DT[1])
    return a, dt


class Mamba2(nn.Module):
    """The Mamba2 layer (Dao & Gu 2024).

    One in-projection to z, x, B, C and dt; a short causal conv and SiLU on (x, B, C); the SSD
    recurrence S_t = a_t S_{t-1} + dt_t B_t x_t^T, y_t = S_t^T C_t + D x_t per head, with
    a_t = exp(-exp(A_log) dt_t) (or 2 a_t - 1 with allow_neg_eigval, reaching -1); then an RMSNorm
    of y * silu(z) over the whole inner width and the output projection.
    """

    letter = "M"

    @staticmethod
    def check_config(config: ModelConfig) -> None:
        if config.n_heads % config.ssd_groups:
            raise ValueError(f"n_heads={config.n_heads} must be divisible by ssd_groups={config.ssd_groups}")
        (a_min, a_max), (dt_min, dt_max) = init_ranges(config)
        if a_min > a_max or dt_min > dt_max:
            raise ValueError(
                f"mamba_A_min <= mamba_A_max and mamba_dt_min <= mamba_dt_max are required (unset: the "
                f"paper's A in {list(PAPER_A)}, dt in {list(PAPER_DT)}), got A in [{a_min}, {a_max}], "
                f"dt in [{dt_min}, {dt_max}]"
            )
        if config.uses_triton() and (
            config.ssd_state > MAX_TRITON_STATE or config.mamba_head_dim > MAX_TRITON_HEAD_DIM
        ):
            raise ValueError(
                f"backend={config.backend!r} may run the Triton kernels, which take Mamba2 states up to "
                f"ssd_state={MAX_TRITON_STATE} and head dims up to {MAX_TRITON_HEAD_DIM}, got ssd_state="
                f"{config.ssd_state} and head dim {config.mamba_head_dim}: lower them or use backend 'torch'"
            )

    @staticmethod
    def width_step(config: ModelConfig) -> int:
        return 1

    def __init__(self, config: ModelConfig):
        super().__init__()
        H, P = config.mamba_heads, config.mamba_head_dim
        G, N = config.ssd_groups, config.ssd_state
        inner = config.mamba_inner
        self.n_heads, self.head_dim, self.n_groups, self.d_state = H, P, G, N
        self.allow_neg_eigval, self.backend = config.allow_neg_eigval, config.backend
        self.init_ranges, self.dt_std = init_ranges(config), config.mamba_dt_std
        self.split = [inner, inner + 2 * G * N, H]  # z, (x, B, C), dt
        self.in_proj = nn.Linear(config.d_model, sum(self.split), bias=False)
        self.conv = ShortConv(inner + 2 * G * N, config.conv_size, bias=True)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(inner, config.norm_eps, norm_before_gate=False)
        self.out_proj = nn.Linear(inner, config.d_model, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        H, P, G, N = self.n_heads, self.head_dim, self.n_groups, self.d_state
        z, xbc, dt = self.in_proj(x).split(self.split, dim=-1)
        xs, b, c = F.silu(self.conv(xbc)).split([H * P, G * N, G * N], dim=-1)
        y, _ = chunk_ssd(
            xs.reshape(B, T, H, P),
            F.softplus(dt.float() + self.dt_bias.float()),  # [B, T, H]
            -self.A_log.float().exp(),  # [H]
            b.reshape(B, T, G, N),
            c.reshape(B, T, G, N),
            D=self.D.float(),
            allow_neg_eigval=self.allow_neg_eigval,
            backend=kernel_backend(self.backend, x),
        )  # [B, T, H, P]
        return self.out_proj(self.norm(y.reshape(B, T, H * P), z))

    def init_weights(self, generator):
        self.conv.init_weights(generator)
        (a_min, a_max), (dt_min, dt_max) = self.init_ranges
        with torch.no_grad():
            self.A_log.copy_(init_A_log(self.n_heads, generator, a_min, a_max))
            self.dt_bias.copy_(init_dt_bias(self.n_heads, generator, dt_min, dt_max))
            self.D.fill_(1.0)
            if self.dt_std is not None:  # the in-projection's last H rows make dt
                self.in_proj.weight[-self.n_heads :].normal_(0.0, self.dt_std, generator=generator)

    def state_size(self, seq_len: int) -> int:
        """The N x P state of every head plus the conv buffer; independent of seq_len."""
        return self.n_heads * self.head_dim * self.d_state + self.conv.state_size()
