"""The one configuration every model is built from.

A model is `pattern` tiled over depth: `ModelConfig(pattern="GGGA", n_layers=12)` stacks GGGA three
times. `n_layers` must be a multiple of `len(pattern)` so that every model holds whole repeats of its
pattern (truncating "GGGA" to 6 layers would silently give "GGGAGG").

The checks here are the ones every model shares; each mixer adds its own (`check_config`), so a
config that constructs is one that builds.
"""

import math
import types
from dataclasses import dataclass, fields

POSITIONS = ("rope", "none")
# Recurrent kernels: the Triton kernels, their plain-torch references, or "auto" (Triton on CUDA
# tensors, torch elsewhere; checked against both).
BACKENDS = ("auto", "triton", "torch")


def field_type(annotation) -> type:
    """The value type of a field: `float` for both `float` and the optional `float | None`."""
    if isinstance(annotation, types.UnionType):
        return next(t for t in annotation.__args__ if t is not type(None))
    return annotation


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    pattern: str = "A"  # mixer letters of MIXERS, tiled over depth: "A", "G", "M", "GGGA", "GA", ...
    n_heads: int = 4  # attention and Gated DeltaNet heads; Mamba2's too, or a multiple (mamba_heads)
    mlp_ratio: float = 4.0  # SwiGLU hidden width, see `mlp_hidden`
    pos: str = "rope"  # attention positions: "rope" | "none"
    allow_neg_eigval: bool = False  # G: beta in (0, 2); M: decay in (-1, 1)
    backend: str = "auto"  # recurrent kernels: "auto" | "triton" | "torch"
    tie_embeddings: bool = True
    conv_size: int = 4  # short causal depthwise conv of G and M
    gdn_expand_v: float = 2.0  # G: value head dim = gdn_expand_v * key head dim
    ssd_state: int = 64  # M: state size N per head (the K of kernels.ssd)
    ssd_groups: int = 1  # M: number of B/C groups shared by the heads
    mamba_expand: int = 2  # M: inner width = mamba_expand * d_model
    mamba_max_head_dim: int = 64  # M: more heads than n_heads where P would exceed this, see mamba_heads
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # Optional fields: None means the layer's published default, and a field left at None stays out
    # of run ids (`sweeps.grid.RunConfig`), so adding one keeps every earlier run's id.
    # M's initial decay exp(-A dt): A ~ U[mamba_A_min, mamba_A_max], softplus(dt_bias) log-uniform in
    # [mamba_dt_min, mamba_dt_max] (None: the paper's, `architectures.mamba2.PAPER_A` / `PAPER_DT`),
    # and the in-projection rows that make dt drawn with std mamba_dt_std (None: init_std, like every
    # row). docs/mamba2-init.md says why a study may change them.
    mamba_A_min: float | None = None
    mamba_A_max: float | None = None
    mamba_dt_min: float | None = None
    mamba_dt_max: float | None = None
    mamba_dt_std: float | None = None

    def __post_init__(self):
        from architectures.mixers import MIXERS  # the mixers import torch; this module does not

        for f in fields(self):
            value, kind = getattr(self, f.name), field_type(f.type)
            if value is None and kind is not f.type:
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # one spelling per value, so that equal configs hash equal
                object.__setattr__(self, f.name, value)
            if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
                raise ValueError(f"{f.name} must be of type {kind.__name__}, got {value!r}")
            if kind is int and value < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value}")
            if kind is float and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{f.name} must be a positive finite number, got {value}")
        if not self.pattern:
            raise ValueError(f"pattern must be a non-empty string of mixer letters: {', '.join(MIXERS)}")
        for letter in self.pattern:
            if letter not in MIXERS:
                raise ValueError(
                    f"pattern {self.pattern!r}: unknown mixer letter {letter!r}; allowed letters: "
                    f"{', '.join(MIXERS)}"
                )
        if self.n_layers % len(self.pattern):
            raise ValueError(
                f"n_layers={self.n_layers} must be a multiple of len(pattern)={len(self.pattern)} "
                f"(pattern {self.pattern!r})"
            )
        if self.pos not in POSITIONS:
            raise ValueError(f"pos must be one of {POSITIONS}, got {self.pos!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        for letter in dict.fromkeys(self.pattern):
            MIXERS[letter].check_config(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @property
    def layer_pattern(self) -> str:
        """One mixer letter per layer: the pattern tiled over depth."""
        return self.pattern * (self.n_layers // len(self.pattern))

    @property
    def head_dim(self) -> int:
        """Attention head dim, and the key head dim of Gated DeltaNet."""
        return self.d_model // self.n_heads

    @property
    def width_step(self) -> int:
        """The head-dim step every mixer of the pattern accepts (e.g. even for RoPE)."""
        from architectures.mixers import MIXERS

        return math.lcm(*(MIXERS[letter].width_step(self) for letter in dict.fromkeys(self.pattern)))

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: round(mlp_ratio * d_model * 2/3), so the MLP's three matrices hold as
        many parameters as a two-matrix MLP of width mlp_ratio * d_model. No rounding to a multiple:
        `size_for` needs fine steps at small widths."""
        return max(1, round(self.mlp_ratio * self.d_model * 2 / 3))

    @property
    def gdn_head_v_dim(self) -> int:
        return round(self.gdn_expand_v * self.head_dim)

    @property
    def mamba_inner(self) -> int:
        return self.mamba_expand * self.d_model

    @property
    def mamba_heads(self) -> int:
        """Mamba2's heads: n_heads, or the smallest multiple of it whose head dim P is at most
        mamba_max_head_dim (the paper's P = 64), so that wide models get more heads as in Mamba2."""
        heads = self.n_heads
        while self.mamba_inner % heads or self.mamba_inner // heads > self.mamba_max_head_dim:
            heads += self.n_heads
        return heads

    @property
    def mamba_head_dim(self) -> int:
        """Mamba2's P: the per-head slice of the inner width (the V of kernels.ssd)."""
        return self.mamba_inner // self.mamba_heads

    def uses_triton(self) -> bool:
        """Whether the recurrent layers may run the Triton kernels (so their limits apply)."""
        return self.backend in ("auto", "triton")
