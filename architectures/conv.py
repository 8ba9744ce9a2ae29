import math

from torch import nn


class ShortConv(nn.Module):
    """Causal depthwise conv over time, `width` taps per channel: the short conv of G and M layers."""

    def __init__(self, channels: int, width: int, bias: bool):
        super().__init__()
        self.width = width
        self.conv = nn.Conv1d(channels, channels, width, groups=channels, padding=width - 1, bias=bias)

    def forward(self, x):  # [B, T, C]
        return self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)

    def init_weights(self, generator):
        # PyTorch's Conv1d default bound: one input channel per group, so fan-in is the width.
        bound = 1 / math.sqrt(self.width)
        nn.init.uniform_(self.conv.weight, -bound, bound, generator=generator)
        if self.conv.bias is not None:
            nn.init.uniform_(self.conv.bias, -bound, bound, generator=generator)

    def state_size(self) -> int:
        """The last width - 1 inputs of every channel, kept for step-by-step decoding."""
        return (self.width - 1) * self.conv.in_channels
