"""The one configuration every model is built from.

A model is `pattern` tiled over depth: `ModelConfig(pattern="GGGA", n_layers=12)` stacks GGGA three
times. `n_layers` must be a multiple of `len(pattern)` so that every model holds whole repeats of its
pattern (truncating "GGGA" to 6 layers would silently give "GGGAGG").
"""

from dataclasses import dataclass

from architectures.mixers import MIXERS

POSITIONS = ("rope", "none")
BACKENDS = ("triton", "torch")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    pattern: str = "A"
    n_heads: int = 4  # attention and Gated DeltaNet heads; Mamba2's too, or a multiple (mamba_heads)
    mlp_ratio: float = 4.0  # SwiGLU hidden width, see `mlp_hidden`
    pos: str = "rope"  # attention positions: "rope" | "none"
    allow_neg_eigval: bool = False  # G: beta in (0, 2); M: decay in (-1, 1)
    backend: str = "torch"  # recurrent kernels: "triton" | "torch"
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

    def __post_init__(self):
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "conv_size", "ssd_state",
                    "ssd_groups", "mamba_expand", "mamba_max_head_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
        if not self.pattern:
            raise ValueError(f"pattern must be a non-empty string over the letters {sorted(MIXERS)}")
        for letter in self.pattern:
            if letter not in MIXERS:
                raise ValueError(
                    f"pattern {self.pattern!r}: unknown mixer letter {letter!r}; known: {sorted(MIXERS)}"
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
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if "A" in self.pattern and self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"pos='rope' needs an even head dim, got d_model/n_heads={self.head_dim}")
        if "G" in self.pattern and self.gdn_head_v_dim != self.gdn_expand_v * self.head_dim:
            raise ValueError(
                f"gdn_expand_v={self.gdn_expand_v} times head dim {self.head_dim} must be an integer"
            )
        if "G" in self.pattern and self.backend == "triton" and max(self.head_dim, self.gdn_head_v_dim) > 256:
            raise ValueError(
                f"backend='triton' takes Gated DeltaNet head dims up to 256, got key {self.head_dim} and "
                f"value {self.gdn_head_v_dim}: raise n_heads={self.n_heads} or lower gdn_expand_v"
            )
        if "M" in self.pattern and self.n_heads % self.ssd_groups:
            raise ValueError(f"n_heads={self.n_heads} must be divisible by ssd_groups={self.ssd_groups}")

    @property
    def layer_pattern(self) -> str:
        """One mixer letter per layer: the pattern tiled over depth."""
        return self.pattern * (self.n_layers // len(self.pattern))

    @property
    def head_dim(self) -> int:
        """Attention head dim, and the key head dim of Gated DeltaNet."""
        return self.d_model // self.n_heads

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: round(mlp_ratio * d_model * 2/3), so the MLP's three matrices hold as
        many parameters as a two-matrix MLP of width mlp_ratio * d_model. No rounding to a multiple:
        `size_for` needs fine steps at small widths."""
        return round(self.mlp_ratio * self.d_model * 2 / 3)

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
