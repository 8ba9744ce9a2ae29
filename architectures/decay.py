"""Initial values of the data-dependent decay shared by Gated DeltaNet and Mamba2.

Both layers decay their state by exp(-exp(A_log) * softplus(W x + dt_bias)) per step, and both
papers start A uniform in a range and softplus(dt_bias) log-uniform in [1e-3, 0.1].
"""

import math

import torch


def init_dt_bias(n: int, generator, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4):
    """Inverse softplus of time steps drawn log-uniformly in [dt_min, dt_max]."""
    u = torch.rand(n, generator=generator)
    dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def init_A_log(n: int, generator, low: float, high: float):
    return torch.empty(n).uniform_(low, high, generator=generator).log()
