from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from architectures.config import ModelConfig


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        hidden = config.mlp_hidden
        self.up = nn.Linear(config.d_model, 2 * hidden, bias=False)  # gate and value side by side
        self.out_proj = nn.Linear(hidden, config.d_model, bias=False)

    def forward(self, x):
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.out_proj(F.silu(gate) * value)
