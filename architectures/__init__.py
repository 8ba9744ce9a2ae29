"""Language models over a pattern of mixers: A attention, G Gated DeltaNet, M Mamba2.

    config = size_for(ModelConfig(vocab_size=64, pattern="GGGA", n_layers=4, n_heads=4), 1_000_000)
    model = LanguageModel(config, generator=torch.Generator().manual_seed(0))
    logits = model(tokens)                  # [B, T] -> [B, T, vocab_size]
    model.num_params(), model.state_size(T)

`ModelConfig.pattern` is tiled over `n_layers`; `MIXERS` binds the letters; `backend` picks the
Triton kernels or their plain-torch references for G and M ("auto": Triton on CUDA tensors; the
torch path runs anywhere, also where triton is not installed).
"""

import importlib

from architectures.config import ModelConfig

__all__ = ["MIXERS", "Block", "LanguageModel", "ModelConfig", "count_params", "size_for"]

# The rest imports torch: loaded on first use, so that `architectures.config` alone stays light
# (sweep files are checked against ModelConfig's fields before torch is imported).
_LAZY = {
    "MIXERS": "architectures.mixers",
    "Block": "architectures.model",
    "LanguageModel": "architectures.model",
    "count_params": "architectures.sizing",
    "size_for": "architectures.sizing",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'architectures' has no attribute {name!r}")
