import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm over the last dim, computed in fp32 whatever the autocast dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm with a SiLU gate over the last dim.

    Gated DeltaNet normalises first and gates after (`norm(x) * silu(gate)`); Mamba2 gates first
    (`norm(x * silu(gate))`), as in their reference layers.
    """

    def __init__(self, dim: int, eps: float, norm_before_gate: bool):
        super().__init__()
        self.eps = eps
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, gate):
        dtype = x.dtype
        x, gate = x.float(), F.silu(gate.float())
        if not self.norm_before_gate:
            x = x * gate
        x = F.rms_norm(x, (x.shape[-1],), self.weight.float(), self.eps)
        if self.norm_before_gate:
            x = x * gate
        return x.to(dtype)
