"""Pick a model width for a parameter budget, so that architectures are compared at matched sizes."""

import math
from fractions import Fraction

import torch

from architectures.config import ModelConfig
from architectures.model import LanguageModel


def count_params(config: ModelConfig, include_embedding: bool = False) -> int:
    """The parameter count of LanguageModel(config), without allocating or initialising it."""
    with torch.device("meta"):
        return LanguageModel(config).num_params(include_embedding)


def size_for(
    pattern: str,
    target_params: int,
    *,
    vocab_size: int,
    n_layers: int = 4,
    n_heads: int = 4,
    mlp_ratio: float = 4.0,
    pos: str = "rope",
    allow_neg_eigval: bool = False,
    backend: str = "torch",
    tie_embeddings: bool = True,
    conv_size: int = 4,
    gdn_expand_v: float = 2.0,
    ssd_state: int = 64,
    ssd_groups: int = 1,
    mamba_expand: int = 2,
    mamba_max_head_dim: int = 64,
    tolerance: float = 0.05,
) -> ModelConfig:
    """The config whose non-embedding parameter count is nearest `target_params`.

    Width is d_model = heads * head_dim. With `n_heads` heads the candidates are n_heads apart, too
    coarse for small targets (each step adds about 2 n_heads / d_model of the count); when no width
    lands within `tolerance` of the target, fewer heads are tried, down to one, and the first head
    count that fits wins. Raises ValueError when none does.
    """
    if target_params < 1:
        raise ValueError(f"target_params must be positive, got {target_params}")

    def config(heads: int, head_dim: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size, d_model=heads * head_dim, n_layers=n_layers, pattern=pattern,
            n_heads=heads, mlp_ratio=mlp_ratio, pos=pos, allow_neg_eigval=allow_neg_eigval,
            backend=backend, tie_embeddings=tie_embeddings, conv_size=conv_size,
            gdn_expand_v=gdn_expand_v, ssd_state=ssd_state, ssd_groups=ssd_groups,
            mamba_expand=mamba_expand, mamba_max_head_dim=mamba_max_head_dim,
        )

    # Head dims must be even for RoPE and make gdn_expand_v * head_dim whole.
    step = 2 if "A" in pattern and pos == "rope" else 1
    if "G" in pattern:
        step = math.lcm(step, Fraction(gdn_expand_v).limit_denominator(1000).denominator)
    best = None
    for heads in range(n_heads, 0, -1):
        if "M" in pattern and heads % ssd_groups:
            continue
        count = lambda j: count_params(config(heads, j * step))  # noqa: B023
        hi = 1
        while count(hi) < target_params:
            hi *= 2
        lo = hi // 2  # count(lo) < target <= count(hi), or lo = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(mid) < target_params else (lo, mid)
        for j in (lo, hi):
            if j > 0:
                error = abs(count(j) - target_params) / target_params
                if best is None or error < best[0]:
                    best = (error, config(heads, j * step))
        if best[0] <= tolerance:
            return best[1]
    raise ValueError(
        f"no width puts pattern {pattern!r} within {tolerance:.0%} of target_params={target_params}; "
        f"nearest is d_model={best[1].d_model} with n_heads={best[1].n_heads}, off by {best[0]:.1%}"
    )
