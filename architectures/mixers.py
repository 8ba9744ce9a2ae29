"""MIXERS: the one place pattern letters are bound to mixer classes.

Every mixer takes a ModelConfig, maps [B, T, D] to [B, T, D] causally, and reports
`state_size(seq_len)` (elements kept to decode the next token) and `init_weights(generator)` (its
own parameters beyond linear layers).
"""

from architectures.attention import Attention
from architectures.gated_deltanet import GatedDeltaNet
from architectures.mamba2 import Mamba2

MIXERS = {"A": Attention, "G": GatedDeltaNet, "M": Mamba2}
