"""Pick a model width for a parameter budget, so that architectures are compared at matched sizes."""

from dataclasses import replace

import torch

from architectures.config import ModelConfig
from architectures.model import LanguageModel

# size_for may widen or narrow the MLP by up to this factor to land on a target the width steps miss.
MLP_SLACK = 2.0


def count_params(config: ModelConfig, include_embedding: bool = False) -> int:
    """The parameter count of LanguageModel(config), without allocating or initialising it."""
    with torch.device("meta"):
        return LanguageModel(config).num_params(include_embedding)


def size_for(template: ModelConfig, target_params: int, tolerance: float = 0.05) -> ModelConfig:
    """The config like `template` whose non-embedding parameter count is nearest `target_params`.

    Only the width changes: d_model = heads * head_dim, head_dim in the pattern's `width_step`.
    With the template's `n_heads` the candidate widths are n_heads steps apart, too coarse for small
    targets; where none lands within `tolerance`, the MLP's hidden width is moved (by at most a
    factor MLP_SLACK, through `mlp_ratio`) to close the gap, and failing that fewer heads are tried,
    down to one: the first head count that fits wins. Raises ValueError naming reachable sizes when
    none does.
    """
    if isinstance(target_params, bool) or not isinstance(target_params, int) or target_params < 1:
        raise ValueError(f"target_params must be a positive integer, got {target_params!r}")
    near: list[tuple[int, ModelConfig]] = []
    refusal = None
    for heads in range(template.n_heads, 0, -1):
        try:
            near += _nearest(template, heads, target_params)
        except ValueError as error:  # a shape a mixer refuses: too wide for a kernel, groups, ...
            refusal = error
            continue
        # The template's MLP where it fits, else the fitted one (the last two).
        for pair in (near[-4:-2], near[-2:]):
            count, best = min(pair, key=lambda p: abs(p[0] - target_params))
            if abs(count - target_params) <= tolerance * target_params:
                return best
    if not near:
        raise ValueError(f"no width builds pattern {template.pattern!r}: {refusal}")
    below = max((n for n, _ in near if n < target_params), default=None)
    above = min((n for n, _ in near if n >= target_params), default=None)
    reachable = " or ".join(f"{n:,}" for n in (below, above) if n is not None)
    raise ValueError(
        f"no width puts pattern {template.pattern!r} ({template.n_layers} layers, up to {template.n_heads} "
        f"heads) within {tolerance:.0%} of target_params={target_params:,}; nearest reachable sizes: "
        f"{reachable}"
    )


def _nearest(template: ModelConfig, heads: int, target_params: int) -> list[tuple[int, ModelConfig]]:
    """With `heads` heads, as (count, config) pairs: the widths just below and above the target
    with the template's MLP, then the same two with the MLP width that lands nearest it."""
    base = replace(template, n_heads=heads, d_model=heads * template.width_step)
    step = heads * base.width_step
    counts: dict[int, int] = {}

    def count(j: int) -> int:
        if j not in counts:
            counts[j] = count_params(replace(base, d_model=j * step))
        return counts[j]

    hi = 1
    while count(hi) < target_params:
        hi *= 2
    lo = hi // 2  # count(lo) < target <= count(hi), or lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target_params else (lo, mid)
    plain = [replace(base, d_model=max(j, 1) * step) for j in (lo, hi)]
    fitted = [_fit_mlp(config, target_params) or config for config in plain]
    return [(count_params(config), config) for config in plain + fitted]


def _fit_mlp(config: ModelConfig, target_params: int) -> ModelConfig | None:
    """`config` with the MLP hidden width that brings the count nearest the target, or None."""
    hidden = config.mlp_hidden
    here = count_params(config)
    per_unit = count_params(_with_hidden(config, hidden + 1)) - here  # parameters per hidden unit
    want = round(hidden + (target_params - here) / per_unit)
    want = min(max(want, round(hidden / MLP_SLACK), 1), round(hidden * MLP_SLACK))
    return None if want == hidden else _with_hidden(config, want)


def _with_hidden(config: ModelConfig, hidden: int) -> ModelConfig:
    return replace(config, mlp_ratio=hidden * 1.5 / config.d_model)
