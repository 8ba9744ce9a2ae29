"""Language models over a pattern of mixers: A attention, G Gated DeltaNet, M Mamba2."""

from architectures.config import ModelConfig
from architectures.mixers import MIXERS
from architectures.model import Block, LanguageModel
from architectures.sizing import count_params, size_for

__all__ = ["MIXERS", "Block", "LanguageModel", "ModelConfig", "count_params", "size_for"]
