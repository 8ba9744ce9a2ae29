"""A language model is an embedding, a stack of identical pre-norm blocks, a norm and a head.

The blocks differ only in the mixer their pattern letter names (see `architectures.mixers`);
`ModelConfig.pattern` is tiled over `n_layers` ("GGGA" x 3 = 12 layers, Olmo Hybrid's 3:1).

Where we depart from the textbook layers, on purpose:

- MLP: SwiGLU with hidden width round(mlp_ratio * d_model * 2/3) (as many weights as a two-matrix
  MLP of width mlp_ratio * d_model) and no rounding to a multiple, so that `size_for` can step
  finely; `size_for` may also move `mlp_ratio` by up to 2x to land on a parameter target.
- Initialisation: GPT-2's N(0, init_std^2), with every projection into the residual stream
  (`out_proj`) scaled down by sqrt(2 n_layers); the decays and convs as their papers set them.
- Embeddings: input embedding and LM head tied by default (`tie_embeddings`); parameter counts
  leave both out, since they scale with the vocabulary rather than the model.
- Gated output norms: Gated DeltaNet normalises, then gates (norm(o) * silu(g)), as in its paper;
  Mamba2 gates, then normalises (norm(y * silu(z))), as in its reference layer.
- Negative eigenvalues (`allow_neg_eigval`): Gated DeltaNet's beta = 2 sigmoid(.) in (0, 2) and
  Mamba2's decay 2a - 1 in (-1, 1), after Grazzi et al. (ICLR 2025).
- Norms and the recurrences run in fp32 whatever the autocast dtype.
"""

import math

import torch
from torch import nn

from architectures.config import ModelConfig
from architectures.mixers import MIXERS
from architectures.mlp import SwiGLU
from architectures.norm import GatedRMSNorm, RMSNorm


class Block(nn.Module):
    """norm -> mixer -> residual -> norm -> SwiGLU -> residual."""

    def __init__(self, config: ModelConfig, letter: str):
        super().__init__()
        self.mixer_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = MIXERS[letter](config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x):
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class LanguageModel(nn.Module):
    """Token ids [B, T] -> next-token logits [B, T, vocab_size].

    Initialisation follows GPT-2: linear and embedding weights N(0, init_std^2), the projections
    that write into the residual stream (every `out_proj`) scaled down by sqrt(2 n_layers), norms at
    one; each mixer then sets its own decay and conv parameters as its paper does. Pass a
    `generator` to make the initial weights a function of its seed alone.
    """

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, letter) for letter in config.layer_pattern)
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        self.init_weights(generator)

    def forward(self, inputs):  # [B, T] int
        x = self.embed(inputs)  # [B, T, D]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # [B, T, vocab_size]

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None):
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, out_std if name.endswith("out_proj") else std,
                                generator=generator)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
            elif isinstance(module, RMSNorm | GatedRMSNorm):
                nn.init.ones_(module.weight)
        for block in self.blocks:
            block.mixer.init_weights(generator)

    def num_params(self, include_embedding: bool = False) -> int:
        """Parameter count. Non-embedding (the default) leaves out the token embedding and the LM
        head, both of which scale with the vocabulary rather than with the model."""
        n = sum(p.numel() for p in self.parameters())  # a tied matrix is counted once
        if not include_embedding:
            n -= self.embed.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.head.weight.numel()
        return n

    def state_size(self, seq_len: int) -> int:
        """Elements kept to decode token seq_len + 1: KV caches, recurrent states, conv buffers."""
        return sum(block.mixer.state_size(seq_len) for block in self.blocks)
